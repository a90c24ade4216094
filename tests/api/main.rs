//! One integration-test binary: the real server over real HTTP against a real PostgreSQL.

mod helpers;

mod api_items;
mod api_users;
mod bearer;
mod browser;
mod cli;
mod docs;
mod health;
mod lifecycle;
mod outage;
mod schema;
mod token;
mod web;
