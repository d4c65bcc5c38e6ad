//! The duplicate report of a legal entity, so stores fix their data before customers hit the
//! multiple-accounts error.
//!
//! - **Duplicates** are emails shared by several active person records of the legal entity under
//!   the one comparison rule (DESIGN section 4, so case variants are duplicates): a sign-up with
//!   that email fails with the multiple-accounts error on the channels listed in `failsOn` (all
//!   the legal entity's B2C channels; its B2B channels when several of the records are B2B).
//! - **Near-duplicates** are different emails that become equal once `+tags` and dots are removed
//!   from the local part and Unicode look-alikes are folded (NFKC, then the UTS #39 confusable
//!   skeleton). They never fail a sign-up, because the matcher does not fold them; they are
//!   warnings that one person may hold several records.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use utoipa::ToSchema;

use super::{invalid_from, required, Admin, AdminResult};
use crate::domain::{CustomerType, LegalEntity};
use crate::storage::customers::{self, PersonEmail};

/// The report.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateReport {
    /// The legal entity.
    pub legal_entity: String,
    /// Emails that make sign-ups fail with the multiple-accounts error.
    pub duplicates: Vec<DuplicateGroup>,
    /// Emails that are different mailboxes to the matcher but look like one person's.
    pub near_duplicates: Vec<NearDuplicateGroup>,
}

/// Records sharing one email.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateGroup {
    /// The normalised email.
    pub email_key: String,
    /// The channels (ids) on which a sign-up with this email is refused.
    pub fails_on: Vec<String>,
    /// The records, by account number.
    pub customers: Vec<DuplicateMember>,
}

/// Records whose emails differ but fold to the same mailbox.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NearDuplicateGroup {
    /// The folded form they share.
    pub folded: String,
    /// What makes them differ: `plus_tag`, `dots`, `lookalike`.
    pub reasons: Vec<String>,
    /// The records, by account number.
    pub customers: Vec<DuplicateMember>,
}

/// One record of a group.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateMember {
    /// The account number.
    pub account_number: String,
    /// The primary email as stored.
    pub primary_email: String,
    /// Whether the record is B2B.
    pub is_b2b: bool,
}

/// The channels of a legal entity on which linking applies, by customer type.
struct EntityChannels {
    b2c: Vec<String>,
    b2b: Vec<String>,
}

impl Admin {
    /// The duplicate report of a legal entity.
    pub fn duplicates(&self, legal_entity: Option<&str>) -> AdminResult<DuplicateReport> {
        let legal_entity = LegalEntity::parse(required("legalEntity", legal_entity)?)
            .map_err(|m| invalid_from("legalEntity", &m))?;
        let mut channels = EntityChannels {
            b2c: Vec::new(),
            b2b: Vec::new(),
        };
        let environment_switch = self.linking.linking_enabled();
        for channel in self.linking.channels().all() {
            // With linking off a channel never looks for candidates, so it never fails on them.
            if channel.legal_entity != legal_entity.as_str()
                || !channel.linking_enabled(environment_switch)
            {
                continue;
            }
            match channel.customer_type {
                CustomerType::B2C => channels.b2c.push(channel.id.clone()),
                CustomerType::B2B => channels.b2b.push(channel.id.clone()),
            }
        }
        let mut conn = self.conn()?;
        let persons = customers::persons_with_email(&mut conn, legal_entity.as_str())?;
        Ok(report(legal_entity.as_str(), &persons, &channels))
    }
}

fn report(
    legal_entity: &str,
    persons: &[PersonEmail],
    channels: &EntityChannels,
) -> DuplicateReport {
    let mut by_key: BTreeMap<&str, Vec<&PersonEmail>> = BTreeMap::new();
    for person in persons {
        by_key.entry(&person.email_key).or_default().push(person);
    }
    let mut duplicates = Vec::new();
    for (key, members) in &by_key {
        if members.len() < 2 {
            continue;
        }
        let mut fails_on = channels.b2c.clone();
        if members.iter().filter(|m| m.is_b2b).count() > 1 {
            fails_on.extend(channels.b2b.iter().cloned());
        }
        duplicates.push(DuplicateGroup {
            email_key: key.to_string(),
            fails_on,
            customers: members.iter().map(|m| member(m)).collect(),
        });
    }

    // Near-duplicates: distinct keys that share a folded form.
    let mut by_folded: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for key in by_key.keys() {
        by_folded.entry(fold(key).folded).or_default().push(key);
    }
    let mut near_duplicates = Vec::new();
    for (folded, keys) in by_folded {
        if keys.len() < 2 {
            continue;
        }
        let mut reasons = BTreeSet::new();
        let mut without_tags_and_dots = BTreeSet::new();
        for key in &keys {
            let steps = fold(key);
            if steps.untagged != *key {
                reasons.insert("plus_tag");
            }
            if steps.undotted != steps.untagged {
                reasons.insert("dots");
            }
            without_tags_and_dots.insert(steps.undotted);
        }
        if without_tags_and_dots.len() > 1 {
            reasons.insert("lookalike");
        }
        let mut customers: Vec<DuplicateMember> = keys
            .iter()
            .flat_map(|key| by_key[key].iter().map(|m| member(m)))
            .collect();
        customers.sort_by(|a, b| a.account_number.cmp(&b.account_number));
        near_duplicates.push(NearDuplicateGroup {
            folded,
            reasons: reasons.into_iter().map(str::to_string).collect(),
            customers,
        });
    }
    DuplicateReport {
        legal_entity: legal_entity.to_string(),
        duplicates,
        near_duplicates,
    }
}

