//! Queries on B2B prospects (business onboarding requests).

use diesel::prelude::*;

use super::schema::b2b_prospects;
use super::{DbConn, StorageError};

/// A prospect as stored.
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = b2b_prospects)]
pub struct Prospect {
    /// Database id.
    pub id: i64,
    /// The requester's email as given.
    pub email: String,
    /// Its normalised key.
    pub email_key: String,
    /// Legal entity, upper-case.
    pub legal_entity: String,
    /// The requester's company.
    pub company_name: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// Who recorded the request.
    pub requested_by: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was decided.
    pub decided_at: Option<chrono::NaiveDateTime>,
    /// Why (for a rejection).
    pub decision_reason: Option<String>,
    /// The organization an approval created.
    pub organization_id: Option<i64>,
    /// The B2B person customer an approval created.
    pub person_id: Option<i64>,
    /// Creation time.
    pub created_at: chrono::NaiveDateTime,
    /// Last change.
    pub updated_at: chrono::NaiveDateTime,
}

/// A prospect to insert (always pending).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = b2b_prospects)]
pub struct NewProspect<'a> {
    /// The requester's email as given.
    pub email: &'a str,
    /// Its normalised key.
    pub email_key: &'a str,
    /// Legal entity, upper-case.
    pub legal_entity: &'a str,
    /// The requester's company.
    pub company_name: &'a str,
    /// First name.
    pub first_name: Option<&'a str>,
    /// Last name.
    pub last_name: Option<&'a str>,
    /// Always `pending`.
    pub status: &'a str,
    /// Who recorded the request.
    pub requested_by: &'a str,
    /// Creation time.
    pub created_at: chrono::NaiveDateTime,
    /// Last change.
    pub updated_at: chrono::NaiveDateTime,
}

/// A decision on a pending prospect.
#[derive(Debug, Clone)]
pub struct ProspectDecision<'a> {
    /// `approved` or `rejected`.
    pub status: &'a str,
    /// Who decided.
    pub decided_by: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// The organization created by an approval.
    pub organization_id: Option<i64>,
    /// The person customer created by an approval.
    pub person_id: Option<i64>,
    /// When.
    pub at: chrono::NaiveDateTime,
}

/// Inserts a pending prospect and returns its id. A second pending prospect for the same email
/// and legal entity is a unique violation.
pub fn insert(conn: &mut DbConn, prospect: &NewProspect<'_>) -> Result<i64, StorageError> {
    Ok(diesel::insert_into(b2b_prospects::table)
        .values(prospect)
        .returning(b2b_prospects::id)
        .get_result(conn)?)
}

/// A prospect by id.
pub fn find(conn: &mut DbConn, id: i64) -> Result<Option<Prospect>, StorageError> {
    Ok(b2b_prospects::table
        .find(id)
        .select(Prospect::as_select())
        .first(conn)
        .optional()?)
}

/// The pending prospect of an email in a legal entity, if any.
pub fn find_pending(
    conn: &mut DbConn,
    legal_entity: &str,
    email_key: &str,
) -> Result<Option<Prospect>, StorageError> {
    Ok(b2b_prospects::table
        .filter(b2b_prospects::legal_entity.eq(legal_entity))
        .filter(b2b_prospects::email_key.eq(email_key))
        .filter(b2b_prospects::status.eq("pending"))
        .select(Prospect::as_select())
        .first(conn)
        .optional()?)
}

/// Prospects with a status, oldest first, after the id `after` (keyset pagination).
pub fn list(
    conn: &mut DbConn,
    status: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Prospect>, StorageError> {
    Ok(b2b_prospects::table
        .filter(b2b_prospects::status.eq(status))
        .filter(b2b_prospects::id.gt(after.unwrap_or(0)))
        .order(b2b_prospects::id)
        .limit(limit)
        .select(Prospect::as_select())
        .load(conn)?)
}

/// Records a decision, only while the prospect is pending. Returns false when it was not
/// pending (decided meanwhile).
pub fn decide(
    conn: &mut DbConn,
    id: i64,
    decision: &ProspectDecision<'_>,
) -> Result<bool, StorageError> {
    let changed = diesel::update(
        b2b_prospects::table
            .find(id)
            .filter(b2b_prospects::status.eq("pending")),
    )
    .set((
        b2b_prospects::status.eq(decision.status),
        b2b_prospects::decided_by.eq(decision.decided_by),
        b2b_prospects::decided_at.eq(decision.at),
        b2b_prospects::decision_reason.eq(decision.reason),
        b2b_prospects::organization_id.eq(decision.organization_id),
        b2b_prospects::person_id.eq(decision.person_id),
        b2b_prospects::updated_at.eq(decision.at),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}
