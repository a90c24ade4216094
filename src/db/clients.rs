//! The `oauth_clients` and `oauth_client_secrets` tables: the client registry. The rules (what a
//! registration may say, what a rotation changes, which secret matches) are `domain::client`'s and
//! `auth::client_secret`'s; this module loads, locks and writes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::schema::{oauth_client_secrets, oauth_clients};
use crate::domain::{ClientKind, GrantType, IdTokenAlg, ScopeSet, StoredSecret, ValidClient};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = oauth_clients, check_for_backend(diesel::pg::Pg))]
struct ClientRow {
    client_id: String,
    name: String,
    kind: String,
    scope: ScopeSet,
    redirect_uris: Vec<Option<String>>,
    post_logout_redirect_uris: Vec<Option<String>>,
    first_party: bool,
    grant_types: Vec<Option<String>>,
    id_token_alg: String,
    created_at: DateTime<Utc>,
}

/// A registered client, as stored (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    pub scope: ScopeSet,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub first_party: bool,
    pub grants: Vec<GrantType>,
    pub id_token_alg: IdTokenAlg,
    pub created_at: DateTime<Utc>,
}

/// A stored value that none of the types knows is an error (a row written by hand or a newer
/// version), never a silent default.
fn unreadable(err: String) -> DieselError {
    DieselError::DeserializationError(err.into())
}

impl TryFrom<ClientRow> for Client {
    type Error = DieselError;

