//! The administrators' queries of the audit log: by time, channel, outcome, email and identity,
//! a page at a time. On SQLite the lookups by email and identity go through the lookup file
//! (`storage/sqlite/audit_lookup.rs`); on PostgreSQL through the hashed indexes of migrations
//! 000007 and 000009.

use diesel::prelude::*;

use super::{email_lookup_key, identity_lookup_key, AuditEvent, AuditRecord};
use crate::storage::schema::{audit_events, audit_keys, audit_lookup_state};
use crate::storage::{DbConn, StorageError};

/// What to look for in the audit log; every filter is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Events at or after this time (UTC).
    pub from: Option<chrono::NaiveDateTime>,
    /// Events before this time (UTC).
    pub to: Option<chrono::NaiveDateTime>,
    /// The channel id.
    pub channel: Option<&'a str>,
    /// The outcome.
    pub outcome: Option<&'a str>,
    /// The normalised email key.
    pub email_key: Option<&'a str>,
    /// The identity issuer.
    pub issuer: Option<&'a str>,
    /// The identity subject.
    pub subject: Option<&'a str>,
    /// Only events with a smaller id (the cursor of the previous page).
    pub before: Option<i64>,
    /// Most events returned.
    pub limit: i64,
}

diesel::define_sql_function! {
    /// PostgreSQL's 64-bit text hash (the audit indexes of migrations 000007 and 000009).
    fn hashtextextended(
        value: diesel::sql_types::Nullable<diesel::sql_types::Text>,
        seed: diesel::sql_types::BigInt,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::BigInt>;
}

/// On SQLite, where the events an email or identity filter can match are: those `audit_keys`
/// lists, and every event after its watermark (not yet merged into it).
enum Lookup {
    /// No lookup: PostgreSQL (indexes on audit_events), no email or identity filter, or an
    /// issuer without a subject (few issuers exist, so most events match: a scan of the newest).
    None,
    Exact {
        key: i64,
        after: i64,
    },
}

fn lookup_of(conn: &mut DbConn, filter: &AuditFilter<'_>) -> Result<Lookup, StorageError> {
    let DbConn::Sqlite(c) = conn else {
        return Ok(Lookup::None);
    };
    let key = match (filter.email_key, filter.issuer, filter.subject) {
        (Some(email), _, _) => email_lookup_key(email.as_bytes()),
        (None, Some(issuer), Some(subject)) => {
            identity_lookup_key(issuer.as_bytes(), subject.as_bytes())
        }
        _ => return Ok(Lookup::None),
    };
    let after: i64 = audit_lookup_state::table
        .select(audit_lookup_state::indexed_through)
        .first(c)
        .optional()?
        .unwrap_or(0);
    Ok(Lookup::Exact { key, after })
}

/// Whether a filter uses the lookup database (SQLite: an email, or an issuer with a subject).
fn uses_lookup(filter: &AuditFilter<'_>) -> bool {
    filter.email_key.is_some() || (filter.issuer.is_some() && filter.subject.is_some())
}

/// Events matching the filter, newest first.
pub fn query(
    conn: &mut DbConn,
    filter: &AuditFilter<'_>,
) -> Result<Vec<AuditRecord>, StorageError> {
    let needs_lookup = matches!(conn, DbConn::Sqlite(_)) && uses_lookup(filter);
    if !needs_lookup {
        return query_attached(conn, filter);
    }
    if let DbConn::Sqlite(c) = conn {
        let file = crate::storage::main_file(c)?;
        crate::storage::attach_audit_lookup(c, &file)?;
    }
    let result = query_attached(conn, filter);
    if let DbConn::Sqlite(c) = conn {
        crate::storage::detach_audit_lookup(c)?;
    }
    result
}

/// [`query`], with the lookup database attached when the filter needs it.
fn query_attached(
    conn: &mut DbConn,
    filter: &AuditFilter<'_>,
) -> Result<Vec<AuditRecord>, StorageError> {
    let lookup = lookup_of(conn, filter)?;
    let postgres = matches!(conn, DbConn::Postgres(_));
    let base = || {
        let mut query = audit_events::table
            .order(audit_events::id.desc())
            .limit(filter.limit)
            .select((audit_events::id, EVENT_COLUMNS))
            .into_boxed();
        if let Some(from) = filter.from {
            query = query.filter(audit_events::at.ge(from));
        }
        if let Some(to) = filter.to {
            query = query.filter(audit_events::at.lt(to));
        }
        if let Some(channel) = filter.channel {
            query = query.filter(audit_events::channel.eq(channel));
        }
        if let Some(outcome) = filter.outcome {
            query = query.filter(audit_events::outcome.eq(outcome));
        }
        if let Some(email_key) = filter.email_key {
            query = query.filter(audit_events::email_key.eq(email_key));
        }
        if let Some(issuer) = filter.issuer {
            query = query.filter(audit_events::issuer.eq(issuer));
        }
        if let Some(subject) = filter.subject {
            query = query.filter(audit_events::subject.eq(subject));
        }
        if let Some(before) = filter.before {
            query = query.filter(audit_events::id.lt(before));
        }
        if postgres {
            // The hashed expression indexes of migrations 000007 and 000009, led by the event's
            // bucket of ids: one probe per bucket. The columns themselves are compared above,
            // so a collision costs a row read, never a wrong answer. The seed is SQL text, not a
            // bound parameter: the index's expression must match the query's.
            let seed = || diesel::dsl::sql::<diesel::sql_types::BigInt>("0");
            let in_every_bucket = || {
                diesel::dsl::sql::<diesel::sql_types::Bool>(
                    crate::storage::postgres::audit::IN_EVERY_BUCKET,
                )
            };
            if let Some(email_key) = filter.email_key {
                query = query.filter(in_every_bucket()).filter(
                    hashtextextended(audit_events::email_key, seed())
                        .eq(hashtextextended(email_key, seed())),
                );
            } else if let Some(subject) = filter.subject {
                query = query.filter(in_every_bucket()).filter(
                    hashtextextended(audit_events::subject, seed())
                        .eq(hashtextextended(subject, seed())),
                );
            }
        }
        query
    };
    // Two queries, each on the primary key: SQLite plans `id IN (...) OR id > ?` as a full
    // scan. The newest events first (not merged yet), then the listed ones.
    macro_rules! newest_then_listed {
        ($after:expr, $listed:expr) => {{
            let mut rows: Vec<(i64, AuditEvent)> =
                base().filter(audit_events::id.gt($after)).load(conn)?;
            if (rows.len() as i64) < filter.limit {
                let older: Vec<(i64, AuditEvent)> = base()
                    .filter(audit_events::id.le($after))
                    .filter(audit_events::id.eq_any($listed))
                    .load(conn)?;
                rows.extend(older);
                rows.truncate(usize::try_from(filter.limit).unwrap_or(usize::MAX));
            }
            rows
        }};
    }
    let rows: Vec<(i64, AuditEvent)> = match lookup {
        Lookup::None => base().load(conn)?,
        Lookup::Exact { key, after } => newest_then_listed!(
            after,
            audit_keys::table
                .filter(audit_keys::lookup_key.eq(key))
                .select(audit_keys::event_id)
        ),
    };
    Ok(records(rows))
}

fn records(rows: Vec<(i64, AuditEvent)>) -> Vec<AuditRecord> {
    rows.into_iter()
        .map(|(id, event)| AuditRecord { id, event })
        .collect()
}

/// The type of [`EVENT_COLUMNS`].
type EventColumns = (
    audit_events::at,
    audit_events::request_id,
    audit_events::actor,
    audit_events::source,
    audit_events::step,
    audit_events::channel,
    audit_events::outcome,
    audit_events::code,
    audit_events::email_key,
    audit_events::issuer,
    audit_events::subject,
    audit_events::account_number,
    audit_events::detail,
);

/// The columns of [`AuditEvent`], in its field order.
const EVENT_COLUMNS: EventColumns = (
    audit_events::at,
    audit_events::request_id,
    audit_events::actor,
    audit_events::source,
    audit_events::step,
    audit_events::channel,
    audit_events::outcome,
    audit_events::code,
    audit_events::email_key,
    audit_events::issuer,
    audit_events::subject,
    audit_events::account_number,
    audit_events::detail,
);

/// The most recent events, newest first.
pub fn recent(conn: &mut DbConn, limit: i64) -> Result<Vec<AuditEvent>, StorageError> {
    Ok(audit_events::table
        .order(audit_events::id.desc())
        .limit(limit)
        .select((
            audit_events::at,
            audit_events::request_id,
            audit_events::actor,
            audit_events::source,
            audit_events::step,
            audit_events::channel,
            audit_events::outcome,
            audit_events::code,
            audit_events::email_key,
            audit_events::issuer,
            audit_events::subject,
            audit_events::account_number,
            audit_events::detail,
        ))
        .load(conn)?)
}
