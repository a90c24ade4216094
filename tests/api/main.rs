//! One integration-test binary: the real server over real HTTP against a real PostgreSQL.

// Test code may panic on what it did not expect: that is how a test fails. (clippy's
// allow-unwrap-in-tests covers only #[test] functions, not the harness and helpers.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod admin;
mod api_items;
mod api_users;
mod architecture;
mod bearer;
mod browser;
mod cli;
mod clients;
mod concurrency;
mod conformance;
mod docs;
mod email;
mod hashing;
mod health;
mod keys;
mod lifecycle;
mod mail;
mod methods;
mod metrics;
mod nginx;
mod oidc;
mod outage;
mod personal_tokens;
mod purge;
mod reference_doc;
mod resource_server;
mod safeguards;
mod schema;
mod second_factor;
mod token;
mod web;
