//! Client authentication at `/token` (RFC 6749 §2.3): reading the credentials a request presents,
//! and deciding, from the registered client they name (loaded by the caller), what the request may
//! do. Pure: the table of cases below needs no database.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::GrantError;
use crate::auth::client_secret::secret_matches;
use crate::db::clients::Client;
use crate::domain::ScopeSet;
use crate::domain::form::{FormFields, decode};
use crate::domain::{ClientKind, GrantType, IdTokenAlg, StoredSecret};

/// How the client presented its credentials (`token_endpoint_auth_method`, RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A `client_id` alone: a public client, or a request that merely names one.
    None,
}

/// The client a request names, with whatever secret came with it.
#[derive(Debug)]
pub struct PresentedClient {
    pub client_id: String,
    pub secret: Option<SecretString>,
    pub method: AuthMethod,
}

/// Reads the client credentials of a token request: `authorization` is the `Authorization` header
/// (if any; one at most, the caller checks). A Basic header that does not decode, two methods at
/// once, a secret without an id, or a Basic id that differs from the form's `client_id` are
/// `invalid_request` (RFC 6749 §2.3: one method per request). Another scheme is no client credential.
pub fn presented(authorization: Option<&str>, form: &FormFields) -> Result<Option<PresentedClient>, GrantError> {
    let form_id = form.get("client_id");
    // An empty value counts as absent (RFC 6749 §3.1): FastAPI's form sends `client_secret=`.
    let form_secret = form.get("client_secret");
    let basic = authorization
        .map(str::trim)
        .and_then(|value| value.split_once(' ').map(|(scheme, rest)| (scheme, rest.trim())))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| basic_credentials(credentials))
        .transpose()?
        .flatten();
    if authorization.is_some_and(|value| value.trim().eq_ignore_ascii_case("basic")) {
        return Err(malformed_basic());
    }
    match basic {
        Some((client_id, secret)) => {
            if form_secret.is_some() {
                return Err(GrantError::InvalidRequest(
                    "use one client authentication method: HTTP Basic or client_secret, not both".to_owned(),
                ));
            }
            if form_id.is_some_and(|id| id != client_id) {
                return Err(GrantError::InvalidRequest(
                    "client_id differs from the client of the Authorization header".to_owned(),
                ));
            }
            Ok(Some(PresentedClient { client_id, secret: Some(secret), method: AuthMethod::ClientSecretBasic }))
        }
        None => match (form_id, form_secret) {
            (Some(id), Some(secret)) => Ok(Some(PresentedClient {
                client_id: id.to_owned(),
                secret: Some(SecretString::from(secret)),
                method: AuthMethod::ClientSecretPost,
            })),
            (Some(id), None) => {
                Ok(Some(PresentedClient { client_id: id.to_owned(), secret: None, method: AuthMethod::None }))
            }
            (None, None) => Ok(None),
            (None, Some(_)) => Err(GrantError::InvalidRequest("client_secret needs a client_id".to_owned())),
        },
    }
}

fn malformed_basic() -> GrantError {
    GrantError::InvalidRequest("the Authorization header is not valid HTTP Basic client authentication".to_owned())
}

/// RFC 6749 §2.3.1: base64 of `urlencoded(id) ":" urlencoded(secret)`. `Ok(None)` for `:` alone,
/// which some password-flow clients (Swagger UI without a configured client) send: no client.
fn basic_credentials(encoded: &str) -> Result<Option<(String, SecretString)>, GrantError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| malformed_basic())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed_basic())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed_basic)?;
    let id = decode(id).map_err(|_| malformed_basic())?;
    let secret = decode(secret).map_err(|_| malformed_basic())?;
    if id.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    if id.is_empty() || id.contains('\0') || secret.contains('\0') {
        return Err(malformed_basic());
    }
    Ok(Some((id, SecretString::from(secret))))
}

/// A registered client as `/token` needs it (loaded with its secrets by `db::clients`).
#[derive(Debug, Clone)]
pub struct ClientAtToken {
    pub client_id: String,
    pub kind: ClientKind,
    pub grants: Vec<GrantType>,
    pub scope: ScopeSet,
    pub id_token_alg: IdTokenAlg,
    pub first_party: bool,
    pub secrets: Vec<StoredSecret>,
}

