//! RFC 7662 token introspection: is this token live, and what does it say?

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::jwt::Subject;
use crate::auth::keys::KeyRing;
use crate::auth::pat;
use crate::db::{self, PgPool, personal_tokens, refresh_tokens};
use crate::domain::ScopeSet;
use crate::errors::ServerError;

/// The answer: `{"active": false}` and nothing else for anything not live (RFC 7662 §2.2 says an
/// inactive token's answer must not tell more).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<TokenDetails>,
}

/// What a live token says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenDetails {
    /// Space-separated scopes.
    pub scope: String,
    /// The user's (a client's own token has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The user's stable id, or for a client's own token its `client_id`.
    pub sub: String,
    /// The client the token was issued to (client credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub exp: i64,
    pub iat: i64,
    /// RFC 7662 §2.2: the RFC 6749 token type, `bearer` (as `/token` says) for an access token;
    /// `refresh_token` for a refresh token, which has none.
    pub token_type: &'static str,
    /// Which kind of token this is: `access_token`, `refresh_token` or `personal_access_token`.
    pub token_use: &'static str,
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<Uuid>,
}

impl Introspection {
    fn inactive() -> Self {
        Self { active: false, details: None }
    }
}

/// Introspects `token` at `now`: an access token must pass every check a bearer token passes on
/// `/api` (signature, time window, user active, not revoked, not invalidated); a refresh token must
/// be exchangeable. The hint only decides which is tried first.
pub async fn introspect(
    pool: &PgPool,
    keys: &Arc<KeyRing>,
    issuer: &str,
    token: SecretString,
    hint: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Introspection, ServerError> {
    if pat::is_personal_token(token.expose_secret()) {
        return introspect_personal_token(pool, issuer, token, now).await;
    }
    let access = match keys.verify_signature_fresh(pool, token.expose_secret(), now).await {
        Ok((_, claims)) => claims.check_time(now).is_ok().then_some(claims),
        Err(_) => None,
    };
    let hash = refresh_tokens::token_hash(token.expose_secret());
    let refresh_first = hint == Some("refresh_token");
    let issuer = issuer.to_owned();
    db::run(pool, move |conn| {
        let as_refresh = |conn: &mut diesel::PgConnection| -> diesel::QueryResult<Option<TokenDetails>> {
            Ok(refresh_tokens::live(conn, &hash, now)?.map(|live| TokenDetails {
                scope: live.scope.to_string(),
                username: Some(live.username),
                sub: live.user_id.to_string(),
                client_id: None,
                exp: live.expires_at.timestamp(),
                iat: live.issued_at.timestamp(),
                token_type: "refresh_token",
                token_use: "refresh_token",
                iss: issuer.clone(),
                aud: None,
                nbf: None,
                jti: None,
            }))
        };
        let as_access = |conn: &mut diesel::PgConnection| -> diesel::QueryResult<Option<TokenDetails>> {
            let Some(claims) = &access else { return Ok(None) };
            // The same checks as a bearer token on `/api`: a user's token needs its user active, the
            // token neither revoked nor cut off, and the client it was issued to (if any) registered;
            // a client's own token needs its client registered.
            let live = match &claims.sub {
                Subject::User(user_id) => {
                    let check = db::users::AccessCheck {
                        user_id: *user_id,
                        jti: claims.jti,
                        client_id: claims.client_id.clone(),
                    };
                    let holders = db::users::token_holders(conn, &[check])?;
                    holders.into_iter().flatten().next().is_some_and(|holder| {
                        holder.user.is_active
                            && !holder.token_revoked
                            && !holder.client_removed
                            && claims.issued_at() >= holder.user.tokens_valid_after
                    })
                }
                Subject::Client(client_id) => {
                    claims.client_id.as_ref() == Some(client_id) && db::clients::is_live(conn, client_id)?
                }
            };
            Ok(live.then(|| TokenDetails {
                scope: claims.scope.clone(),
                username: claims.preferred_username.clone(),
                sub: claims.sub.to_string(),
                client_id: claims.client_id.clone(),
                exp: claims.exp,
                iat: claims.iat,
                token_type: "bearer",
                token_use: "access_token",
                iss: claims.iss.clone(),
                aud: Some(claims.aud.clone()),
                nbf: Some(claims.nbf),
                jti: Some(claims.jti),
            }))
        };
        let details = if refresh_first {
            match as_refresh(conn)? {
                Some(details) => Some(details),
                None => as_access(conn)?,
            }
        } else {
            match as_access(conn)? {
                Some(details) => Some(details),
                None => as_refresh(conn)?,
            }
        };
        Ok(match details {
            Some(details) => Introspection { active: true, details: Some(details) },
            None => Introspection::inactive(),
        })
    })
    .await
}

/// A personal access token is live when a bearer check would let it through: well formed, known,
/// not revoked, expired or cut off, of an active owner; its scope is what it acts with now. Its use
/// here is not its holder's, so its last use is not written.
async fn introspect_personal_token(
    pool: &PgPool,
    issuer: &str,
    token: SecretString,
    now: DateTime<Utc>,
) -> Result<Introspection, ServerError> {
    if pat::check_format(token.expose_secret()).is_err() {
        return Ok(Introspection::inactive());
    }
    let hash = pat::hash(token.expose_secret());
    // Not the hot path: the owner's allowed scopes are read here, exactly, with the token.
    let found = db::run(pool, move |conn| {
        let Some(row) = personal_tokens::presented(conn, &hash)? else { return Ok(None) };
        let allowed = db::users::allowed_scopes(conn, row.user.id)?;
        Ok(Some((row, allowed)))
    })
    .await?;
    let Some((row, allowed_now)) = found else {
        return Ok(Introspection::inactive());
    };
    if !row.user.is_active || pat::judge(&crate::auth::bearer::stored(&row), now).is_err() {
        return Ok(Introspection::inactive());
    }
    let granted = ScopeSet::parse(&row.scope).unwrap_or_default();
    Ok(Introspection {
        active: true,
        details: Some(TokenDetails {
            scope: pat::scopes_at_use(&granted, &allowed_now).to_string(),
            username: Some(row.user.username),
            sub: row.user.id.to_string(),
            client_id: None,
            exp: row.expires_at.timestamp(),
            iat: row.created_at.timestamp(),
            token_type: "bearer",
            token_use: "personal_access_token",
            iss: issuer.to_owned(),
            aud: None,
            nbf: None,
            jti: Some(row.id),
        }),
    })
}
