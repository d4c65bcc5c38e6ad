//! Integration tests: the real server over HTTP on a free port, on SQLite, or on PostgreSQL when
//! `AUTOLINK_TEST_POSTGRES_URL` is set.

mod admin;
mod answer_keys;
mod bad_input;
mod browser;
mod cli;
mod client_cert;
mod connector;
mod crash;
mod cross_instance;
mod db_proxy;
mod duplicate_keys;
mod endpoints;
mod health;
mod helpers;
mod hostile;
mod import;
mod invisible_characters;
mod journeys;
mod layers;
mod mock_b2c;
mod mock_directory;
mod mock_issuer;
mod mock_pages;
mod mock_setup;
mod mock_sso;
mod policies;
mod policy_journey;
mod postgres_pool;
mod qa_files;
mod race;
mod reliability;
mod relying_party;
mod rest;
mod slow_bodies;
mod tokens;
