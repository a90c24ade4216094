//! `gatehouse user …`: manage users, through the same rules as the admin pages and the admin API
//! (`crate::accounts`): the same validation, the same last-admin guard, the same audit rows
//! (channel `cli`, no acting user).

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;
use diesel::PgConnection;
use secrecy::SecretString;

use super::CliError;
use crate::accounts::{self, AccountDraft, AccountError, Actor, blocking};
use crate::config::Settings;
use crate::db::{
    self,
    users::{AccountChange, UserWrite},
};
use crate::domain::WeakPassword;
use crate::mail::Sender;

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
    /// Replace a user's roles (refused if it would leave no active admin).
    SetRoles {
        username: String,
        #[arg(required = true, value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Set a new password (stdin or prompt); ends the user's tokens and sessions.
    SetPassword { username: String },
    /// Stop a user from signing in; their tokens and sessions stop working at once (refused for the
    /// last active admin).
    Deactivate { username: String },
    /// Let a deactivated user sign in again.
    Activate { username: String },
    /// End every token and session of a user (they sign in again).
    SignOutAll { username: String },
    /// Remove a user's second factors (authenticator app, recovery codes): for a person locked out
    /// of their app. Their tokens and sessions end too.
    ResetSecondFactor { username: String },
    /// List users with their roles, by username (everyone unless --search or --limit says otherwise).
    List {
        /// Only users whose username or email address contains this text (any case).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// At most this many users.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
    },
}

impl From<AccountError> for CliError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::Server(server) => CliError::from_error(&server),
            other => CliError::from_display(other),
        }
    }
}

pub(super) fn run(conn: &mut PgConnection, settings: &Settings, command: UserCommand) -> Result<(), CliError> {
    let actor = Actor::command_line();
    let cost = settings.bcrypt_cost;
    match command {
        UserCommand::Add { username, roles, email, full_name } => {
            let draft = AccountDraft {
                username,
                password: Some(read_password()?),
                password_again: None,
                email,
                full_name,
                roles,
            };
            let created = blocking::create(conn, cost, &actor, draft)?;
            warn_if_weak(created.weak_password.as_ref());
            println!("created user {} ({})", created.user.username, created.user.id);
        }
        UserCommand::SetRoles { username, roles } => {
            let change = AccountChange { roles: Some(roles.clone()), active: None };
            let user = blocking::change(conn, &actor, &username, &change)?;
            println!("{}: roles are now {}", user.username, roles.join(", "));
        }
        UserCommand::SetPassword { username } => {
            let read =
                || read_password().map_err(|CliError(message)| AccountError::Invalid(vec![password_problem(message)]));
            let mail = Sender::for_command_line(settings);
            let set = blocking::set_password(conn, cost, &actor, &username, read, mail.as_ref())?;
            warn_if_weak(set.weak_password.as_ref());
            println!("{}: password changed; earlier tokens and sessions no longer work", set.user.username);
        }
        UserCommand::Deactivate { username } => {
            let user = blocking::change(conn, &actor, &username, &AccountChange { roles: None, active: Some(false) })?;
            println!("{}: deactivated", user.username);
        }
        UserCommand::Activate { username } => {
            let user = blocking::change(conn, &actor, &username, &AccountChange { roles: None, active: Some(true) })?;
            println!("{}: activated", user.username);
        }
        UserCommand::SignOutAll { username } => {
            let user = blocking::sign_out_everywhere(conn, &actor, &username)?;
            println!("{}: signed out everywhere; earlier tokens and sessions no longer work", user.username);
        }
        UserCommand::ResetSecondFactor { username } => {
            let (user, removed) =
                blocking::reset_second_factors(conn, &actor, &username, Sender::for_command_line(settings).as_ref())?;
            if removed {
                println!("{}: second factors removed; earlier tokens and sessions no longer work", user.username);
            } else {
                println!("{}: had no second factor; nothing changed", user.username);
            }
        }
        UserCommand::List { search, limit } => {
            // One query, streamed to stdout as it comes: linear in the number of users.
            let users =
                db::users::search(conn, search.as_deref(), 0, limit).map_err(|err| CliError::from_error(&err))?;
            println!("{:<24} {:<8} {:<20} {:<28} FULL NAME", "USERNAME", "ACTIVE", "ROLES", "EMAIL");
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (user, roles) in users {
                use std::io::Write as _;
                let line = writeln!(
                    out,
                    "{:<24} {:<8} {:<20} {:<28} {}",
                    user.username,
                    if user.is_active { "yes" } else { "no" },
                    if roles.is_empty() { "-".to_owned() } else { roles.join(",") },
                    user.email.as_deref().unwrap_or("-"),
                    super::escape_control(user.full_name.as_deref().unwrap_or("-")),
                );
                // A closed pipe (`| head`) ends the listing, not with an error.
                if line.is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn password_problem(message: String) -> accounts::Invalid {
    accounts::Invalid { field: accounts::Field::Password, message }
}

/// The strength estimate, as a warning: the operator may be restoring a known password.
fn warn_if_weak(weak: Option<&WeakPassword>) {
    if let Some(weak) = weak {
        eprintln!("warning: {weak}");
    }
}

/// The user a create or role change wrote, or the one-line reason it did not.
pub(super) fn written(outcome: UserWrite, username: &str) -> Result<db::users::User, CliError> {
    match outcome {
        UserWrite::Done(user) => Ok(user),
        UserWrite::UsernameTaken => Err(CliError(format!("a user named {username} already exists"))),
        UserWrite::UnknownRole(role) => Err(CliError(format!("no role named {role}"))),
        UserWrite::UnknownUser => Err(CliError(format!("no user named {username}"))),
        UserWrite::LastAdmin => Err(CliError::from_display(AccountError::LastAdmin)),
        UserWrite::ActorNotAdmin => Err(CliError::from_display(AccountError::NoLongerAdmin)),
    }
}

/// A password: a hidden prompt (asked twice) on a terminal, otherwise the first line of stdin.
/// Its length and strength are the accounts layer's to judge.
fn read_password() -> Result<SecretString, CliError> {
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
    Ok(SecretString::from(raw))
}
