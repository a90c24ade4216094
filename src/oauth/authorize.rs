//! The authorization endpoint's rules (RFC 6749 §4.1, RFC 7636, OpenID Connect Core §3.1.2), without
//! HTTP: reading an authorization request against the registered client, and deciding what the
//! person sees next. `routes::web::authorize` carries the answers out.

use chrono::{DateTime, Utc};

use crate::db::clients::Client;
use crate::domain::form::FormFields;
use crate::domain::{GrantType, ScopeSet};

/// The longest `state` and `nonce` echoed back (they travel in URLs and tokens).
const MAX_ECHOED_CHARS: usize = 512;
/// The longest `login_hint` used (it only pre-fills the username).
const MAX_HINT_CHARS: usize = 256;

/// A request that passed every rule: what a code will be bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub client_id: String,
    /// Exactly as registered.
    pub redirect_uri: String,
    /// The request named it (else the client's only one was taken): the exchange must name it too.
    pub redirect_uri_given: bool,
    /// Never empty: an omitted `scope` is everything the client is registered for.
    pub scope: ScopeSet,
    pub state: Option<String>,
    /// base64url(SHA-256(code_verifier)), 43 characters.
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    /// Seconds: a sign-in older than this is done again.
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// An ID token this server gave the client earlier (OIDC Core §3.1.2.1), as sent: whom the client
    /// expects to be signed in. Checked against the keys by the caller (`BrowserSignIn`).
    pub id_token_hint: Option<String>,
}

/// OpenID Connect's `prompt` (§3.1.2.1); `select_account` is accepted and means nothing here (one
/// account per browser).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// Why a request stops at the authorization endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client or the redirect URI cannot be trusted: a `400` page, never a redirect (§4.1.2.1).
    Page(String),
    /// Everything else goes back to the client's redirect URI (§4.1.2.1).
    Redirect(ErrorRedirect),
}

/// An error answer sent to the client through its redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    /// RFC 6749 §4.1.2.1 / OIDC Core §3.1.2.6 error code.
    pub error: &'static str,
    pub description: String,
    pub state: Option<String>,
}

impl ErrorRedirect {
    /// The `Location` of this answer: the redirect URI with `error`, `error_description`, `state`
    /// and `iss` (RFC 9207: error answers too) added to its query (a registered URI may have one
    /// already; it never has a fragment).
    pub fn location(&self, issuer: &str) -> String {
        let mut pairs = vec![("error", self.error), ("error_description", self.description.as_str())];
        if let Some(state) = &self.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", issuer));
        with_query(&self.redirect_uri, &pairs)
    }
}

/// `uri` with `pairs` appended to its query, form-urlencoded.
pub fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{encoded}")
}

/// The longest authorization request read (its query string): it travels on through the login
/// page's `next`, which keeps local paths of up to 2048 characters.
pub const MAX_REQUEST_CHARS: usize = 1800;

/// The 400 page's words for a `client_id` that names no live client.
pub const UNREGISTERED_CLIENT: &str = "The request names a client that is not registered here.";

