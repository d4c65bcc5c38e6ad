//! The linking rules of DESIGN section 1 as one pure function.
//!
//! The linking service gathers the facts (the channel, whether the email is verified, the identity's
//! existing link, the candidates) and [`decide`] says what to do. No wire format re-implements any
//! part of this; they all come here.

use super::channel::{Channel, CustomerType};
use super::refusal::Refusal;

/// A customer record that matches the identity's email on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Database id of the customer.
    pub customer_id: i64,
    /// The customer account number.
    pub account_number: String,
    /// The customer already holds active identities that were linked under a different email than
    /// the one matching now (its primary email changed since): the unexpired-email-change guard.
    pub has_links_under_other_email: bool,
}

/// The customer an identity is already linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingLink {
    /// Database id of the customer.
    pub customer_id: i64,
    /// The customer account number.
    pub account_number: String,
}

/// Everything the rules look at.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The request's channel.
    pub channel: &'a Channel,
    /// The environment-wide linking switch.
    pub linking_enabled: bool,
    /// Whether an existing link may be joined although the customer's email changed since its
    /// identities were linked (`linking.allow_link_after_email_change`).
    pub allow_link_after_email_change: bool,
    /// Whether the email is verified (DESIGN section 5).
    pub email_verified: bool,
    /// The identity's active link, when it has one and the request names the identity.
    pub existing_link: Option<ExistingLink>,
    /// The candidates: person customers of the channel's legal entity with this email
    /// (and `is_b2b` on a B2B channel).
    pub candidates: &'a [Candidate],
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The identity is linked already: answer with that customer, change nothing.
    AlreadyLinked(ExistingLink),
    /// Link the identity to this candidate.
    Link {
        /// Database id of the customer.
        customer_id: i64,
        /// The customer account number.
        account_number: String,
    },
    /// Create a new person customer (not B2B) with the verified email and link to it.
    Create,
    /// Refuse.
    Refuse(Refusal),
}

