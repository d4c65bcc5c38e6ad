//! The JSON body of every error answer that is not one of B2C's wire formats: the admin API's
//! errors, and the 401, 404, 405, 408 and 429 of every endpoint. B2C's own refusals (block pages,
//! validation errors, the REST profiles' 409) have the shapes of [`super::connector`] and
//! [`super::rest`].

use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: a stable code, the field at fault (only when one is), and a message for a
/// person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_field`, `not_found`, `unauthorized`, `account_number_exists`,
    /// `link_inactive`, `customer_inactive`, `same_customer`, `prospect_pending`,
    /// `prospect_not_pending`, `customer_exists`, `duplicate_email`, `conflict`,
    /// `unsupported_media_type`, `payload_too_large`, `request_timeout`, `too_many_requests`,
    /// `method_not_allowed`, `unavailable`.
    pub error: String,
    /// The field concerned (JSON key, query parameter, path parameter or header), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl ErrorBody {
    /// An error that concerns no field.
    pub fn new(error: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.to_string(),
            field: None,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_left_out_when_no_field_is_at_fault() {
        let plain = serde_json::to_string(&ErrorBody::new("unauthorized", "no")).unwrap();
        assert_eq!(plain, r#"{"error":"unauthorized","message":"no"}"#);
        let field = ErrorBody {
            field: Some("email".into()),
            ..ErrorBody::new("invalid_field", "email: no")
        };
        assert_eq!(
            serde_json::to_string(&field).unwrap(),
            r#"{"error":"invalid_field","field":"email","message":"email: no"}"#
        );
    }
}