/// Reads an authorization request (`query`) for `client`, the live registered client its
/// `client_id` names (`None`: no such client). `raw_len`: the query string's length.
pub fn read(query: &FormFields, raw_len: usize, client: Option<&Client>) -> Result<AuthorizeRequest, Refusal> {
    let Some(client_id) = query.get("client_id") else {
        return Err(Refusal::Page("The request names no client (client_id is missing).".to_owned()));
    };
    let Some(client) = client.filter(|client| client.client_id == client_id) else {
        return Err(Refusal::Page(UNREGISTERED_CLIENT.to_owned()));
    };
    let redirect_uri = match query.get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|registered| registered == uri) => uri.to_owned(),
        Some(_) => {
            return Err(Refusal::Page(
                "The redirect URI is not one registered for this client (they must match exactly).".to_owned(),
            ));
        }
        None => match client.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(Refusal::Page(
                    "The request has no redirect_uri, and this client registered more than one (or none).".to_owned(),
                ));
            }
        },
    };
    let state = query.raw("state").filter(|state| !state.is_empty()).map(str::to_owned);
    let refuse = |error: &'static str, description: &str| {
        Refusal::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: state.clone(),
        })
    };
    if state.as_ref().is_some_and(|state| state.chars().count() > MAX_ECHOED_CHARS) {
        return Err(refuse("invalid_request", "state is too long"));
    }
    if raw_len > MAX_REQUEST_CHARS {
        return Err(refuse("invalid_request", "the authorization request is too long"));
    }
    match query.get("response_type") {
        Some("code") => {}
        Some(_) => return Err(refuse("unsupported_response_type", "only response_type=code is supported")),
        None => return Err(refuse("invalid_request", "response_type is required")),
    }
    if !client.grants.contains(&GrantType::AuthorizationCode) {
        return Err(refuse("unauthorized_client", "this client is not allowed the authorization code grant"));
    }
    if query.get("request").is_some() {
        return Err(refuse("request_not_supported", "request objects are not supported"));
    }
    if query.get("request_uri").is_some() {
        return Err(refuse("request_uri_not_supported", "request_uri is not supported"));
    }
    if query.get("registration").is_some() {
        return Err(refuse("registration_not_supported", "the registration parameter is not supported"));
    }
    if query.get("response_mode").is_some_and(|mode| mode != "query") {
        return Err(refuse("invalid_request", "only response_mode=query is supported"));
    }
    let Some(code_challenge) = query.get("code_challenge") else {
        return Err(refuse("invalid_request", "code_challenge is required (PKCE, RFC 7636)"));
    };
    if query.get("code_challenge_method") != Some("S256") {
        return Err(refuse("invalid_request", "code_challenge_method must be S256"));
    }
    if !is_s256_challenge(code_challenge) {
        return Err(refuse("invalid_request", "code_challenge is not a base64url SHA-256 value"));
    }
    let requested = ScopeSet::parse(query.get("scope").unwrap_or_default())
        .map_err(|err| refuse("invalid_scope", &err.to_string()))?;
    let scope = if requested.is_empty() { client.scope.clone() } else { requested };
    if !scope.is_subset(&client.scope) {
        let extra = scope.difference(&client.scope);
        return Err(refuse("invalid_scope", &format!("scope not allowed for this client: {extra}")));
    }
    if scope.is_empty() {
        return Err(refuse("invalid_scope", "this client is registered for no scope"));
    }
    let prompt = read_prompt(query.get("prompt")).map_err(|message| refuse("invalid_request", message))?;
    let max_age = match query.get("max_age") {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|secs| *secs >= 0)
                .ok_or_else(|| refuse("invalid_request", "max_age must be a number of seconds"))?,
        ),
    };
    let nonce = query.get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|nonce| nonce.chars().count() > MAX_ECHOED_CHARS) {
        return Err(refuse("invalid_request", "nonce is too long"));
    }
    let login_hint = query
        .get("login_hint")
        .map(|hint| hint.trim().chars().take(MAX_HINT_CHARS).collect::<String>())
        .filter(|hint| !hint.is_empty());
    let id_token_hint = query.get("id_token_hint").map(str::to_owned);
    // `display`, `ui_locales`, `acr_values` and `claims_locales` are accepted and change nothing:
    // one page layout, one language, one level of assurance per sign-in.
    Ok(AuthorizeRequest {
        client_id: client.client_id.clone(),
        redirect_uri_given: query.get("redirect_uri").is_some(),
        redirect_uri,
        scope,
        state,
        code_challenge: code_challenge.to_owned(),
        nonce,
        prompt,
        max_age,
        login_hint,
        id_token_hint,
    })
}