    fn try_from(row: ClientRow) -> Result<Self, DieselError> {
        let grants = row
            .grant_types
            .into_iter()
            .flatten()
            .map(|grant| grant.parse::<GrantType>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(unreadable)?;
        Ok(Client {
            kind: row.kind.parse().map_err(unreadable)?,
            id_token_alg: row.id_token_alg.parse().map_err(unreadable)?,
            client_id: row.client_id,
            name: row.name,
            scope: row.scope,
            redirect_uris: row.redirect_uris.into_iter().flatten().collect(),
            post_logout_redirect_uris: row.post_logout_redirect_uris.into_iter().flatten().collect(),
            first_party: row.first_party,
            grants,
            created_at: row.created_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = oauth_clients)]
struct NewClientRow<'a> {
    client_id: &'a str,
    name: &'a str,
    kind: &'a str,
    scope: &'a ScopeSet,
    redirect_uris: &'a [String],
    post_logout_redirect_uris: &'a [String],
    first_party: bool,
    grant_types: Vec<&'static str>,
    id_token_alg: &'a str,
    created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = oauth_client_secrets, check_for_backend(diesel::pg::Pg))]
struct SecretRow {
    id: Uuid,
    secret_hash: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<SecretRow> for StoredSecret {
    fn from(row: SecretRow) -> Self {
        StoredSecret { id: row.id, hash: row.secret_hash, expires_at: row.expires_at }
    }
}

fn live_clients() -> oauth_clients::BoxedQuery<'static, diesel::pg::Pg> {
    oauth_clients::table.filter(oauth_clients::removed_at.is_null()).into_boxed()
}

/// Registers `client` as `client_id` with its first secret (a confidential client's hash), and
/// records `event`, all or nothing. The id is random (128 bits): a collision is not retried.
pub fn insert(
    conn: &mut PgConnection,
    client_id: &str,
    client: &ValidClient,
    secret_hash: Option<&[u8]>,
    now: DateTime<Utc>,
    event: &NewEvent,
) -> QueryResult<Client> {
    conn.transaction(|conn| {
        let row = NewClientRow {
            client_id,
            name: &client.name,
            kind: client.kind.as_str(),
            scope: &client.scope,
            redirect_uris: &client.redirect_uris,
            post_logout_redirect_uris: &client.post_logout_redirect_uris,
            first_party: client.first_party,
            grant_types: client.grants.iter().map(|grant| grant.as_str()).collect(),
            id_token_alg: client.id_token_alg.as_str(),
            created_at: now,
        };
        let stored: ClientRow = diesel::insert_into(oauth_clients::table)
            .values(&row)
            .returning(ClientRow::as_returning())
            .get_result(conn)?;
        if let Some(hash) = secret_hash {
            insert_secret(conn, client_id, hash, now)?;
        }
        auth_events::record(conn, event)?;
        Client::try_from(stored)
    })
}

fn insert_secret(conn: &mut PgConnection, client_id: &str, hash: &[u8], now: DateTime<Utc>) -> QueryResult<()> {
    diesel::insert_into(oauth_client_secrets::table)
        .values((
            oauth_client_secrets::id.eq(Uuid::now_v7()),
            oauth_client_secrets::client_id.eq(client_id),
            oauth_client_secrets::secret_hash.eq(hash),
            oauth_client_secrets::created_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

/// Every live client, oldest first.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<Client>> {
    let rows: Vec<ClientRow> = live_clients()
        .select(ClientRow::as_select())
        .order((oauth_clients::created_at, oauth_clients::client_id))
        .load(conn)?;
    rows.into_iter().map(Client::try_from).collect()
}

/// The live client `client_id`.
pub fn find(conn: &mut PgConnection, client_id: &str) -> QueryResult<Option<Client>> {
    let row: Option<ClientRow> = live_clients()
        .filter(oauth_clients::client_id.eq(client_id.to_owned()))
        .select(ClientRow::as_select())
        .first(conn)
        .optional()?;
    row.map(Client::try_from).transpose()
}

/// True when `client_id` names a client, live or removed: a removed client's id stays taken (its
/// row stays for the audit trail), so `serve --dev` seeds its demo client only when this is false.
pub fn id_taken(conn: &mut PgConnection, client_id: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(oauth_clients::table.filter(oauth_clients::client_id.eq(client_id.to_owned()))))
        .get_result(conn)
}

/// The ID-token algorithms of live clients that may get ID tokens (the code or device grant): each
/// needs its signing keys. A client-credentials service needs none.
pub fn live_id_token_algs(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    let grants = vec![GrantType::AuthorizationCode.as_str(), GrantType::DeviceCode.as_str()];
    live_clients()
        .filter(oauth_clients::grant_types.overlaps_with(grants))
        .select(oauth_clients::id_token_alg)
        .distinct()
        .load(conn)
}

/// True while `client_id` is registered and not removed (a client token's check on every request).
pub fn is_live(conn: &mut PgConnection, client_id: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(live_clients().filter(oauth_clients::client_id.eq(client_id.to_owned()))))
        .get_result(conn)
}

/// The live client `client_id` with the secrets that still work at `now`, for `/token`.
pub fn with_live_secrets(
    conn: &mut PgConnection,
    client_id: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<(Client, Vec<StoredSecret>)>> {
    let Some(client) = find(conn, client_id)? else { return Ok(None) };
    // A public client has no secret (registration gives it none, rotation refuses it): no second
    // query on its every exchange.
    if client.kind == crate::domain::ClientKind::Public {
        return Ok(Some((client, Vec::new())));
    }
    let secrets: Vec<SecretRow> = oauth_client_secrets::table
        .filter(oauth_client_secrets::client_id.eq(client_id))
        .filter(oauth_client_secrets::expires_at.is_null().or(oauth_client_secrets::expires_at.gt(now)))
        .select(SecretRow::as_select())
        .load(conn)?;
    Ok(Some((client, secrets.into_iter().map(StoredSecret::from).collect())))
}

/// The outcome of a rotation.
#[derive(Debug)]
pub enum Rotation {
    /// The new secret is current; the previous one expires at the given time.
    Rotated {
        client: Client,
        previous_expires_at: Option<DateTime<Utc>>,
    },
    UnknownClient,
    /// The plan refused (a public client has no secret to rotate).
    Refused,
}

/// Makes `new_hash` the client's current secret at `now`, with the expiries `plan` decides from the
/// stored secrets (`None`: refused, nothing written). The client row is locked first, so two
/// rotations at once run one after the other (the second sees the first's secret as current).
pub fn rotate(
    conn: &mut PgConnection,
    client_id: &str,
    new_hash: &[u8],
    now: DateTime<Utc>,
    plan: impl FnOnce(ClientKind, &[StoredSecret]) -> Option<Vec<(Uuid, DateTime<Utc>)>>,
    event: &NewEvent,
) -> QueryResult<Rotation> {
    conn.transaction(|conn| {
        let row: Option<ClientRow> = oauth_clients::table
            .filter(oauth_clients::client_id.eq(client_id))
            .filter(oauth_clients::removed_at.is_null())
            .select(ClientRow::as_select())
            .for_update()
            .first(conn)
            .optional()?;
        let Some(client) = row.map(Client::try_from).transpose()? else { return Ok(Rotation::UnknownClient) };
        let stored: Vec<SecretRow> = oauth_client_secrets::table
            .filter(oauth_client_secrets::client_id.eq(client_id))
            .select(SecretRow::as_select())
            .load(conn)?;
        let stored: Vec<StoredSecret> = stored.into_iter().map(StoredSecret::from).collect();
        let Some(plan) = plan(client.kind, &stored) else { return Ok(Rotation::Refused) };
        let previous_expires_at = stored
            .iter()
            .find(|secret| secret.expires_at.is_none())
            .and_then(|current| plan.iter().find(|(id, _)| *id == current.id).map(|(_, at)| *at));
        for (id, expires_at) in plan {
            diesel::update(oauth_client_secrets::table.find(id))
                .set(oauth_client_secrets::expires_at.eq(expires_at))
                .execute(conn)?;
        }
        insert_secret(conn, client_id, new_hash, now)?;
        auth_events::record(conn, event)?;
        Ok(Rotation::Rotated { client, previous_expires_at })
    })
}

/// Removes the live client `client_id` at `now`: its row stays (marked), its secrets go. False when
/// there is no such live client. Its tokens fail their next check (`is_live`).
pub fn remove(conn: &mut PgConnection, client_id: &str, now: DateTime<Utc>, event: &NewEvent) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let removed = diesel::update(
            oauth_clients::table
                .filter(oauth_clients::client_id.eq(client_id))
                .filter(oauth_clients::removed_at.is_null()),
        )
        .set(oauth_clients::removed_at.eq(now))
        .execute(conn)?;
        if removed == 0 {
            return Ok(false);
        }
        diesel::delete(oauth_client_secrets::table.filter(oauth_client_secrets::client_id.eq(client_id)))
            .execute(conn)?;
        auth_events::record(conn, event)?;
        Ok(true)
    })
}

/// Deletes secrets whose overlap has ended.
pub fn purge_expired_secrets(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(oauth_client_secrets::table.filter(oauth_client_secrets::expires_at.le(now))).execute(conn)
}
