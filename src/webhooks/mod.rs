//! Telling the store what changed: events written to an outbox in the transaction of the change
//! ([`crate::storage::webhooks`]), delivered to the `[[webhooks]]` endpoints as the Standard
//! Webhooks specification says ([`dispatcher`]), and readable as a feed
//! (`GET /admin/v1/events`).
//!
//! - a decision `Created` emits `customer.created` and `identity.linked`, `Linked` emits
//!   `identity.linked`; nothing else a decision answers emits anything;
//! - an administrator's unlink emits `identity.unlinked`, a move `identity.moved`, a customer
//!   created through the admin API or a prospect's approval `customer.created`.
//!
//! Delivery is at least once: an event is delivered again (with the same `webhook-id`) when an
//! instance stops between sending it and recording the answer.

pub mod dispatcher;
mod signature;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use signature::{sign, Secret};

use crate::config::webhooks::WebhookSettings;
use crate::storage::{webhooks as store, DbConn, StorageError};

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A customer was created (by a decision, an administrator or a prospect's approval).
    CustomerCreated,
    /// An identity was linked to a customer by a decision.
    IdentityLinked,
    /// An administrator removed a link.
    IdentityUnlinked,
    /// An administrator moved a link to another customer.
    IdentityMoved,
}

impl EventType {
    /// Every kind.
    pub const ALL: [EventType; 4] = [
        EventType::CustomerCreated,
        EventType::IdentityLinked,
        EventType::IdentityUnlinked,
        EventType::IdentityMoved,
    ];

    /// The `type` of the body.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CustomerCreated => "customer.created",
            EventType::IdentityLinked => "identity.linked",
            EventType::IdentityUnlinked => "identity.unlinked",
            EventType::IdentityMoved => "identity.moved",
        }
    }

    /// The kind named `name`, exactly.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// An event to write with the change it tells of.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its kind.
    pub kind: EventType,
    /// The body's `data`: only the fields that apply (never null).
    pub data: Map<String, Value>,
    /// The email concerned, for endpoints with `include_email`.
    pub email: Option<String>,
}

/// The identity and link an event names.
pub struct LinkFacts<'a> {
    /// The customer's account number.
    pub account_number: &'a str,
    /// Identity issuer.
    pub issuer: &'a str,
    /// Identity subject.
    pub subject: &'a str,
    /// The link's id.
    pub link_id: i64,
}

impl Event {
    fn new(kind: EventType, fields: Vec<(&str, Option<Value>)>, email: Option<&str>) -> Event {
        let data = fields
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value?)))
            .collect();
        Event {
            kind,
            data,
            email: email.map(str::to_string),
        }
    }

    /// `customer.created`; `channel` when a decision created it.
    pub fn customer_created(
        account_number: &str,
        legal_entity: &str,
        origin: &str,
        channel: Option<&str>,
        email: Option<&str>,
    ) -> Event {
        Event::new(
            EventType::CustomerCreated,
            vec![
                ("accountNumber", Some(account_number.into())),
                ("legalEntity", Some(legal_entity.into())),
                ("origin", Some(origin.into())),
                ("channel", channel.map(Value::from)),
            ],
            email,
        )
    }

    /// `identity.linked` by a decision (`outcome` `Linked` or `Created`).
    pub fn identity_linked(
        link: &LinkFacts<'_>,
        legal_entity: &str,
        channel: &str,
        outcome: &str,
        email: Option<&str>,
    ) -> Event {
        Event::new(
            EventType::IdentityLinked,
            vec![
                ("accountNumber", Some(link.account_number.into())),
                ("legalEntity", Some(legal_entity.into())),
                ("channel", Some(channel.into())),
                ("issuer", Some(link.issuer.into())),
                ("subject", Some(link.subject.into())),
                ("linkId", Some(link.link_id.into())),
                ("outcome", Some(outcome.into())),
            ],
            email,
        )
    }

    /// `identity.unlinked` by an administrator.
    pub fn identity_unlinked(link: &LinkFacts<'_>, reason: Option<&str>) -> Event {
        Event::new(
            EventType::IdentityUnlinked,
            vec![
                ("accountNumber", Some(link.account_number.into())),
                ("issuer", Some(link.issuer.into())),
                ("subject", Some(link.subject.into())),
                ("linkId", Some(link.link_id.into())),
                ("reason", reason.map(Value::from)),
            ],
            None,
        )
    }

    /// `identity.moved` by an administrator: `link` is the new link.
    pub fn identity_moved(
        from_account_number: &str,
        previous_link_id: i64,
        link: &LinkFacts<'_>,
        reason: &str,
    ) -> Event {
        Event::new(
            EventType::IdentityMoved,
            vec![
                ("fromAccountNumber", Some(from_account_number.into())),
                ("accountNumber", Some(link.account_number.into())),
                ("issuer", Some(link.issuer.into())),
                ("subject", Some(link.subject.into())),
                ("previousLinkId", Some(previous_link_id.into())),
                ("linkId", Some(link.link_id.into())),
                ("reason", Some(reason.into())),
            ],
            None,
        )
    }
}