fn read_prompt(raw: Option<&str>) -> Result<Prompt, &'static str> {
    let mut prompt = Prompt::default();
    for value in raw.unwrap_or_default().split(' ').filter(|value| !value.is_empty()) {
        match value {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            _ => return Err("prompt must be none, login, consent or select_account"),
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err("prompt=none cannot be combined with another value");
    }
    Ok(prompt)
}

/// RFC 7636 §4.2 with S256: BASE64URL(SHA-256), 32 bytes, 43 characters without padding.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.6: the verifier (43–128 unreserved characters) hashes to the challenge.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine as _;
    use sha2::Digest as _;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    // Constant time: the challenge is no secret once the code is, but a comparison costs nothing.
    subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into()
}

/// Who is signed in at the browser, as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct BrowserSignIn {
    pub auth_time: DateTime<Utc>,
    /// The request's `id_token_hint` names someone else than the person signed in (a hint that is
    /// not a valid ID token of ours names no one).
    pub someone_else_hinted: bool,
}

/// What the person sees next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// The login page; `again` when a sign-in exists but is too old or `prompt=login` asked.
    SignIn {
        again: bool,
    },
    Consent,
    /// A code goes back to the client.
    Issue,
    /// `prompt=none` could not be honoured: this error goes back to the client.
    Fail(&'static str),
}

