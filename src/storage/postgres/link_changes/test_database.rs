//! A fresh PostgreSQL database for one unit test, on the server `AUTOLINK_TEST_POSTGRES_URL`
//! names (the PostgreSQL pass of `.ci/run` sets it); dropped with the value.

use std::time::Duration;

use diesel::prelude::*;

use crate::storage::{Db, PoolOptions};

/// A migrated database of its own, and its pool.
pub(crate) struct TestDatabase {
    /// The pool, with the server's request limits.
    pub db: Db,
    /// Its URL.
    pub url: String,
    base: String,
    name: String,
}

/// A new migrated database, or `None` (said loudly) when no PostgreSQL server is configured.
pub(crate) fn create(test: &str) -> Option<TestDatabase> {
    let Some(base) = std::env::var("AUTOLINK_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** TEST DID NOT RUN IN THIS PASS: {test}: it needs AUTOLINK_TEST_POSTGRES_URL; \
             the PostgreSQL pass of .ci/run runs it ***\n"
        );
        return None;
    };
    let name = format!("autolink_unit_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::establish(&base).expect("AUTOLINK_TEST_POSTGRES_URL answers");
    diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .unwrap();
    let url = with_database(&base, &name);
    let options = PoolOptions {
        statement_timeout: Some(Duration::from_secs(5)),
        ..PoolOptions::default()
    };
    let db = Db::open(&url, &options).unwrap();
    Some(TestDatabase {
        db,
        url,
        base,
        name,
    })
}

impl TestDatabase {
    /// A connection of the test's own, outside the pool.
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.base) {
            let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = diesel::sql_query(drop).execute(&mut admin);
        }
    }
}

/// The URL with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let server = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}
