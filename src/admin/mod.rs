//! Administration: what a store's back office does without touching the database. Customers,
//! links, the audit log, previews, B2B prospects and the duplicate report.
//!
//! Every rule of the admin API and of the matching CLI commands lives here; the HTTP handlers
//! (`crate::api::admin`) and the CLI (`crate::cli::admin`) only parse, call [`Admin`] and
//! render. Each change and its audit event are written in one transaction; the audit event names
//! who did it.
//!
//! All functions block (database I/O); HTTP handlers call them through `web::block`.

pub mod audit;
pub mod customers;
pub mod duplicates;
pub mod links;
pub mod prospects;
pub mod webhooks;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{EmailAddress, LegalEntity};
use crate::linking::LinkingService;
use crate::storage::audit::AuditEvent;
use crate::storage::{self, Db, StorageError};
use crate::webhooks::Event;

/// Default page size of lists.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page size accepted; larger requests are refused (400), not silently cut.
pub const MAX_PAGE_SIZE: i64 = 500;
/// Longest administrator name accepted.
pub const MAX_ACTOR_LEN: usize = 64;
/// Longest free-text reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// How often a write that lost a race for a generated account number is tried.
const MAX_ATTEMPTS: usize = 4;

/// Why an administrative operation was refused. Mapped once to the admin JSON shape
/// (`crate::api::admin::error`) and to CLI messages.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A field the caller sent is not acceptable (HTTP 400).
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as the caller named it (JSON key or query parameter).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The thing the request names does not exist (HTTP 404).
    #[error("{message}")]
    NotFound {
        /// The field that named it.
        field: &'static str,
        /// What was not found.
        message: String,
    },
    /// The request conflicts with the current state (HTTP 409).
    #[error("{message}")]
    Conflict {
        /// A stable machine-readable code (`account_number_exists`, `link_inactive`, ...).
        code: &'static str,
        /// The field concerned, when one is.
        field: Option<&'static str>,
        /// What conflicts.
        message: String,
    },
    /// The database failed or did not answer (HTTP 503); nothing was changed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for AdminError {
    fn from(e: diesel::result::Error) -> Self {
        AdminError::Storage(StorageError::Query(e))
    }
}

impl AdminError {
    /// A 400 for a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(field: &'static str, message: impl Into<String>) -> Self {
        AdminError::NotFound {
            field,
            message: message.into(),
        }
    }

    /// A 409.
    pub fn conflict(code: &'static str, field: Option<&'static str>, message: String) -> Self {
        AdminError::Conflict {
            code,
            field,
            message,
        }
    }
}

/// Result of an administrative operation.
pub type AdminResult<T> = Result<T, AdminError>;

