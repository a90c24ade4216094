//! `gatehouse client …`: the client registry, through the same rules as `/admin/clients` and
//! `/api/admin/clients` (`crate::accounts::clients`): the same validation, the same audit rows
//! (channel `cli`, no acting user).

use chrono::Utc;
use clap::Subcommand;
use diesel::PgConnection;
use secrecy::ExposeSecret;

use super::CliError;
use crate::accounts::Actor;
use crate::accounts::clients::{self, ClientError};
use crate::domain::ClientDraft;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints client_id=… and, for a confidential client, client_secret=… (shown
    /// this once only).
    Add {
        name: String,
        /// A public client (a browser or native app): no secret, no client_credentials grant.
        #[arg(long)]
        public: bool,
        /// The operator's own app: people are not asked to consent.
        #[arg(long = "first-party")]
        first_party: bool,
        /// A scope the client may be given (repeatable).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// Where people may be sent back after signing in (repeatable; absolute, no fragment).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where people may be sent after signing out (repeatable).
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A grant the client may use, named as at /token (repeatable; replaces the default:
        /// client_credentials, plus authorization_code and refresh_token with redirect URIs, for a
        /// confidential client; authorization_code and refresh_token for a public one).
        #[arg(long = "grant", value_name = "G")]
        grants: Vec<String>,
        /// How its ID tokens are signed.
        #[arg(long = "id-token-alg", value_name = "RS256|ES256|EdDSA")]
        id_token_alg: Option<String>,
    },
    /// List the registered clients.
    List,
    /// Give a confidential client a new secret (printed once); the previous one works one more hour.
    RotateSecret {
        #[arg(value_name = "CLIENT_ID")]
        client_id: String,
    },
    /// Remove a client: it can no longer authenticate, and its tokens stop working at once.
    Remove {
        #[arg(value_name = "CLIENT_ID")]
        client_id: String,
    },
}

impl From<ClientError> for CliError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Server(server) => CliError::from_error(&server),
            other => CliError::from_display(other),
        }
    }
}

pub(super) fn run(conn: &mut PgConnection, command: ClientCommand) -> Result<(), CliError> {
    let actor = Actor::command_line();
    let now = Utc::now();
    match command {
        ClientCommand::Add {
            name,
            public,
            first_party,
            scopes,
            redirect_uris,
            post_logout_redirect_uris,
            grants,
            id_token_alg,
        } => {
            let draft = ClientDraft {
                name,
                public,
                first_party,
                scopes,
                redirect_uris,
                post_logout_redirect_uris,
                grants,
                id_token_alg,
            };
            let registered = clients::register(conn, &actor, draft, now)?;
            println!("client_id={}", registered.client.client_id);
            if let Some(secret) = registered.secret {
                println!("client_secret={}", secret.expose_secret());
            }
        }
        ClientCommand::List => {
            println!("{:<28} {:<13} {:<12} {:<40} {:<30} NAME", "CLIENT_ID", "KIND", "FIRST_PARTY", "GRANTS", "SCOPES");
            for client in clients::list(conn)? {
                let grants: Vec<&str> = client.grants.iter().map(|grant| grant.as_str()).collect();
                let scope = client.scope.to_string();
                println!(
                    "{:<28} {:<13} {:<12} {:<40} {:<30} {}",
                    client.client_id,
                    client.kind,
                    if client.first_party { "yes" } else { "no" },
                    if grants.is_empty() { "-".to_owned() } else { grants.join(",") },
                    if scope.is_empty() { "-" } else { &scope },
                    super::escape_control(&client.name),
                );
            }
        }
        ClientCommand::RotateSecret { client_id } => {
            let rotated = clients::rotate_secret(conn, &actor, &client_id, now)?;
            println!("client_secret={}", rotated.secret.expose_secret());
            if let Some(until) = rotated.previous_expires_at {
                eprintln!("the previous secret works until {}", until.format("%Y-%m-%d %H:%M:%S UTC"));
            }
        }
        ClientCommand::Remove { client_id } => {
            clients::remove(conn, &actor, &client_id, now)?;
            println!("removed client {client_id}; its tokens no longer work");
        }
    }
    Ok(())
}
