//! Queries on identity links.

use diesel::prelude::*;

use super::schema::{customers, identity_links, link_generation};
use super::{DbConn, StorageError};
use crate::domain::rules::ExistingLink;

/// A link to insert.
///
/// `None` is inserted as NULL, not as `DEFAULT`, so that many rows make one multi-row INSERT on
/// SQLite too.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = identity_links, treat_none_as_default_value = false)]
pub struct NewLink<'a> {
    /// Identity issuer.
    pub issuer: &'a str,
    /// Identity subject (object id).
    pub subject: &'a str,
    /// The customer.
    pub customer_id: i64,
    /// `emailAddress`, `federated`, ...
    pub sign_in_type: &'a str,
    /// `local` or the social provider.
    pub identity_provider: Option<&'a str>,
    /// Normalised email key under which the identity is linked.
    pub email_key: &'a str,
    /// `auto` or `admin`.
    pub linked_by: &'a str,
    /// Creation time.
    pub created_at: chrono::NaiveDateTime,
    /// Last change.
    pub updated_at: chrono::NaiveDateTime,
}

/// A link as listed.
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = identity_links)]
pub struct Link {
    /// Database id.
    pub id: i64,
    /// Identity issuer.
    pub issuer: String,
    /// Identity subject.
    pub subject: String,
    /// The customer.
    pub customer_id: i64,
    /// Sign-in type.
    pub sign_in_type: String,
    /// Identity provider.
    pub identity_provider: Option<String>,
    /// Email key at link time.
    pub email_key: String,
    /// `auto` or `admin`.
    pub linked_by: String,
    /// Whether the link is active.
    pub active: bool,
    /// Creation time (UTC).
    pub created_at: chrono::NaiveDateTime,
    /// Last change (UTC): when it was deactivated, for an inactive link.
    pub updated_at: chrono::NaiveDateTime,
}

/// The active link of an identity, with its customer's account number.
pub fn find_active(
    conn: &mut DbConn,
    issuer: &str,
    subject: &str,
) -> Result<Option<ExistingLink>, StorageError> {
    let query = identity_links::table
        .inner_join(customers::table)
        .filter(identity_links::issuer.eq(issuer))
        .filter(identity_links::subject.eq(subject))
        .filter(identity_links::active.eq(true))
        .select((customers::id, customers::account_number));
    // No `.first()`: diesel binds its LIMIT as a parameter, and SQLite re-prepares a statement
    // with a bound LIMIT on every call (a fifth of the sign-in path's CPU). An identity has at
    // most one active link (a unique index), so loading all rows reads at most one.
    let rows: Vec<(i64, String)> = crate::on_backend!(conn, c => query.load(c))?;
    let row = rows.into_iter().next();
    Ok(row.map(|(customer_id, account_number)| ExistingLink {
        customer_id,
        account_number,
    }))
}

/// The link generation (migration 000006): a counter that every change to an existing link, or
/// to a linked customer's account number, moves forward, on either backend.
pub fn generation(conn: &mut DbConn) -> Result<i64, StorageError> {
    let query = link_generation::table.select(link_generation::n);
    // Loaded, not `.first()`: a bound LIMIT is prepared anew on every call (see find_active).
    let rows: Vec<i64> = crate::on_backend!(conn, c => query.load(c))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StorageError::Unavailable("the link generation row is missing".into()))
}

/// Whether a link read earlier may have changed since, told without a read on the caller's
/// connection: the one question the sign-in cache asks, answered by each backend in its own way
/// (SQLite: [`super::sqlite::change_watch`], PostgreSQL: [`super::postgres::link_changes`]).
pub trait LinkChanges: Send + Sync {
    /// A value that moves whenever a link read before may have become wrong (unlinked, moved to
    /// another customer, its customer's account number changed), in this process or any other.
    /// `None`: it cannot be told now, and no link read before may be trusted. A link read from
    /// the database may be used again, without a read, only while the stamp taken *before* that
    /// read is still the current one.
    fn stamp(&self) -> Option<u64>;
}

/// Inserts a link. A second active link for the same identity is a unique violation.
pub fn insert(conn: &mut DbConn, link: &NewLink<'_>) -> Result<(), StorageError> {
    // On the concrete connection, so that the prepared statement is cached (the new-link path).
    let insert = diesel::insert_into(identity_links::table).values(link);
    crate::on_backend!(conn, c => insert.execute(c))?;
    Ok(())
}

