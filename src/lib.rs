//! gatehouse: an OAuth2 password-grant authorization server, a bearer-protected API and a
//! server-rendered website, in one binary.
//!
//! Layers, each importing only from those below it: `routes` (HTTP) → `accounts` (user
//! administration and self-service) → `oauth`, `auth` → `db` → `domain`, with `config`, `errors`,
//! `log_context`, `metrics` and `random` at the bottom. `startup` and `cli` sit on top and put the
//! pieces together.

pub mod accounts;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod errors;
pub mod log_context;
pub mod mail;
pub mod metrics;
pub mod oauth;
pub mod random;
pub mod routes;
pub mod startup;
