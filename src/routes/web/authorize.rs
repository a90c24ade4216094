//! `GET /authorize` and `POST /authorize` (the consent form): sign in with gatehouse (RFC 6749 §4.1,
//! RFC 7636, OpenID Connect Core §3.1.2). The rules are `oauth::authorize`'s; this reads the request,
//! the browser's sign-in and the stored consent, and carries the decision out.

use std::sync::Arc;

use actix_session::Session;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;

use super::WebError;
use super::login::{read_form, see_other};
use super::pages::render;
use super::session::{MaybeSignedIn, SignedInUser};
use crate::auth::session::{self, amr_of};
use crate::db::{self, auth_events::NewEvent};
use crate::domain::form::FormFields;
use crate::domain::{EventKind, ScopeSet};
use crate::oauth::authorize::{self, AuthorizeRequest, BrowserSignIn, ErrorRedirect, NextStep, Refusal};
use crate::oauth::grant;
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(authorize_page).service(consent);
}

/// One scope as the consent page lists it.
struct ScopeLine {
    name: String,
    description: String,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage {
    layout: super::pages::Layout,
    csrf_token: String,
    client_name: String,
    /// The host the person will be sent back to, so they see where they are going.
    redirect_host: String,
    scopes: Vec<ScopeLine>,
    /// The authorization request, sent back with the decision and read again in full.
    request: String,
}

#[get("/authorize")]
async fn authorize_page(
    req: HttpRequest,
    session: Session,
    user: Result<MaybeSignedIn, WebError>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let raw = req.query_string().to_owned();
    let query = parse_query(&raw)?;
    if let Ok(MaybeSignedIn(Some(user))) = &user {
        return signed_in_request(&state, &session, raw, query, user).await;
    }
    let (request, _) = read_request(&state, query, raw.len()).await?;
    let request = match request {
        Ok(request) => request,
        Err(redirect) => return Ok(redirect_to(&redirect.location(&state.issuer))),
    };
    match user {
        // Signed in, but the second-factor policy keeps them at enrolment: that is interaction.
        Err(WebError::SecondFactorRequired) if request.prompt.none => {
            Ok(fail(&state, &request, "interaction_required", "the person must set up a second factor"))
        }
        Err(err) => Err(err),
        Ok(_) if request.prompt.none => Ok(fail(&state, &request, "login_required", "the person is not signed in")),
        // The sign-in about to happen satisfies prompt=login and max_age: they are not asked again.
        Ok(_) => Ok(to_login(&request, &for_new_sign_in(&raw), false)),
    }
}

/// What the signed-in GET found and decided in its one trip to the database.
enum SignedInRead {
    /// The request itself is refused (`authorize::read`).
    Refused(Refusal),
    /// The person may grant none of the requested scopes.
    NothingGrantable(AuthorizeRequest),
    /// A code was stored: off to the app with it.
    Issued(AuthorizeRequest, String),
    /// Anything but issuing.
    Next { request: AuthorizeRequest, client: crate::db::clients::Client, scope: ScopeSet, step: NextStep },
}

/// A signed-in browser's request: the client, the stored consent (only a third-party app's
/// matters) and, when the answer is a code, the code itself, in one trip to the database. Every
/// app's sign-in passes here (docs/performance.md, f).
async fn signed_in_request(
    state: &AppState,
    session: &Session,
    raw: String,
    query: FormFields,
    user: &SignedInUser,
) -> Result<HttpResponse, WebError> {
    let auth_time = signed_in_at(session)?;
    let user_id = user.user.id;
    // What this person may grant: the requested scopes their roles allow (RFC 6749 §3.3 lets the
    // answer narrow them; the token answer names what was granted). The roles were read with the
    // session; what each role allows is read at start.
    let allowed = state.role_scopes.allowed_for(&user.roles);
    let keys = Arc::clone(&state.grants.keys);
    let (amr, code, raw_len) = (amr_of(session), crate::random::token(32), raw.len());
    let read = db::run(&state.pool, move |conn| {
        let client = match query.get("client_id") {
            Some(client_id) => db::clients::find(conn, client_id)?,
            None => None,
        };
        let request = match authorize::read(&query, raw_len, client.as_ref()) {
            Ok(request) => request,
            Err(refusal) => return Ok(SignedInRead::Refused(refusal)),
        };
        // `read` accepts only a request naming a registered client, so it is here.
        let Some(client) = client else {
            return Ok(SignedInRead::Refused(Refusal::Page(authorize::UNREGISTERED_CLIENT.to_owned())));
        };
        let scope = request.scope.intersection(&allowed);
        if scope.is_empty() {
            return Ok(SignedInRead::NothingGrantable(request));
        }
        let now = Utc::now();
        let someone_else_hinted = request.id_token_hint.as_deref().is_some_and(|hint| {
            let subject = keys.id_token_audience(hint, now).map(|(_, subject)| subject);
            subject.is_some_and(|subject| subject != user_id.to_string())
        });
        let browser = BrowserSignIn { auth_time, someone_else_hinted };
        let consented =
            !client.first_party && db::authorizations::consent_covers(conn, user_id, &request.client_id, &scope)?;
        match authorize::next_step(&request, Some(browser), client.first_party, consented, false, now) {
            NextStep::Issue => {
                grant::store_code(conn, &request, &code, &scope, user_id, auth_time, &amr, now)?;
                Ok(SignedInRead::Issued(request, code))
            }
            step => Ok(SignedInRead::Next { request, client, scope, step }),
        }
    })
    .await?;
    let (request, client, scope, step) = match read {
        SignedInRead::Refused(Refusal::Page(message)) => return Err(WebError::InvalidAuthorization(message)),
        SignedInRead::Refused(Refusal::Redirect(redirect)) => {
            return Ok(redirect_to(&redirect.location(&state.issuer)));
        }
        SignedInRead::NothingGrantable(request) => {
            return Ok(fail(state, &request, "access_denied", "the account may not grant any of the requested scopes"));
        }
        SignedInRead::Issued(request, code) => return Ok(redirect_with_code(state, &request, &code)),
        SignedInRead::Next { request, client, scope, step } => (request, client, scope, step),
    };
    match step {
        NextStep::SignIn { .. } => {
            // A new sign-in (prompt=login, older than max_age, or another person hinted). The session
            // stays until it succeeds (a link must not sign anyone out); the request comes back
            // without prompt=login, max_age and the hint, which the new sign-in satisfies (max_age=0
            // would otherwise never be).
            Ok(to_login(&request, &for_new_sign_in(&raw), true))
        }
        NextStep::Fail(error) => Ok(fail(state, &request, error, "the person must interact with gatehouse")),
        // Issued in the trip above.
        NextStep::Issue => Err(WebError::BadRequest),
        NextStep::Consent => consent_page(state, user, &client, &request, &scope, raw).await,
    }
}

/// The consent page: which app asks, where the person goes next, and what each scope allows.
async fn consent_page(
    state: &AppState,
    user: &SignedInUser,
    client: &crate::db::clients::Client,
    request: &AuthorizeRequest,
    scope: &ScopeSet,
    raw: String,
) -> Result<HttpResponse, WebError> {
    let descriptions = db::run(&state.pool, db::roles::all_scopes).await?;
    let scopes = scope
        .iter()
        .map(|name| ScopeLine {
            name: name.to_string(),
            description: descriptions
                .iter()
                .find(|known| known.name == name.as_str())
                .map(|known| known.description.clone())
                .unwrap_or_default(),
        })
        .collect();
    let page = ConsentPage {
        layout: user.layout(),
        csrf_token: user.csrf_token.clone(),
        client_name: client.name.clone(),
        redirect_host: url::Url::parse(&request.redirect_uri)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| request.redirect_uri.clone()),
        scopes,
        request: raw,
    };
    let mut response = render(StatusCode::OK, &page)?;
    // The consent page must not be framed by the app asking (clickjacking of "Allow").
    response.headers_mut().insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    Ok(response)
}

