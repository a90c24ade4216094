//! Carrying out the two grants: checking what was presented, and issuing an access token (JWT) with
//! a new refresh token.

use actix_web::web;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::auth::credentials::{self, Attempt, LoginError};
use crate::auth::jwt::TokenSubject;
use crate::db::auth_events::{EventKind, NewEvent};
use crate::db::refresh_tokens::{self, NewRefreshToken};
use crate::db::{self, DbError};
use crate::domain::{ScopeName, ScopeSet};
use crate::errors::TokenError;
use crate::state::AppState;

/// What a successful grant hands to the client.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedTokens {
    /// An RFC 9068 JWT (`typ: at+jwt`, HS256).
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: i64,
    /// The granted scopes, space-separated.
    #[schema(example = "items:read items:write profile")]
    pub scope: String,
    /// Opaque; rotated on every use.
    pub refresh_token: String,
}

/// The user a grant is for, and what they may have.
struct Grantee {
    user_id: Uuid,
    username: String,
    roles: Vec<String>,
    scopes: ScopeSet,
}

/// RFC 6749 §4.3: the resource owner password credentials grant.
pub async fn password(
    state: &web::Data<AppState>,
    username: &str,
    password: SecretString,
    requested: ScopeSet,
    attempt: Attempt,
) -> Result<IssuedTokens, TokenError> {
    // Scopes that do not exist at all are refused before any password work: that reveals nothing.
    let wanted = requested.clone();
    let unknown = db::run(&state.pool, move |conn| {
        let known: Vec<String> = db::roles::all_scopes(conn)?.into_iter().map(|s| s.name).collect();
        Ok(wanted.iter().find(|s| !known.iter().any(|k| k == s.as_str())).cloned())
    })
    .await?;
    if let Some(scope) = unknown {
        return Err(TokenError::InvalidScope(format!("unknown scope `{scope}`")));
    }

    let signed_in =
        credentials::check_password(state, username, password, &attempt).await.map_err(|err| match err {
            LoginError::InvalidCredentials => TokenError::InvalidCredentials,
            LoginError::Db(err) => err.into(),
            LoginError::Hash(err) => err.into(),
        })?;

    let now = Utc::now();
    let refresh_token = crate::auth::random_token(32);
    let refresh_hash = refresh_tokens::token_hash(&refresh_token);
    let ttl = refresh_ttl(state);
    let event = NewEvent::new(EventKind::TokenIssued, attempt.channel)
        .user(signed_in.user_id)
        .attempted(username)
        .client(attempt.client_addr.clone());
    let grantee = db::run(&state.pool, move |conn| {
        let user_id = signed_in.user_id;
        let allowed = allowed_scopes(conn, user_id)?;
        let scopes = if requested.is_empty() { allowed.clone() } else { requested.clone() };
        if !scopes.is_subset(&allowed) {
            let denied = scopes.difference(&allowed);
            return Ok(Err(TokenError::InvalidScope(format!("scope not allowed for this user: {denied}"))));
        }
        let roles = db::users::roles_of(conn, user_id)?;
        let scope_text = scopes.to_string();
        conn.transaction(|conn| {
            refresh_tokens::insert(
                conn,
                &NewRefreshToken {
                    id: Uuid::now_v7(),
                    family_id: Uuid::now_v7(),
                    user_id,
                    token_hash: &refresh_hash,
                    scope: &scope_text,
                    issued_at: now,
                    expires_at: now + ttl,
                },
            )?;
            db::auth_events::record(conn, &event.detail(scope_text.clone()))
        })?;
        Ok(Ok(Grantee { user_id, username: signed_in.username, roles, scopes }))
    })
    .await??;
    issue_access_token(state, grantee, refresh_token, now)
}

/// Why a refresh could not go ahead.
enum RefreshOutcome {
    Rotated(Grantee),
    Refused,
    ScopeWidened(ScopeSet),
}

