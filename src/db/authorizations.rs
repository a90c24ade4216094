//! What people allowed apps: consents, authorization codes and (RFC 8628) device codes.
//!
//! A code is taken by one conditional `UPDATE` (unused → used): of two exchanges at once, the second
//! waits for the first's row lock, then finds the code used and revokes what the first issued.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::auth_events::{self, NewEvent};
use super::refresh_tokens::{self, FamilyStart, Grantee, IssueFailure, IssuedAccess, NewToken, Start};
use super::schema::{authorization_codes, device_codes, oauth_consents, refresh_families};
use crate::domain::rules::device::{Decision, DeviceState, INTERVAL_SECS, PollOutcome, SLOW_DOWN_STEP, decide_poll};
use crate::domain::{EventKind, ScopeSet};

/// True when the person allowed `scope` (or more) to `client_id` before.
pub fn consent_covers(conn: &mut PgConnection, user_id: Uuid, client_id: &str, scope: &ScopeSet) -> QueryResult<bool> {
    let stored: Option<ScopeSet> = oauth_consents::table
        .find((user_id, client_id.to_owned()))
        .select(oauth_consents::scope)
        .first(conn)
        .optional()?;
    Ok(stored.is_some_and(|stored| scope.is_subset(&stored)))
}

/// Remembers that the person allowed `scope` to `client_id` (added to what they allowed before).
pub fn grant_consent(
    conn: &mut PgConnection,
    user_id: Uuid,
    client_id: &str,
    scope: &ScopeSet,
    event: &NewEvent,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        // Two grants at once (two tabs, two instances) must both end up in the merge, and a
        // disconnect must not interleave: the row lock below finds no row to lock for a first grant.
        lock_user_for_consent_change(conn, user_id)?;
        let stored: Option<ScopeSet> = oauth_consents::table
            .find((user_id, client_id.to_owned()))
            .select(oauth_consents::scope)
            .for_update()
            .first(conn)
            .optional()?;
        let merged = match stored {
            Some(stored) => ScopeSet::parse(&format!("{stored} {scope}")).unwrap_or_else(|_| scope.clone()),
            None => scope.clone(),
        };
        diesel::insert_into(oauth_consents::table)
            .values((
                oauth_consents::user_id.eq(user_id),
                oauth_consents::client_id.eq(client_id),
                oauth_consents::scope.eq(&merged),
            ))
            .on_conflict((oauth_consents::user_id, oauth_consents::client_id))
            .do_update()
            .set((oauth_consents::scope.eq(&merged), oauth_consents::granted_at.eq(diesel::dsl::now)))
            .execute(conn)?;
        auth_events::record(conn, event)
    })
}