/// The consent form: `decision` is `allow` or `deny`; `request` is the authorization request,
/// checked again from the start (the client, its redirect URI, the scopes).
#[post("/authorize")]
async fn consent(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    user: MaybeSignedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let form = read_form(&req, payload).await?;
    // OIDC Core §3.1.2.1: an authorization request may also come as a form POST (no `decision`): it
    // is the same request as a GET, so it goes there.
    if form.get("decision").is_none() {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for name in form.names() {
            query.append_pair(name, form.raw(name).unwrap_or_default());
        }
        return Ok(see_other(&format!("/authorize?{}", query.finish())));
    }
    if !crate::auth::session::csrf_matches(&session, form.get("csrf_token")) {
        return Err(WebError::CsrfRejected);
    }
    let raw = form.get("request").unwrap_or_default().to_owned();
    let (request, _) = read_request(&state, parse_query(&raw)?, raw.len()).await?;
    let request = match request {
        Ok(request) => request,
        Err(redirect) => return Ok(redirect_to(&redirect.location(&state.issuer))),
    };
    let Some(user) = user.0 else { return Ok(to_login(&request, &for_new_sign_in(&raw), false)) };
    match form.get("decision") {
        Some("allow") => {}
        Some("deny") => return Ok(fail(&state, &request, "access_denied", "the person denied the request")),
        _ => return Err(WebError::BadRequest),
    }
    let scope = grantable(&state, &request, &user);
    if scope.is_empty() {
        return Ok(fail(&state, &request, "access_denied", "the account may not grant any of the requested scopes"));
    }
    let (user_id, client_id, granted) = (user.user.id, request.client_id.clone(), scope.clone());
    let event = NewEvent::new(EventKind::ConsentGranted, crate::domain::Channel::Web)
        .user(user_id)
        .client(state.client_ip(&req).map(|ip| ip.to_string()))
        .detail(format!("client {client_id}: {granted}"));
    db::run(&state.pool, move |conn| db::authorizations::grant_consent(conn, user_id, &client_id, &granted, &event))
        .await?;
    issue(&state, &request, scope, &user, &session).await
}

