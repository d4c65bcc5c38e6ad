//! What counts as a verified email (DESIGN section 5), as one pure function.

use super::identity::SignInEvidence;

/// The tenant facts the configuration states about email verification.
#[derive(Debug, Clone)]
pub struct VerificationPolicy {
    /// The tenant's local sign-up keeps "Email Address, Requires verification = Yes".
    pub local_accounts_verify_email: bool,
    /// Social providers (as B2C names them, lower-case) whose email claim counts as verified.
    pub email_verifying_idps: Vec<String>,
    /// Treat a request without `identities` as a local account.
    pub treat_missing_identities_as_local: bool,
}

/// Whether the email of a request is verified, and if not, why (for the audit and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The email was proven by the account that presents it.
    Verified,
    /// A local account, but the configuration says the tenant does not verify local emails.
    LocalNotVerified,
    /// A social provider that is not on the list and sent no explicit verified flag.
    ProviderNotTrusted,
    /// The provider said explicitly that the email is not verified.
    ExplicitlyUnverified,
    /// A sign-in type that proves nothing about an email, or no `identities` when those are not
    /// treated as local.
    UnknownAccountKind,
}

impl Verification {
    /// True only for [`Verification::Verified`].
    pub fn is_verified(self) -> bool {
        self == Verification::Verified
    }
}

/// Decides whether the email is verified. `explicit` is the `emailVerified` flag a custom policy
/// maps from the provider, when present. An explicit `false` always wins: a provider that says
/// the address is unproven is believed even when it is on the trusted list.
pub fn verify(
    evidence: &SignInEvidence,
    explicit: Option<bool>,
    policy: &VerificationPolicy,
) -> Verification {
    if explicit == Some(false) {
        return Verification::ExplicitlyUnverified;
    }
    match evidence {
        SignInEvidence::Local => local(policy),
        SignInEvidence::Missing if policy.treat_missing_identities_as_local => local(policy),
        SignInEvidence::Missing | SignInEvidence::Other { .. } => Verification::UnknownAccountKind,
        SignInEvidence::Federated { provider } => {
            let trusted = policy
                .email_verifying_idps
                .iter()
                .any(|idp| idp.eq_ignore_ascii_case(provider));
            if trusted || explicit == Some(true) {
                Verification::Verified
            } else {
                Verification::ProviderNotTrusted
            }
        }
    }
}

fn local(policy: &VerificationPolicy) -> Verification {
    if policy.local_accounts_verify_email {
        Verification::Verified
    } else {
        Verification::LocalNotVerified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> VerificationPolicy {
        VerificationPolicy {
            local_accounts_verify_email: true,
            email_verifying_idps: vec!["google.com".into()],
            treat_missing_identities_as_local: true,
        }
    }

    fn social(provider: &str) -> SignInEvidence {
        SignInEvidence::Federated {
            provider: provider.into(),
        }
    }

    #[test]
    fn local_accounts_are_verified_when_the_tenant_requires_verification() {
        assert!(verify(&SignInEvidence::Local, None, &policy()).is_verified());
    }

    #[test]
    fn local_accounts_are_not_verified_when_the_tenant_does_not_verify() {
        let policy = VerificationPolicy {
            local_accounts_verify_email: false,
            ..policy()
        };
        assert_eq!(
            verify(&SignInEvidence::Local, None, &policy),
            Verification::LocalNotVerified
        );
    }

    #[test]
    fn a_trusted_provider_is_verified() {
        assert!(verify(&social("google.com"), None, &policy()).is_verified());
    }

    #[test]
    fn an_untrusted_provider_is_not_verified() {
        assert_eq!(
            verify(&social("facebook.com"), None, &policy()),
            Verification::ProviderNotTrusted
        );
    }

    #[test]
    fn an_explicit_flag_verifies_an_untrusted_provider() {
        assert!(verify(&social("facebook.com"), Some(true), &policy()).is_verified());
    }

    #[test]
    fn an_explicit_false_wins_over_the_trusted_list() {
        assert_eq!(
            verify(&social("google.com"), Some(false), &policy()),
            Verification::ExplicitlyUnverified
        );
    }

    #[test]
    fn missing_identities_count_as_local_only_while_configured() {
        assert!(verify(&SignInEvidence::Missing, None, &policy()).is_verified());
        let strict = VerificationPolicy {
            treat_missing_identities_as_local: false,
            ..policy()
        };
        assert_eq!(
            verify(&SignInEvidence::Missing, None, &strict),
            Verification::UnknownAccountKind
        );
    }

    #[test]
    fn a_user_name_account_proves_nothing() {
        let evidence = SignInEvidence::Other {
            sign_in_type: "userName".into(),
        };
        assert_eq!(
            verify(&evidence, None, &policy()),
            Verification::UnknownAccountKind
        );
    }
}
