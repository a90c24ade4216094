//! The client registry's vocabulary and its registration rules: what kinds of client, grants and
//! ID-token algorithms exist, and what a registration may say. Pure: `auth::client_secret` holds the
//! secrets' rules, `db::clients` stores what passed, `oauth::client_auth` decides at `/token`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ScopeName, ScopeSet};

const MAX_NAME_CHARS: usize = 100;
const MAX_URIS: usize = 20;
const MAX_URI_LEN: usize = 2000;

/// Declares a closed set of names stored as text, with `as_str`, `ALL`, `Display` and `FromStr`.
macro_rules! names {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

names! {
    /// RFC 6749 §2.1: a confidential client can keep a secret; a public one (a browser or native app) cannot.
    ClientKind { Confidential = "confidential", Public = "public" }
}

names! {
    /// Grant types, named as at `/token`.
    GrantType {
        AuthorizationCode = "authorization_code",
        RefreshToken = "refresh_token",
        ClientCredentials = "client_credentials",
        Password = "password",
        DeviceCode = "urn:ietf:params:oauth:grant-type:device_code",
    }
}

names! {
    /// The algorithm the client's ID tokens are signed with (OpenID Connect; RS256 is the default every RP supports).
    IdTokenAlg { Rs256 = "RS256", Es256 = "ES256", EdDsa = "EdDSA" }
}

/// Which part of a registration a problem is about (a page shows it beside that field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientField {
    Name,
    Kind,
    Scopes,
    RedirectUris,
    PostLogoutRedirectUris,
    Grants,
    IdTokenAlg,
}

/// A registration refused: the field and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidClient {
    pub field: ClientField,
    pub message: String,
}

fn invalid(field: ClientField, message: impl Into<String>) -> InvalidClient {
    InvalidClient { field, message: message.into() }
}

/// A registration as it arrives (CLI flags, a form, JSON): text, not yet checked.
#[derive(Debug, Clone, Default)]
pub struct ClientDraft {
    pub name: String,
    pub public: bool,
    pub first_party: bool,
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Empty: the default for the kind (see [`default_grants`]); otherwise replaces it.
    pub grants: Vec<String>,
    /// `None`: RS256.
    pub id_token_alg: Option<String>,
}

/// A registration that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidClient {
    pub name: String,
    pub kind: ClientKind,
    pub first_party: bool,
    pub scope: ScopeSet,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grants: Vec<GrantType>,
    pub id_token_alg: IdTokenAlg,
}

/// Without `--grant`: a confidential client authenticates as itself, and signs people in too when it
/// has somewhere to send them back; a public client can only sign people in.
pub fn default_grants(kind: ClientKind, has_redirect_uris: bool) -> Vec<GrantType> {
    match kind {
        ClientKind::Confidential if has_redirect_uris => {
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials]
        }
        ClientKind::Confidential => vec![GrantType::ClientCredentials],
        ClientKind::Public => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
    }
}

impl ClientDraft {
    /// Checks the draft against the rules; `known_scopes` are the scopes that exist now.
    pub fn validate(self, known_scopes: &[String]) -> Result<ValidClient, InvalidClient> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid(ClientField::Name, "A client needs a name."));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(ClientField::Name, format!("A name has at most {MAX_NAME_CHARS} characters.")));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid(ClientField::Name, "A name cannot contain control characters."));
        }
        let kind = if self.public { ClientKind::Public } else { ClientKind::Confidential };

        let mut scope = Vec::new();
        for raw in &self.scopes {
            let parsed = ScopeName::parse(raw.trim())
                .map_err(|_| invalid(ClientField::Scopes, format!("`{raw}` is not a valid scope.")))?;
            if !known_scopes.iter().any(|known| known == parsed.as_str()) {
                return Err(invalid(ClientField::Scopes, format!("There is no scope named {parsed}.")));
            }
            scope.push(parsed);
        }
        let scope: ScopeSet = scope.into_iter().collect();

        let redirect_uris = redirect_uris_of(&self.redirect_uris, ClientField::RedirectUris)?;
        let post_logout_redirect_uris =
            redirect_uris_of(&self.post_logout_redirect_uris, ClientField::PostLogoutRedirectUris)?;

        let grants = if self.grants.is_empty() {
            default_grants(kind, !redirect_uris.is_empty())
        } else {
            let mut grants = Vec::new();
            for raw in &self.grants {
                let grant = raw
                    .trim()
                    .parse::<GrantType>()
                    .map_err(|err| invalid(ClientField::Grants, format!("Grant {err}.")))?;
                if !grants.contains(&grant) {
                    grants.push(grant);
                }
            }
            grants.sort();
            grants
        };
        if kind == ClientKind::Public && grants.contains(&GrantType::ClientCredentials) {
            return Err(invalid(
                ClientField::Grants,
                "A public client has no secret, so it cannot use the client_credentials grant.",
            ));
        }

        let id_token_alg = match self.id_token_alg.as_deref().map(str::trim).filter(|alg| !alg.is_empty()) {
            None => IdTokenAlg::Rs256,
            Some(alg) => alg.parse().map_err(|err| invalid(ClientField::IdTokenAlg, format!("Algorithm {err}.")))?,
        };

        Ok(ValidClient {
            name,
            kind,
            first_party: self.first_party,
            scope,
            redirect_uris,
            post_logout_redirect_uris,
            grants,
            id_token_alg,
        })
    }
}

