//! The audit log, read: by time range, channel, outcome, email and identity, newest first, a
//! page at a time.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::ToSchema;

use super::{cursor, email, page_size, rfc3339, Admin, AdminError, AdminResult, Page};
use crate::storage::audit::{self, AuditFilter, AuditRecord};

/// The outcomes written to the audit log: link decisions, then administrative changes.
pub const OUTCOMES: [&str; 14] = [
    "Linked",
    "Created",
    "AlreadyLinked",
    "WouldLink",
    "WouldCreate",
    "Refused",
    "CustomerCreated",
    "CustomerUpdated",
    "CustomerDeactivated",
    "Unlinked",
    "LinkMoved",
    "ProspectRecorded",
    "ProspectApproved",
    "ProspectRejected",
];

/// An audit event as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    /// The event's id; events are numbered in the order they were written.
    pub id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The request id (also in the log line and the `x-request-id` header).
    pub request_id: String,
    /// Who: `b2c`, or the administrator's name.
    pub actor: String,
    /// The endpoint or command (`api-connector`, `rest-link`, `admin-api`, `cli`, ...).
    pub source: String,
    /// The connector step.
    pub step: Option<String>,
    /// The channel id.
    pub channel: Option<String>,
    /// The outcome (one of the values listed for the `outcome` filter).
    pub outcome: String,
    /// The refusal code.
    pub code: Option<String>,
    /// The normalised email.
    pub email_key: Option<String>,
    /// Identity issuer.
    pub issuer: Option<String>,
    /// Identity subject.
    pub subject: Option<String>,
    /// Customer account number.
    pub account_number: Option<String>,
    /// What an administrator changed, and why.
    pub detail: Option<String>,
}

/// The filters of an audit query, as the caller sent them (all optional).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Events at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Events before this time (RFC 3339).
    pub to: Option<String>,
    /// Channel id.
    pub channel: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Email (normalised by the comparison rule).
    pub email: Option<String>,
    /// Identity issuer.
    pub issuer: Option<String>,
    /// Identity subject.
    pub subject: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Cursor of the previous page.
    pub cursor: Option<String>,
}

impl Admin {
    /// Audit events matching the query, newest first.
    pub fn audit(&self, query: &AuditQuery) -> AdminResult<Page<AuditEventView>> {
        let limit = page_size(query.limit.as_deref())?;
        let before = cursor(query.cursor.as_deref())?;
        let from = time("from", query.from.as_deref())?;
        let to = time("to", query.to.as_deref())?;
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err(AdminError::invalid("to", "must be later than from"));
            }
        }
        let channel = text(query.channel.as_deref());
        if let Some(channel) = channel {
            if self.linking.channels().by_id(channel).is_none() {
                return Err(AdminError::invalid(
                    "channel",
                    "is not a configured channel",
                ));
            }
        }
        let outcome = text(query.outcome.as_deref());
        if let Some(outcome) = outcome {
            if !OUTCOMES.contains(&outcome) {
                return Err(AdminError::invalid(
                    "outcome",
                    format!("must be one of {}", OUTCOMES.join(", ")),
                ));
            }
        }
        let email_key = match text(query.email.as_deref()) {
            Some(raw) => Some(email("email", raw)?.key().to_string()),
            None => None,
        };
        let issuer = text(query.issuer.as_deref());
        let subject = text(query.subject.as_deref());
        for (field, value) in [("issuer", issuer), ("subject", subject)] {
            if value.is_some_and(|v| v.chars().count() > 1024) {
                return Err(AdminError::invalid(
                    field,
                    "must be at most 1024 characters",
                ));
            }
        }
        let mut conn = self.conn()?;
        let records = audit::query(
            &mut conn,
            &AuditFilter {
                from,
                to,
                channel,
                outcome,
                email_key: email_key.as_deref(),
                issuer,
                subject,
                before,
                limit: limit + 1,
            },
        )?;
        let more = records.len() as i64 > limit;
        let items: Vec<AuditEventView> =
            records.into_iter().take(limit as usize).map(view).collect();
        let next_cursor = if more {
            items.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

fn text(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|v| !v.is_empty())
}

/// An RFC 3339 time (with offset), or a date (`2026-11-24`, midnight UTC).
fn time(field: &str, raw: Option<&str>) -> AdminResult<Option<chrono::NaiveDateTime>> {
    let Some(raw) = text(raw) else {
        return Ok(None);
    };
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(at.naive_utc()));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0));
    }
    Err(AdminError::invalid(
        field,
        "must be an RFC 3339 time (2026-11-24T10:00:00Z) or a date (2026-11-24)",
    ))
}

fn view(record: AuditRecord) -> AuditEventView {
    let e = record.event;
    AuditEventView {
        id: record.id,
        at: rfc3339(e.at),
        request_id: e.request_id,
        actor: e.actor.into_owned(),
        source: e.source.into_owned(),
        step: e.step.map(Cow::into_owned),
        channel: e.channel,
        outcome: e.outcome.into_owned(),
        code: e.code.map(Cow::into_owned),
        email_key: e.email_key,
        issuer: e.issuer,
        subject: e.subject,
        account_number: e.account_number,
        detail: e.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates() {
        assert!(time("from", Some("2026-11-24T10:00:00Z"))
            .unwrap()
            .is_some());
        assert!(time("from", Some("2026-11-24T10:00:00+01:00"))
            .unwrap()
            .is_some());
        assert!(time("from", Some("2026-11-24")).unwrap().is_some());
        assert!(time("from", Some("yesterday")).is_err());
        assert!(time("from", None).unwrap().is_none());
    }
}
