//! PostgreSQL: the multi-row inserts of the writers that decide groups of requests (links,
//! customers, and the audit's and the outbox's events of the decisions that wrote them), each
//! one statement whose text does not depend on the number of rows: every column is bound as one
//! array, and `unnest` turns the arrays into rows. diesel prepares such a statement once per connection (it keeps it under
//! the insert's kind, see [`ArrayInsert`]), and on the connections that keep generic plans
//! ([`super::GENERIC_PLANS`]) PostgreSQL plans it once. A `VALUES` list with a row per request is another statement for
//! every number of rows: parsed, analysed and planned anew for each group (BENCHMARKS.md).
//!
//! SQLite has no arrays; it keeps diesel's multi-row inserts (`storage::links`,
//! `storage::customers`, `storage::audit`, `storage::webhooks`). Binding the rows as one JSON
//! array read by `json_each` was measured slower there: SQLite turns each row's array back into
//! text and parses it again for every column (a backfill of 1,000,000 users took 60 s instead
//! of 47).

use std::marker::PhantomData;

use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};
use diesel::{QueryResult, RunQueryDsl};

use crate::storage::audit::AuditEvent;
use crate::storage::customers::NewCustomer;
use crate::storage::links::NewLink;
use crate::storage::webhooks::NewEvent;
use crate::storage::StorageError;

/// One kind of insert: the text before and after its arrays, and what it returns.
trait Kind: 'static {
    /// Up to `unnest(`; the arrays follow, as `$1, $2, ...`.
    const HEAD: &'static str;
    /// From the `)` that closes `unnest`.
    const TAIL: &'static str;
    /// The SQL types of the rows it returns.
    type Returning;
}

/// [`crate::storage::links::insert_skipping_taken`]: an identity linked already (the unique
/// index of active identities) is skipped.
struct Links;
impl Kind for Links {
    const HEAD: &'static str = "INSERT INTO identity_links (issuer, subject, customer_id, \
         sign_in_type, identity_provider, email_key, linked_by, created_at, updated_at) \
         SELECT * FROM unnest(";
    const TAIL: &'static str = ") ON CONFLICT DO NOTHING RETURNING id, issuer, subject";
    type Returning = (BigInt, Text, Text);
}

/// [`crate::storage::customers::insert_skipping_taken`]: a taken account number or creation
/// key is skipped.
struct Customers;
impl Kind for Customers {
    const HEAD: &'static str = "INSERT INTO customers (account_number, legal_entity, \
         party_type, is_b2b, primary_email, email_key, first_name, last_name, origin, \
         creation_key, created_at, updated_at) SELECT * FROM unnest(";
    const TAIL: &'static str = ") ON CONFLICT DO NOTHING RETURNING id, account_number";
    type Returning = (BigInt, Text);
}

/// [`crate::storage::audit::insert`].
struct Events;
impl Kind for Events {
    const HEAD: &'static str = "INSERT INTO audit_events (at, request_id, actor, source, step, \
         channel, outcome, code, email_key, issuer, subject, account_number, detail) \
         SELECT * FROM unnest(";
    const TAIL: &'static str = ")";
    type Returning = ();
}

/// [`crate::storage::webhooks::append`]: the outbox's events.
struct Outbox;
impl Kind for Outbox {
    const HEAD: &'static str =
        "INSERT INTO webhook_events (position, event_id, type, at, data, email) \
         SELECT * FROM unnest(";
    const TAIL: &'static str = ")";
    type Returning = ();
}

/// An insert of kind `K` with its arrays `B` (a tuple of bound arrays, written `$1, $2, ...`).
/// Its text depends on `K` alone, so diesel keeps its prepared statement under `K`'s type (a
/// `sql_query` is prepared anew on every call).
struct ArrayInsert<K, B> {
    arrays: B,
    kind: PhantomData<K>,
}

impl<K: Kind, B> ArrayInsert<K, B> {
    fn new(arrays: B) -> Self {
        ArrayInsert {
            arrays,
            kind: PhantomData,
        }
    }
}

impl<K: Kind, B: QueryFragment<Pg>> QueryFragment<Pg> for ArrayInsert<K, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(K::HEAD);
        self.arrays.walk_ast(out.reborrow())?;
        out.push_sql(K::TAIL);
        Ok(())
    }
}

impl<K: Kind, B> QueryId for ArrayInsert<K, B> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<K: Kind, B> Query for ArrayInsert<K, B> {
    type SqlType = K::Returning;
}

impl<K: Kind, B> RunQueryDsl<PgConnection> for ArrayInsert<K, B> {}

/// One column of the rows, bound as an array of SQL type `ST`.
fn column<'r, R, T, ST>(
    rows: &'r [R],
    field: impl Fn(&'r R) -> T,
) -> <Vec<T> as AsExpression<Array<ST>>>::Expression
where
    Vec<T>: AsExpression<Array<ST>>,
    Array<ST>: diesel::sql_types::SqlType + diesel::expression::TypedExpressionType,
{
    AsExpression::<Array<ST>>::as_expression(rows.iter().map(field).collect::<Vec<T>>())
}

