//! Which email a Microsoft Entra External ID user proved, and what kind of account proves it
//! (`entra-external-id.md` sections 1.3, 3 and 4). Written once, for the sign-up submit payload
//! and for the Graph user read at token issuance; [`super::verification::verify`] then applies
//! the configured policy to the [`SignInEvidence`] found here.
//!
//! - A *local email identity* (`signInType` `email`, `emailAddress`, `emailAddress1`..., or
//!   `federated` with issuer `mail`) is an address Entra proved with a one-time code: its
//!   `issuerAssignedId` is the email, and it takes precedence over any attribute.
//! - Otherwise the address may come from a form attribute (`email`, `EmailAddress` or `mail`,
//!   keys compared case-insensitively). It counts only when `identities` names a social identity
//!   (`federated` with another issuer, e.g. `google.com`): the provider asserted it, and the
//!   policy's `email_verifying_idps` decides. An attribute email with no such identity (or with
//!   no `identities` at all) proves nothing: never `treat_missing_identities_as_local` here,
//!   since any user can type any address into a form.

use super::email::EmailAddress;
use super::identity::SignInEvidence;
use super::verification::VerificationPolicy;

/// One entry of `identities` (Entra's `objectIdentity`), as sent; absent members are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// `email`, `emailAddress`, `federated`, `userName`, `userPrincipalName`, ...
    pub sign_in_type: String,
    /// The tenant, `mail` (email one-time code) or the social provider (`google.com`).
    pub issuer: String,
    /// The email of a local email identity; the provider's user id of a social one.
    pub issuer_assigned_id: String,
}

impl ObjectIdentity {
    /// Whether Entra proved this identity's `issuerAssignedId` as an email address.
    pub fn is_local_email(&self) -> bool {
        let kind = self.sign_in_type.trim();
        kind.eq_ignore_ascii_case("email")
            || kind
                .get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("emailAddress"))
            || (kind.eq_ignore_ascii_case("federated")
                && self.issuer.trim().eq_ignore_ascii_case("mail"))
    }

    /// The social provider (lower-case) when this is a social identity.
    pub fn social_provider(&self) -> Option<String> {
        let federated = self.sign_in_type.trim().eq_ignore_ascii_case("federated");
        let issuer = self.issuer.trim();
        (federated && !issuer.is_empty() && !issuer.eq_ignore_ascii_case("mail"))
            .then(|| issuer.to_ascii_lowercase())
    }
}

/// Whether a form attribute's key names the email (`email`, `EmailAddress`, `mail`).
pub fn is_email_attribute(key: &str) -> bool {
    EMAIL_ATTRIBUTES.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// The email attribute keys, in the order they are looked for.
const EMAIL_ATTRIBUTES: [&str; 3] = ["email", "EmailAddress", "mail"];

/// Where the email of a sign-up came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailSource {
    /// A local email identity (the sign-up page has no email field then), or nowhere at all.
    Identity,
    /// This form attribute, the key as sent (`attributeErrors` names it back).
    Attribute(String),
}

/// The email of a sign-up and what vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUpEmail {
    /// The address as sent, when there is one.
    pub email: Option<String>,
    /// Where it came from.
    pub source: EmailSource,
    /// What kind of account vouches for it.
    pub evidence: SignInEvidence,
}

/// Reads the email of an `attributeCollectionSubmit` call. `identities` is `None` when the
/// payload has none; `attributes` are (key, string value) pairs, the value `None` when it is
/// not a string.
pub fn sign_up_email(
    identities: Option<&[ObjectIdentity]>,
    attributes: &[(String, Option<String>)],
) -> SignUpEmail {
    let identities = identities.unwrap_or_default();
    if let Some(local) = identities
        .iter()
        .find(|i| i.is_local_email() && !i.issuer_assigned_id.trim().is_empty())
    {
        return SignUpEmail {
            email: Some(local.issuer_assigned_id.clone()),
            source: EmailSource::Identity,
            evidence: SignInEvidence::Local,
        };
    }
    let social = identities.iter().find_map(ObjectIdentity::social_provider);
    let evidence = match social {
        Some(provider) => SignInEvidence::Federated { provider },
        None => SignInEvidence::Other {
            sign_in_type: UNPROVEN.into(),
        },
    };
    let attribute = EMAIL_ATTRIBUTES.iter().find_map(|wanted| {
        attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(wanted))
    });
    match attribute {
        Some((key, value)) => SignUpEmail {
            email: value.clone().filter(|v| !v.trim().is_empty()),
            source: EmailSource::Attribute(key.clone()),
            evidence,
        },
        None => SignUpEmail {
            email: None,
            source: EmailSource::Identity,
            evidence,
        },
    }
}

/// The sign-in type recorded for an email that nothing proves (a form attribute alone).
pub const UNPROVEN: &str = "attributeOnly";

