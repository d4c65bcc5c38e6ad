//! The product's own vocabulary: emails, identities, channels, refusals and the linking rules.
//!
//! Everything here is pure: no I/O, no database, no HTTP. Every wire format parses its input into
//! these types and asks [`rules::decide`] what to do.

pub mod answer;
pub mod channel;
pub mod customer;
pub mod email;
pub mod entra_signup;
pub mod identity;
pub mod refusal;
pub mod rules;
pub mod verification;

pub use answer::{Answer, Outcome, Resolution};
pub use channel::{Channel, ChannelDirectory, CustomerType};
pub use customer::{AccountNumber, LegalEntity, PartyType};
pub use email::{EmailAddress, EmailError};
pub use identity::{Identity, SignInEvidence};
pub use refusal::Refusal;
pub use rules::{Candidate, Decision, Facts};