/// Redirect URIs are compared by string equality at `/authorize`, so they are stored as given, once
/// each; they must be absolute (RFC 6749 §3.1.2) and carry no fragment.
fn redirect_uris_of(raw: &[String], field: ClientField) -> Result<Vec<String>, InvalidClient> {
    if raw.len() > MAX_URIS {
        return Err(invalid(field, format!("At most {MAX_URIS} redirect URIs.")));
    }
    let mut uris: Vec<String> = Vec::new();
    for uri in raw {
        let uri = uri.trim();
        if uri.len() > MAX_URI_LEN {
            return Err(invalid(field, format!("A redirect URI has at most {MAX_URI_LEN} characters.")));
        }
        let parsed = url::Url::parse(uri).map_err(|_| invalid(field, format!("`{uri}` is not an absolute URI.")))?;
        if parsed.cannot_be_a_base() && !parsed.scheme().contains('.') {
            // `mailto:x` and the like; a native app's private-use scheme (`com.example.app:/cb`) has a dot.
            return Err(invalid(field, format!("`{uri}` is not a URI a browser can be sent back to.")));
        }
        if parsed.fragment().is_some() || uri.contains('#') {
            return Err(invalid(field, format!("`{uri}` has a fragment, which a redirect URI must not have.")));
        }
        if !uris.iter().any(|known| known == uri) {
            uris.push(uri.to_owned());
        }
    }
    Ok(uris)
}

/// One stored secret of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub id: Uuid,
    pub hash: Vec<u8>,
    /// `None` for the current secret.
    pub expires_at: Option<DateTime<Utc>>,
}

impl StoredSecret {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["profile", "items:read", "tokens:introspect"].map(String::from).to_vec()
    }

    fn draft(name: &str) -> ClientDraft {
        ClientDraft { name: name.to_owned(), ..ClientDraft::default() }
    }

    #[test]
    fn default_grants_follow_the_kind_and_the_redirect_uris() {
        use GrantType::*;
        let cases = [
            (ClientKind::Confidential, false, vec![ClientCredentials]),
            (ClientKind::Confidential, true, vec![AuthorizationCode, RefreshToken, ClientCredentials]),
            (ClientKind::Public, false, vec![AuthorizationCode, RefreshToken]),
            (ClientKind::Public, true, vec![AuthorizationCode, RefreshToken]),
        ];
        for (kind, has_uris, expected) in cases {
            assert_eq!(default_grants(kind, has_uris), expected, "{kind} with redirect URIs: {has_uris}");
        }
    }

    #[test]
    fn a_grant_flag_replaces_the_default() {
        let valid = ClientDraft { grants: vec!["password".into(), "password".into()], ..draft("cli") }
            .validate(&known())
            .unwrap();
        assert_eq!(valid.grants, vec![GrantType::Password]);
        let device = ClientDraft {
            public: true,
            grants: vec!["urn:ietf:params:oauth:grant-type:device_code".into()],
            ..draft("tv")
        };
        assert_eq!(device.validate(&known()).unwrap().grants, vec![GrantType::DeviceCode]);
    }

    #[test]
    fn registrations_are_refused_for_the_right_field() {
        let uri = |uri: &str| ClientDraft { redirect_uris: vec![uri.to_owned()], ..draft("app") };
        let cases: Vec<(&str, ClientDraft, ClientField)> = vec![
            ("empty name", draft("  "), ClientField::Name),
            ("long name", draft(&"x".repeat(101)), ClientField::Name),
            ("control character", draft("a\u{7}b"), ClientField::Name),
            ("unknown scope", ClientDraft { scopes: vec!["admin:all".into()], ..draft("a") }, ClientField::Scopes),
            ("malformed scope", ClientDraft { scopes: vec!["a\"b".into()], ..draft("a") }, ClientField::Scopes),
            ("relative redirect URI", uri("/callback"), ClientField::RedirectUris),
            ("fragment", uri("https://app.example/cb#x"), ClientField::RedirectUris),
            ("empty fragment", uri("https://app.example/cb#"), ClientField::RedirectUris),
            ("not a URI", uri("not a uri"), ClientField::RedirectUris),
            (
                "post-logout fragment",
                ClientDraft { post_logout_redirect_uris: vec!["https://a.example/#x".into()], ..draft("a") },
                ClientField::PostLogoutRedirectUris,
            ),
            ("unknown grant", ClientDraft { grants: vec!["implicit".into()], ..draft("a") }, ClientField::Grants),
            (
                "public client credentials",
                ClientDraft { public: true, grants: vec!["client_credentials".into()], ..draft("a") },
                ClientField::Grants,
            ),
            ("unknown alg", ClientDraft { id_token_alg: Some("HS256".into()), ..draft("a") }, ClientField::IdTokenAlg),
        ];
        for (case, draft, field) in cases {
            let err = draft.validate(&known()).expect_err(case);
            assert_eq!(err.field, field, "{case}: {}", err.message);
        }
    }

    #[test]
    fn a_valid_registration_keeps_what_it_said() {
        let valid = ClientDraft {
            name: " Billing ".into(),
            first_party: true,
            scopes: vec!["tokens:introspect".into(), "profile".into()],
            redirect_uris: vec!["https://billing.example/cb".into(), "https://billing.example/cb".into()],
            post_logout_redirect_uris: vec!["com.example.app:/out".into()],
            id_token_alg: Some("EdDSA".into()),
            ..ClientDraft::default()
        }
        .validate(&known())
        .unwrap();
        assert_eq!(valid.name, "Billing");
        assert_eq!(valid.kind, ClientKind::Confidential);
        assert_eq!(valid.scope.to_string(), "profile tokens:introspect");
        assert_eq!(valid.redirect_uris, vec!["https://billing.example/cb"]);
        assert_eq!(valid.post_logout_redirect_uris, vec!["com.example.app:/out"]);
        assert_eq!(valid.id_token_alg, IdTokenAlg::EdDsa);
        assert!(valid.first_party);
        assert_eq!(draft("x").validate(&known()).unwrap().id_token_alg, IdTokenAlg::Rs256);
    }
}
