//! Integration tests: the real server over HTTP on a free port, on SQLite, or on PostgreSQL when
//! `AUTOLINK_TEST_POSTGRES_URL` is set.

mod bad_input;
mod cli;
mod connector;
mod health;
mod helpers;
mod import;
mod race;
