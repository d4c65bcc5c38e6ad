//! The append-only audit log, and a background writer that batches events.
//!
//! Decisions that change data (a link, a new customer) write their event in the same transaction
//! as the change. Decisions that change nothing (already linked, refusals, checks) go through
//! [`AuditWriter`], which appends them in batches from one thread so the sign-in hot path does not
//! pay for one write transaction per request. The writer flushes on a short interval and when it
//! is dropped.

//! - [`writer`]: the background writer (its queue, its thread, its batches);
//! - [`query`]: the administrators' queries;
//! - the backend-specific parts: `storage/sqlite/audit.rs` (the writer's rusqlite appender and
//!   the lookup file) and `storage/postgres/audit.rs` (the writer's `COPY` connection).

use std::borrow::Cow;

use diesel::prelude::*;

use super::schema::audit_events;
use super::{DbConn, StorageError};

mod query;
mod writer;

pub use query::{query, recent, AuditFilter};
pub use writer::{AuditWriter, AuditWriterHandle, APPEND_LIMIT};

/// One audit event.
#[derive(Debug, Clone, Insertable, Queryable, PartialEq, Eq)]
#[diesel(table_name = audit_events)]
// None binds NULL (the columns' default), so a row count always gives the same SQL, and
// PostgreSQL's `COPY` (diesel's `copy_from`) accepts the struct.
#[diesel(treat_none_as_default_value = false)]
pub struct AuditEvent {
    /// When it happened (UTC).
    pub at: chrono::NaiveDateTime,
    /// The request id, also in the log line and the `x-request-id` header.
    pub request_id: String,
    /// Who acted: `b2c`, or the administrator.
    pub actor: Cow<'static, str>,
    /// The endpoint or command.
    pub source: Cow<'static, str>,
    /// The connector step, when there is one.
    pub step: Option<Cow<'static, str>>,
    /// The channel id, when resolved.
    pub channel: Option<String>,
    /// The outcome (`Linked`, `Created`, `AlreadyLinked`, `WouldLink`, `WouldCreate`, `Refused`).
    pub outcome: Cow<'static, str>,
    /// The refusal code.
    pub code: Option<Cow<'static, str>>,
    /// Normalised email key.
    pub email_key: Option<String>,
    /// Identity issuer.
    pub issuer: Option<String>,
    /// Identity subject.
    pub subject: Option<String>,
    /// Customer account number.
    pub account_number: Option<String>,
    /// Free text for administrators (never a secret).
    pub detail: Option<String>,
}

/// Appends events in the caller's connection (and transaction).
pub fn insert(conn: &mut DbConn, events: &[AuditEvent]) -> Result<(), StorageError> {
    let conn = match conn {
        // One statement for any number of events, prepared once.
        DbConn::Postgres(c) => return crate::storage::postgres::unnest::insert_events(c, events),
        DbConn::Sqlite(c) => c,
    };
    // Inserts of fixed numbers of rows, whose prepared statements diesel keeps.
    crate::storage::sqlite::for_each_chunk!(events, chunk => {
        diesel::insert_into(audit_events::table)
            .values(chunk)
            .execute(conn)?;
    });
    Ok(())
}

/// A stored audit event with its id (the pagination cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Database id; increases with every event.
    pub id: i64,
    /// The event.
    pub event: AuditEvent,
}

/// The `audit_keys` key of an email key (SQLite).
pub(crate) fn email_lookup_key(email_key: &[u8]) -> i64 {
    lookup_key(b'e', &[email_key])
}

/// The `audit_keys` key of an identity (SQLite).
pub(crate) fn identity_lookup_key(issuer: &[u8], subject: &[u8]) -> i64 {
    lookup_key(b'i', &[issuer, subject])
}

/// A 64-bit hash (XXH3, a fixed algorithm, so the file stays valid across builds) of the kind
/// and the length-prefixed parts. Two keys may collide: the queries compare the events' own
/// columns as well, so a collision costs a row read, never a wrong answer.
fn lookup_key(kind: u8, parts: &[&[u8]]) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&[kind]);
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    i64::from_ne_bytes(hasher.digest().to_ne_bytes())
}

#[cfg(test)]
pub(crate) mod tests;