/// Who acts: an administrator's name for the audit. From the `X-Autolink-Actor` header or
/// `--actor`; `admin` when none is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The name used when the caller gives none.
    pub const DEFAULT: &'static str = "admin";

    /// Parses a name: 1 to 64 characters of letters, digits and `. _ - @ +`. `b2c` is reserved
    /// for decisions taken on B2C's calls.
    pub fn parse(raw: &str) -> Result<Actor, String> {
        let name = raw.trim();
        if name.is_empty() || name.len() > MAX_ACTOR_LEN {
            return Err(format!("must be 1 to {MAX_ACTOR_LEN} characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c))
        {
            return Err("may contain only letters, digits and . _ - @ +".into());
        }
        if name.eq_ignore_ascii_case("b2c") {
            return Err("b2c is reserved for B2C's calls".into());
        }
        Ok(Actor(name.to_string()))
    }

    /// The default actor.
    pub fn default_admin() -> Actor {
        Actor(Self::DEFAULT.to_string())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who asks, and through what: written into every audit event of the operation.
#[derive(Debug, Clone)]
pub struct Context {
    /// The administrator.
    pub actor: Actor,
    /// The request id (HTTP) or a fresh id (CLI).
    pub request_id: String,
    /// `admin-api` or `cli`.
    pub source: &'static str,
}

impl Context {
    /// An audit event of this operation; the caller fills in what it concerns.
    fn event(&self, outcome: &str) -> AuditEvent {
        AuditEvent {
            at: storage::now(),
            request_id: self.request_id.clone(),
            actor: self.actor.as_str().to_string().into(),
            source: self.source.to_string().into(),
            step: None,
            channel: None,
            outcome: outcome.to_string().into(),
            code: None,
            email_key: None,
            issuer: None,
            subject: None,
            account_number: None,
            detail: None,
        }
    }
}

/// The administrative operations. Cheap to share behind an `Arc`.
pub struct Admin {
    db: Db,
    linking: Arc<LinkingService>,
    account_number_prefix: String,
}

impl Admin {
    /// Writes the events of a change, in its transaction (last: see [`crate::webhooks::Outbox::write`]).
    fn tell(&self, conn: &mut storage::DbConn, events: Vec<Event>) -> AdminResult<()> {
        Ok(self.linking.outbox().write(conn, events)?)
    }

    /// After the commit of a change that wrote events: the first attempt is made at once.
    fn told(&self) {
        self.linking.outbox().committed();
    }

    /// Builds the operations over the linking service's database and channels.
    pub fn new(linking: Arc<LinkingService>, account_number_prefix: String) -> Admin {
        Admin {
            db: linking.db().clone(),
            linking,
            account_number_prefix,
        }
    }

    /// The database backend.
    pub fn backend(&self) -> storage::BackendKind {
        self.db.backend()
    }

    fn conn(&self) -> AdminResult<storage::PooledConn> {
        Ok(self.db.get()?)
    }

    /// The legal entity of a field, which must be one a configured channel serves: a customer
    /// in any other legal entity could never be linked, so it is most likely a typo.
    fn served_legal_entity(&self, field: &str, raw: Option<&str>) -> AdminResult<LegalEntity> {
        let raw = required(field, raw)?;
        let legal_entity = LegalEntity::parse(raw).map_err(|m| invalid_from(field, &m))?;
        let served = self
            .linking
            .channels()
            .all()
            .iter()
            .any(|c| c.legal_entity == legal_entity.as_str());
        if !served {
            return Err(AdminError::invalid(
                field,
                format!(
                    "no configured channel serves the legal entity {}",
                    legal_entity
                ),
            ));
        }
        Ok(legal_entity)
    }
}

/// What to preview.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewRequest {
    /// The channel id (from the configuration).
    #[schema(required = true)]
    pub channel: Option<String>,
    /// The email, assumed verified, of a new identity.
    #[schema(required = true)]
    pub email: Option<String>,
}

/// What would happen for this email on this channel.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    /// The channel id.
    pub channel: String,
    /// `WouldLink`, `WouldCreate` or `Refused`.
    pub outcome: String,
    /// The customer the identity would be linked to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_account_number: Option<String>,
    /// The refusal code, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The refusal's error name, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Admin {
    /// What would happen for this email on this channel, for a new identity with a verified
    /// email, without writing anything but the audit event (`LinkingService::preview`).
    pub fn preview(&self, ctx: &Context, request: &PreviewRequest) -> AdminResult<PreviewView> {
        let channel = required("channel", request.channel.as_deref())?;
        if self.linking.channels().by_id(channel).is_none() {
            return Err(AdminError::invalid(
                "channel",
                "is not a configured channel",
            ));
        }
        let address = required_email("email", request.email.as_deref())?;
        let answer = self.linking.preview(
            &ctx.request_id,
            ctx.actor.as_str(),
            channel,
            address.as_str(),
        )?;
        Ok(match answer {
            Ok(resolution) => PreviewView {
                channel: resolution.channel,
                outcome: resolution.outcome.as_str().to_string(),
                customer_account_number: resolution.account_number,
                code: None,
                error: None,
            },
            Err(refusal) => PreviewView {
                channel: channel.to_string(),
                outcome: "Refused".into(),
                customer_account_number: None,
                code: Some(refusal.code().to_string()),
                error: Some(refusal.error_name().to_string()),
            },
        })
    }
}

/// A page of a list: the items and the cursor of the next page (absent on the last page).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent when this is the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Which things of a list with a status to show (prospects, webhook deliveries): the CLI's
/// `--status`, `--limit`, `--cursor` and the API's query parameters of the same names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatusQuery {
    /// The status (each list has its own, and its default: see the command's help).
    #[arg(long)]
    pub status: Option<String>,
    /// Page size (1 to 500).
    #[arg(long)]
    pub limit: Option<String>,
    /// The nextCursor of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Parses a page size: absent means [`DEFAULT_PAGE_SIZE`]; 1 to [`MAX_PAGE_SIZE`] otherwise
/// (an empty value is not a number).
pub fn page_size(raw: Option<&str>) -> AdminResult<i64> {
    match raw.map(str::trim) {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
            _ => Err(AdminError::invalid(
                "limit",
                format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
            )),
        },
    }
}

/// Parses a pagination cursor (an id from a previous page); an empty value is not one.
pub fn cursor(raw: Option<&str>) -> AdminResult<Option<i64>> {
    match raw.map(str::trim) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| AdminError::invalid("cursor", "is not a cursor from a previous page")),
    }
}

