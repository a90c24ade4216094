//! `gatehouse token …`: personal access tokens, through the same rules as the API and the account
//! page (`crate::accounts::personal_tokens`): the same validation, the same audit rows (channel
//! `cli`, no acting user). `create` prints the token alone on standard output, for `$(…)`; it is
//! never logged.

use clap::Subcommand;
use diesel::PgConnection;
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::CliError;
use crate::accounts::personal_tokens::{self, TokenDraft, TokenError};
use crate::accounts::{self, Actor};
use crate::auth::pat::{self, ExpiryDays};
use crate::config::Settings;
use crate::db;
use crate::mail::{Notice, Sender};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a personal access token for a user and print it (shown this once).
    Create {
        username: String,
        /// What the owner will recognise it by.
        #[arg(long, value_name = "N")]
        name: String,
        /// A scope to grant (repeatable; at least one; each allowed by the user's roles).
        #[arg(long = "scope", value_name = "S", required = true)]
        scopes: Vec<String>,
        /// Lifetime, `1d` to `365d`.
        #[arg(long = "expires-in", value_name = "DAYS", default_value = "30d", value_parser = parse_expiry)]
        expires_in: ExpiryDays,
    },
    /// List a user's tokens that are not revoked (never their secrets).
    List { username: String },
    /// Revoke a token by its id: it stops working on every instance from the next request.
    Revoke { id: Uuid },
}

fn parse_expiry(text: &str) -> Result<ExpiryDays, String> {
    ExpiryDays::parse(text).map_err(|err| err.to_string())
}

fn find_user(conn: &mut PgConnection, username: &str) -> Result<db::users::User, CliError> {
    db::users::find_by_username(conn, username)
        .map_err(|err| CliError::from_error(&err))?
        .ok_or_else(|| CliError(format!("no user named {username}")))
}

pub(super) fn run(conn: &mut PgConnection, settings: &Settings, command: TokenCommand) -> Result<(), CliError> {
    let actor = Actor::command_line();
    match command {
        TokenCommand::Create { username, name, scopes, expires_in } => {
            let user = find_user(conn, &username)?;
            let draft = TokenDraft { name, scopes, expires_in_days: Some(i64::from(expires_in.days())) };
            let notice = accounts::notice_for(
                Sender::for_command_line(settings).as_ref(),
                &user,
                Notice::PersonalTokenCreated(draft.name.trim()),
            )
            .map_err(|err| CliError::from_error(&err))?;
            let issued =
                personal_tokens::create_on(conn, &actor, user.id, &draft, None, &notice).map_err(|err| match err {
                    TokenError::Server(server) => CliError::from_error(&server),
                    TokenError::CredentialEnded => CliError(format!("{username} is inactive")),
                    other => CliError::from_display(other),
                })?;
            println!("{}", issued.secret.expose_secret());
        }
        TokenCommand::List { username } => {
            let user = find_user(conn, &username)?;
            let tokens = db::personal_tokens::of_user(conn, user.id).map_err(|err| CliError::from_error(&err))?;
            let now = chrono::Utc::now();
            println!(
                "{:<36} {:<20} {:<17} {:<17} {:<17} {:<8} SCOPES",
                "ID", "NAME", "CREATED", "EXPIRES", "LAST USED", "STATE"
            );
            for token in tokens {
                let stored = pat::StoredToken {
                    created_at: token.created_at,
                    expires_at: token.expires_at,
                    revoked_at: token.revoked_at,
                    tokens_valid_after: user.tokens_valid_after,
                };
                let state = match pat::judge(&stored, now) {
                    Ok(()) => "live",
                    Err(pat::Dead::Expired) => "expired",
                    Err(pat::Dead::CutOff) => "ended",
                    Err(pat::Dead::Revoked) => "revoked",
                };
                let minute = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M").to_string();
                println!(
                    "{:<36} {:<20} {:<17} {:<17} {:<17} {:<8} {}",
                    token.id,
                    super::escape_control(&token.name),
                    minute(token.created_at),
                    minute(token.expires_at),
                    token.last_used_at.map_or_else(|| "-".to_owned(), minute),
                    state,
                    token.scope,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let revoked =
                personal_tokens::revoke_on(conn, &actor, None, id).map_err(|err| CliError::from_error(&err))?;
            match revoked {
                Some(token) => println!("revoked token {} ({})", token.id, super::escape_control(&token.name)),
                None => return Err(CliError(format!("no live personal access token with id {id}"))),
            }
        }
    }
    Ok(())
}
