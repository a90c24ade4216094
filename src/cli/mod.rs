//! The command line: `gatehouse serve | migrate | user … | audit … | keys … | client … | token …`.
//!
//! Exit codes: 0 ok, 2 bad usage (clap's own), 1 any other failure with one line on stderr.

mod audit;
mod client;
mod keys;
mod serve;
mod token;
mod user;

use clap::{Parser, Subcommand};
use diesel::PgConnection;
use secrecy::ExposeSecret;

pub use audit::{AuditCommand, escape_control};
pub use client::ClientCommand;
pub use keys::KeysCommand;
pub use token::TokenCommand;
pub use user::UserCommand;

use crate::config::{Settings, parse_bind};
use crate::db;
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
    /// Manage the signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage registered OAuth clients (services and apps).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage users' personal access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
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
            serve::serve(settings)
        }
        Command::Migrate => {
            connect_and_migrate(&settings)?;
            println!("database is up to date");
            Ok(())
        }
        Command::User(command) => user::run(&mut connect_and_migrate(&settings)?, &settings, command),
        Command::Audit(command) => audit::run(&mut connect_and_migrate(&settings)?, command),
        Command::Keys(command) => keys::run(&mut connect_and_migrate(&settings)?, &settings, command),
        Command::Client(command) => client::run(&mut connect_and_migrate(&settings)?, command),
        Command::Token(command) => token::run(&mut connect_and_migrate(&settings)?, &settings, command),
    }
}

/// Creates the database if needed, applies migrations, and returns a connection to it.
pub(crate) fn connect_and_migrate(settings: &Settings) -> Result<PgConnection, CliError> {
    let mut conn =
        db::connect_creating(settings.database_url.expose_secret()).map_err(|err| CliError::from_error(&err))?;
    let applied = db::migrate(&mut conn).map_err(|err| CliError::from_error(&err))?;
    if applied > 0 {
        log::info!("applied {applied} migration(s)");
    }
    Ok(conn)
}