/// Parses a database id from a path.
pub fn id(field: &'static str, raw: &str) -> AdminResult<i64> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AdminError::invalid(field, "must be a positive whole number"))
}

/// A required text field.
fn required<'a>(field: &str, raw: Option<&'a str>) -> AdminResult<&'a str> {
    raw.map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AdminError::invalid(field, "is required"))
}

/// An email field, normalised by the one rule of DESIGN section 4. It is given the raw value:
/// the rule refuses invisible and control characters before it trims anything.
fn email(field: &str, raw: &str) -> AdminResult<EmailAddress> {
    EmailAddress::parse(raw).map_err(|e| AdminError::invalid(field, e.to_string()))
}

/// A required email field ([`email`] of the raw value, which must not be blank).
fn required_email(field: &str, raw: Option<&str>) -> AdminResult<EmailAddress> {
    required(field, raw)?;
    email(field, raw.unwrap_or_default())
}

/// A free-text reason: at most [`MAX_REASON_CHARS`] characters, no control characters.
fn reason(field: &str, raw: Option<&str>) -> AdminResult<Option<String>> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(AdminError::invalid(
            field,
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AdminError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(text.to_string()))
}

/// Turns a domain parser's message (which names the stored column, e.g. `account_number is
/// empty`) into a field error named as the caller named the field.
fn invalid_from(field: &str, message: &str) -> AdminError {
    let message = message
        .split_once(' ')
        .filter(|(first, _)| first.contains('_'))
        .map(|(_, rest)| rest)
        .unwrap_or(message);
    AdminError::invalid(field, message)
}

/// Deserializes a field that may be absent, `null`, or a value, keeping the difference:
/// `None` absent, `Some(None)` null, `Some(Some(v))` a value.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Formats a stored time for the wire: RFC 3339, UTC.
pub fn rfc3339(at: chrono::NaiveDateTime) -> String {
    crate::webhooks::timestamp(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_short_plain_names_and_b2c_is_reserved() {
        assert_eq!(
            Actor::parse(" ana@contoso.com ").unwrap().as_str(),
            "ana@contoso.com"
        );
        assert!(Actor::parse("").is_err());
        assert!(Actor::parse("a b").is_err());
        assert!(Actor::parse(&"a".repeat(65)).is_err());
        assert!(Actor::parse("B2C").is_err());
        assert!(Actor::parse("robert'); drop").is_err());
    }

    #[test]
    fn page_sizes_are_capped_and_cursors_are_positive_ids() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(Some("500")).unwrap(), 500);
        assert!(page_size(Some("501")).is_err());
        assert!(page_size(Some("0")).is_err());
        assert!(page_size(Some("ten")).is_err());
        assert!(page_size(Some("")).is_err());
        assert!(cursor(Some("")).is_err());
        assert_eq!(cursor(Some("42")).unwrap(), Some(42));
        assert!(cursor(Some("-1")).is_err());
    }

    #[test]
    fn domain_messages_are_renamed_to_the_callers_field() {
        let AdminError::Invalid { field, message } =
            invalid_from("accountNumber", "account_number is empty")
        else {
            panic!()
        };
        assert_eq!(
            (field.as_str(), message.as_str()),
            ("accountNumber", "is empty")
        );
    }
}