/// The user's row, locked against every other consent change and disconnect of theirs, and against
/// the exchanges (which share-lock it).
fn lock_user_for_consent_change(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<()> {
    diesel::sql_query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .bind::<diesel::sql_types::Uuid, _>(user_id)
        .execute(conn)
        .map(|_| ())
}

/// An app the person connected: their consent, and how many of its refresh families are live.
#[derive(Debug, Clone)]
pub struct ConnectedApp {
    pub client_id: String,
    pub name: String,
    pub scope: ScopeSet,
    pub granted_at: DateTime<Utc>,
}

/// The apps connected to the person, newest first (removed clients left out): those they allowed on
/// the consent page, and those holding a live refresh family of theirs without a consent (a
/// first-party app, which asks none; a device).
pub fn connected_apps(conn: &mut PgConnection, user_id: Uuid, now: DateTime<Utc>) -> QueryResult<Vec<ConnectedApp>> {
    use super::schema::oauth_clients;
    let consented: Vec<(String, String, ScopeSet, DateTime<Utc>)> = oauth_consents::table
        .inner_join(oauth_clients::table)
        .filter(oauth_consents::user_id.eq(user_id))
        .filter(oauth_clients::removed_at.is_null())
        .select((oauth_consents::client_id, oauth_clients::name, oauth_consents::scope, oauth_consents::granted_at))
        .load(conn)?;
    let holding: Vec<(Option<String>, String, ScopeSet, DateTime<Utc>)> = refresh_families::table
        .inner_join(oauth_clients::table.on(refresh_families::client_id.eq(oauth_clients::client_id.nullable())))
        .filter(refresh_families::user_id.eq(user_id))
        .filter(refresh_families::revoked_at.is_null())
        .filter(refresh_families::expires_at.gt(now))
        .filter(oauth_clients::removed_at.is_null())
        .select((
            refresh_families::client_id,
            oauth_clients::name,
            refresh_families::scope,
            refresh_families::created_at,
        ))
        .load(conn)?;
    let mut apps: Vec<ConnectedApp> = consented
        .into_iter()
        .map(|(client_id, name, scope, granted_at)| ConnectedApp { client_id, name, scope, granted_at })
        .collect();
    for (client_id, name, scope, created_at) in holding {
        let Some(client_id) = client_id else { continue };
        if !apps.iter().any(|app| app.client_id == client_id) {
            apps.push(ConnectedApp { client_id, name, scope, granted_at: created_at });
        }
    }
    apps.sort_by_key(|app| std::cmp::Reverse(app.granted_at));
    Ok(apps)
}

/// "Disconnect": forgets the consent and ends every refresh family the client holds for the user,
/// under the user's row lock (as every family change). False when there was nothing to end.
pub fn disconnect(
    conn: &mut PgConnection,
    user_id: Uuid,
    client_id: &str,
    now: DateTime<Utc>,
    event: &NewEvent,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        // Locks in the order the exchanges take them, or two of them deadlock: the codes first (an
        // exchange in flight holds its code until it commits, and then its code is no longer
        // pending here), then the user's row, stronger than the share lock every exchange takes.
        // So an exchange either finishes first (and its family ends below) or finds its code gone.
        // Gone, not spent: presented later, a withdrawn code is unknown, not a code used twice
        // (which would audit and count a reuse that never happened).
        let withdrawn = diesel::delete(
            authorization_codes::table
                .filter(authorization_codes::user_id.eq(user_id))
                .filter(authorization_codes::client_id.eq(client_id))
                .filter(authorization_codes::used_at.is_null()),
        )
        .execute(conn)?;
        diesel::update(
            device_codes::table
                .filter(device_codes::user_id.eq(user_id))
                .filter(device_codes::client_id.eq(client_id))
                .filter(device_codes::delivered_at.is_null()),
        )
        .set(device_codes::delivered_at.eq(now))
        .execute(conn)?;
        lock_user_for_consent_change(conn, user_id)?;
        let forgot = diesel::delete(oauth_consents::table.find((user_id, client_id.to_owned()))).execute(conn)? > 0;
        let ended = diesel::update(
            refresh_families::table
                .filter(refresh_families::user_id.eq(user_id))
                .filter(refresh_families::client_id.eq(client_id))
                .filter(refresh_families::revoked_at.is_null()),
        )
        .set(refresh_families::revoked_at.eq(now))
        .execute(conn)?;
        let any = forgot || ended > 0 || withdrawn > 0;
        if any {
            auth_events::record(conn, event)?;
        }
        Ok(any)
    })
}

/// A code about to be stored.
pub struct NewCode<'a> {
    pub hash: &'a [u8],
    pub client_id: &'a str,
    pub user_id: Uuid,
    pub redirect_uri: &'a str,
    pub redirect_uri_given: bool,
    pub code_challenge: &'a str,
    pub nonce: Option<&'a str>,
    pub scope: &'a ScopeSet,
    pub auth_time: DateTime<Utc>,
    pub amr: &'a [String],
    pub expires_at: DateTime<Utc>,
}