/// A page of the links of a customer, active or not, oldest first: at most `limit` links with
/// ids after `after`.
pub fn list_for_customer(
    conn: &mut DbConn,
    customer_id: i64,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Link>, StorageError> {
    Ok(identity_links::table
        .filter(identity_links::customer_id.eq(customer_id))
        .filter(identity_links::id.gt(after.unwrap_or(0)))
        .order(identity_links::id)
        .limit(limit)
        .select(Link::as_select())
        .load(conn)?)
}

/// Number of active links.
pub fn count_active(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(identity_links::table
        .filter(identity_links::active.eq(true))
        .count()
        .get_result(conn)?)
}

/// A link by database id, with its customer's account number.
pub fn find(conn: &mut DbConn, id: i64) -> Result<Option<(Link, String)>, StorageError> {
    Ok(identity_links::table
        .inner_join(customers::table)
        .filter(identity_links::id.eq(id))
        .select((Link::as_select(), customers::account_number))
        .first(conn)
        .optional()?)
}

/// A page of the links of an identity, active or not, oldest first, with their customers'
/// account numbers: at most `limit` links with ids after `after`.
pub fn list_for_identity(
    conn: &mut DbConn,
    issuer: &str,
    subject: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(Link, String)>, StorageError> {
    Ok(identity_links::table
        .inner_join(customers::table)
        .filter(identity_links::issuer.eq(issuer))
        .filter(identity_links::subject.eq(subject))
        .filter(identity_links::id.gt(after.unwrap_or(0)))
        .order(identity_links::id)
        .limit(limit)
        .select((Link::as_select(), customers::account_number))
        .load(conn)?)
}

/// Deactivates a link if it is active. Returns false when it was not (already inactive, or
/// deactivated meanwhile): the row is kept either way.
pub fn deactivate(
    conn: &mut DbConn,
    id: i64,
    at: chrono::NaiveDateTime,
) -> Result<bool, StorageError> {
    let changed = diesel::update(
        identity_links::table
            .find(id)
            .filter(identity_links::active.eq(true)),
    )
    .set((
        identity_links::active.eq(false),
        identity_links::updated_at.eq(at),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Inserts a link and returns its id.
pub fn insert_returning_id(conn: &mut DbConn, link: &NewLink<'_>) -> Result<i64, StorageError> {
    Ok(diesel::insert_into(identity_links::table)
        .values(link)
        .returning(identity_links::id)
        .get_result(conn)?)
}

/// The active links of many identities of one issuer, in one query: `(subject, link)` pairs (an
/// identity has at most one active link). The group writer's lookup.
pub fn find_active_many(
    conn: &mut DbConn,
    issuer: &str,
    subjects: &[&str],
) -> Result<Vec<(String, ExistingLink)>, StorageError> {
    let mut found = Vec::new();
    // Far below SQLite's limit of bound parameters; PostgreSQL binds one array.
    for chunk in subjects.chunks(500) {
        let query = identity_links::table
            .inner_join(customers::table)
            .filter(identity_links::issuer.eq(issuer))
            .filter(identity_links::subject.eq_any(chunk))
            .filter(identity_links::active.eq(true))
            .select((
                identity_links::subject,
                customers::id,
                customers::account_number,
            ));
        let rows: Vec<(String, i64, String)> = crate::on_backend!(conn, c => query.load(c))?;
        found.extend(
            rows.into_iter()
                .map(|(subject, customer_id, account_number)| {
                    (
                        subject,
                        ExistingLink {
                            customer_id,
                            account_number,
                        },
                    )
                }),
        );
    }
    Ok(found)
}

/// Inserts links in one statement, skipping those that would be a second active link of their
/// identity (another writer linked it first). Returns the `(id, issuer, subject)` of the links
/// inserted.
pub fn insert_skipping_taken(
    conn: &mut DbConn,
    rows: &[NewLink<'_>],
) -> Result<Vec<(i64, String, String)>, StorageError> {
    let conn = match conn {
        DbConn::Postgres(c) => return crate::storage::postgres::unnest::insert_links(c, rows),
        DbConn::Sqlite(c) => c,
    };
    let mut inserted = Vec::with_capacity(rows.len());
    crate::storage::sqlite::for_each_chunk!(rows, chunk => {
        let returned: Vec<(i64, String, String)> = diesel::insert_into(identity_links::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .returning((
                identity_links::id,
                identity_links::issuer,
                identity_links::subject,
            ))
            .get_results(conn)?;
        inserted.extend(returned);
    });
    Ok(inserted)
}