/// Decides the step after a request was read: `sign_in` is the browser's, `consented` whether the
/// person allowed these scopes to this client before, `fresh` whether this request already sent
/// them through a new sign-in (`prompt=login` is then satisfied).
pub fn next_step(
    request: &AuthorizeRequest,
    sign_in: Option<BrowserSignIn>,
    first_party: bool,
    consented: bool,
    fresh: bool,
    now: DateTime<Utc>,
) -> NextStep {
    let Some(sign_in) = sign_in else {
        return if request.prompt.none { NextStep::Fail("login_required") } else { NextStep::SignIn { again: false } };
    };
    // At least `max_age` old counts as too old, so max_age=0 always asks (OIDC Core: as prompt=login).
    let too_old = request.max_age.is_some_and(|max| (now - sign_in.auth_time).num_seconds() >= max);
    // OIDC Core §3.1.2.1: the app expects another person; it gets them only through a new sign-in.
    if too_old || (request.prompt.login && !fresh) || sign_in.someone_else_hinted {
        return if request.prompt.none { NextStep::Fail("login_required") } else { NextStep::SignIn { again: true } };
    }
    if request.prompt.consent {
        return NextStep::Consent;
    }
    if first_party || consented {
        return NextStep::Issue;
    }
    if request.prompt.none { NextStep::Fail("consent_required") } else { NextStep::Consent }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientKind, IdTokenAlg};

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn client() -> Client {
        Client {
            client_id: "gc_0123456789abcdef".into(),
            name: "App".into(),
            kind: ClientKind::Public,
            scope: ScopeSet::parse("openid profile email").unwrap(),
            redirect_uris: vec!["https://app.example/cb".into(), "http://127.0.0.1:9000/cb?x=1".into()],
            post_logout_redirect_uris: vec![],
            first_party: false,
            grants: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            id_token_alg: IdTokenAlg::Rs256,
            created_at: Utc::now(),
        }
    }

    fn query(extra: &str) -> FormFields {
        let base = format!(
            "client_id=gc_0123456789abcdef&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code\
             &code_challenge={CHALLENGE}&code_challenge_method=S256&state=xyz"
        );
        FormFields::parse_query(&format!("{base}{extra}")).unwrap()
    }

    fn redirect_error(result: Result<AuthorizeRequest, Refusal>) -> (&'static str, Option<String>) {
        match result {
            Err(Refusal::Redirect(redirect)) => (redirect.error, redirect.state),
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    #[test]
    fn rfc_7636_appendix_b_verifier_matches_its_challenge() {
        assert!(verifier_matches(VERIFIER, CHALLENGE));
        assert!(!verifier_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx", CHALLENGE));
        assert!(!verifier_matches("short", CHALLENGE));
        assert!(!verifier_matches(&format!("{VERIFIER} "), CHALLENGE));
    }

    #[test]
    fn a_good_request_defaults_its_scope_to_the_clients() {
        let request = read(&query(""), 0, Some(&client())).unwrap();
        assert_eq!(request.scope.to_string(), "email openid profile");
        assert_eq!(request.state.as_deref(), Some("xyz"));
        assert_eq!(request.redirect_uri, "https://app.example/cb");
        let narrowed = read(&query("&scope=openid"), 0, Some(&client())).unwrap();
        assert_eq!(narrowed.scope.to_string(), "openid");
    }

    #[test]
    fn an_unknown_client_or_redirect_uri_is_a_page_never_a_redirect() {
        assert!(matches!(read(&query(""), 0, None), Err(Refusal::Page(_))));
        let other = FormFields::parse_query(&format!(
            "client_id=gc_0123456789abcdef&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code\
             &code_challenge={CHALLENGE}&code_challenge_method=S256"
        ))
        .unwrap();
        assert!(matches!(read(&other, 0, Some(&client())), Err(Refusal::Page(_))));
        // A prefix, another case or a trailing slash is another URI.
        for near in ["https://app.example/cb/", "https://APP.example/cb", "https://app.example/c"] {
            let text = format!(
                "client_id=gc_0123456789abcdef&redirect_uri={}&response_type=code",
                url::form_urlencoded::byte_serialize(near.as_bytes()).collect::<String>()
            );
            assert!(matches!(
                read(&FormFields::parse_query(&text).unwrap(), 0, Some(&client())),
                Err(Refusal::Page(_))
            ));
        }
        // Omitted: only when exactly one is registered.
        let omitted = FormFields::parse_query(&format!(
            "client_id=gc_0123456789abcdef&response_type=code&code_challenge={CHALLENGE}&code_challenge_method=S256"
        ))
        .unwrap();
        assert!(matches!(read(&omitted, 0, Some(&client())), Err(Refusal::Page(_))));
        let single = Client { redirect_uris: vec!["https://app.example/cb".into()], ..client() };
        assert_eq!(read(&omitted, 0, Some(&single)).unwrap().redirect_uri, "https://app.example/cb");
    }

    #[test]
    fn other_errors_go_back_to_the_client_with_the_state() {
        let c = client();
        let cases = [
            ("&response_type=token", "unsupported_response_type"),
            ("&scope=admin:users", "invalid_scope"),
            ("&prompt=none%20login", "invalid_request"),
            ("&prompt=sometimes", "invalid_request"),
            ("&max_age=-1", "invalid_request"),
            ("&request=eyJ", "request_not_supported"),
            ("&request_uri=https%3A%2F%2Fx", "request_uri_not_supported"),
            ("&response_mode=fragment", "invalid_request"),
        ];
        for (extra, expected) in cases {
            // response_type appears twice in the first case: replace rather than add.
            let text = if extra.starts_with("&response_type") {
                format!(
                    "client_id=gc_0123456789abcdef&redirect_uri=https%3A%2F%2Fapp.example%2Fcb{extra}\
                     &code_challenge={CHALLENGE}&code_challenge_method=S256&state=xyz"
                )
            } else {
                format!(
                    "client_id=gc_0123456789abcdef&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code\
                     &code_challenge={CHALLENGE}&code_challenge_method=S256&state=xyz{extra}"
                )
            };
            let (error, state) = redirect_error(read(&FormFields::parse_query(&text).unwrap(), 0, Some(&c)));
            assert_eq!((error, state.as_deref()), (expected, Some("xyz")), "{extra}");
        }
        let no_grant = Client { grants: vec![GrantType::ClientCredentials], ..client() };
        assert_eq!(redirect_error(read(&query(""), 0, Some(&no_grant))).0, "unauthorized_client");
    }

    #[test]
    fn pkce_is_required_and_only_s256() {
        let base = "client_id=gc_0123456789abcdef&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code";
        for extra in [
            String::new(),
            format!("&code_challenge={CHALLENGE}"),
            format!("&code_challenge={CHALLENGE}&code_challenge_method=plain"),
            "&code_challenge=abc&code_challenge_method=S256".to_owned(),
        ] {
            let fields = FormFields::parse_query(&format!("{base}{extra}")).unwrap();
            assert_eq!(redirect_error(read(&fields, 0, Some(&client()))).0, "invalid_request", "{extra}");
        }
    }

    #[test]
    fn an_error_location_keeps_the_registered_query_and_encodes_its_values() {
        let redirect = ErrorRedirect {
            redirect_uri: "http://127.0.0.1:9000/cb?x=1".into(),
            error: "access_denied",
            description: "the person said no".into(),
            state: Some("a b&c".into()),
        };
        assert_eq!(
            redirect.location("https://id.example"),
            "http://127.0.0.1:9000/cb?x=1&error=access_denied&error_description=the+person+said+no&state=a+b%26c\
             &iss=https%3A%2F%2Fid.example"
        );
    }

    #[test]
    fn the_next_step_follows_sign_in_age_prompt_and_consent() {
        let now = Utc::now();
        let request = read(&query(""), 0, Some(&client())).unwrap();
        let signed = Some(BrowserSignIn { auth_time: now - chrono::Duration::minutes(10), someone_else_hinted: false });
        assert_eq!(next_step(&request, None, false, false, false, now), NextStep::SignIn { again: false });
        assert_eq!(next_step(&request, signed, false, false, false, now), NextStep::Consent);
        assert_eq!(next_step(&request, signed, false, true, false, now), NextStep::Issue);
        assert_eq!(next_step(&request, signed, true, false, false, now), NextStep::Issue);

        let none = AuthorizeRequest { prompt: Prompt { none: true, ..Prompt::default() }, ..request.clone() };
        assert_eq!(next_step(&none, None, false, false, false, now), NextStep::Fail("login_required"));
        assert_eq!(next_step(&none, signed, false, false, false, now), NextStep::Fail("consent_required"));
        assert_eq!(next_step(&none, signed, false, true, false, now), NextStep::Issue);

        let login = AuthorizeRequest { prompt: Prompt { login: true, ..Prompt::default() }, ..request.clone() };
        assert_eq!(next_step(&login, signed, true, false, false, now), NextStep::SignIn { again: true });
        assert_eq!(next_step(&login, signed, true, false, true, now), NextStep::Issue);

        let consent = AuthorizeRequest { prompt: Prompt { consent: true, ..Prompt::default() }, ..request.clone() };
        assert_eq!(next_step(&consent, signed, false, true, false, now), NextStep::Consent);

        let max_age = AuthorizeRequest { max_age: Some(300), ..request.clone() };
        assert_eq!(next_step(&max_age, signed, true, false, false, now), NextStep::SignIn { again: true });
        let recent = Some(BrowserSignIn { auth_time: now - chrono::Duration::seconds(30), someone_else_hinted: false });
        assert_eq!(next_step(&max_age, recent, true, false, false, now), NextStep::Issue);
        let none_old = AuthorizeRequest { max_age: Some(300), ..none };
        assert_eq!(next_step(&none_old, signed, true, true, false, now), NextStep::Fail("login_required"));
    }

    #[test]
    fn a_hint_naming_someone_else_asks_for_a_new_sign_in_or_fails_without_interaction() {
        let now = Utc::now();
        let request = read(&query(""), 0, Some(&client())).unwrap();
        let other = Some(BrowserSignIn { auth_time: now - chrono::Duration::minutes(1), someone_else_hinted: true });
        assert_eq!(next_step(&request, other, true, true, false, now), NextStep::SignIn { again: true });
        let none = AuthorizeRequest { prompt: Prompt { none: true, ..Prompt::default() }, ..request };
        assert_eq!(next_step(&none, other, true, true, false, now), NextStep::Fail("login_required"));
    }
}
