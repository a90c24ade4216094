//! `gatehouse serve`: migrate, then serve HTTP.

use std::net::TcpListener;

use chrono::Utc;
use diesel::PgConnection;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::user::written;
use super::{CliError, connect_and_migrate};
use crate::auth::password::hash_blocking;
use crate::config::Settings;
use crate::db::{self, users::NewUser};
use crate::errors::report;

/// Demo accounts for `serve --dev`, created when missing (existing accounts are left alone).
const DEMO_USERS: &[(&str, &str, &[&str], &str)] = &[
    ("alice", "alice-demo-password", &["user"], "Alice Example"),
    ("admin", "admin-demo-password", &["user", "admin"], "Ada Admin"),
];

fn seed_demo_users(conn: &mut PgConnection, cost: u32) -> Result<(), CliError> {
    for (username, password, roles, full_name) in DEMO_USERS {
        if db::users::find_by_username(conn, username).map_err(CliError::from_display)?.is_some() {
            continue;
        }
        let hash = hash_blocking(&SecretString::from(*password), cost).map_err(|err| CliError::from_error(&err))?;
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let email = format!("{username}@example.org");
        let new_user = NewUser {
            id: Uuid::now_v7(),
            username,
            email: Some(&email),
            full_name: Some(full_name),
            password_hash: &hash,
        };
        written(db::users::create(conn, &new_user, &roles).map_err(|err| CliError::from_error(&err))?, username)?;
    }
    Ok(())
}

pub(super) fn serve(settings: Settings) -> Result<(), CliError> {
    // Refuse a missing secret, or metrics on the public listener, before touching the database.
    settings.resolve_jwt_secret().map_err(CliError::from_display)?;
    settings.check_consistency().map_err(CliError::from_display)?;
    let mut conn = connect_and_migrate(&settings)?;
    if settings.dev_mode {
        seed_demo_users(&mut conn, settings.bcrypt_cost)?;
    }
    drop(conn);
    let listener = TcpListener::bind(settings.bind)
        .map_err(|err| CliError(format!("cannot listen on {}: {err}", settings.bind)))?;
    let bound = listener.local_addr().map_err(CliError::from_display)?;
    // Two cores serve the API and PostgreSQL alike: a few connections keep both busy.
    let pool = db::pool(settings.database_url.expose_secret(), 8);
    let database = settings.database_url_for_display();
    let (dev_mode, ephemeral_secret) = (settings.dev_mode, settings.jwt_secret.is_none());
    // Everything that can refuse to start (the signing keys, above all) before the first log line.
    let state =
        crate::startup::build_state(&listener, pool.clone(), settings).map_err(|err| CliError::from_error(&err))?;

    log::info!("database: {database}");
    if dev_mode {
        if ephemeral_secret {
            log::warn!("--dev: using an ephemeral JWT secret; tokens die with this process");
        }
        println!("gatehouse (dev mode) listening on http://{bound}");
        for (username, password, roles, _) in DEMO_USERS {
            println!("  demo user: {username} / {password}  (roles: {})", roles.join(", "));
        }
    } else {
        log::info!("listening on http://{bound}");
    }

    actix_web::rt::System::new().block_on(async move {
        spawn_purger(pool);
        let server = crate::startup::serve(listener, state).map_err(|err| CliError::from_error(&err))?;
        server.await.map_err(|err| CliError(format!("server error: {err}")))
    })
}

/// Deletes expired refresh tokens, revocations, sessions and throttle state once an hour, on one
/// instance at a time (an advisory lock: the others skip that hour's run).
fn spawn_purger(pool: db::PgPool) {
    actix_web::rt::spawn(async move {
        let mut every_hour = actix_web::rt::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every_hour.tick().await;
            match db::run(&pool, |conn| db::purge_expired(conn, Utc::now())).await {
                Ok(Some(purged)) if purged > 0 => log::info!("purged {purged} expired rows"),
                Ok(_) => {}
                Err(err) => log::warn!("purging expired rows failed: {}", report(&err)),
            }
        }
    });
}
