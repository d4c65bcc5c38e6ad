//! PostgreSQL: the multi-row inserts of the writers that decide groups of requests (links,
//! customers, and the events of the decisions that wrote them), each one statement whose text
//! does not depend on the number of rows: every column is bound as one array, and `unnest` turns
//! the arrays into rows. diesel prepares such a statement once per connection (its text is the
//! cache key), and on the connections that keep generic plans ([`super::GENERIC_PLANS`])
//! PostgreSQL plans it once. A `VALUES` list with a row per request is another statement for
//! every number of rows: parsed, analysed and planned anew for each group (BENCHMARKS.md).
//!
//! SQLite has no arrays; it keeps diesel's multi-row inserts (`storage::links`,
//! `storage::customers`, `storage::audit`).

use diesel::pg::PgConnection;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};
use diesel::{QueryableByName, RunQueryDsl};

use crate::storage::audit::AuditEvent;
use crate::storage::customers::NewCustomer;
use crate::storage::links::NewLink;
use crate::storage::StorageError;

/// [`crate::storage::links::insert_skipping_taken`]: an identity linked already (the unique
/// index of active identities) is skipped.
const INSERT_LINKS: &str = "INSERT INTO identity_links (issuer, subject, customer_id, \
     sign_in_type, identity_provider, email_key, linked_by, created_at, updated_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::timestamp[], $9::timestamp[]) \
     ON CONFLICT DO NOTHING RETURNING id, issuer, subject";

/// [`crate::storage::customers::insert_skipping_taken`]: a taken account number or creation
/// key is skipped.
const INSERT_CUSTOMERS: &str = "INSERT INTO customers (account_number, legal_entity, \
     party_type, is_b2b, primary_email, email_key, first_name, last_name, origin, creation_key, \
     created_at, updated_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamp[], \
     $12::timestamp[]) \
     ON CONFLICT DO NOTHING RETURNING id, account_number";

/// [`crate::storage::audit::insert`].
const INSERT_EVENTS: &str = "INSERT INTO audit_events (at, request_id, actor, source, step, \
     channel, outcome, code, email_key, issuer, subject, account_number, detail) \
     SELECT * FROM unnest($1::timestamp[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
     $13::text[])";

#[derive(QueryableByName)]
struct InsertedLink {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    issuer: String,
    #[diesel(sql_type = Text)]
    subject: String,
}

#[derive(QueryableByName)]
struct InsertedCustomer {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    account_number: String,
}

/// One column of the rows, for binding as an array.
fn column<'r, R, T>(rows: &'r [R], field: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
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
    let inserted: Vec<InsertedLink> = diesel::sql_query(INSERT_LINKS)
        .bind::<Array<Text>, _>(column(rows, |r| r.issuer))
        .bind::<Array<Text>, _>(column(rows, |r| r.subject))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.customer_id))
        .bind::<Array<Text>, _>(column(rows, |r| r.sign_in_type))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.identity_provider))
        .bind::<Array<Text>, _>(column(rows, |r| r.email_key))
        .bind::<Array<Text>, _>(column(rows, |r| r.linked_by))
        .bind::<Array<Timestamp>, _>(column(rows, |r| r.created_at))
        .bind::<Array<Timestamp>, _>(column(rows, |r| r.updated_at))
        .load(conn)?;
    Ok(inserted
        .into_iter()
        .map(|l| (l.id, l.issuer, l.subject))
        .collect())
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
    let inserted: Vec<InsertedCustomer> = diesel::sql_query(INSERT_CUSTOMERS)
        .bind::<Array<Text>, _>(column(rows, |r| r.account_number))
        .bind::<Array<Text>, _>(column(rows, |r| r.legal_entity))
        .bind::<Array<Text>, _>(column(rows, |r| r.party_type))
        .bind::<Array<Bool>, _>(column(rows, |r| r.is_b2b))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.primary_email))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.email_key))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.first_name))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.last_name))
        .bind::<Array<Text>, _>(column(rows, |r| r.origin))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.creation_key))
        .bind::<Array<Timestamp>, _>(column(rows, |r| r.created_at))
        .bind::<Array<Timestamp>, _>(column(rows, |r| r.updated_at))
        .load(conn)?;
    Ok(inserted
        .into_iter()
        .map(|c| (c.id, c.account_number))
        .collect())
}

/// Appends the events in the caller's transaction.
pub(crate) fn insert_events(
    conn: &mut PgConnection,
    events: &[AuditEvent],
) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    diesel::sql_query(INSERT_EVENTS)
        .bind::<Array<Timestamp>, _>(column(events, |e| e.at))
        .bind::<Array<Text>, _>(column(events, |e| e.request_id.as_str()))
        .bind::<Array<Text>, _>(column(events, |e| e.actor.as_ref()))
        .bind::<Array<Text>, _>(column(events, |e| e.source.as_ref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.step.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.channel.as_deref()))
        .bind::<Array<Text>, _>(column(events, |e| e.outcome.as_ref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.code.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.email_key.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.issuer.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.subject.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.account_number.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.detail.as_deref()))
        .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::postgres::link_changes::test_database::create;
    use crate::storage::DbConn;

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

        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%unnest%'"
            ),
            3,
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
    }
}