pub fn insert_code(conn: &mut PgConnection, code: &NewCode<'_>) -> QueryResult<()> {
    diesel::insert_into(authorization_codes::table)
        .values((
            authorization_codes::code_hash.eq(code.hash),
            authorization_codes::client_id.eq(code.client_id),
            authorization_codes::user_id.eq(code.user_id),
            authorization_codes::redirect_uri.eq(code.redirect_uri),
            authorization_codes::redirect_uri_given.eq(code.redirect_uri_given),
            authorization_codes::code_challenge.eq(code.code_challenge),
            authorization_codes::nonce.eq(code.nonce),
            authorization_codes::scope.eq(code.scope),
            authorization_codes::auth_time.eq(code.auth_time),
            authorization_codes::amr.eq(code.amr),
            authorization_codes::expires_at.eq(code.expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// A code as its exchange reads it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = authorization_codes, check_for_backend(diesel::pg::Pg))]
pub struct StoredCode {
    pub client_id: String,
    pub user_id: Uuid,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub scope: ScopeSet,
    pub auth_time: DateTime<Utc>,
    pub amr: Vec<Option<String>>,
    pub expires_at: DateTime<Utc>,
}

/// What an exchange issued, with the family it began (ended if the code comes back).
pub struct Issued<S> {
    pub answer: S,
    pub family_id: Uuid,
}

impl<S: IssuedAccess> IssuedAccess for Issued<S> {
    fn access_token(&self) -> Option<(Uuid, DateTime<Utc>)> {
        self.answer.access_token()
    }
}

/// The outcome of presenting a code.
#[derive(Debug)]
pub enum CodeExchange<S> {
    Issued(S),
    /// Unknown, expired, or bound to another client, redirect URI or verifier (it is spent now),
    /// or its user's credentials ended since the sign-in. The text is for the audit trail.
    Refused(&'static str),
    /// Used before: what that use issued is revoked now.
    Reused,
}

/// What an exchange stores besides the code's own fields.
pub struct CodeGrant<'a> {
    pub refresh_token: NewToken<'a>,
    pub family_expires_at: DateTime<Utc>,
    pub client_addr: Option<&'a str>,
}

/// Exchanges the code whose hash is `hash`: takes it (one conditional `UPDATE`), lets `binding`
/// check it against the request, begins the family (signing with `sign`, which sees the code for
/// its nonce), and records what was issued on the code. A code that fails its checks stays spent:
/// whoever holds it without its verifier loses it. `consent_required` (a third-party client): the
/// person's stored consent must still cover the code's scopes.
#[allow(clippy::too_many_arguments)]
pub fn exchange_code<S: IssuedAccess>(
    conn: &mut PgConnection,
    hash: &[u8],
    now: DateTime<Utc>,
    binding: impl FnOnce(&StoredCode) -> Result<(), &'static str>,
    grant: &CodeGrant<'_>,
    consent_required: bool,
    event: NewEvent,
    sign: impl FnOnce(&Grantee, &StoredCode) -> Result<Issued<S>, IssueFailure>,
    reuse_event: NewEvent,
) -> Result<CodeExchange<S>, IssueFailure> {
    conn.transaction(|conn| {
        // The family the exchange would begin is named with the code's spending (one statement
        // fewer than naming it after), and unnamed again when the exchange is refused.
        let family_id = Uuid::now_v7();
        let taken: Option<StoredCode> = diesel::update(
            authorization_codes::table
                .filter(authorization_codes::code_hash.eq(hash))
                .filter(authorization_codes::used_at.is_null()),
        )
        .set((authorization_codes::used_at.eq(now), authorization_codes::family_id.eq(family_id)))
        .returning(StoredCode::as_returning())
        .get_result(conn)
        .optional()?;
        let Some(code) = taken else {
            return Ok(revoke_what_it_issued(conn, hash, now, reuse_event)?);
        };
        let refused = |conn: &mut PgConnection, why: &'static str| -> QueryResult<CodeExchange<S>> {
            diesel::update(authorization_codes::table.filter(authorization_codes::code_hash.eq(hash)))
                .set(authorization_codes::family_id.eq(None::<Uuid>))
                .execute(conn)?;
            Ok(CodeExchange::Refused(why))
        };
        if code.expires_at <= now {
            return Ok(refused(conn, "expired")?);
        }
        if let Err(why) = binding(&code) {
            return Ok(refused(conn, why)?);
        }
        let amr: Vec<String> = code.amr.iter().flatten().cloned().collect();
        let family = FamilyStart {
            family_id,
            user_id: code.user_id,
            auth_time: code.auth_time,
            issued_at: now,
            client_id: Some(&code.client_id),
            requested: &code.scope,
            token: NewToken { hash: grant.refresh_token.hash, expires_at: grant.refresh_token.expires_at },
            family_expires_at: grant.family_expires_at,
            client_addr: grant.client_addr,
            amr: &amr,
            consent_required,
        };
        let event = event.detail(format!("authorization_code for client {}", code.client_id));
        // In this transaction: a refused start writes nothing, so the code stays spent; an error
        // (a signature that failed) undoes the whole exchange, the code's spending with it.
        let started = refresh_tokens::start_family_in_transaction(
            conn,
            &family,
            event,
            Box::new(|grantee| sign(grantee, &code)),
        )?;
        match started {
            Start::Issued(issued) => Ok(CodeExchange::Issued(issued.answer)),
            Start::Invalidated => Ok(refused(conn, "sign-in ended")?),
            Start::ScopeNotAllowed(_) => Ok(refused(conn, "scopes no longer allowed")?),
        }
    })
}

/// A code presented after its use: ends the family its use began and refuses every access token
/// issued in it (the first, and those of its refreshes), under the family's lock (a refresh in
/// flight finishes first, and its token is among them).
fn revoke_what_it_issued<S>(
    conn: &mut PgConnection,
    hash: &[u8],
    now: DateTime<Utc>,
    event: NewEvent,
) -> QueryResult<CodeExchange<S>> {
    let spent: Option<(Uuid, Option<Uuid>)> = authorization_codes::table
        .filter(authorization_codes::code_hash.eq(hash))
        .select((authorization_codes::user_id, authorization_codes::family_id))
        .first(conn)
        .optional()?;
    let Some((user_id, family_id)) = spent else {
        return Ok(CodeExchange::Refused("unknown"));
    };
    if let Some(family_id) = family_id {
        refresh_tokens::lock_family(conn, family_id).optional()?;
        refresh_tokens::revoke_locked_family(conn, family_id, now)?;
        refresh_tokens::revoke_access_tokens_of_family(conn, family_id, user_id, now)?;
    }
    let detail = match family_id {
        Some(family_id) => format!("code used again: family {family_id} and its access token revoked"),
        None => "code used again".to_owned(),
    };
    auth_events::record(conn, &NewEvent { kind: EventKind::CodeReused, ..event }.user(user_id).detail(detail))?;
    Ok(CodeExchange::Reused)
}

/// Deletes codes past their life (a minute; kept an hour so a late second use still finds the first).
pub fn purge_expired_codes(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(
        authorization_codes::table.filter(authorization_codes::expires_at.lt(now - chrono::Duration::hours(1))),
    )
    .execute(conn)
}

/// A device's request, about to be stored.
pub struct NewDeviceCode<'a> {
    pub hash: &'a [u8],
    pub user_code: &'a str,
    pub client_id: &'a str,
    pub scope: &'a ScopeSet,
    pub expires_at: DateTime<Utc>,
}

/// Stores a device's request; false when the user code is taken (the caller draws another).
pub fn insert_device_code(conn: &mut PgConnection, code: &NewDeviceCode<'_>) -> QueryResult<bool> {
    let inserted = diesel::insert_into(device_codes::table)
        .values((
            device_codes::device_code_hash.eq(code.hash),
            device_codes::user_code.eq(code.user_code),
            device_codes::client_id.eq(code.client_id),
            device_codes::scope.eq(code.scope),
            device_codes::expires_at.eq(code.expires_at),
            device_codes::interval_secs.eq(INTERVAL_SECS),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(inserted == 1)
}

/// A device request as the `/device` page shows it.
#[derive(Debug, Clone)]
pub struct PendingDevice {
    pub user_code: String,
    pub client_id: String,
    pub client_name: String,
    pub scope: ScopeSet,
}

/// The undecided, unexpired request with this user code.
pub fn pending_device(
    conn: &mut PgConnection,
    user_code: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<PendingDevice>> {
    use super::schema::oauth_clients;
    let row: Option<(String, String, String, ScopeSet)> = device_codes::table
        .inner_join(oauth_clients::table)
        .filter(device_codes::user_code.eq(user_code))
        .filter(device_codes::decision.is_null())
        .filter(device_codes::expires_at.gt(now))
        .filter(oauth_clients::removed_at.is_null())
        .select((device_codes::user_code, device_codes::client_id, oauth_clients::name, device_codes::scope))
        .first(conn)
        .optional()?;
    Ok(row.map(|(user_code, client_id, client_name, scope)| PendingDevice { user_code, client_id, client_name, scope }))
}

/// Records the person's decision on an undecided, unexpired request (one conditional `UPDATE`: of
/// two decisions at once, one counts). `scope`: what is granted (the requested scopes the person's
/// roles allow).
#[allow(clippy::too_many_arguments)]
pub fn decide_device(
    conn: &mut PgConnection,
    user_code: &str,
    user_id: Uuid,
    decision: Decision,
    scope: &ScopeSet,
    auth_time: DateTime<Utc>,
    amr: &[String],
    now: DateTime<Utc>,
    event: &NewEvent,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let decided = diesel::update(
            device_codes::table
                .filter(device_codes::user_code.eq(user_code))
                .filter(device_codes::decision.is_null())
                .filter(device_codes::expires_at.gt(now)),
        )
        .set((
            device_codes::user_id.eq(user_id),
            device_codes::decision.eq(decision.as_str()),
            device_codes::scope.eq(scope),
            device_codes::auth_time.eq(auth_time),
            device_codes::amr.eq(amr),
        ))
        .execute(conn)?;
        if decided == 1 {
            auth_events::record(conn, event)?;
        }
        Ok(decided == 1)
    })
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = device_codes, check_for_backend(diesel::pg::Pg))]
struct StoredDevice {
    client_id: String,
    scope: ScopeSet,
    expires_at: DateTime<Utc>,
    interval_secs: i32,
    last_polled_at: Option<DateTime<Utc>>,
    user_id: Option<Uuid>,
    decision: Option<String>,
    auth_time: Option<DateTime<Utc>>,
    amr: Option<Vec<Option<String>>>,
    delivered_at: Option<DateTime<Utc>>,
}

/// A poll's answer, with the tokens when they are delivered.
#[derive(Debug)]
pub enum DevicePoll<S> {
    Answer(PollOutcome),
    /// Unknown, another client's, or the person's sign-in ended since they allowed it.
    Unknown,
    Issued(S),
}

/// Answers a poll for the device code whose hash is `hash`, under the code's row lock: two polls
/// at once are answered one after the other, so the tokens go out once.
pub fn poll_device<S: IssuedAccess>(
    conn: &mut PgConnection,
    hash: &[u8],
    client_id: &str,
    now: DateTime<Utc>,
    grant: &CodeGrant<'_>,
    event: NewEvent,
    sign: super::refresh_tokens::Signer<'_, S>,
) -> Result<DevicePoll<S>, IssueFailure> {
    conn.transaction(|conn| {
        let stored: Option<StoredDevice> = device_codes::table
            .filter(device_codes::device_code_hash.eq(hash))
            .select(StoredDevice::as_select())
            .for_update()
            .first(conn)
            .optional()?;
        let Some(stored) = stored.filter(|stored| stored.client_id == client_id) else {
            return Ok(DevicePoll::Unknown);
        };
        let state = DeviceState {
            expires_at: stored.expires_at,
            interval_secs: stored.interval_secs,
            last_polled_at: stored.last_polled_at,
            decision: stored.decision.as_deref().and_then(Decision::parse),
            delivered: stored.delivered_at.is_some(),
        };
        let outcome = decide_poll(&state, now);
        let this_code = device_codes::table.filter(device_codes::device_code_hash.eq(hash));
        match outcome {
            PollOutcome::SlowDown => {
                diesel::update(this_code)
                    .set((
                        device_codes::interval_secs.eq(stored.interval_secs + SLOW_DOWN_STEP),
                        device_codes::last_polled_at.eq(now),
                    ))
                    .execute(conn)?;
                return Ok(DevicePoll::Answer(outcome));
            }
            PollOutcome::Deliver => {}
            other => {
                diesel::update(this_code).set(device_codes::last_polled_at.eq(now)).execute(conn)?;
                return Ok(DevicePoll::Answer(other));
            }
        }
        let (Some(user_id), Some(auth_time)) = (stored.user_id, stored.auth_time) else {
            return Ok(DevicePoll::Unknown);
        };
        diesel::update(this_code)
            .set((device_codes::last_polled_at.eq(now), device_codes::delivered_at.eq(now)))
            .execute(conn)?;
        let amr: Vec<String> = stored.amr.unwrap_or_default().into_iter().flatten().collect();
        let family = FamilyStart {
            family_id: Uuid::now_v7(),
            user_id,
            auth_time,
            issued_at: now,
            client_id: Some(client_id),
            requested: &stored.scope,
            token: NewToken { hash: grant.refresh_token.hash, expires_at: grant.refresh_token.expires_at },
            family_expires_at: grant.family_expires_at,
            client_addr: grant.client_addr,
            amr: &amr,
            // The person allowed this device on the page itself: no stored consent is involved.
            consent_required: false,
        };
        let event = event.detail(format!("device_code for client {client_id}"));
        match refresh_tokens::start_family_in_transaction(conn, &family, event, sign)? {
            Start::Issued(answer) => Ok(DevicePoll::Issued(answer)),
            // Delivered stays set: the device starts over with a new request.
            Start::Invalidated | Start::ScopeNotAllowed(_) => Ok(DevicePoll::Unknown),
        }
    })
}

/// Deletes device codes an hour past their expiry.
pub fn purge_expired_devices(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(device_codes::table.filter(device_codes::expires_at.lt(now - chrono::Duration::hours(1))))
        .execute(conn)
}
