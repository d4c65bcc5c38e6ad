//! Which email a user of the export proved, and what kind of account proves it, as at sign-up:
//! a local email identity (`signInType` `emailAddress`, or `federated` with issuer `mail`)
//! proves its `issuerAssignedId`; otherwise a social identity (an allow-listed provider
//! preferred) vouches for `mail`, else `otherMails[0]`, and the configured policy
//! ([`crate::domain::verification::verify`], applied by the linking service) decides whether
//! that provider's word counts. Anything else (`userName`, `userPrincipalName` only, no
//! `identities`) proves nothing: the linking service refuses it `EmailNotVerified`.

use super::graph::GraphUser;
use crate::domain::entra_signup::ObjectIdentity;
use crate::domain::SignInEvidence;

/// The sign-in type recorded for a user whose identities prove no email.
pub const NO_PROOF: &str = "none";

/// The email of a user and what vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The address as exported, when there is one.
    pub email: Option<String>,
    /// What kind of account vouches for it.
    pub evidence: SignInEvidence,
}

/// Reads what `user` proves; `email_verifying_idps` only chooses among several social identities
/// (the linking service applies the policy).
pub fn proof(user: &GraphUser, email_verifying_idps: &[String]) -> Proof {
    let identities: Vec<ObjectIdentity> = user
        .identities
        .iter()
        .flatten()
        .map(|i| ObjectIdentity {
            sign_in_type: i.sign_in_type.clone().unwrap_or_default(),
            issuer: i.issuer.clone().unwrap_or_default(),
            issuer_assigned_id: i.issuer_assigned_id.clone().unwrap_or_default(),
        })
        .collect();
    if let Some(local) = identities
        .iter()
        .find(|i| i.is_local_email() && !i.issuer_assigned_id.trim().is_empty())
    {
        return Proof {
            email: Some(local.issuer_assigned_id.clone()),
            evidence: SignInEvidence::Local,
        };
    }
    let mailbox = user
        .mail
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| user.other_mails.iter().flatten().next().cloned())
        .filter(|m| !m.trim().is_empty());
    let providers: Vec<String> = identities
        .iter()
        .filter_map(ObjectIdentity::social_provider)
        .collect();
    let trusted = providers.iter().find(|provider| {
        email_verifying_idps
            .iter()
            .any(|idp| idp.eq_ignore_ascii_case(provider))
    });
    let evidence = match trusted.or(providers.first()) {
        Some(provider) => SignInEvidence::Federated {
            provider: provider.clone(),
        },
        None => SignInEvidence::Other {
            sign_in_type: identities
                .iter()
                .map(|i| i.sign_in_type.trim())
                .find(|kind| !kind.is_empty() && !kind.eq_ignore_ascii_case("userPrincipalName"))
                .unwrap_or(NO_PROOF)
                .to_string(),
        },
    };
    Proof {
        email: mailbox,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::graph::ObjectIdentity as Exported;

    fn identity(kind: &str, issuer: &str, id: &str) -> Exported {
        Exported {
            sign_in_type: Some(kind.into()),
            issuer: Some(issuer.into()),
            issuer_assigned_id: Some(id.into()),
        }
    }

    fn user(identities: Vec<Exported>, mail: Option<&str>, other: &[&str]) -> GraphUser {
        GraphUser {
            id: Some("u".into()),
            mail: mail.map(Into::into),
            other_mails: Some(other.iter().map(|m| m.to_string()).collect()),
            identities: Some(identities),
            ..GraphUser::default()
        }
    }

    fn idps() -> Vec<String> {
        vec!["google.com".into()]
    }

    #[test]
    fn a_local_email_identity_proves_its_sign_in_name_not_mail() {
        let u = user(
            vec![
                identity(
                    "userPrincipalName",
                    "t.onmicrosoft.com",
                    "x@t.onmicrosoft.com",
                ),
                identity("emailAddress", "t.onmicrosoft.com", "Local@Example.com"),
            ],
            Some("other@example.com"),
            &[],
        );
        let p = proof(&u, &idps());
        assert_eq!(p.email.as_deref(), Some("Local@Example.com"));
        assert_eq!(p.evidence, SignInEvidence::Local);
    }

    #[test]
    fn an_email_one_time_code_identity_is_local() {
        let u = user(
            vec![identity("federated", "mail", "otp@example.com")],
            None,
            &[],
        );
        let p = proof(&u, &idps());
        assert_eq!(p.email.as_deref(), Some("otp@example.com"));
        assert_eq!(p.evidence, SignInEvidence::Local);
    }

    #[test]
    fn a_social_identity_vouches_for_mail_else_the_first_other_mail() {
        let google = identity("federated", "google.com", "1234");
        let p = proof(
            &user(vec![google.clone()], None, &["g@example.com"]),
            &idps(),
        );
        assert_eq!(p.email.as_deref(), Some("g@example.com"));
        assert_eq!(
            p.evidence,
            SignInEvidence::Federated {
                provider: "google.com".into()
            }
        );
        let p = proof(
            &user(vec![google], Some("m@example.com"), &["g@example.com"]),
            &idps(),
        );
        assert_eq!(p.email.as_deref(), Some("m@example.com"));
    }

    #[test]
    fn an_allow_listed_provider_is_preferred_among_several() {
        let u = user(
            vec![
                identity("federated", "facebook.com", "1"),
                identity("federated", "Google.com", "2"),
            ],
            Some("s@example.com"),
            &[],
        );
        assert_eq!(
            proof(&u, &idps()).evidence,
            SignInEvidence::Federated {
                provider: "google.com".into()
            }
        );
        assert_eq!(
            proof(&u, &[]).evidence,
            SignInEvidence::Federated {
                provider: "facebook.com".into()
            }
        );
    }

    #[test]
    fn user_names_and_missing_identities_prove_nothing() {
        let u = user(
            vec![identity("userName", "t.onmicrosoft.com", "jsmith")],
            Some("j@example.com"),
            &[],
        );
        let p = proof(&u, &idps());
        assert_eq!(p.email.as_deref(), Some("j@example.com"));
        assert_eq!(
            p.evidence,
            SignInEvidence::Other {
                sign_in_type: "userName".into()
            }
        );
        let mut bare = user(Vec::new(), Some("j@example.com"), &[]);
        bare.identities = None;
        assert_eq!(
            proof(&bare, &idps()).evidence,
            SignInEvidence::Other {
                sign_in_type: NO_PROOF.into()
            }
        );
    }

    #[test]
    fn no_address_anywhere_is_no_email() {
        let u = user(
            vec![identity("federated", "google.com", "1")],
            Some(" "),
            &[],
        );
        assert_eq!(proof(&u, &idps()).email, None);
    }
}
