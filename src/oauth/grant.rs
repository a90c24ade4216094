//! Carrying out the grants: checking what was presented, and issuing an access token (JWT) with a
//! new refresh token. The rules that two requests could break together are transactions in
//! `db::refresh_tokens`; this module decides what to ask for and what the answer means.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::GrantError;
use super::client_auth::{ClientAtToken, ClientFailure, ClientRefusal, ClientVerdict, PresentedClient, decide};
use crate::auth::credentials::{self, Attempt, LoginError, SecondFactors, SecondStep, SignIn};
use crate::auth::jwt::{AccessClaims, TokenSubject};
use crate::auth::keys::KeyRing;
use crate::auth::password::PasswordHasher;
use crate::auth::pat;
use crate::config::SigningAlgorithm;
use crate::db::auth_events::NewEvent;
use crate::db::authorizations::{CodeExchange, CodeGrant, Issued, StoredCode};
use crate::db::refresh_tokens::{self, FamilyStart, Grantee, IssueFailure, IssuedAccess, NewToken, Rotation, Start};
use crate::db::{self, PgPool};
use crate::domain::{EventKind, GrantType, IdTokenAlg, ScopeSet};
use crate::errors::ServerError;
use crate::metrics::{ClientAuthLabels, GrantLabels, Metrics};
use crate::oauth::id_token::{self, IdTokenClaims, Person, PersonClaims};

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
    /// Opaque; rotated on every use. None for client credentials (RFC 6749 §4.4.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// OpenID Connect: for a registered client whose scope has `openid` (code, device and refresh grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The access token's id and expiry, stored beside its refresh token (never sent).
    #[serde(skip)]
    pub access: Option<(uuid::Uuid, DateTime<Utc>)>,
}

impl IssuedAccess for IssuedTokens {
    fn access_token(&self) -> Option<(uuid::Uuid, DateTime<Utc>)> {
        self.access
    }
}

/// The registered client a grant is for, as the tokens need it.
#[derive(Debug, Clone)]
pub struct GrantClient {
    pub client_id: String,
    pub id_token_alg: IdTokenAlg,
    /// Its people are never asked for consent (so none is stored to check at an exchange).
    pub first_party: bool,
}

/// What a code exchange's trip to the database came back with: its client refused, or the exchange.
enum ClientExchange<S> {
    Refused(ClientRefusal),
    Exchanged(String, CodeExchange<S>),
}

/// An ID token to add to the answer: its algorithm and the nonce of the authorization request.
struct IdTokenWanted {
    alg: SigningAlgorithm,
    nonce: Option<String>,
}

/// The refresh token that will begin a family for a code or a device code, with the times and the
/// address its rows record.
struct FamilyToBe {
    refresh_token: String,
    refresh_hash: Vec<u8>,
    token_expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
    client_addr: Option<String>,
}

impl FamilyToBe {
    fn new(policy: RefreshPolicy, attempt: &Attempt, now: DateTime<Utc>) -> Self {
        let refresh_token = crate::random::token(32);
        Self {
            refresh_hash: refresh_tokens::token_hash(&refresh_token),
            refresh_token,
            token_expires_at: now + policy.token_ttl,
            family_expires_at: now + policy.family_max_age,
            client_addr: attempt.client_addr(),
        }
    }

    fn grant(&self) -> CodeGrant<'_> {
        CodeGrant {
            refresh_token: NewToken { hash: &self.refresh_hash, expires_at: self.token_expires_at },
            family_expires_at: self.family_expires_at,
            client_addr: self.client_addr.as_deref(),
        }
    }
}

/// How long a code lives (RFC 6749 §4.1.2 recommends at most ten minutes; a redirect takes seconds).
pub const CODE_TTL: chrono::Duration = chrono::Duration::seconds(60);

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
    pub second_factors: Arc<SecondFactors>,
}