/// Inserts the links, skipping those whose identity is linked already; returns
/// `(id, issuer, subject)` of the links inserted.
pub(crate) fn insert_links(
    conn: &mut PgConnection,
    rows: &[NewLink<'_>],
) -> Result<Vec<(i64, String, String)>, StorageError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let insert = ArrayInsert::<Links, _>::new((
        column::<_, _, Text>(rows, |r| r.issuer),
        column::<_, _, Text>(rows, |r| r.subject),
        column::<_, _, BigInt>(rows, |r| r.customer_id),
        column::<_, _, Text>(rows, |r| r.sign_in_type),
        column::<_, _, Nullable<Text>>(rows, |r| r.identity_provider),
        column::<_, _, Text>(rows, |r| r.email_key),
        column::<_, _, Text>(rows, |r| r.linked_by),
        column::<_, _, Timestamp>(rows, |r| r.created_at),
        column::<_, _, Timestamp>(rows, |r| r.updated_at),
    ));
    Ok(insert.load(conn)?)
}

/// Inserts the customers, skipping those whose account number or creation key is taken;
/// returns `(id, account_number)` of the customers inserted.
pub(crate) fn insert_customers(
    conn: &mut PgConnection,
    rows: &[NewCustomer<'_>],
) -> Result<Vec<(i64, String)>, StorageError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let insert = ArrayInsert::<Customers, _>::new((
        column::<_, _, Text>(rows, |r| r.account_number),
        column::<_, _, Text>(rows, |r| r.legal_entity),
        column::<_, _, Text>(rows, |r| r.party_type),
        column::<_, _, Bool>(rows, |r| r.is_b2b),
        column::<_, _, Nullable<Text>>(rows, |r| r.primary_email),
        column::<_, _, Nullable<Text>>(rows, |r| r.email_key),
        column::<_, _, Nullable<Text>>(rows, |r| r.first_name),
        column::<_, _, Nullable<Text>>(rows, |r| r.last_name),
        column::<_, _, Text>(rows, |r| r.origin),
        column::<_, _, Nullable<Text>>(rows, |r| r.creation_key),
        column::<_, _, Timestamp>(rows, |r| r.created_at),
        column::<_, _, Timestamp>(rows, |r| r.updated_at),
    ));
    Ok(insert.load(conn)?)
}

/// Appends the events in the caller's transaction.
pub(crate) fn insert_events(
    conn: &mut PgConnection,
    events: &[AuditEvent],
) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    let insert = ArrayInsert::<Events, _>::new((
        column::<_, _, Timestamp>(events, |e| e.at),
        column::<_, _, Text>(events, |e| e.request_id.as_str()),
        column::<_, _, Text>(events, |e| e.actor.as_ref()),
        column::<_, _, Text>(events, |e| e.source.as_ref()),
        column::<_, _, Nullable<Text>>(events, |e| e.step.as_deref()),
        column::<_, _, Nullable<Text>>(events, |e| e.channel.as_deref()),
        column::<_, _, Text>(events, |e| e.outcome.as_ref()),
        column::<_, _, Nullable<Text>>(events, |e| e.code.as_deref()),
        column::<_, _, Nullable<Text>>(events, |e| e.email_key.as_deref()),
        column::<_, _, Nullable<Text>>(events, |e| e.issuer.as_deref()),
        column::<_, _, Nullable<Text>>(events, |e| e.subject.as_deref()),
        column::<_, _, Nullable<Text>>(events, |e| e.account_number.as_deref()),
        column::<_, _, Nullable<Text>>(events, |e| e.detail.as_deref()),
    ));
    insert.execute(conn)?;
    Ok(())
}