/// What a directory user (Microsoft Graph: `identities` and `mail`) proves about `email`: a local
/// email identity with that address, or else a social identity while `mail` is that address
/// (an allow-listed provider preferred). `None`: nothing ties the user to the address.
pub fn directory_evidence(
    identities: &[ObjectIdentity],
    mail: Option<&str>,
    email: &EmailAddress,
    policy: &VerificationPolicy,
) -> Option<SignInEvidence> {
    let same = |raw: &str| EmailAddress::parse(raw).is_ok_and(|e| e.key() == email.key());
    if identities
        .iter()
        .any(|i| i.is_local_email() && same(&i.issuer_assigned_id))
    {
        return Some(SignInEvidence::Local);
    }
    if !mail.is_some_and(same) {
        return None;
    }
    let providers: Vec<String> = identities
        .iter()
        .filter_map(ObjectIdentity::social_provider)
        .collect();
    let trusted = providers.iter().find(|p| {
        policy
            .email_verifying_idps
            .iter()
            .any(|idp| idp.eq_ignore_ascii_case(p))
    });
    trusted
        .or(providers.first())
        .map(|provider| SignInEvidence::Federated {
            provider: provider.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(kind: &str, issuer: &str, id: &str) -> ObjectIdentity {
        ObjectIdentity {
            sign_in_type: kind.into(),
            issuer: issuer.into(),
            issuer_assigned_id: id.into(),
        }
    }

    fn attribute(key: &str, value: &str) -> (String, Option<String>) {
        (key.into(), Some(value.into()))
    }

    fn policy() -> VerificationPolicy {
        VerificationPolicy {
            local_accounts_verify_email: true,
            email_verifying_idps: vec!["google.com".into()],
            treat_missing_identities_as_local: true,
        }
    }

    #[test]
    fn every_local_email_identity_form_is_proven_and_wins_over_attributes() {
        for local in [
            identity("email", "contoso.onmicrosoft.com", "a@example.com"),
            identity("emailAddress", "contoso.onmicrosoft.com", "a@example.com"),
            identity("emailAddress2", "contoso.onmicrosoft.com", "a@example.com"),
            identity("federated", "mail", "a@example.com"),
        ] {
            let found = sign_up_email(
                Some(std::slice::from_ref(&local)),
                &[attribute("email", "b@example.com")],
            );
            assert_eq!(found.email.as_deref(), Some("a@example.com"), "{local:?}");
            assert_eq!(found.source, EmailSource::Identity);
            assert_eq!(found.evidence, SignInEvidence::Local);
        }
    }

    #[test]
    fn an_attribute_email_counts_only_beside_a_social_identity() {
        let social = [identity("federated", "Google.com", "1234")];
        for key in ["email", "EmailAddress", "MAIL"] {
            let found = sign_up_email(Some(&social), &[attribute(key, "g@example.com")]);
            assert_eq!(found.email.as_deref(), Some("g@example.com"));
            assert_eq!(found.source, EmailSource::Attribute(key.into()));
            assert_eq!(
                found.evidence,
                SignInEvidence::Federated {
                    provider: "google.com".into()
                }
            );
        }
        let alone = sign_up_email(None, &[attribute("email", "g@example.com")]);
        assert_eq!(alone.email.as_deref(), Some("g@example.com"));
        assert!(
            !super::super::verification::verify(&alone.evidence, None, &policy()).is_verified()
        );
    }

    #[test]
    fn no_email_anywhere_is_missing_and_a_blank_attribute_points_at_its_field() {
        let none = sign_up_email(Some(&[identity("userName", "t", "bob")]), &[]);
        assert_eq!(none.email, None);
        assert_eq!(none.source, EmailSource::Identity);
        let blank = sign_up_email(None, &[attribute("EmailAddress", " ")]);
        assert_eq!(blank.email, None);
        assert_eq!(blank.source, EmailSource::Attribute("EmailAddress".into()));
    }

    #[test]
    fn the_directory_proves_a_local_identity_or_a_social_one_with_the_same_mail() {
        let email = EmailAddress::parse("Casey@Example.com").unwrap();
        let local = [identity("emailAddress", "t", "casey@example.com")];
        assert_eq!(
            directory_evidence(&local, None, &email, &policy()),
            Some(SignInEvidence::Local)
        );
        let social = [
            identity("federated", "facebook.com", "1"),
            identity("federated", "google.com", "2"),
        ];
        assert_eq!(
            directory_evidence(&social, Some("casey@example.com"), &email, &policy()),
            Some(SignInEvidence::Federated {
                provider: "google.com".into()
            })
        );
        assert_eq!(
            directory_evidence(&social, Some("other@example.com"), &email, &policy()),
            None
        );
        let other = [identity("emailAddress", "t", "other@example.com")];
        assert_eq!(
            directory_evidence(&other, Some("casey@example.com"), &email, &policy()),
            None
        );
    }
}
