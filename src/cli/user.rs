//! `gatehouse user …`: manage users.

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;
use diesel::PgConnection;
use secrecy::SecretString;
use uuid::Uuid;

use super::CliError;
use crate::auth::password::hash_blocking;
use crate::config::Settings;
use crate::db::{
    self,
    auth_events::NewEvent,
    users::{NewUser, UserWrite},
};
use crate::domain::{Channel, EventKind, NewPassword, Username};

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

pub(super) fn run(conn: &mut PgConnection, settings: &Settings, command: UserCommand) -> Result<(), CliError> {
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
pub(super) fn written(outcome: UserWrite, username: &str) -> Result<db::users::User, CliError> {
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
pub(super) fn read_new_password() -> Result<NewPassword, CliError> {
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
