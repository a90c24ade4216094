//! The command line: `gatehouse serve | migrate | user … | audit …`.
//!
//! Exit codes: 0 ok, 2 bad usage (clap's own), 1 any other failure with one line on stderr.

use std::io::{BufRead, IsTerminal};
use std::net::TcpListener;

use chrono::Utc;
use clap::{Parser, Subcommand};
use diesel::PgConnection;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::auth::password::hash_blocking;
use crate::config::{Settings, parse_bind};
use crate::db::{
    self,
    auth_events::NewEvent,
    users::{NewUser, UserWrite},
};
use crate::domain::{Channel, EventKind, NewPassword, Username};
use crate::errors::report;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Signs people and programs in: OAuth2 password grant, bearer API, login pages"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve HTTP.
    Serve {
        /// Listen address (overrides GATEHOUSE_BIND).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Development mode: ephemeral JWT secret if none is set, cookies without `Secure`, demo users.
        #[arg(long)]
        dev: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password comes from standard input, or a hidden prompt on a terminal.
    Add {
        username: String,
        /// A role to grant (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[arg(long, value_name = "E")]
        email: Option<String>,
        #[arg(long = "full-name", value_name = "N")]
        full_name: Option<String>,
    },
    /// Replace a user's roles.
    SetRoles {
        username: String,
        #[arg(required = true, value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Set a new password (stdin or prompt); ends the user's tokens and sessions.
    SetPassword { username: String },
    /// Stop a user from signing in; their tokens stop working at once.
    Deactivate { username: String },
    /// Let a deactivated user sign in again.
    Activate { username: String },
    /// List users with their roles.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the latest authentication events, newest last.
    Tail {
        #[arg(short = 'n', default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        lines: i64,
    },
}

/// A failure to report in one line, exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    fn from_display(err: impl std::fmt::Display) -> Self {
        Self(one_line(&err.to_string()))
    }

    /// The error with every cause under it, on one line.
    fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        Self(one_line(&report(err)))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn run(cli: Cli, mut settings: Settings) -> Result<(), CliError> {
    match cli.command {
        Command::Serve { bind, dev } => {
            settings.dev_mode = dev;
            if let Some(bind) = bind {
                settings.bind = parse_bind(&bind).map_err(CliError::from_display)?;
            }
            serve(settings)
        }
        Command::Migrate => {
            connect_and_migrate(&settings)?;
            println!("database is up to date");
            Ok(())
        }
        Command::User(command) => {
            let mut conn = connect_and_migrate(&settings)?;
            user_command(&mut conn, &settings, command)
        }
        Command::Audit(AuditCommand::Tail { lines }) => {
            let mut conn = connect_and_migrate(&settings)?;
            let mut events = db::auth_events::latest(&mut conn, lines).map_err(|err| CliError::from_error(&err))?;
            events.reverse();
            for event in events {
                println!(
                    "{}  {:<14} {:<3} user={} attempted={} addr={} {}",
                    event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
                    event.kind,
                    event.channel,
                    event.user_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
                    escape_control(event.attempted_username.as_deref().unwrap_or("-")),
                    escape_control(event.client_addr.as_deref().unwrap_or("-")),
                    escape_control(
                        &[event.reason.map(|r| r.to_string()), event.detail]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                );
            }
            Ok(())
        }
    }
}

/// Text from clients as a terminal may show it: control characters (an escape sequence that would
/// rewrite the operator's screen, a newline that would forge a line) are written as `\x1b`, `\u{2028}`.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}');
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if needs(c) && (c as u32) < 0x100 => escaped.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs(c) => escaped.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Creates the database if needed, applies migrations, and returns a connection to it.
fn connect_and_migrate(settings: &Settings) -> Result<PgConnection, CliError> {
    let mut conn =
        db::connect_creating(settings.database_url.expose_secret()).map_err(|err| CliError::from_error(&err))?;
    let applied = db::migrate(&mut conn).map_err(|err| CliError::from_error(&err))?;
    if applied > 0 {
        log::info!("applied {applied} migration(s)");
    }
    Ok(conn)
}

fn user_command(conn: &mut PgConnection, settings: &Settings, command: UserCommand) -> Result<(), CliError> {
    let query_err = |err: diesel::result::Error| CliError::from_error(&err);
    match command {
        UserCommand::Add { username, roles, email, full_name } => {
            let username = Username::parse(&username).map_err(CliError::from_display)?;
            let email = email.map(|e| validate_email(&e)).transpose()?;
            let full_name = full_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
            if full_name.as_ref().is_some_and(|n| n.chars().count() > 200) {
                return Err(CliError("full name must be at most 200 characters".to_owned()));
            }
            let password = read_new_password()?;
            let hash =
                hash_blocking(password.secret(), settings.bcrypt_cost).map_err(|err| CliError::from_error(&err))?;
            let new_user = NewUser {
                id: Uuid::now_v7(),
                username: username.as_str(),
                email: email.as_deref(),
                full_name: full_name.as_deref(),
                password_hash: &hash,
            };
            let user = written(db::users::create(conn, &new_user, &roles).map_err(query_err)?, username.as_str())?;
            println!("created user {} ({})", user.username, user.id);
        }
        UserCommand::SetRoles { username, roles } => {
            let user = written(db::users::set_roles(conn, &username, &roles).map_err(query_err)?, &username)?;
            println!("{}: roles are now {}", user.username, roles.join(", "));
        }
        UserCommand::SetPassword { username } => {
            let user = db::users::find_by_username(conn, &username)
                .map_err(query_err)?
                .ok_or_else(|| CliError(format!("no user named {username}")))?;
            let password = read_new_password()?;
            let hash =
                hash_blocking(password.secret(), settings.bcrypt_cost).map_err(|err| CliError::from_error(&err))?;
            // The cut-off is the moment the new hash is stored, not when the prompt began: a sign-in
            // during the prompt ends too.
            db::users::set_password_hash(conn, user.id, &hash).map_err(query_err)?;
            audit(conn, NewEvent::new(EventKind::PasswordChanged, Channel::Cli).user(user.id))?;
            println!("{}: password changed; earlier tokens and sessions no longer work", user.username);
        }
        UserCommand::Deactivate { username } => {
            let user = db::users::set_active(conn, &username, false)
                .map_err(query_err)?
                .ok_or_else(|| CliError(format!("no user named {username}")))?;
            audit(conn, NewEvent::new(EventKind::Deactivated, Channel::Cli).user(user.id))?;
            println!("{}: deactivated", user.username);
        }
        UserCommand::Activate { username } => {
            let user = db::users::set_active(conn, &username, true)
                .map_err(query_err)?
                .ok_or_else(|| CliError(format!("no user named {username}")))?;
            audit(conn, NewEvent::new(EventKind::Activated, Channel::Cli).user(user.id))?;
            println!("{}: activated", user.username);
        }
        UserCommand::List => {
            let users = db::users::list_with_roles(conn).map_err(query_err)?;
            println!("{:<24} {:<8} {:<20} {:<28} FULL NAME", "USERNAME", "ACTIVE", "ROLES", "EMAIL");
            for (user, roles) in users {
                println!(
                    "{:<24} {:<8} {:<20} {:<28} {}",
                    user.username,
                    if user.is_active { "yes" } else { "no" },
                    if roles.is_empty() { "-".to_owned() } else { roles.join(",") },
                    user.email.as_deref().unwrap_or("-"),
                    user.full_name.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    Ok(())
}

/// The user a create or role change wrote, or the one-line reason it did not.
fn written(outcome: UserWrite, username: &str) -> Result<db::users::User, CliError> {
    match outcome {
        UserWrite::Done(user) => Ok(user),
        UserWrite::UsernameTaken => Err(CliError(format!("a user named {username} already exists"))),
        UserWrite::UnknownRole(role) => Err(CliError(format!("no role named {role}"))),
        UserWrite::UnknownUser => Err(CliError(format!("no user named {username}"))),
    }
}

fn audit(conn: &mut PgConnection, event: NewEvent) -> Result<(), CliError> {
    db::auth_events::record(conn, &event).map_err(|err| CliError::from_error(&err))
}

fn validate_email(raw: &str) -> Result<String, CliError> {
    let email = raw.trim();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid { Ok(email.to_owned()) } else { Err(CliError(format!("`{raw}` is not an email address"))) }
}

/// A new password: a hidden prompt (asked twice) on a terminal, otherwise the first line of stdin.
fn read_new_password() -> Result<NewPassword, CliError> {
    let raw = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(CliError::from_display)?;
        let again = rpassword::prompt_password("Password (again): ").map_err(CliError::from_display)?;
        if first != again {
            return Err(CliError("the passwords do not match".to_owned()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|err| CliError(format!("cannot read the password from standard input: {err}")))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    NewPassword::parse(SecretString::from(raw)).map_err(CliError::from_display)
}

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

fn serve(settings: Settings) -> Result<(), CliError> {
    // Refuse a missing secret before touching the database.
    settings.resolve_jwt_secret().map_err(CliError::from_display)?;
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

    log::info!("database: {}", settings.database_url_for_display());
    if settings.dev_mode {
        if settings.jwt_secret.is_none() {
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
        spawn_purger(pool.clone());
        let server = crate::startup::run(listener, pool, settings).map_err(CliError::from_display)?;
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