/// RFC 6749 §6: exchanges a refresh token for new tokens, rotating it. Presenting a token that was
/// already exchanged means it leaked (or the client is confused): the whole family is revoked.
pub async fn refresh(
    state: &web::Data<AppState>,
    presented: SecretString,
    requested: Option<ScopeSet>,
    attempt: Attempt,
) -> Result<IssuedTokens, TokenError> {
    let now = Utc::now();
    let presented_hash = refresh_tokens::token_hash(presented.expose_secret());
    let new_token = crate::auth::random_token(32);
    let new_hash = refresh_tokens::token_hash(&new_token);
    let ttl = refresh_ttl(state);
    let outcome = db::run(&state.pool, move |conn| {
        let event = |kind| NewEvent::new(kind, attempt.channel).client(attempt.client_addr.clone());
        let outcome = conn.transaction::<_, diesel::result::Error, _>(|conn| {
            let Some(stored) = refresh_tokens::find_for_update(conn, &presented_hash)? else {
                return Ok(RefreshOutcome::Refused);
            };
            if stored.used_at.is_some() && stored.revoked_at.is_none() {
                refresh_tokens::revoke_family(conn, stored.family_id, now)?;
                let detail = format!("family {} revoked", stored.family_id);
                db::auth_events::record(conn, &event(EventKind::ReuseDetected).user(stored.user_id).detail(detail))?;
                return Ok(RefreshOutcome::Refused);
            }
            if stored.used_at.is_some() || stored.revoked_at.is_some() || stored.expires_at <= now {
                return Ok(RefreshOutcome::Refused);
            }
            let Some(user) = db::users::find_by_id(conn, stored.user_id)? else {
                return Ok(RefreshOutcome::Refused);
            };
            if !user.is_active || stored.issued_at < user.tokens_valid_after {
                return Ok(RefreshOutcome::Refused);
            }
            let original = ScopeSet::parse(&stored.scope).unwrap_or_default();
            let wanted = requested.unwrap_or_else(|| original.clone());
            if !wanted.is_subset(&original) {
                return Ok(RefreshOutcome::ScopeWidened(wanted.difference(&original)));
            }
            // Roles may have changed since the first grant: never hand out what they no longer allow.
            let allowed = allowed_scopes(conn, user.id)?;
            let scopes: ScopeSet = wanted.iter().filter(|s| allowed.contains(s.as_str())).cloned().collect();
            let scope_text = scopes.to_string();
            refresh_tokens::mark_used(conn, stored.id, now)?;
            refresh_tokens::insert(
                conn,
                &NewRefreshToken {
                    id: Uuid::now_v7(),
                    family_id: stored.family_id,
                    user_id: user.id,
                    token_hash: &new_hash,
                    scope: &scope_text,
                    issued_at: now,
                    expires_at: now + ttl,
                },
            )?;
            db::auth_events::record(
                conn,
                &event(EventKind::Refresh).user(user.id).attempted(&user.username).detail(scope_text.clone()),
            )?;
            let roles = db::users::roles_of(conn, user.id)?;
            Ok(RefreshOutcome::Rotated(Grantee { user_id: user.id, username: user.username, roles, scopes }))
        })?;
        Ok(outcome)
    })
    .await?;
    match outcome {
        RefreshOutcome::Rotated(grantee) => issue_access_token(state, grantee, new_token, now),
        RefreshOutcome::Refused => Err(TokenError::InvalidRefreshToken),
        RefreshOutcome::ScopeWidened(extra) => {
            Err(TokenError::InvalidScope(format!("a refresh cannot add scopes: {extra}")))
        }
    }
}

/// RFC 7009: revokes a refresh token (and its family) or an access token. Unknown tokens are not an error.
pub async fn revoke(state: &web::Data<AppState>, token: SecretString, attempt: Attempt) -> Result<(), DbError> {
    let now = Utc::now();
    let hash = refresh_tokens::token_hash(token.expose_secret());
    // An access token's signature is checked; its expiry is not, as revoking an expired one is harmless.
    let access = state
        .keys
        .verify(token.expose_secret(), now)
        .ok()
        .map(|claims| (claims.jti, claims.sub, DateTime::from_timestamp(claims.exp, 0).unwrap_or(now)));
    db::run(&state.pool, move |conn| {
        let event = NewEvent::new(EventKind::Revoke, attempt.channel).client(attempt.client_addr.clone());
        if let Some(stored) = refresh_tokens::find(conn, &hash)? {
            refresh_tokens::revoke_family(conn, stored.family_id, now)?;
            let detail = format!("refresh token family {}", stored.family_id);
            db::auth_events::record(conn, &event.user(stored.user_id).detail(detail))?;
        } else if let Some((jti, user_id, expires_at)) = access
            && db::users::find_by_id(conn, user_id)?.is_some()
        {
            refresh_tokens::revoke_access_token(conn, jti, user_id, expires_at)?;
            db::auth_events::record(conn, &event.user(user_id).detail(format!("access token {jti}")))?;
        }
        Ok(())
    })
    .await
}

fn allowed_scopes(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<ScopeSet> {
    let names = db::users::allowed_scopes(conn, user_id)?;
    Ok(names.iter().filter_map(|name| ScopeName::parse(name).ok()).collect())
}

fn refresh_ttl(state: &AppState) -> chrono::Duration {
    chrono::Duration::from_std(state.settings.refresh_token_ttl).unwrap_or(chrono::Duration::days(14))
}

fn issue_access_token(
    state: &AppState,
    grantee: Grantee,
    refresh_token: String,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, TokenError> {
    let subject = TokenSubject { user_id: grantee.user_id, username: &grantee.username, roles: &grantee.roles };
    let (access_token, _) = state
        .keys
        .issue(&subject, &grantee.scopes, now)
        .map_err(|err| TokenError::Internal(format!("signing an access token failed: {err}")))?;
    Ok(IssuedTokens {
        access_token,
        token_type: "bearer",
        expires_in: state.keys.ttl_secs(),
        scope: grantee.scopes.to_string(),
        refresh_token,
    })
}