/// Applies the rules. The order matters and is part of the contract:
/// 1. an identity that is already linked resolves to its customer, whatever the email says now;
/// 2. an unverified email never links and never creates;
/// 3. with linking off: B2C creates, B2B refuses `CommerceIdentityNotFound`;
/// 4. the table: one candidate links (unless its identities were linked under another email),
///    none creates (B2C) or refuses (B2B), several refuse on both.
pub fn decide(facts: &Facts<'_>) -> Decision {
    if let Some(link) = &facts.existing_link {
        return Decision::AlreadyLinked(link.clone());
    }
    if !facts.email_verified {
        return Decision::Refuse(Refusal::EmailNotVerified);
    }
    let b2c = facts.channel.customer_type == CustomerType::B2C;
    if !facts.channel.linking_enabled(facts.linking_enabled) {
        return if b2c {
            Decision::Create
        } else {
            Decision::Refuse(Refusal::CommerceIdentityNotFound)
        };
    }
    match facts.candidates {
        [] if b2c => Decision::Create,
        [] => Decision::Refuse(Refusal::CommerceIdentityNotFound),
        [one] if one.has_links_under_other_email && !facts.allow_link_after_email_change => {
            Decision::Refuse(Refusal::LinkRequiresReview)
        }
        [one] => Decision::Link {
            customer_id: one.customer_id,
            account_number: one.account_number.clone(),
        },
        _ => Decision::Refuse(Refusal::MultipleAccounts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(customer_type: CustomerType) -> Channel {
        Channel {
            id: "web".into(),
            legal_entity: "USRT".into(),
            customer_type,
            client_ids: vec![],
            linking_enabled: None,
        }
    }

    fn candidate(id: i64) -> Candidate {
        Candidate {
            customer_id: id,
            account_number: format!("C{id:04}"),
            has_links_under_other_email: false,
        }
    }

    fn facts<'a>(channel: &'a Channel, candidates: &'a [Candidate]) -> Facts<'a> {
        Facts {
            channel,
            linking_enabled: true,
            allow_link_after_email_change: false,
            email_verified: true,
            existing_link: None,
            candidates,
        }
    }

    fn link(id: i64) -> Decision {
        Decision::Link {
            customer_id: id,
            account_number: format!("C{id:04}"),
        }
    }

    #[test]
    fn b2b_with_exactly_one_candidate_links_to_it() {
        let ch = channel(CustomerType::B2B);
        assert_eq!(decide(&facts(&ch, &[candidate(1)])), link(1));
    }

    #[test]
    fn b2b_with_no_candidate_refuses_commerce_identity_not_found() {
        let ch = channel(CustomerType::B2B);
        assert_eq!(
            decide(&facts(&ch, &[])),
            Decision::Refuse(Refusal::CommerceIdentityNotFound)
        );
    }

    #[test]
    fn b2b_with_several_candidates_refuses_multiple_accounts() {
        let ch = channel(CustomerType::B2B);
        assert_eq!(
            decide(&facts(&ch, &[candidate(1), candidate(2)])),
            Decision::Refuse(Refusal::MultipleAccounts)
        );
    }

    #[test]
    fn b2c_with_exactly_one_candidate_links_to_it() {
        let ch = channel(CustomerType::B2C);
        assert_eq!(decide(&facts(&ch, &[candidate(7)])), link(7));
    }

    #[test]
    fn b2c_with_no_candidate_creates_a_customer() {
        let ch = channel(CustomerType::B2C);
        assert_eq!(decide(&facts(&ch, &[])), Decision::Create);
    }

    #[test]
    fn b2c_with_several_candidates_refuses_multiple_accounts() {
        let ch = channel(CustomerType::B2C);
        assert_eq!(
            decide(&facts(&ch, &[candidate(1), candidate(2), candidate(3)])),
            Decision::Refuse(Refusal::MultipleAccounts)
        );
    }

    #[test]
    fn an_already_linked_identity_resolves_whatever_the_email_says() {
        for customer_type in [CustomerType::B2B, CustomerType::B2C] {
            let ch = channel(customer_type);
            let existing = ExistingLink {
                customer_id: 9,
                account_number: "C0009".into(),
            };
            let cands = [candidate(1), candidate(2)];
            let mut f = facts(&ch, &cands);
            f.existing_link = Some(existing.clone());
            f.email_verified = false;
            f.linking_enabled = false;
            assert_eq!(decide(&f), Decision::AlreadyLinked(existing));
        }
    }

    #[test]
    fn an_unverified_email_never_links_and_never_creates() {
        for customer_type in [CustomerType::B2B, CustomerType::B2C] {
            let ch = channel(customer_type);
            for cands in [vec![], vec![candidate(1)], vec![candidate(1), candidate(2)]] {
                let mut f = facts(&ch, &cands);
                f.email_verified = false;
                assert_eq!(decide(&f), Decision::Refuse(Refusal::EmailNotVerified));
                f.linking_enabled = false;
                assert_eq!(decide(&f), Decision::Refuse(Refusal::EmailNotVerified));
            }
        }
    }

    #[test]
    fn with_the_switch_off_b2c_creates_for_every_new_identity() {
        let ch = channel(CustomerType::B2C);
        let cands = [candidate(1)];
        let mut f = facts(&ch, &cands);
        f.linking_enabled = false;
        assert_eq!(decide(&f), Decision::Create);
    }

    #[test]
    fn with_the_switch_off_b2b_refuses_commerce_identity_not_found() {
        let ch = channel(CustomerType::B2B);
        let cands = [candidate(1)];
        let mut f = facts(&ch, &cands);
        f.linking_enabled = false;
        assert_eq!(
            decide(&f),
            Decision::Refuse(Refusal::CommerceIdentityNotFound)
        );
    }

    #[test]
    fn a_channel_override_turns_linking_off_for_that_channel_only() {
        let mut ch = channel(CustomerType::B2C);
        ch.linking_enabled = Some(false);
        let cands = [candidate(1)];
        assert_eq!(decide(&facts(&ch, &cands)), Decision::Create);
    }

    #[test]
    fn a_channel_override_turns_linking_on_against_the_switch() {
        let mut ch = channel(CustomerType::B2B);
        ch.linking_enabled = Some(true);
        let cands = [candidate(1)];
        let mut f = facts(&ch, &cands);
        f.linking_enabled = false;
        assert_eq!(decide(&f), link(1));
    }

    #[test]
    fn a_candidate_linked_under_another_email_requires_review() {
        for customer_type in [CustomerType::B2B, CustomerType::B2C] {
            let ch = channel(customer_type);
            let cands = [Candidate {
                has_links_under_other_email: true,
                ..candidate(1)
            }];
            assert_eq!(
                decide(&facts(&ch, &cands)),
                Decision::Refuse(Refusal::LinkRequiresReview)
            );
            let mut f = facts(&ch, &cands);
            f.allow_link_after_email_change = true;
            assert_eq!(decide(&f), link(1));
        }
    }
}
