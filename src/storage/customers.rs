//! Queries on customer records.

use diesel::prelude::*;

use super::schema::{customers, identity_links};
use super::{DbConn, StorageError};
use crate::domain::rules::Candidate;

/// A customer record as stored.
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = customers)]
pub struct Customer {
    /// Database id.
    pub id: i64,
    /// Customer account number (unique).
    pub account_number: String,
    /// Legal entity, upper-case.
    pub legal_entity: String,
    /// `person` or `organization`.
    pub party_type: String,
    /// Whether the record is a B2B customer.
    pub is_b2b: bool,
    /// Primary email as given.
    pub primary_email: Option<String>,
    /// Normalised key of the primary email.
    pub email_key: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// `import`, `admin`, `prospect` or `autolink`.
    pub origin: String,
    /// Whether the record is active (inactive records are never candidates).
    pub active: bool,
    /// Set on records autolink created while linking was on (race guard).
    pub creation_key: Option<String>,
    /// Creation time (UTC).
    pub created_at: chrono::NaiveDateTime,
    /// Last change (UTC).
    pub updated_at: chrono::NaiveDateTime,
}

/// A customer to insert.
///
/// `None` is inserted as NULL (every optional column is nullable without a default), not as
/// `DEFAULT`: the SQL is then the same for every row, so SQLite gets one multi-row INSERT per
/// batch instead of one statement prepared per row.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = customers, treat_none_as_default_value = false)]
pub struct NewCustomer<'a> {
    /// Customer account number (unique).
    pub account_number: &'a str,
    /// Legal entity, upper-case.
    pub legal_entity: &'a str,
    /// `person` or `organization`.
    pub party_type: &'a str,
    /// B2B flag.
    pub is_b2b: bool,
    /// Primary email as given.
    pub primary_email: Option<&'a str>,
    /// Normalised key of the primary email.
    pub email_key: Option<&'a str>,
    /// First name.
    pub first_name: Option<&'a str>,
    /// Last name.
    pub last_name: Option<&'a str>,
    /// Where the record came from.
    pub origin: &'a str,
    /// Race guard, see [`Customer::creation_key`].
    #[diesel(treat_none_as_null = true)]
    pub creation_key: Option<&'a str>,
    /// Creation time.
    pub created_at: chrono::NaiveDateTime,
    /// Last change.
    pub updated_at: chrono::NaiveDateTime,
}

/// The race-guard key of a customer autolink creates for an email in a legal entity.
pub fn creation_key(legal_entity: &str, email_key: &str) -> String {
    format!("{legal_entity}|{email_key}")
}

/// The candidates of DESIGN section 1: active person records of the legal entity whose email key
/// matches, restricted to B2B records when `b2b_only`. For a single candidate it also tells
/// whether the customer holds active identities linked under another email.
pub fn find_candidates(
    conn: &mut DbConn,
    legal_entity: &str,
    email_key: &str,
    b2b_only: bool,
) -> Result<Vec<Candidate>, StorageError> {
    // One static query (no boxing) so the prepared statement is cached: on a B2B channel only
    // `is_b2b` records, otherwise any (`is_b2b = true OR is_b2b = false`).
    let query = customers::table
        .filter(customers::legal_entity.eq(legal_entity))
        .filter(customers::email_key.eq(email_key))
        .filter(customers::party_type.eq("person"))
        .filter(customers::active.eq(true))
        .filter(
            customers::is_b2b
                .eq(true)
                .or(customers::is_b2b.eq(b2b_only)),
        )
        .select((customers::id, customers::account_number))
        .order(customers::id);
    let rows: Vec<(i64, String)> = crate::on_backend!(conn, c => query.load(c))?;
    let mut candidates: Vec<Candidate> = rows
        .into_iter()
        .map(|(customer_id, account_number)| Candidate {
            customer_id,
            account_number,
            has_links_under_other_email: false,
        })
        .collect();
    // Only a single candidate can be linked; with several the answer is a refusal anyway.
    if let [one] = candidates.as_mut_slice() {
        let query = identity_links::table
            .filter(identity_links::customer_id.eq(one.customer_id))
            .filter(identity_links::active.eq(true))
            .filter(identity_links::email_key.ne(email_key))
            .count();
        let other: i64 = crate::on_backend!(conn, c => query.get_result(c))?;
        one.has_links_under_other_email = other > 0;
    }
    Ok(candidates)
}

