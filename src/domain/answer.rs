//! What the linking service answers: an outcome with the customer's account number, or a
//! refusal. Every wire format translates these, and the metrics count them.

use super::Refusal;

/// What happened (or, for checks and previews, what would happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The identity was linked to an existing customer.
    Linked,
    /// A customer was created and the identity linked to it.
    Created,
    /// The identity was linked already.
    AlreadyLinked,
    /// A check: the identity would be linked to an existing customer.
    WouldLink,
    /// A check: a customer would be created.
    WouldCreate,
}

impl Outcome {
    /// The name sent to B2C and written to the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Linked => "Linked",
            Outcome::Created => "Created",
            Outcome::AlreadyLinked => "AlreadyLinked",
            Outcome::WouldLink => "WouldLink",
            Outcome::WouldCreate => "WouldCreate",
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// What happened.
    pub outcome: Outcome,
    /// The customer account number (absent for `WouldCreate`).
    pub account_number: Option<String>,
    /// The channel id.
    pub channel: String,
}

/// The linking's answer: a resolution or a refusal. Storage failures are the `Err` of the outer
/// `Result` of each method.
pub type Answer = Result<Resolution, Refusal>;