impl Grants {
    /// RFC 6749 §4.3: the resource owner password credentials grant.
    /// A user with a second factor sends a code with the password (`otp`); missing or wrong, the
    /// answer is a wrong password's.
    #[allow(clippy::too_many_arguments)] // what /token parsed, one value per field
    pub async fn password(
        &self,
        username: &str,
        password: SecretString,
        otp: Option<SecretString>,
        requested: ScopeSet,
        client: Option<GrantClient>,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, GrantError> {
        // No key that may sign: say so before a bcrypt run and a recorded sign-in that no token
        // could follow (the issuing transaction would roll back anyway).
        if !self.keys.can_sign(now) {
            return Err(GrantError::Server(ServerError::internal(crate::errors::Message(
                "no signing key may sign now",
            ))));
        }
        // A place in the hashing queue first: a request turned away costs nothing more (no query).
        let ticket = credentials::admit(&self.hasher, &self.metrics, username, attempt).await.map_err(login_error)?;
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

        let second = SecondStep::WithPassword(otp);
        let checked = credentials::check_password(
            &self.pool,
            ticket,
            &self.metrics,
            &self.second_factors,
            username,
            password,
            second,
            attempt,
        )
        .await
        .map_err(login_error)?;
        let signed_in = match checked {
            SignIn::Complete(signed_in) => signed_in,
            // `WithPassword` never leaves a step for later, nor lets a user who must enrol in.
            SignIn::SecondStepDue(_) | SignIn::MustEnrol(_) => return Err(GrantError::InvalidCredentials),
        };
        let amr = signed_in.method.amr();

        let refresh_token = crate::random::token(32);
        let hash = refresh_tokens::token_hash(&refresh_token);
        let policy = self.policy;
        let client_addr = attempt.client_addr();
        let event =
            NewEvent::new(EventKind::TokenIssued, attempt.channel).attempted(username).client(client_addr.clone());
        let keys = Arc::clone(&self.keys);
        let started = db::run_with(&self.pool, move |conn| {
            let start = FamilyStart {
                family_id: uuid::Uuid::now_v7(),
                user_id: signed_in.user_id,
                auth_time: signed_in.began_at,
                issued_at: signed_in.began_at,
                client_id: client.as_ref().map(|client| client.client_id.as_str()),
                requested: &requested,
                token: NewToken { hash: &hash, expires_at: now + policy.token_ttl },
                family_expires_at: signed_in.began_at + policy.family_max_age,
                client_addr: client_addr.as_deref(),
                amr: &amr,
                consent_required: false,
            };
            let sign =
                Box::new(|grantee: &Grantee| sign(&keys, grantee, refresh_token, None).map(|(tokens, _)| tokens));
            refresh_tokens::start_family(conn, &start, event, sign)
        })
        .await?;
        match started {
            Start::Issued(tokens) => Ok(self.count_issued(tokens, "password")),
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
        client: Option<GrantClient>,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, GrantError> {
        if let Some(client) = &client {
            self.ensure_id_token_key(client.id_token_alg, now).await?;
        }
        let presented = refresh_tokens::token_hash(presented.expose_secret());
        let new_token = crate::random::token(32);
        let new_hash = refresh_tokens::token_hash(&new_token);
        let ttl = self.policy.token_ttl;
        let event = NewEvent::new(EventKind::Refresh, attempt.channel).client(attempt.client_addr());
        let keys = Arc::clone(&self.keys);
        let rotation = db::run_with(&self.pool, move |conn| {
            let token = NewToken { hash: &new_hash, expires_at: now + ttl };
            // OIDC Core §12.2: a refresh may bring a new ID token (no nonce: there was no new request).
            let id_token = client.as_ref().map(|client| IdTokenWanted {
                alg: crate::auth::keys::id_token_signing_alg(client.id_token_alg),
                nonce: None,
            });
            let sign =
                Box::new(|grantee: &Grantee| sign(&keys, grantee, new_token, id_token).map(|(tokens, _)| tokens));
            let client_id = client.as_ref().map(|client| client.client_id.as_str());
            refresh_tokens::rotate(conn, &presented, client_id, requested.as_ref(), &token, now, event, sign)
        })
        .await?;
        match rotation {
            Rotation::Rotated(tokens) => Ok(self.count_issued(tokens, "refresh_token")),
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

    /// RFC 6749 §4.4: a registered client's own access token (`sub` and `client_id` are the
    /// client's), for the requested scopes of the client's (default: all of them), without a
    /// refresh token. The client has authenticated already (`oauth::client_auth::decide`).
    pub async fn client_credentials(
        &self,
        client_id: String,
        client_scope: &ScopeSet,
        requested: Option<ScopeSet>,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, GrantError> {
        let scopes = crate::auth::client_secret::grant_scopes(client_scope, requested.as_ref())
            .map_err(|denied| GrantError::InvalidScope(format!("scope not allowed for this client: {denied}")))?;
        // Signed first, recorded second: the audit row is written only for a token that exists, and
        // the token is handed out only once its row is stored.
        let (access_token, claims) =
            self.keys.issue_for_client(&client_id, &scopes, now).map_err(ServerError::internal)?;
        let event = NewEvent::new(EventKind::TokenIssued, attempt.channel)
            .attempted(&client_id)
            .client(attempt.client_addr())
            .detail(format!("client_credentials for client {client_id}, token {}", claims.jti));
        db::run(&self.pool, move |conn| db::auth_events::record(conn, &event)).await?;
        self.metrics.tokens_issued.get_or_create(&GrantLabels { grant: "client_credentials" }).inc();
        Ok(IssuedTokens {
            access_token,
            token_type: "bearer",
            expires_in: self.keys.ttl_secs(),
            scope: scopes.to_string(),
            refresh_token: None,
            id_token: None,
            access: None,
        })
    }

    /// RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6): exchanges a code for tokens, once, for the client
    /// `presented` names, authenticated here (`client_auth::decide`) in the exchange's own trip to
    /// the database; a refused client is the inner `Err`, for the caller to answer. A code
    /// presented again revokes what its first exchange issued.
    #[allow(clippy::too_many_arguments)] // what /token parsed, one value per field
    pub async fn authorization_code(
        &self,
        presented: Option<PresentedClient>,
        password_grant_open: bool,
        code: SecretString,
        redirect_uri: Option<String>,
        verifier: Option<SecretString>,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<Result<IssuedTokens, ClientRefusal>, GrantError> {
        let hash = refresh_tokens::token_hash(code.expose_secret());
        let family = FamilyToBe::new(self.policy, attempt, now);
        let keys = Arc::clone(&self.keys);
        let event = NewEvent::new(EventKind::TokenIssued, attempt.channel).client(family.client_addr.clone());
        let reuse_event = NewEvent::new(EventKind::CodeReused, attempt.channel).client(family.client_addr.clone());
        let exchanged = db::run_with(&self.pool, move |conn| -> Result<_, IssueFailure> {
            let registered = match &presented {
                Some(presented) => db::clients::with_live_secrets(conn, &presented.client_id, now)?
                    .map(|(client, secrets)| ClientAtToken::new(client, secrets)),
                None => None,
            };
            let grant_type = GrantType::AuthorizationCode;
            let client = match decide(grant_type, presented.as_ref(), registered.as_ref(), password_grant_open, now) {
                Ok(ClientVerdict::Client { client_id, id_token_alg, first_party, .. }) => {
                    GrantClient { client_id, id_token_alg, first_party }
                }
                // `decide` lets no anonymous request of this grant through.
                Ok(ClientVerdict::Anonymous) => {
                    return Ok(ClientExchange::Refused(ClientRefusal::InvalidClient(ClientFailure::NoClient)));
                }
                Err(refusal) => return Ok(ClientExchange::Refused(refusal)),
            };
            // A client registered a moment ago may need the first key of its algorithm (as
            // `ensure_id_token_key`, here in the same trip).
            let alg: SigningAlgorithm = crate::auth::keys::id_token_signing_alg(client.id_token_alg);
            if !keys.can_sign_id_token(alg, now) {
                keys.reload(conn, now).map_err(|err| IssueFailure::Sign(Box::new(err)))?;
            }
            let consent_required = !client.first_party;
            let binding = |code: &StoredCode| {
                if code.client_id != client.client_id {
                    return Err("issued to another client");
                }
                // §4.1.3: required when the authorization request had it; when given, it must be the one.
                let matches = match redirect_uri.as_deref() {
                    Some(given) => given == code.redirect_uri,
                    None => !code.redirect_uri_given,
                };
                if !matches {
                    return Err("redirect_uri differs");
                }
                let verifier = verifier.as_ref().map(|verifier| verifier.expose_secret()).unwrap_or_default();
                if !super::authorize::verifier_matches(verifier, &code.code_challenge) {
                    return Err("code_verifier does not match");
                }
                Ok(())
            };
            let grant = family.grant();
            let sign = |grantee: &Grantee, code: &StoredCode| {
                let wanted = IdTokenWanted { alg, nonce: code.nonce.clone() };
                let (tokens, _) = sign(&keys, grantee, family.refresh_token.clone(), Some(wanted))?;
                Ok(Issued { answer: tokens, family_id: grantee.family_id })
            };
            let exchanged = db::authorizations::exchange_code(
                conn,
                &hash,
                now,
                binding,
                &grant,
                consent_required,
                event,
                sign,
                reuse_event,
            )?;
            Ok(ClientExchange::Exchanged(client.client_id, exchanged))
        })
        .await?;
        let (client_id, exchanged) = match exchanged {
            ClientExchange::Refused(refusal) => return Ok(Err(refusal)),
            ClientExchange::Exchanged(client_id, exchanged) => (client_id, exchanged),
        };
        match exchanged {
            CodeExchange::Issued(tokens) => Ok(Ok(self.count_issued(tokens, "authorization_code"))),
            CodeExchange::Refused(why) => {
                log::info!("authorization code refused for client {client_id}: {why}");
                Err(GrantError::InvalidGrant("The authorization code is invalid, expired or used"))
            }
            CodeExchange::Reused => {
                self.metrics.code_reuse.inc();
                Err(GrantError::InvalidGrant("The authorization code is invalid, expired or used"))
            }
        }
    }

    /// Issues a code for `request` to the signed-in person (RFC 6749 §4.1.2): 32 random bytes, of
    /// which only the SHA-256 is stored, usable once within [`CODE_TTL`].
    pub async fn issue_code(
        &self,
        request: &super::authorize::AuthorizeRequest,
        scope: ScopeSet,
        user_id: uuid::Uuid,
        auth_time: DateTime<Utc>,
        amr: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<String, ServerError> {
        let code = crate::random::token(32);
        let (request, stored) = (request.clone(), code.clone());
        db::run(&self.pool, move |conn| store_code(conn, &request, &stored, &scope, user_id, auth_time, &amr, now))
            .await?;
        Ok(code)
    }

    /// RFC 8628 §3.1: a device asks to be allowed; the person will enter the user code at `/device`.
    /// Returns the device code and the user code (stored without its dash).
    pub async fn device_authorization(
        &self,
        client_id: String,
        scope: ScopeSet,
        now: DateTime<Utc>,
    ) -> Result<(String, String), GrantError> {
        let device_code = crate::random::token(32);
        let hash = refresh_tokens::token_hash(&device_code);
        let user_code = db::run(&self.pool, move |conn| {
            // A collision of user codes among live requests is rare (20^8 codes); draw again.
            for _ in 0..5 {
                let user_code = super::device::new_user_code();
                let code = db::authorizations::NewDeviceCode {
                    hash: &hash,
                    user_code: &user_code,
                    client_id: &client_id,
                    scope: &scope,
                    expires_at: now + super::device::DEVICE_CODE_TTL,
                };
                if db::authorizations::insert_device_code(conn, &code)? {
                    return Ok(Some(user_code));
                }
            }
            Ok(None)
        })
        .await?;
        let user_code = user_code
            .ok_or_else(|| ServerError::internal(crate::errors::Message("no free user code after five draws")))?;
        Ok((device_code, user_code))
    }

    /// RFC 8628 §3.4: a device polls. The tokens go out once, to the client that asked.
    pub async fn device_code(
        &self,
        client: GrantClient,
        device_code: SecretString,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, GrantError> {
        use super::device::PollOutcome;
        use db::authorizations::DevicePoll;
        self.ensure_id_token_key(client.id_token_alg, now).await?;
        let hash = refresh_tokens::token_hash(device_code.expose_secret());
        let family = FamilyToBe::new(self.policy, attempt, now);
        let keys = Arc::clone(&self.keys);
        let event = NewEvent::new(EventKind::TokenIssued, attempt.channel).client(family.client_addr.clone());
        let polled = db::run_with(&self.pool, move |conn| {
            let grant = family.grant();
            let wanted =
                IdTokenWanted { alg: crate::auth::keys::id_token_signing_alg(client.id_token_alg), nonce: None };
            let sign = Box::new(|grantee: &Grantee| {
                sign(&keys, grantee, family.refresh_token.clone(), Some(wanted)).map(|(tokens, _)| tokens)
            });
            db::authorizations::poll_device(conn, &hash, &client.client_id, now, &grant, event, sign)
        })
        .await?;
        match polled {
            DevicePoll::Issued(tokens) => Ok(self.count_issued(tokens, "device_code")),
            DevicePoll::Answer(PollOutcome::Pending) => Err(GrantError::AuthorizationPending),
            DevicePoll::Answer(PollOutcome::SlowDown) => Err(GrantError::SlowDown),
            DevicePoll::Answer(PollOutcome::Denied) => Err(GrantError::AccessDenied),
            DevicePoll::Answer(PollOutcome::Expired) => Err(GrantError::ExpiredToken),
            DevicePoll::Answer(PollOutcome::AlreadyDelivered | PollOutcome::Deliver) | DevicePoll::Unknown => {
                Err(GrantError::InvalidGrant("The device code is invalid or was used"))
            }
        }
    }

    /// Makes sure this instance can sign `client`'s ID tokens: a client registered a moment ago may
    /// need the first key of its algorithm, which the next reload makes (under the rotation lock,
    /// so two instances make one).
    pub async fn ensure_id_token_key(&self, alg: IdTokenAlg, now: DateTime<Utc>) -> Result<(), ServerError> {
        let alg = crate::auth::keys::id_token_signing_alg(alg);
        if self.keys.can_sign_id_token(alg, now) {
            return Ok(());
        }
        let keys = Arc::clone(&self.keys);
        db::run(&self.pool, move |conn| Ok(keys.reload(conn, now))).await?.map_err(ServerError::internal)
    }

    /// Records a failed client authentication (audit trail and metrics); the caller answers
    /// `invalid_client` (or `429` when the address has spent its budget, which is not recorded).
    pub async fn client_failed(
        &self,
        client_id: Option<&str>,
        failure: ClientFailure,
        attempt: &Attempt,
    ) -> Result<(), ServerError> {
        let mut event = NewEvent::new(EventKind::ClientAuthFailed, attempt.channel)
            .client(attempt.client_addr())
            .detail(failure.as_str());
        if let Some(client_id) = client_id {
            event = event.attempted(client_id);
        }
        db::run(&self.pool, move |conn| db::auth_events::record(conn, &event)).await
    }

    /// Counts a client authentication's outcome.
    pub fn count_client_authentication(&self, outcome: &'static str) {
        self.metrics.client_authentications.get_or_create(&ClientAuthLabels { outcome }).inc();
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
        // Fresh, as on `/api`: a token of a key another instance just made is revoked, not ignored.
        let access = self
            .keys
            .verify_signature_fresh(&self.pool, token.expose_secret(), now)
            .await
            .ok()
            // A client's own token has no user to file a revocation under: it ends with its client.
            .and_then(|(_, claims)| {
                let user_id = claims.sub.user_id()?;
                Some((claims.jti, user_id, DateTime::from_timestamp(claims.exp, 0).unwrap_or(now)))
            });
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

    fn count_issued(&self, tokens: IssuedTokens, grant: &'static str) -> IssuedTokens {
        self.metrics.tokens_issued.get_or_create(&GrantLabels { grant }).inc();
        tokens
    }
}

fn login_error(err: LoginError) -> GrantError {
    match err {
        LoginError::InvalidCredentials => GrantError::InvalidCredentials,
        LoginError::Server(err) => GrantError::Server(err),
    }
}

/// Signs the access token for `grantee` (and, for a registered client whose scope has `openid`,
/// an ID token), inside the transaction that stores the refresh token: if no key can sign, the
/// transaction rolls back and the presented credential stays as it was.
fn sign(
    keys: &KeyRing,
    grantee: &Grantee,
    refresh_token: String,
    id_token: Option<IdTokenWanted>,
) -> Result<(IssuedTokens, AccessClaims), IssueFailure> {
    let subject = TokenSubject {
        user_id: grantee.user_id,
        username: &grantee.username,
        roles: &grantee.roles,
        auth_time: grantee.auth_time,
        amr: &grantee.amr,
        client_id: grantee.client_id.as_deref(),
    };
    let (access_token, claims) =
        keys.issue(&subject, &grantee.scopes, grantee.issued_at).map_err(|err| IssueFailure::Sign(err.into()))?;
    let id_token = match (id_token, &grantee.client_id) {
        (Some(wanted), Some(client_id)) if grantee.scopes.contains(id_token::OPENID) => {
            let person = Person {
                user_id: grantee.user_id,
                username: &grantee.username,
                full_name: grantee.full_name.as_deref(),
                email: grantee.email.as_deref(),
                email_verified: grantee.email_verified,
            };
            let claims = IdTokenClaims {
                iss: claims.iss.clone(),
                aud: client_id.clone(),
                azp: client_id.clone(),
                exp: claims.exp,
                iat: claims.iat,
                auth_time: grantee.auth_time.timestamp(),
                nonce: wanted.nonce,
                amr: grantee.amr.clone(),
                at_hash: Some(id_token::at_hash(wanted.alg, &access_token)),
                person: PersonClaims::of(&person, &grantee.scopes),
            };
            let signed = keys
                .sign_id_token(wanted.alg, &claims, grantee.issued_at)
                .map_err(|err| IssueFailure::Sign(err.into()))?;
            Some(signed)
        }
        _ => None,
    };
    let tokens = IssuedTokens {
        access_token,
        token_type: "bearer",
        expires_in: keys.ttl_secs(),
        scope: grantee.scopes.to_string(),
        refresh_token: Some(refresh_token),
        id_token,
        access: Some((claims.jti, DateTime::from_timestamp(claims.exp, 0).unwrap_or(grantee.issued_at))),
    };
    Ok((tokens, claims))
}

/// Stores a new authorization code for `request` (its SHA-256, never the code), valid for
/// [`CODE_TTL`]: on its own trip to the database ([`Grants::issue_code`]) or in the caller's.
#[allow(clippy::too_many_arguments)]
pub fn store_code(
    conn: &mut diesel::PgConnection,
    request: &super::authorize::AuthorizeRequest,
    code: &str,
    scope: &ScopeSet,
    user_id: uuid::Uuid,
    auth_time: DateTime<Utc>,
    amr: &[String],
    now: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    let hash = refresh_tokens::token_hash(code);
    let new = db::authorizations::NewCode {
        hash: &hash,
        client_id: &request.client_id,
        user_id,
        redirect_uri: &request.redirect_uri,
        redirect_uri_given: request.redirect_uri_given,
        code_challenge: &request.code_challenge,
        nonce: request.nonce.as_deref(),
        scope,
        auth_time,
        amr,
        expires_at: now + CODE_TTL,
    };
    db::authorizations::insert_code(conn, &new)
}