/// Appends the outbox's events (their positions taken by the caller).
pub(crate) fn insert_outbox(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    let insert = ArrayInsert::<Outbox, _>::new((
        column::<_, _, BigInt>(events, |e| e.position),
        column::<_, _, Text>(events, |e| e.event_id.as_str()),
        column::<_, _, Text>(events, |e| e.kind),
        column::<_, _, Timestamp>(events, |e| e.at),
        column::<_, _, Text>(events, |e| e.data.as_str()),
        column::<_, _, Nullable<Text>>(events, |e| e.email.as_deref()),
    ));
    insert.execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::postgres::link_changes::test_database::create;
    use crate::storage::DbConn;
    use diesel::QueryableByName;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn count(conn: &mut PgConnection, sql: &str) -> i64 {
        diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
    }

    /// Groups of 1, 2 and 3 rows of each kind: one prepared statement per kind, and every row
    /// written with its values (NULLs included), a taken row skipped.
    #[test]
    fn inserts_of_any_number_of_rows_are_one_prepared_statement_each_and_skip_taken_rows() {
        let Some(test) = create(
            "storage::postgres::unnest::tests::inserts_of_any_number_of_rows_are_one_prepared_statement_each",
        ) else {
            return;
        };
        let DbConn::Postgres(mut conn) = test.db.connect_for_groups().unwrap() else {
            panic!("a PostgreSQL connection");
        };
        let now = crate::storage::now();
        let numbers: Vec<String> = (0..6).map(|i| format!("U-{i}")).collect();
        let emails: Vec<String> = (0..6).map(|i| format!("u{i}@example.com")).collect();
        let customer = |i: usize| NewCustomer {
            account_number: &numbers[i],
            legal_entity: "USRT",
            party_type: "person",
            is_b2b: i == 0,
            primary_email: Some(&emails[i]),
            email_key: (i != 1).then_some(emails[i].as_str()),
            first_name: Some("Ana"),
            last_name: None,
            origin: "autolink",
            creation_key: None,
            created_at: now,
            updated_at: now,
        };
        let mut ids = Vec::new();
        for group in [&[0][..], &[1, 2], &[3, 4, 5]] {
            let rows: Vec<NewCustomer> = group.iter().map(|&i| customer(i)).collect();
            let inserted = insert_customers(&mut conn, &rows).unwrap();
            assert_eq!(inserted.len(), group.len());
            ids.extend(inserted.into_iter().map(|(id, _)| id));
        }
        // U-3 is taken: skipped, the new one inserted.
        let again = [
            customer(3),
            NewCustomer {
                account_number: "U-6",
                ..customer(3)
            },
        ];
        let inserted = insert_customers(&mut conn, &again).unwrap();
        assert_eq!(
            inserted.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
            ["U-6"]
        );

        let subjects: Vec<String> = (0..6).map(|i| format!("oid-{i}")).collect();
        let link = |i: usize| NewLink {
            issuer: "https://issuer.example/v2.0/",
            subject: &subjects[i],
            customer_id: ids[i],
            sign_in_type: "emailAddress",
            identity_provider: (i % 2 == 0).then_some("local"),
            email_key: &emails[i],
            linked_by: "auto",
            created_at: now,
            updated_at: now,
        };
        for group in [&[0][..], &[1, 2], &[3, 4, 5]] {
            let rows: Vec<NewLink> = group.iter().map(|&i| link(i)).collect();
            assert_eq!(insert_links(&mut conn, &rows).unwrap().len(), group.len());
        }
        // oid-4 has an active link: skipped.
        let again = [link(4)];
        assert!(insert_links(&mut conn, &again).unwrap().is_empty());

        let event = |i: usize| AuditEvent {
            at: now,
            request_id: format!("r-{i}"),
            actor: "b2c".into(),
            source: "api-connector".into(),
            step: (i == 0).then(|| "PreTokenIssuance".into()),
            channel: Some("web".into()),
            outcome: "Linked".into(),
            code: None,
            email_key: Some(emails[i].clone()),
            issuer: Some("https://issuer.example/v2.0/".into()),
            subject: Some(subjects[i].clone()),
            account_number: Some(numbers[i].clone()),
            detail: None,
        };
        for group in [&[0][..], &[1, 2], &[3, 4, 5]] {
            let rows: Vec<AuditEvent> = group.iter().map(|&i| event(i)).collect();
            insert_events(&mut conn, &rows).unwrap();
        }

        let outbox = |i: i64| NewEvent {
            position: 100 + i,
            event_id: format!("msg_{i}"),
            kind: "identity.linked",
            at: now,
            data: format!("{{\"linkId\":{i}}}"),
            email: (i == 1).then(|| "u1@example.com".to_string()),
        };
        for group in [&[0][..], &[1, 2], &[3, 4, 5]] {
            let rows: Vec<NewEvent> = group.iter().map(|&i| outbox(i)).collect();
            insert_outbox(&mut conn, &rows).unwrap();
        }

        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%unnest%'"
            ),
            4,
            "one prepared statement per kind of insert, whatever the number of rows"
        );
        assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM customers"), 7);
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM customers WHERE account_number = 'U-1' AND email_key IS NULL AND last_name IS NULL AND first_name = 'Ana' AND NOT is_b2b"),
            1
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM customers WHERE is_b2b"
            ),
            1
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM identity_links"),
            6
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM identity_links WHERE identity_provider IS NULL"
            ),
            3
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM audit_events"),
            6
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM audit_events WHERE step = 'PreTokenIssuance' AND request_id = 'r-0' AND code IS NULL"),
            1
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM webhook_events"),
            6
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM webhook_events WHERE position = 101 AND event_id = 'msg_1' AND type = 'identity.linked' AND data = '{\"linkId\":1}' AND email = 'u1@example.com'"),
            1
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM webhook_events WHERE email IS NULL"
            ),
            5
        );
    }
}
