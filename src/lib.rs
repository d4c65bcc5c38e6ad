//! autolink links the identities people create in Azure AD B2C to the customer accounts a store
//! already holds, by matching a verified email address.
//!
//! - [`domain`]: emails, identities, channels, refusals and the linking rules (pure);
//! - [`linking`]: gathers facts from storage, applies the rules, writes links, audits;
//! - [`storage`]: diesel over SQLite and PostgreSQL;
//! - [`api`]: the HTTP wire formats; [`auth`]: who may call;
//! - [`config`], [`startup`], [`cli`]: settings, server assembly and the command line;
//! - [`import`]: customer import; [`messages`]: what refused users read.
//! - [`admin`]: the back office's operations (admin API and CLI); [`metrics`]: Prometheus.
//! - [`policies`]: the sample custom policies: rendering per environment, reading a chain.
//! - [`mock_b2c`]: a stand-in for Azure AD B2C for QA and the end-to-end tests.

// One exception, allowed where it is written: the SQLite WAL-index header is read in SQLite's
// own mapping of the wal-index, found through its C interface, as SQLite itself reads it
// (`storage/sqlite/change_watch.rs`).
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod api;
pub mod auth;
pub mod backfill;
mod background;
pub mod cli;
pub mod config;
pub mod domain;
pub mod import;
pub mod linking;
pub mod messages;
pub mod metrics;
pub mod mock_b2c;
pub mod policies;
pub mod startup;
pub mod storage;
pub mod tls;
pub mod webhooks;