/// Inserts a customer and returns its id.
pub fn insert(conn: &mut DbConn, customer: &NewCustomer<'_>) -> Result<i64, StorageError> {
    let id = diesel::insert_into(customers::table)
        .values(customer)
        .returning(customers::id)
        .get_result(conn)?;
    Ok(id)
}

/// A customer by account number.
pub fn find_by_account_number(
    conn: &mut DbConn,
    account_number: &str,
) -> Result<Option<Customer>, StorageError> {
    Ok(customers::table
        .filter(customers::account_number.eq(account_number))
        .select(Customer::as_select())
        .first(conn)
        .optional()?)
}

/// Number of customer records.
pub fn count(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(customers::table.count().get_result(conn)?)
}

/// What [`upsert_batch`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpsertCounts {
    /// New records.
    pub inserted: u64,
    /// Existing records whose fields changed.
    pub updated: u64,
    /// Existing records already equal to the row.
    pub unchanged: u64,
}

/// Inserts or updates records by account number, in the caller's transaction. A record whose
/// fields are already equal is left alone, so importing the same file twice changes nothing.
pub fn upsert_batch(
    conn: &mut DbConn,
    rows: &[NewCustomer<'_>],
) -> Result<UpsertCounts, StorageError> {
    let numbers: Vec<&str> = rows.iter().map(|r| r.account_number).collect();
    let existing: Vec<Stored> = customers::table
        .filter(customers::account_number.eq_any(&numbers))
        .select(Stored::as_select())
        .load(conn)?;
    let existing: std::collections::HashMap<&str, &Stored> = existing
        .iter()
        .map(|c| (c.account_number.as_str(), c))
        .collect();
    let mut counts = UpsertCounts::default();
    let mut fresh = Vec::new();
    for row in rows {
        match existing.get(row.account_number) {
            None => fresh.push(row),
            Some(current) if same_fields(current, row) => counts.unchanged += 1,
            Some(current) => {
                diesel::update(customers::table.find(current.id))
                    .set((
                        customers::legal_entity.eq(row.legal_entity),
                        customers::party_type.eq(row.party_type),
                        customers::is_b2b.eq(row.is_b2b),
                        customers::primary_email.eq(row.primary_email),
                        customers::email_key.eq(row.email_key),
                        customers::first_name.eq(row.first_name),
                        customers::last_name.eq(row.last_name),
                        customers::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)?;
                counts.updated += 1;
            }
        }
    }
    counts.inserted = insert_new(conn, &fresh)?;
    Ok(counts)
}

/// Whether there is no customer at all (an import into an empty table needs no upsert).
pub fn is_empty(conn: &mut DbConn) -> Result<bool, StorageError> {
    let any: Option<i64> = customers::table
        .select(customers::id)
        .first(conn)
        .optional()?;
    Ok(any.is_none())
}

/// Inserts records the caller knows are new (no stored record has their account numbers; a
/// stored one is a unique violation). Returns how many were inserted.
pub fn insert_batch(conn: &mut DbConn, rows: &[NewCustomer<'_>]) -> Result<u64, StorageError> {
    let rows: Vec<&NewCustomer<'_>> = rows.iter().collect();
    insert_new(conn, &rows)
}

fn insert_new(conn: &mut DbConn, fresh: &[&NewCustomer<'_>]) -> Result<u64, StorageError> {
    let mut inserted = 0;
    // 12 parameters per row; SQLite allows 32766 per statement. (The import writes SQLite
    // through `super::sqlite::bulk`, which is faster still.)
    for chunk in fresh.chunks(2000) {
        let chunk: Vec<NewCustomer<'_>> = chunk.iter().map(|r| (*r).clone()).collect();
        // Multi-row inserts are backend-specific in diesel's MultiConnection.
        inserted += crate::on_backend!(conn, c => diesel::insert_into(customers::table)
            .values(&chunk)
            .execute(c))? as u64;
    }
    Ok(inserted)
}

/// The columns an upsert compares.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = customers)]
struct Stored {
    id: i64,
    account_number: String,
    legal_entity: String,
    party_type: String,
    is_b2b: bool,
    primary_email: Option<String>,
    email_key: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

fn same_fields(current: &Stored, row: &NewCustomer<'_>) -> bool {
    current.legal_entity == row.legal_entity
        && current.party_type == row.party_type
        && current.is_b2b == row.is_b2b
        && current.primary_email.as_deref() == row.primary_email
        && current.email_key.as_deref() == row.email_key
        && current.first_name.as_deref() == row.first_name
        && current.last_name.as_deref() == row.last_name
}

/// A customer by database id.
pub fn find(conn: &mut DbConn, id: i64) -> Result<Option<Customer>, StorageError> {
    Ok(customers::table
        .find(id)
        .select(Customer::as_select())
        .first(conn)
        .optional()?)
}

/// Customers whose email key is `email_key` (in one legal entity when given), by id, after the
/// id `after` (keyset pagination).
pub fn find_by_email_key(
    conn: &mut DbConn,
    email_key: &str,
    legal_entity: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Customer>, StorageError> {
    let mut query = customers::table
        .filter(customers::email_key.eq(email_key))
        .filter(customers::id.gt(after.unwrap_or(0)))
        .order(customers::id)
        .limit(limit)
        .select(Customer::as_select())
        .into_boxed();
    if let Some(legal_entity) = legal_entity {
        query = query.filter(customers::legal_entity.eq(legal_entity));
    }
    Ok(query.load(conn)?)
}

/// The fields an administrator may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = customers)]
pub struct CustomerChanges<'a> {
    /// B2B flag.
    pub is_b2b: Option<bool>,
    /// Primary email (`Some(None)` removes it).
    pub primary_email: Option<Option<&'a str>>,
    /// Normalised key of the primary email, changed with it.
    pub email_key: Option<Option<&'a str>>,
    /// First name (`Some(None)` removes it).
    pub first_name: Option<Option<&'a str>>,
    /// Last name (`Some(None)` removes it).
    pub last_name: Option<Option<&'a str>>,
    /// The race guard; cleared (`Some(None)`) when the email changes or the record is
    /// deactivated, so a new sign-up with the old email can create a record again.
    pub creation_key: Option<Option<&'a str>>,
    /// Active flag.
    pub active: Option<bool>,
    /// Last change.
    pub updated_at: Option<chrono::NaiveDateTime>,
}

/// Applies changes to a customer.
pub fn update(
    conn: &mut DbConn,
    id: i64,
    changes: &CustomerChanges<'_>,
) -> Result<(), StorageError> {
    diesel::update(customers::table.find(id))
        .set(changes)
        .execute(conn)?;
    Ok(())
}

/// A person record with an email, as the duplicate report reads it.
#[derive(Debug, Clone, Queryable, PartialEq, Eq)]
pub struct PersonEmail {
    /// Customer account number.
    pub account_number: String,
    /// B2B flag.
    pub is_b2b: bool,
    /// Primary email as given.
    pub primary_email: String,
    /// Its normalised key.
    pub email_key: String,
}

/// The active person records with an email in a legal entity, by email key.
pub fn persons_with_email(
    conn: &mut DbConn,
    legal_entity: &str,
) -> Result<Vec<PersonEmail>, StorageError> {
    let rows: Vec<(String, bool, Option<String>, Option<String>)> = customers::table
        .filter(customers::legal_entity.eq(legal_entity))
        .filter(customers::party_type.eq("person"))
        .filter(customers::active.eq(true))
        .filter(customers::email_key.is_not_null())
        .order((customers::email_key, customers::id))
        .select((
            customers::account_number,
            customers::is_b2b,
            customers::primary_email,
            customers::email_key,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(account_number, is_b2b, email, key)| {
            Some(PersonEmail {
                account_number,
                is_b2b,
                primary_email: email.or_else(|| key.clone())?,
                email_key: key?,
            })
        })
        .collect())
}

/// Number of active links of a customer.
pub fn active_link_count(conn: &mut DbConn, customer_id: i64) -> Result<i64, StorageError> {
    Ok(identity_links::table
        .filter(identity_links::customer_id.eq(customer_id))
        .filter(identity_links::active.eq(true))
        .count()
        .get_result(conn)?)
}

/// A person record that may be a candidate: active, `party_type = 'person'`, with an email key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateRow {
    /// Database id.
    pub id: i64,
    /// Customer account number.
    pub account_number: String,
    /// Legal entity, upper-case.
    pub legal_entity: String,
    /// Normalised key of the primary email.
    pub email_key: String,
    /// Whether the record is a B2B customer.
    pub is_b2b: bool,
    /// Whether the customer holds active identities linked under another email than its own.
    pub has_links_under_other_email: bool,
}

/// The active person records whose email key is one of `email_keys` in one of `legal_entities`,
/// in one query, ordered by id, each with whether it holds active identities linked under
/// another email than its own (a correlated `EXISTS` on `identity_links (customer_id)`: no second
/// round trip). The caller picks each request's candidates among them (legal entity, and
/// `is_b2b` on a B2B channel), as [`find_candidates`] does for one.
pub fn find_candidate_rows(
    conn: &mut DbConn,
    legal_entities: &[&str],
    email_keys: &[&str],
) -> Result<Vec<CandidateRow>, StorageError> {
    let mut found = Vec::new();
    for chunk in email_keys.chunks(500) {
        let linked_under_other_email = diesel::dsl::exists(
            identity_links::table
                .filter(identity_links::customer_id.eq(customers::id))
                .filter(identity_links::active.eq(true))
                .filter(
                    identity_links::email_key
                        .nullable()
                        .ne(customers::email_key),
                ),
        );
        let query = customers::table
            .filter(customers::email_key.eq_any(chunk))
            .filter(customers::legal_entity.eq_any(legal_entities))
            .filter(customers::party_type.eq("person"))
            .filter(customers::active.eq(true))
            .select((
                customers::id,
                customers::account_number,
                customers::legal_entity,
                customers::email_key,
                customers::is_b2b,
                linked_under_other_email,
            ))
            .order(customers::id);
        let rows: Vec<(i64, String, String, Option<String>, bool, bool)> =
            crate::on_backend!(conn, c => query.load(c))?;
        found.extend(rows.into_iter().filter_map(
            |(id, account_number, legal_entity, email_key, is_b2b, other)| {
                Some(CandidateRow {
                    id,
                    account_number,
                    legal_entity,
                    email_key: email_key?,
                    is_b2b,
                    has_links_under_other_email: other,
                })
            },
        ));
    }
    found.sort_by_key(|row| row.id);
    Ok(found)
}

/// Inserts customers in one statement, skipping those whose account number or creation key is
/// taken (another writer created the customer first). Returns `(id, account_number)` of the
/// customers inserted.
pub fn insert_skipping_taken(
    conn: &mut DbConn,
    rows: &[NewCustomer<'_>],
) -> Result<Vec<(i64, String)>, StorageError> {
    let conn = match conn {
        DbConn::Postgres(c) => return crate::storage::postgres::unnest::insert_customers(c, rows),
        DbConn::Sqlite(c) => c,
    };
    let mut inserted = Vec::with_capacity(rows.len());
    crate::storage::sqlite::for_each_chunk!(rows, chunk => {
        let returned: Vec<(i64, String)> = diesel::insert_into(customers::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .returning((customers::id, customers::account_number))
            .get_results(conn)?;
        inserted.extend(returned);
    });
    Ok(inserted)
}
