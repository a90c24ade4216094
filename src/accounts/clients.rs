//! Client administration: one set of rules behind `gatehouse client …`, `/api/admin/clients` and
//! `/admin/clients`. Whoever asks, a registration is validated the same way (`domain::client`), the
//! change and its audit row are written in one transaction, and an admin acting through the API or
//! a page must still be an active admin when it commits (as for users, `db::users::as_admin`).
//!
//! Nothing here is slow (a secret is hashed with SHA-256), so the rules are plain functions over a
//! connection: the command line calls them on its own connection, the server through [`Clients`],
//! which runs them off the executor.

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use secrecy::SecretString;

use super::Actor;
use crate::auth::client_secret::{self as client, plan_rotation};
use crate::db::{
    self, PgPool,
    auth_events::NewEvent,
    clients::{Client, Rotation},
};
use crate::domain::{ClientDraft, ClientKind, EventKind, InvalidClient};
use crate::errors::ServerError;

/// Why a change was not made. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Invalid(#[from] InvalidClient),
    #[error("no client {0}")]
    UnknownClient(String),
    #[error("client {0} is public: it has no secret")]
    PublicClient(String),
    /// The acting admin lost the role (or was deactivated) while their request ran.
    #[error("you are no longer an active admin")]
    NoLongerAdmin,
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<diesel::result::Error> for ClientError {
    fn from(err: diesel::result::Error) -> Self {
        ClientError::Server(ServerError::from(err))
    }
}

/// A client just registered, with its secret (confidential clients): the only time it is shown.
#[derive(Debug)]
pub struct Registered {
    pub client: Client,
    pub secret: Option<SecretString>,
}

/// A new secret (shown once), and until when the previous one keeps working.
#[derive(Debug)]
pub struct Rotated {
    pub client: Client,
    pub secret: SecretString,
    pub previous_expires_at: Option<DateTime<Utc>>,
}

fn event(actor: &Actor, kind: EventKind, client: &str) -> NewEvent {
    NewEvent::new(kind, actor.channel)
        .actor(actor.user_id)
        .client(actor.client.map(|ip| ip.to_string()))
        .detail(format!("client {client}"))
}

/// Runs `write` as `actor`: an admin must still be one when it commits; the command line needs no role.
fn as_actor<T>(
    conn: &mut PgConnection,
    actor: &Actor,
    write: impl FnOnce(&mut PgConnection) -> diesel::QueryResult<T>,
) -> Result<T, ClientError> {
    match actor.user_id {
        Some(admin) => db::users::as_admin(conn, admin, write)?.ok_or(ClientError::NoLongerAdmin),
        None => Ok(write(conn)?),
    }
}

/// Registers a client. A confidential client gets its first secret, returned here and never again.
pub fn register(
    conn: &mut PgConnection,
    actor: &Actor,
    draft: ClientDraft,
    now: DateTime<Utc>,
) -> Result<Registered, ClientError> {
    register_as(conn, actor, client::new_client_id(), draft, now)
}

/// [`register`] under an id chosen in advance, for `serve --dev`'s demo client only: the example
/// relying party ships knowing its id, so the demo needs no registration step. Every other client
/// gets a random id, which nobody can guess or claim first. `client_id` must match the table's
/// format (`gc_` and 16 to 64 URL-safe characters), or the insert fails.
pub fn register_as(
    conn: &mut PgConnection,
    actor: &Actor,
    client_id: String,
    draft: ClientDraft,
    now: DateTime<Utc>,
) -> Result<Registered, ClientError> {
    let known: Vec<String> = db::roles::all_scopes(conn)?.into_iter().map(|scope| scope.name).collect();
    let valid = draft.validate(&known)?;
    let (secret, hash) = match valid.kind {
        ClientKind::Confidential => {
            let (secret, hash) = client::new_secret();
            (Some(secret), Some(hash))
        }
        ClientKind::Public => (None, None),
    };
    let event = event(actor, EventKind::ClientCreated, &client_id).detail(format!(
        "client {client_id} ({}, {}) grants {}",
        valid.name,
        valid.kind,
        valid.grants.iter().map(|grant| grant.as_str()).collect::<Vec<_>>().join(" ")
    ));
    let client = as_actor(conn, actor, |conn| {
        db::clients::insert(conn, &client_id, &valid, hash.as_ref().map(|hash| hash.as_slice()), now, &event)
    })?;
    Ok(Registered { client, secret })
}

pub fn list(conn: &mut PgConnection) -> Result<Vec<Client>, ClientError> {
    Ok(db::clients::list(conn)?)
}

pub fn get(conn: &mut PgConnection, client_id: &str) -> Result<Client, ClientError> {
    db::clients::find(conn, client_id)?.ok_or_else(|| ClientError::UnknownClient(client_id.to_owned()))
}

/// A new current secret; the previous one keeps working for `auth::client_secret::ROTATION_OVERLAP`.
pub fn rotate_secret(
    conn: &mut PgConnection,
    actor: &Actor,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<Rotated, ClientError> {
    let (secret, hash) = client::new_secret();
    let event = event(actor, EventKind::ClientSecretRotated, client_id);
    let plan = |kind, stored: &[_]| plan_rotation(kind, stored, now);
    match as_actor(conn, actor, |conn| db::clients::rotate(conn, client_id, &hash, now, plan, &event))? {
        Rotation::Rotated { client, previous_expires_at } => Ok(Rotated { client, secret, previous_expires_at }),
        Rotation::UnknownClient => Err(ClientError::UnknownClient(client_id.to_owned())),
        Rotation::Refused => Err(ClientError::PublicClient(client_id.to_owned())),
    }
}

/// Removes a client: it can no longer authenticate, and its tokens are refused from the next request on.
pub fn remove(conn: &mut PgConnection, actor: &Actor, client_id: &str, now: DateTime<Utc>) -> Result<(), ClientError> {
    let event = event(actor, EventKind::ClientRemoved, client_id);
    if as_actor(conn, actor, |conn| db::clients::remove(conn, client_id, now, &event))? {
        Ok(())
    } else {
        Err(ClientError::UnknownClient(client_id.to_owned()))
    }
}

/// The server's side: the same functions, off the executor.
pub struct Clients<'a> {
    pub pool: &'a PgPool,
}

impl Clients<'_> {
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PgConnection) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, ClientError> {
        db::run(self.pool, move |conn| Ok(work(conn))).await?
    }

    pub async fn register(&self, actor: &Actor, draft: ClientDraft) -> Result<Registered, ClientError> {
        let actor = actor.clone();
        self.run(move |conn| register(conn, &actor, draft, Utc::now())).await
    }

    pub async fn list(&self) -> Result<Vec<Client>, ClientError> {
        self.run(list).await
    }

    pub async fn get(&self, client_id: &str) -> Result<Client, ClientError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| get(conn, &client_id)).await
    }

    pub async fn rotate_secret(&self, actor: &Actor, client_id: &str) -> Result<Rotated, ClientError> {
        let (actor, client_id) = (actor.clone(), client_id.to_owned());
        self.run(move |conn| rotate_secret(conn, &actor, &client_id, Utc::now())).await
    }

    pub async fn remove(&self, actor: &Actor, client_id: &str) -> Result<(), ClientError> {
        let (actor, client_id) = (actor.clone(), client_id.to_owned());
        self.run(move |conn| remove(conn, &actor, &client_id, Utc::now())).await
    }
}
