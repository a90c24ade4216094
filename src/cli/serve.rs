//! `gatehouse serve`: migrate, then serve HTTP.

use std::net::TcpListener;

use chrono::Utc;
use diesel::PgConnection;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::user::written;
use super::{CliError, connect_and_migrate};
use crate::accounts::{Actor, clients};
use crate::auth::password::hash_blocking;
use crate::config::Settings;
use crate::db::{self, dev::DevClaim, users::NewUser};
use crate::domain::ClientDraft;

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

/// The demo OpenID client for `serve --dev`, whose id `examples/relying_party.rs` knows: a public
/// client (no secret to hand over) that is not first-party, so the demo shows the consent page.
const DEMO_CLIENT_ID: &str = "gc_example-app-demo";
const DEMO_CLIENT_NAME: &str = "Example app";

/// Registers the demo client when its id is free (as for the demo users, an existing one is left
/// alone, and one removed on purpose stays removed), through the same rules as `client add`.
fn seed_demo_client(conn: &mut PgConnection) -> Result<(), CliError> {
    if db::clients::id_taken(conn, DEMO_CLIENT_ID).map_err(CliError::from_display)? {
        return Ok(());
    }
    let draft = ClientDraft {
        name: DEMO_CLIENT_NAME.to_owned(),
        public: true,
        first_party: false,
        scopes: ["openid", "profile", "email"].map(str::to_owned).to_vec(),
        redirect_uris: vec!["http://127.0.0.1:8081/callback".to_owned()],
        post_logout_redirect_uris: vec!["http://127.0.0.1:8081/".to_owned()],
        grants: ["authorization_code", "refresh_token"].map(str::to_owned).to_vec(),
        id_token_alg: None,
    };
    clients::register_as(conn, &Actor::command_line(), DEMO_CLIENT_ID.to_owned(), draft, Utc::now())?;
    Ok(())
}

/// `--dev` uses only a database of its own (see [`db::dev`]): never one a real deployment holds,
/// whose users it would add demo accounts to and whose keys it would replace.
fn claim_for_dev(settings: &Settings) -> Result<(), CliError> {
    let mut conn =
        db::connect_creating(settings.database_url.expose_secret()).map_err(|err| CliError::from_error(&err))?;
    match db::dev::claim(&mut conn).map_err(CliError::from_display)? {
        DevClaim::Ours => Ok(()),
        DevClaim::Claimed => {
            log::info!("--dev: {} is now a demo database", settings.database_url_for_display());
            Ok(())
        }
        DevClaim::Foreign { users, keys } => Err(CliError(format!(
            "--dev will not use {}: it holds data --dev did not make ({users} user(s), {keys} signing key(s)); \
             point DATABASE_URL at a database of its own (without DATABASE_URL, --dev uses gatehouse_dev)",
            settings.database_url_for_display()
        ))),
    }
}

pub(super) fn serve(mut settings: Settings) -> Result<(), CliError> {
    // Refuse a missing secret, or metrics on the public listener, before touching the database.
    settings.resolve_jwt_secret().map_err(CliError::from_display)?;
    settings.check_consistency().map_err(CliError::from_display)?;
    if settings.dev_mode {
        if !settings.database_url_given {
            settings.database_url = Settings::DEV_DATABASE_URL.to_owned().into();
        }
        claim_for_dev(&settings)?;
    }
    let mut conn = connect_and_migrate(&settings)?;
    if settings.dev_mode {
        seed_demo_users(&mut conn, settings.bcrypt_cost)?;
        seed_demo_client(&mut conn)?;
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
        println!("  demo client: {DEMO_CLIENT_NAME} / client_id {DEMO_CLIENT_ID}  (cargo run --example relying_party)");
    } else {
        log::info!("listening on http://{bound}");
    }

    actix_web::rt::System::new().block_on(async move {
        let server = crate::startup::serve(listener, state).map_err(|err| CliError::from_error(&err))?;
        server.await.map_err(|err| CliError(format!("server error: {err}")))
    })
}