impl ClientAtToken {
    pub fn new(client: Client, secrets: Vec<StoredSecret>) -> Self {
        Self {
            client_id: client.client_id,
            kind: client.kind,
            grants: client.grants,
            scope: client.scope,
            id_token_alg: client.id_token_alg,
            first_party: client.first_party,
            secrets,
        }
    }
}

/// Why a client failed to authenticate: the client hears only `invalid_client`, the audit trail this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// `client_credentials` without any client.
    NoClient,
    UnknownClient,
    /// A confidential client without its secret.
    NoSecret,
    WrongSecret,
    /// A public client has no secret: presenting one, or asking for its own token, fails.
    PublicClient,
}

impl ClientFailure {
    /// As the audit trail and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientFailure::NoClient => "no_client",
            ClientFailure::UnknownClient => "unknown_client",
            ClientFailure::NoSecret => "no_secret",
            ClientFailure::WrongSecret => "wrong_secret",
            ClientFailure::PublicClient => "public_client",
        }
    }
}

/// What the request may go on as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientVerdict {
    /// No registered client named (or one naming nothing registered, for the grants that ignore it).
    Anonymous,
    /// A registered client, authenticated if confidential, allowed this grant. `first_party`: its
    /// people are never asked for consent.
    Client { client_id: String, scope: ScopeSet, id_token_alg: IdTokenAlg, first_party: bool },
}

/// Why the request stops here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRefusal {
    /// `401 invalid_client` (§5.2).
    InvalidClient(ClientFailure),
    /// `400 unauthorized_client`: authenticated, but not allowed this grant.
    UnauthorizedClient(GrantType),
    /// `400 unsupported_grant_type`: the password grant is off and no client allowed it was named.
    PasswordGrantOff,
}

