//! Refusals: every reason the service says no, with the names and codes callers see.
//!
//! The two Commerce refusals keep Dynamics 365 Commerce's error names and codes so a site's
//! notification module can map them; the others are this product's own.

/// A reason to refuse a request. Its [`code`](Refusal::code) is stable: it is what B2C, the audit
/// and sites see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// B2B channel, no candidate (or linking off on a B2B channel).
    CommerceIdentityNotFound,
    /// More than one candidate.
    MultipleAccounts,
    /// The email is not verified (DESIGN section 5).
    EmailNotVerified,
    /// The client id maps to no channel and there is no default channel.
    UnknownChannel,
    /// The one candidate holds identities linked under another email: an administrator decides.
    LinkRequiresReview,
    /// The email claim is missing.
    EmailMissing,
    /// The email claim is not an email address.
    InvalidEmail,
    /// The token step arrived without the user's object id.
    ObjectIdMissing,
    /// The request is not a request this endpoint understands (JSON, content type, size, step).
    InvalidRequest,
    /// The database could not be reached in time; nothing was linked.
    ServiceUnavailable,
}

impl Refusal {
    /// Every refusal, for tests and documentation.
    pub const ALL: [Refusal; 10] = [
        Refusal::CommerceIdentityNotFound,
        Refusal::MultipleAccounts,
        Refusal::EmailNotVerified,
        Refusal::UnknownChannel,
        Refusal::LinkRequiresReview,
        Refusal::EmailMissing,
        Refusal::InvalidEmail,
        Refusal::ObjectIdMissing,
        Refusal::InvalidRequest,
        Refusal::ServiceUnavailable,
    ];

    /// The stable code sent to B2C (`code`, `extension_AutoLinkError`) and written to the audit.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::CommerceIdentityNotFound => "Microsoft_Dynamics_CommerceIdentityNotFound",
            Refusal::MultipleAccounts => {
                "Microsoft_Dynamics_Commerce_Runtime_MultipleCustomerAccountsFoundWithSameEmailAddress"
            }
            Refusal::EmailNotVerified => "EmailNotVerified",
            Refusal::UnknownChannel => "UnknownChannel",
            Refusal::LinkRequiresReview => "LinkRequiresReview",
            Refusal::EmailMissing => "EmailMissing",
            Refusal::InvalidEmail => "InvalidEmail",
            Refusal::ObjectIdMissing => "ObjectIdMissing",
            Refusal::InvalidRequest => "InvalidRequest",
            Refusal::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The error name (Commerce's error resource name for the two Commerce refusals).
    pub fn error_name(self) -> &'static str {
        match self {
            Refusal::CommerceIdentityNotFound => "CommerceIdentityNotFound",
            Refusal::MultipleAccounts => {
                "CustomerServiceMultipleCustomerAccountsFoundErrorOccurredWhenAutoLinking"
            }
            other => other.code(),
        }
    }

    /// Whether the user can fix it by changing what they typed on the sign-up page; such refusals
    /// are answered as a validation error where the step allows one, the rest as a block page.
    pub fn user_can_fix(self) -> bool {
        matches!(
            self,
            Refusal::CommerceIdentityNotFound | Refusal::EmailMissing | Refusal::InvalidEmail
        )
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commerce_refusals_keep_commerce_names_and_codes() {
        assert_eq!(
            Refusal::CommerceIdentityNotFound.code(),
            "Microsoft_Dynamics_CommerceIdentityNotFound"
        );
        assert_eq!(
            Refusal::CommerceIdentityNotFound.error_name(),
            "CommerceIdentityNotFound"
        );
        assert_eq!(
            Refusal::MultipleAccounts.code(),
            "Microsoft_Dynamics_Commerce_Runtime_MultipleCustomerAccountsFoundWithSameEmailAddress"
        );
        assert_eq!(
            Refusal::MultipleAccounts.error_name(),
            "CustomerServiceMultipleCustomerAccountsFoundErrorOccurredWhenAutoLinking"
        );
    }

    #[test]
    fn codes_are_unique() {
        let codes: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Refusal::ALL.len());
    }
}