/// The JSON body of an event: `{"type","timestamp","data"}`, the email in `data` only when
/// `with_email`.
pub fn body(
    kind: &str,
    at: chrono::NaiveDateTime,
    data: &Map<String, Value>,
    email: Option<&str>,
    with_email: bool,
) -> Value {
    let mut data = data.clone();
    if let (true, Some(email)) = (with_email, email) {
        data.insert("email".into(), email.into());
    }
    serde_json::json!({
        "type": kind,
        "timestamp": timestamp(at),
        "data": data,
    })
}

/// RFC 3339, UTC, to the millisecond.
pub fn timestamp(at: chrono::NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An endpoint as the writers of events see it: which events it takes, and whether with emails.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Its URL (what a delivery row names).
    pub url: String,
    /// The kinds it receives.
    pub events: Vec<EventType>,
    /// Whether its bodies carry the email.
    pub include_email: bool,
}

/// What every writer of a change needs to write its events: the subscribers, and a way to wake
/// this instance's dispatcher so the first attempt is made at once. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    subscribers: Arc<Vec<Subscriber>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// The outbox of the configured endpoints.
    pub fn new(webhooks: &[WebhookSettings]) -> Outbox {
        let subscribers = webhooks
            .iter()
            .map(|w| Subscriber {
                url: w.url.clone(),
                events: w.event_types(),
                include_email: w.include_email,
            })
            .collect();
        Outbox {
            subscribers: Arc::new(subscribers),
            wake: Arc::default(),
        }
    }

    /// Writes `events` (with their deliveries) on `conn`, which is in the transaction of the
    /// change they tell of. Call it last in the transaction: on PostgreSQL it holds the event
    /// sequence until the commit.
    pub fn write(&self, conn: &mut DbConn, events: Vec<Event>) -> Result<(), StorageError> {
        if events.is_empty() {
            return Ok(());
        }
        store::append(conn, events, &self.subscribers)
    }

    /// Tells this instance's dispatcher that events were committed.
    pub fn committed(&self) {
        if !self.subscribers.is_empty() {
            self.wake.notify_one();
        }
    }

    pub(crate) fn wake_signal(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_do_not_apply_are_left_out_and_the_email_only_when_asked() {
        let event = Event::customer_created("C-1", "USRT", "admin", None, Some("a@example.com"));
        assert!(!event.data.contains_key("channel"));
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 5_000_000)
            .unwrap()
            .naive_utc();
        let without = body(
            "customer.created",
            at,
            &event.data,
            event.email.as_deref(),
            false,
        );
        assert_eq!(
            without,
            serde_json::json!({
                "type": "customer.created",
                "timestamp": "2023-11-14T22:13:20.005Z",
                "data": {"accountNumber": "C-1", "legalEntity": "USRT", "origin": "admin"},
            })
        );
        let with = body(
            "customer.created",
            at,
            &event.data,
            event.email.as_deref(),
            true,
        );
        assert_eq!(with["data"]["email"], "a@example.com");
        let unlinked = Event::identity_unlinked(
            &LinkFacts {
                account_number: "C-1",
                issuer: "iss",
                subject: "sub",
                link_id: 7,
            },
            None,
        );
        assert!(!unlinked.data.contains_key("reason"));
        assert!(unlinked.data.values().all(|v| !v.is_null()));
        assert_eq!(unlinked.data["linkId"], 7);
    }

    #[test]
    fn event_names_parse_exactly() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("Identity.Linked"), None);
    }
}
