//! Identities: who B2C says the user is, and what kind of account vouches for their email.

/// A B2C identity: the tenant's issuer and the user's object id. Links are unique per identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The token issuer (`iss`), e.g. `https://fabrikam.b2clogin.com/{tenant-guid}/v2.0/`.
    pub issuer: String,
    /// The user's object id in the tenant (`sub` / `oid` / connector `objectId`).
    pub subject: String,
}

/// What the request says about the account behind the email, used to decide whether the email
/// counts as verified (DESIGN section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInEvidence {
    /// A local account (`signInType` `emailAddress`).
    Local,
    /// A social account federated through B2C; `provider` is the identity provider's issuer as B2C
    /// names it (`google.com`, `facebook.com`, ...), lower-case.
    Federated {
        /// The identity provider, e.g. `google.com`.
        provider: String,
    },
    /// Another kind of local account (`userName`, `phoneNumber`): it proves nothing about an email.
    Other {
        /// The `signInType` as sent.
        sign_in_type: String,
    },
    /// The request carries no `identities` at all.
    Missing,
}

impl SignInEvidence {
    /// The sign-in type stored on a link: `emailAddress`, `federated`, the other type as sent,
    /// or `unknown`.
    pub fn sign_in_type(&self) -> &str {
        match self {
            SignInEvidence::Local => "emailAddress",
            SignInEvidence::Federated { .. } => "federated",
            SignInEvidence::Other { sign_in_type } => sign_in_type,
            SignInEvidence::Missing => "unknown",
        }
    }

    /// The identity provider stored on a link: the social provider, or `local` for local accounts.
    pub fn provider(&self) -> Option<&str> {
        match self {
            SignInEvidence::Local => Some("local"),
            SignInEvidence::Federated { provider } => Some(provider),
            _ => None,
        }
    }

    /// Reads the evidence from a connector's `identities` claim: a federated entry wins (the
    /// social sign-up names the provider that asserted the email), then a local email account,
    /// then any other sign-in type.
    pub fn from_identities<'a, I>(entries: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, Option<&'a str>)>,
    {
        let mut local = false;
        let mut other: Option<String> = None;
        let mut seen_any = false;
        for (sign_in_type, issuer) in entries {
            seen_any = true;
            if sign_in_type.eq_ignore_ascii_case("federated") {
                return SignInEvidence::Federated {
                    provider: issuer.unwrap_or_default().trim().to_ascii_lowercase(),
                };
            } else if sign_in_type.eq_ignore_ascii_case("emailAddress") {
                local = true;
            } else if other.is_none() {
                other = Some(sign_in_type.to_string());
            }
        }
        if local {
            SignInEvidence::Local
        } else if let Some(sign_in_type) = other {
            SignInEvidence::Other { sign_in_type }
        } else if seen_any {
            SignInEvidence::Other {
                sign_in_type: String::new(),
            }
        } else {
            SignInEvidence::Missing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_federated_entry_names_the_provider() {
        let evidence = SignInEvidence::from_identities([
            ("emailAddress", Some("fabrikam.onmicrosoft.com")),
            ("federated", Some("Google.com")),
        ]);
        assert_eq!(
            evidence,
            SignInEvidence::Federated {
                provider: "google.com".into()
            }
        );
    }

    #[test]
    fn an_email_address_entry_is_a_local_account() {
        let evidence =
            SignInEvidence::from_identities([("emailAddress", Some("fabrikam.onmicrosoft.com"))]);
        assert_eq!(evidence, SignInEvidence::Local);
    }

    #[test]
    fn a_user_name_account_is_other() {
        let evidence = SignInEvidence::from_identities([("userName", None)]);
        assert_eq!(
            evidence,
            SignInEvidence::Other {
                sign_in_type: "userName".into()
            }
        );
    }

    #[test]
    fn no_entries_is_missing() {
        assert_eq!(SignInEvidence::from_identities([]), SignInEvidence::Missing);
    }
}