/// The query of an authorization request, strictly parsed (a repeated parameter is refused).
fn parse_query(raw: &str) -> Result<FormFields, WebError> {
    FormFields::parse_query(raw)
        .map_err(|err| WebError::InvalidAuthorization(format!("The authorization request could not be read: {err}.")))
}

/// Reads the query against the client it names: a request, or the redirect that refuses it; a
/// client or redirect URI that cannot be trusted is the 400 page.
async fn read_request(
    state: &AppState,
    query: FormFields,
    raw_len: usize,
) -> Result<(Result<AuthorizeRequest, ErrorRedirect>, crate::db::clients::Client), WebError> {
    let client = match query.get("client_id") {
        Some(client_id) => {
            let client_id = client_id.to_owned();
            db::run(&state.pool, move |conn| db::clients::find(conn, &client_id)).await?
        }
        None => None,
    };
    match authorize::read(&query, raw_len, client.as_ref()) {
        Ok(request) => Ok((Ok(request), client.ok_or(WebError::BadRequest)?)),
        Err(Refusal::Page(message)) => Err(WebError::InvalidAuthorization(message)),
        Err(Refusal::Redirect(redirect)) => Ok((Err(redirect), client.ok_or(WebError::BadRequest)?)),
    }
}

/// What this person may grant of the request (as [`signed_in_request`] reads it).
fn grantable(state: &AppState, request: &AuthorizeRequest, user: &SignedInUser) -> ScopeSet {
    request.scope.intersection(&state.role_scopes.allowed_for(&user.roles))
}

async fn issue(
    state: &AppState,
    request: &AuthorizeRequest,
    scope: ScopeSet,
    user: &SignedInUser,
    session: &Session,
) -> Result<HttpResponse, WebError> {
    let now = Utc::now();
    let auth_time = signed_in_at(session)?;
    let code = state.grants.issue_code(request, scope, user.user.id, auth_time, amr_of(session), now).await?;
    Ok(redirect_with_code(state, request, &code))
}

/// The successful answer (RFC 6749 §4.1.2): the code, `state` and `iss`, at the redirect URI.
fn redirect_with_code(state: &AppState, request: &AuthorizeRequest, code: &str) -> HttpResponse {
    let mut pairs = vec![("code", code)];
    if let Some(state_value) = &request.state {
        pairs.push(("state", state_value));
    }
    // RFC 9207: the issuer, so a client talking to several can tell whose answer this is.
    pairs.push(("iss", state.issuer.as_str()));
    redirect_to(&authorize::with_query(&request.redirect_uri, &pairs))
}

/// When this browser's sign-in began (`MaybeSignedIn` found one: a session without it is refused).
fn signed_in_at(session: &Session) -> Result<chrono::DateTime<Utc>, WebError> {
    session::sign_in_of(session).map(|sign_in| sign_in.signed_in_at).ok_or(WebError::BadRequest)
}

fn fail(state: &AppState, request: &AuthorizeRequest, error: &'static str, description: &str) -> HttpResponse {
    let redirect = ErrorRedirect {
        redirect_uri: request.redirect_uri.clone(),
        error,
        description: description.to_owned(),
        state: request.state.clone(),
    };
    redirect_to(&redirect.location(&state.issuer))
}

/// A `302`: what OAuth clients expect from the authorization endpoint.
fn redirect_to(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The login page, coming back to this request (`login_hint` fills in the username). `again`: the
/// person is signed in, and the page asks them to sign in anew all the same.
fn to_login(request: &AuthorizeRequest, raw: &str, again: bool) -> HttpResponse {
    let next = format!("/authorize?{raw}");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("next", &next);
    if let Some(hint) = &request.login_hint {
        query.append_pair("login_hint", hint);
    }
    if again {
        query.append_pair("again", "1");
    }
    see_other(&format!("/login?{}", query.finish()))
}

/// The request's query without `login` in its `prompt`, `max_age` and `id_token_hint` (the rest kept):
/// what a new sign-in satisfies.
fn for_new_sign_in(raw: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        if name == "prompt" {
            let kept: Vec<&str> = value.split(' ').filter(|word| !word.is_empty() && *word != "login").collect();
            if !kept.is_empty() {
                out.append_pair("prompt", &kept.join(" "));
            }
        } else if name != "max_age" && name != "id_token_hint" {
            out.append_pair(&name, &value);
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::for_new_sign_in;

    #[test]
    fn a_new_sign_in_drops_prompt_login_and_keeps_the_rest() {
        assert_eq!(for_new_sign_in("a=1&prompt=login&b=x+y"), "a=1&b=x+y");
        assert_eq!(for_new_sign_in("prompt=login%20consent&state=s"), "prompt=consent&state=s");
        assert_eq!(for_new_sign_in("max_age=0&x=1"), "x=1");
        assert_eq!(for_new_sign_in("id_token_hint=e.y.j&x=1"), "x=1");
    }
}