fn member(person: &PersonEmail) -> DuplicateMember {
    DuplicateMember {
        account_number: person.account_number.clone(),
        primary_email: person.primary_email.clone(),
        is_b2b: person.is_b2b,
    }
}

/// The folding steps of a normalised key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Folded {
    /// Without the `+tag` of the local part.
    untagged: String,
    /// Also without dots in the local part.
    undotted: String,
    /// Also NFKC, lower-case and the confusable skeleton (local part and Unicode domain).
    folded: String,
}

/// Folds a normalised email key for the near-duplicate report. Never used for matching.
fn fold(key: &str) -> Folded {
    let (local, domain) = key.rsplit_once('@').unwrap_or((key, ""));
    let untagged_local = local.split_once('+').map_or(local, |(base, _)| base);
    let untagged_local = if untagged_local.is_empty() {
        local
    } else {
        untagged_local
    };
    let undotted_local: String = untagged_local.chars().filter(|c| *c != '.').collect();
    let (unicode_domain, _) = idna::domain_to_unicode(domain);
    let folded = format!(
        "{}@{}",
        look_alike_form(&undotted_local),
        look_alike_form(&unicode_domain)
    );
    Folded {
        untagged: format!("{untagged_local}@{domain}"),
        undotted: format!("{undotted_local}@{domain}"),
        folded,
    }
}

/// NFKC, lower-case, then the UTS #39 skeleton (which maps confusables to one prototype), then
/// NFC so the result is readable.
fn look_alike_form(text: &str) -> String {
    let compatible: String = text.nfkc().collect::<String>().to_lowercase();
    let skeleton: String = unicode_security::skeleton(&compatible).collect();
    skeleton.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(number: &str, email: &str, b2b: bool) -> PersonEmail {
        let address = crate::domain::EmailAddress::parse(email).unwrap();
        PersonEmail {
            account_number: number.into(),
            is_b2b: b2b,
            primary_email: address.as_str().into(),
            email_key: address.key().into(),
        }
    }

    fn channels() -> EntityChannels {
        EntityChannels {
            b2c: vec!["web".into()],
            b2b: vec!["b2b".into()],
        }
    }

    #[test]
    fn an_email_on_two_person_records_fails_on_b2c_and_on_b2b_only_when_both_are_b2b() {
        let persons = [
            person("C-1", "Ana@Example.com", false),
            person("C-2", "ana@example.com", true),
            person("C-3", "bo@example.com", true),
            person("C-4", "bo@example.com", true),
        ];
        let report = report("USRT", &persons, &channels());
        assert_eq!(report.duplicates.len(), 2);
        assert_eq!(report.duplicates[0].email_key, "ana@example.com");
        assert_eq!(report.duplicates[0].fails_on, vec!["web"]);
        assert_eq!(report.duplicates[1].fails_on, vec!["web", "b2b"]);
        assert!(report.near_duplicates.is_empty());
    }

    #[test]
    fn dots_tags_and_look_alikes_are_near_duplicates_with_their_reasons() {
        let persons = [
            person("C-1", "john.smith@gmail.com", false),
            person("C-2", "johnsmith+shop@gmail.com", false),
            // Cyrillic "о" in place of the Latin "o".
            person("C-3", "j\u{43e}hnsmith@gmail.com", false),
            person("C-4", "someone@example.com", false),
        ];
        let report = report("USRT", &persons, &channels());
        assert!(report.duplicates.is_empty());
        assert_eq!(report.near_duplicates.len(), 1, "{report:?}");
        let group = &report.near_duplicates[0];
        let numbers: Vec<&str> = group
            .customers
            .iter()
            .map(|c| c.account_number.as_str())
            .collect();
        assert_eq!(numbers, vec!["C-1", "C-2", "C-3"]);
        assert_eq!(group.reasons, vec!["dots", "lookalike", "plus_tag"]);
    }

    #[test]
    fn fullwidth_letters_and_unicode_domains_fold_to_their_look_alikes() {
        assert_eq!(
            fold("\u{ff41}na@example.com").folded,
            fold("ana@example.com").folded
        );
        // "exаmple.com" with a Cyrillic "а", stored in its ASCII (punycode) form.
        let spoofed = crate::domain::EmailAddress::parse("ana@ex\u{430}mple.com").unwrap();
        assert_eq!(fold(spoofed.key()).folded, fold("ana@example.com").folded);
        assert_ne!(
            fold("ana@example.com").folded,
            fold("bob@example.com").folded
        );
    }
}
