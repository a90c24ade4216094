//! gatehouse: an OAuth2 password-grant authorization server, a bearer-protected API and a
//! server-rendered website, in one binary.

pub mod auth;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod db;
pub mod domain;
pub mod errors;
pub mod oauth;
pub mod routes;
pub mod startup;
pub mod state;