/// The rule for a token request of grant `grant` that presented `presented`, where `registered` is the
/// registered client it names (if it names one that exists and is not removed):
/// - naming a registered client, that client must authenticate (a confidential one with a live
///   secret; a public one with no secret) and be allowed the grant;
/// - a `client_id` that names nothing registered is ignored by the password and refresh grants
///   (FastAPI-style clients send arbitrary ones) and fails every other grant;
/// - the password grant without a registered client allowed it is open only while `password_grant_open`.
pub fn decide(
    grant: GrantType,
    presented: Option<&PresentedClient>,
    registered: Option<&ClientAtToken>,
    password_grant_open: bool,
    now: DateTime<Utc>,
) -> Result<ClientVerdict, ClientRefusal> {
    let lenient = matches!(grant, GrantType::Password | GrantType::RefreshToken);
    let anonymous = || {
        if grant == GrantType::Password && !password_grant_open {
            Err(ClientRefusal::PasswordGrantOff)
        } else {
            Ok(ClientVerdict::Anonymous)
        }
    };
    let Some(presented) = presented else {
        return if lenient { anonymous() } else { Err(ClientRefusal::InvalidClient(ClientFailure::NoClient)) };
    };
    let Some(client) = registered.filter(|client| client.client_id == presented.client_id) else {
        return if lenient { anonymous() } else { Err(ClientRefusal::InvalidClient(ClientFailure::UnknownClient)) };
    };
    match (client.kind, &presented.secret) {
        (ClientKind::Public, Some(_)) => return Err(ClientRefusal::InvalidClient(ClientFailure::PublicClient)),
        (ClientKind::Public, None) if grant == GrantType::ClientCredentials => {
            return Err(ClientRefusal::InvalidClient(ClientFailure::PublicClient));
        }
        (ClientKind::Public, None) => {}
        (ClientKind::Confidential, None) => return Err(ClientRefusal::InvalidClient(ClientFailure::NoSecret)),
        (ClientKind::Confidential, Some(secret)) => {
            if !secret_matches(&client.secrets, secret.expose_secret(), now) {
                return Err(ClientRefusal::InvalidClient(ClientFailure::WrongSecret));
            }
        }
    }
    if !client.grants.contains(&grant) {
        return Err(ClientRefusal::UnauthorizedClient(grant));
    }
    Ok(ClientVerdict::Client {
        client_id: client.client_id.clone(),
        scope: client.scope.clone(),
        id_token_alg: client.id_token_alg,
        first_party: client.first_party,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::client_secret::secret_hash;
    use uuid::Uuid;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn form(body: &str) -> FormFields {
        FormFields::parse(FORM, body.as_bytes()).unwrap()
    }

    fn basic(text: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text))
    }

    #[test]
    fn credentials_are_read_from_basic_or_the_form() {
        let read = |header: Option<&str>, body: &str| presented(header, &form(body)).unwrap();
        let from_basic = read(Some(&basic("gc_a%2Bb:s%3Acret")), "grant_type=client_credentials").unwrap();
        assert_eq!(from_basic.client_id, "gc_a+b", "the id inside Basic is form-urlencoded");
        assert_eq!(from_basic.secret.unwrap().expose_secret(), "s:cret");
        assert_eq!(from_basic.method, AuthMethod::ClientSecretBasic);
        let same_id = read(Some(&basic("gc_x:y")), "client_id=gc_x").unwrap();
        assert_eq!(same_id.method, AuthMethod::ClientSecretBasic);
        let posted = read(None, "client_id=gc_x&client_secret=y").unwrap();
        assert_eq!((posted.client_id.as_str(), posted.method), ("gc_x", AuthMethod::ClientSecretPost));
        let named = read(None, "client_id=gc_x").unwrap();
        assert!(named.secret.is_none());
        assert!(read(None, "client_secret=").is_none(), "FastAPI's empty client_secret");
        assert!(read(Some("Bearer abc"), "").is_none(), "another scheme is no client credential");
        assert!(read(Some(&basic(":")), "").is_none(), "an empty Basic pair is no client either");
    }

    #[test]
    fn malformed_or_doubled_credentials_are_invalid_requests() {
        let cases = [
            (Some(basic("gc_x:y")), "client_secret=y"),
            (Some(basic("gc_x:y")), "client_id=gc_other"),
            (Some("Basic !!!".to_owned()), ""),
            (Some("Basic".to_owned()), ""),
            (Some(basic("no-colon")), ""),
            (Some(basic(":secret")), ""),
            (Some(basic("gc_x:%ff")), ""),
            (None, "client_secret=y"),
        ];
        for (header, body) in cases {
            let result = presented(header.as_deref(), &form(body));
            assert!(matches!(result, Err(GrantError::InvalidRequest(_))), "{header:?} {body}");
        }
    }

    fn client(kind: ClientKind, grants: &[GrantType]) -> ClientAtToken {
        ClientAtToken {
            client_id: "gc_x".into(),
            kind,
            grants: grants.to_vec(),
            scope: ScopeSet::parse("tokens:introspect").unwrap(),
            id_token_alg: IdTokenAlg::Rs256,
            first_party: false,
            secrets: vec![StoredSecret { id: Uuid::nil(), hash: secret_hash("right").to_vec(), expires_at: None }],
        }
    }

    fn with(secret: Option<&str>) -> PresentedClient {
        PresentedClient {
            client_id: "gc_x".into(),
            secret: secret.map(SecretString::from),
            method: if secret.is_some() { AuthMethod::ClientSecretPost } else { AuthMethod::None },
        }
    }

    #[test]
    fn the_client_rule_at_token() {
        use ClientFailure::*;
        use ClientKind::*;
        use GrantType::*;
        let ok = || {
            Ok(ClientVerdict::Client {
                client_id: "gc_x".into(),
                scope: ScopeSet::parse("tokens:introspect").unwrap(),
                id_token_alg: IdTokenAlg::Rs256,
                first_party: false,
            })
        };
        let service = client(Confidential, &[ClientCredentials]);
        let script = client(Confidential, &[Password, RefreshToken]);
        let spa = client(Public, &[AuthorizationCode, RefreshToken]);
        let public_password = client(Public, &[Password]);
        type Case<'a> = (
            &'a str,
            GrantType,
            Option<PresentedClient>,
            Option<&'a ClientAtToken>,
            bool,
            Result<ClientVerdict, ClientRefusal>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("cc, right secret", ClientCredentials, Some(with(Some("right"))), Some(&service), true, ok()),
            (
                "cc, wrong secret",
                ClientCredentials,
                Some(with(Some("wrong"))),
                Some(&service),
                true,
                Err(ClientRefusal::InvalidClient(WrongSecret)),
            ),
            (
                "cc, no secret",
                ClientCredentials,
                Some(with(None)),
                Some(&service),
                true,
                Err(ClientRefusal::InvalidClient(NoSecret)),
            ),
            (
                "cc, unknown client",
                ClientCredentials,
                Some(with(Some("right"))),
                None,
                true,
                Err(ClientRefusal::InvalidClient(UnknownClient)),
            ),
            ("cc, no client at all", ClientCredentials, None, None, true, Err(ClientRefusal::InvalidClient(NoClient))),
            (
                "cc, public client",
                ClientCredentials,
                Some(with(None)),
                Some(&spa),
                true,
                Err(ClientRefusal::InvalidClient(PublicClient)),
            ),
            (
                "cc, public client with a secret",
                ClientCredentials,
                Some(with(Some("x"))),
                Some(&spa),
                true,
                Err(ClientRefusal::InvalidClient(PublicClient)),
            ),
            (
                "cc, not allowed",
                ClientCredentials,
                Some(with(Some("right"))),
                Some(&script),
                true,
                Err(ClientRefusal::UnauthorizedClient(ClientCredentials)),
            ),
            ("password, no client", Password, None, None, true, Ok(ClientVerdict::Anonymous)),
            ("password, no client, off", Password, None, None, false, Err(ClientRefusal::PasswordGrantOff)),
            (
                "password, unknown client_id ignored",
                Password,
                Some(with(Some("anything"))),
                None,
                true,
                Ok(ClientVerdict::Anonymous),
            ),
            (
                "password, unknown client_id, off",
                Password,
                Some(with(None)),
                None,
                false,
                Err(ClientRefusal::PasswordGrantOff),
            ),
            ("password, registered and allowed, off", Password, Some(with(Some("right"))), Some(&script), false, ok()),
            (
                "password, registered, wrong secret",
                Password,
                Some(with(Some("wrong"))),
                Some(&script),
                true,
                Err(ClientRefusal::InvalidClient(WrongSecret)),
            ),
            (
                "password, registered, no secret",
                Password,
                Some(with(None)),
                Some(&script),
                true,
                Err(ClientRefusal::InvalidClient(NoSecret)),
            ),
            (
                "password, registered, not allowed",
                Password,
                Some(with(Some("right"))),
                Some(&service),
                true,
                Err(ClientRefusal::UnauthorizedClient(Password)),
            ),
            ("password, public client allowed it", Password, Some(with(None)), Some(&public_password), false, ok()),
            (
                "password, public client not allowed",
                Password,
                Some(with(None)),
                Some(&spa),
                true,
                Err(ClientRefusal::UnauthorizedClient(Password)),
            ),
            ("refresh, no client", RefreshToken, None, None, false, Ok(ClientVerdict::Anonymous)),
            (
                "refresh, unknown client_id ignored",
                RefreshToken,
                Some(with(None)),
                None,
                true,
                Ok(ClientVerdict::Anonymous),
            ),
            ("refresh, public client", RefreshToken, Some(with(None)), Some(&spa), true, ok()),
            (
                "refresh, confidential without secret",
                RefreshToken,
                Some(with(None)),
                Some(&script),
                true,
                Err(ClientRefusal::InvalidClient(NoSecret)),
            ),
            (
                "refresh, not allowed",
                RefreshToken,
                Some(with(Some("right"))),
                Some(&service),
                true,
                Err(ClientRefusal::UnauthorizedClient(RefreshToken)),
            ),
        ];
        let now = Utc::now();
        for (case, grant, presented, registered, open, expected) in cases {
            assert_eq!(decide(grant, presented.as_ref(), registered, open, now), expected, "{case}");
        }
    }
}
