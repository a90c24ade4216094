//! Carrying out the grants: checking what was presented, and issuing an access token (JWT) with a
//! new refresh token. The rules that two requests could break together are transactions in
//! `db::refresh_tokens`; this module decides what to ask for and what the answer means.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::GrantError;
use crate::auth::credentials::{self, Attempt, LoginError};
use crate::auth::jwt::TokenSubject;
use crate::auth::keys::KeyRing;
use crate::auth::password::PasswordHasher;
use crate::auth::pat;
use crate::db::auth_events::NewEvent;
use crate::db::refresh_tokens::{self, FamilyStart, Grantee, NewToken, Rotation, Start};
use crate::db::{self, PgPool};
use crate::domain::{EventKind, ScopeSet};
use crate::errors::ServerError;
use crate::metrics::{GrantLabels, Metrics};

/// What a successful grant hands to the client (RFC 6749 §5.1).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedTokens {
    /// An RFC 9068 JWT (`typ: at+jwt`).
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

/// How long refresh tokens and their families live.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// A refresh token unused for this long expires.
    pub token_ttl: chrono::Duration,
    /// A family ends this long after the password grant that began it, however often rotated.
    pub family_max_age: chrono::Duration,
}

/// Everything the grants need, and nothing more.
#[derive(Clone)]
pub struct Grants {
    pub pool: PgPool,
    pub hasher: PasswordHasher,
    pub keys: Arc<KeyRing>,
    pub policy: RefreshPolicy,
    pub metrics: Arc<Metrics>,
}

impl Grants {
    /// RFC 6749 §4.3: the resource owner password credentials grant.
    pub async fn password(
        &self,
        username: &str,
        password: SecretString,
        requested: ScopeSet,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, GrantError> {
        // Scopes that do not exist at all are refused before any password work: that reveals nothing.
        let wanted = requested.clone();
        let unknown = db::run(&self.pool, move |conn| {
            let known = db::roles::all_scopes(conn)?;
            Ok(wanted.iter().find(|scope| !known.iter().any(|k| k.name == scope.as_str())).cloned())
        })
        .await?;
        if let Some(scope) = unknown {
            return Err(GrantError::InvalidScope(format!("unknown scope `{scope}`")));
        }

        let signed_in =
            credentials::check_password(&self.pool, &self.hasher, &self.metrics, username, password, attempt)
                .await
                .map_err(|err| match err {
                    LoginError::InvalidCredentials => GrantError::InvalidCredentials,
                    LoginError::Server(err) => GrantError::Server(err),
                })?;

        let refresh_token = crate::random::token(32);
        let hash = refresh_tokens::token_hash(&refresh_token);
        let policy = self.policy;
        let client_addr = attempt.client_addr();
        let event =
            NewEvent::new(EventKind::TokenIssued, attempt.channel).attempted(username).client(client_addr.clone());
        let started = db::run(&self.pool, move |conn| {
            let start = FamilyStart {
                user_id: signed_in.user_id,
                auth_time: signed_in.began_at,
                requested: &requested,
                token: NewToken { hash: &hash, expires_at: now + policy.token_ttl },
                family_expires_at: signed_in.began_at + policy.family_max_age,
                client_addr: client_addr.as_deref(),
            };
            refresh_tokens::start_family(conn, &start, event)
        })
        .await?;
        match started {
            Start::Issued(grantee) => Ok(self.issue(grantee, refresh_token, "password")?),
            // The password was right, but a password change, deactivation or sign-out-everywhere
            // committed while it was being checked: as if it had come first.
            Start::Invalidated => Err(GrantError::InvalidCredentials),
            Start::ScopeNotAllowed(denied) => {
                Err(GrantError::InvalidScope(format!("scope not allowed for this user: {denied}")))
            }
        }
    }

    /// RFC 6749 §6: exchanges a refresh token for new tokens, rotating it. Presenting a token that
    /// was already exchanged means it leaked (or the client is confused): its whole family is revoked.
    pub async fn refresh(
        &self,
        presented: SecretString,
        requested: Option<ScopeSet>,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, GrantError> {
        let presented = refresh_tokens::token_hash(presented.expose_secret());
        let new_token = crate::random::token(32);
        let new_hash = refresh_tokens::token_hash(&new_token);
        let ttl = self.policy.token_ttl;
        let event = NewEvent::new(EventKind::Refresh, attempt.channel).client(attempt.client_addr());
        let rotation = db::run(&self.pool, move |conn| {
            let token = NewToken { hash: &new_hash, expires_at: now + ttl };
            refresh_tokens::rotate(conn, &presented, requested.as_ref(), &token, now, event)
        })
        .await?;
        match rotation {
            Rotation::Rotated(grantee) => Ok(self.issue(grantee, new_token, "refresh_token")?),
            Rotation::Reused { .. } => {
                self.metrics.refresh_reuse.inc();
                Err(GrantError::InvalidRefreshToken)
            }
            Rotation::Refused => Err(GrantError::InvalidRefreshToken),
            Rotation::ScopeWidened(extra) => {
                Err(GrantError::InvalidScope(format!("a refresh cannot add scopes: {extra}")))
            }
        }
    }

    /// RFC 7009: revokes a refresh token (and its family), an access token or a personal access
    /// token. Unknown tokens are not an error.
    pub async fn revoke(&self, token: SecretString, attempt: &Attempt, now: DateTime<Utc>) -> Result<(), ServerError> {
        if pat::is_personal_token(token.expose_secret()) {
            if pat::check_format(token.expose_secret()).is_err() {
                return Ok(());
            }
            let hash = pat::hash(token.expose_secret());
            let event = NewEvent::new(EventKind::PatRevoked, attempt.channel).client(attempt.client_addr());
            db::run(&self.pool, move |conn| db::personal_tokens::revoke_presented(conn, &hash, now, event)).await?;
            return Ok(());
        }
        let hash = refresh_tokens::token_hash(token.expose_secret());
        // An access token's signature is checked; its expiry is not, as revoking an expired one is harmless.
        let access = self
            .keys
            .verify_signature(token.expose_secret(), now)
            .ok()
            .map(|(_, claims)| (claims.jti, claims.sub, DateTime::from_timestamp(claims.exp, 0).unwrap_or(now)));
        let event = NewEvent::new(EventKind::Revoke, attempt.channel).client(attempt.client_addr());
        db::run(&self.pool, move |conn| {
            if let Some((user_id, family_id)) = refresh_tokens::revoke_family_of(conn, &hash, now)? {
                let detail = format!("refresh token family {family_id}");
                db::auth_events::record(conn, &event.user(user_id).detail(detail))?;
            } else if let Some((jti, user_id, expires_at)) = access
                && refresh_tokens::revoke_access_token(conn, jti, user_id, expires_at)?
            {
                db::auth_events::record(conn, &event.user(user_id).detail(format!("access token {jti}")))?;
            }
            Ok(())
        })
        .await
    }

    fn issue(&self, grantee: Grantee, refresh_token: String, grant: &'static str) -> Result<IssuedTokens, ServerError> {
        let subject = TokenSubject { user_id: grantee.user_id, username: &grantee.username, roles: &grantee.roles };
        let (access_token, _) =
            self.keys.issue(&subject, &grantee.scopes, grantee.issued_at).map_err(ServerError::internal)?;
        self.metrics.tokens_issued.get_or_create(&GrantLabels { grant }).inc();
        Ok(IssuedTokens {
            access_token,
            token_type: "bearer",
            expires_in: self.keys.ttl_secs(),
            scope: grantee.scopes.to_string(),
            refresh_token,
        })
    }
}
