//! The website over real HTTP: the login form, browser sessions, CSRF, the home and admin pages,
//! and the headers every page carries.
//!
//! `app.client` is one browser (cookie store, no redirects followed); [`browser`] makes another.
//! The session cookie is `Secure` (tests do not run in dev mode); the cookie store still sends it
//! to 127.0.0.1, which browsers and reqwest treat as a secure origin. To replay an old cookie after
//! the browser has dropped it, [`replay`] sends the `Cookie` header by hand.

use diesel::RunQueryDsl;
use reqwest::redirect::Policy;
use reqwest::{Client, Response, header};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const SESSION_COOKIE: &str = "__Host-gatehouse_session";
const GENERIC_FAILURE: &str = "Incorrect username or password.";

/// A second (third …) browser: its own cookie jar, redirects not followed.
pub(crate) fn browser() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap()
}

/// The value of the first `<input … name="NAME" value="…">` on the page.
pub(crate) fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

/// The CSRF token of the first form on the page.
fn csrf_from(html: &str) -> String {
    hidden_value(html, "csrf_token").unwrap_or_else(|| panic!("no csrf_token field in:\n{html}"))
}

/// The whole `<input id="ID" …>` tag.
fn input_tag<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!(r#"<input id="{id}""#)).unwrap_or_else(|| panic!("no input #{id} in:\n{html}"));
    let end = html[start..].find('>').unwrap();
    &html[start..=start + end]
}

/// The number shown above `label` in the admin page's totals.
fn stat_value(html: &str, label: &str) -> String {
    let label_at = html
        .find(&format!(r#"<div class="stat-label">{label}</div>"#))
        .unwrap_or_else(|| panic!("no statistic {label:?} in:\n{html}"));
    let marker = r#"<div class="stat-value">"#;
    let start = html[..label_at].rfind(marker).unwrap() + marker.len();
    let end = html[start..].find("</div>").unwrap();
    html[start..start + end].trim().to_owned()
}

/// The session cookie a response sets, if it sets one.
fn session_cookie(response: &Response) -> Option<String> {
    response.cookies().find(|cookie| cookie.name() == SESSION_COOKIE).map(|cookie| cookie.value().to_owned())
}

fn location(response: &Response) -> &str {
    response.headers().get(header::LOCATION).expect("a Location header").to_str().unwrap()
}

/// `GET path` from a browser that has exactly this session cookie and nothing else.
async fn replay(app: &TestApp, cookie: &str, path: &str) -> Response {
    let bare = Client::builder().redirect(Policy::none()).build().unwrap();
    bare.get(app.url(path)).header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}")).send().await.unwrap()
}

/// Loads the login page in `client`, then submits it with these credentials (and `next`, if any).
async fn sign_in(app: &TestApp, client: &Client, username: &str, password: &str, next: Option<&str>) -> Response {
    let page = client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(page.status(), 200, "GET /login");
    let csrf = csrf_from(&page.text().await.unwrap());
    let mut fields = vec![("csrf_token", csrf.as_str()), ("username", username), ("password", password)];
    if let Some(next) = next {
        fields.push(("next", next));
    }
    client.post(app.url("/login")).form(&fields).send().await.unwrap()
}

/// Submits the sign-in form as the page rendered it (its CSRF token and `next` field) with these credentials.
async fn submit_rendered_form(app: &TestApp, form: &str, username: &str, password: &str) -> Response {
    let mut fields =
        vec![("csrf_token", csrf_from(form)), ("username", username.to_owned()), ("password", password.to_owned())];
    if let Some(next) = hidden_value(form, "next") {
        fields.push(("next", next));
    }
    app.client.post(app.url("/login")).form(&fields).send().await.unwrap()
}

/// Signs in and asserts it worked; returns the new session cookie.
pub(crate) async fn signed_in(app: &TestApp, client: &Client, username: &str, password: &str) -> String {
    let response = sign_in(app, client, username, password, None).await;
    assert_eq!(response.status(), 303, "sign-in of {username} failed");
    assert_eq!(location(&response), "/");
    session_cookie(&response).expect("a session cookie")
}

/// The CSRF token of the sign-out form, as the home page shows it.
async fn sign_out_token(app: &TestApp, client: &Client) -> String {
    let home = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    csrf_from(&home.text().await.unwrap())
}

/// The headers every HTML page carries.
fn assert_security_headers(response: &Response) {
    let headers = response.headers();
    let csp = headers.get(header::CONTENT_SECURITY_POLICY).expect("a Content-Security-Policy").to_str().unwrap();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|directive| directive.starts_with("script-src"))
        .or_else(|| csp.split(';').map(str::trim).find(|directive| directive.starts_with("default-src")))
        .unwrap_or_else(|| panic!("no script-src nor default-src in {csp}"));
    assert!(!script_src.contains("'unsafe-inline'"), "CSP: {csp}");
    assert!(!script_src.contains("'unsafe-eval'"), "CSP: {csp}");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
}

/// Asserts an HTML page with this status and the security headers; returns its body.
pub(crate) async fn html_page(response: Response, status: u16) -> String {
    assert_eq!(response.status(), status, "{}", response.url());
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert_security_headers(&response);
    let body = response.text().await.unwrap();
    assert!(body.starts_with("<!doctype html>"), "{body}");
    body
}

/// Signed-in, live sessions in the `sessions` table.
fn active_sessions(app: &TestApp) -> i64 {
    gatehouse::db::sessions::active_count(&mut app.db.conn(), chrono::Utc::now()).unwrap()
}

// --- Anonymous visitors ---

#[tokio::test]
async fn an_anonymous_visitor_of_the_home_page_is_sent_to_the_login_page() {
    let app = spawn_app().await;
    let response = app.get("/", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
}

#[tokio::test]
async fn an_anonymous_visitor_of_the_admin_page_is_sent_to_the_login_page_and_back() {
    let app = spawn_app().await;
    let response = app.get("/admin/stats", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2Fadmin%2Fstats");
}

#[tokio::test]
async fn a_bearer_token_does_not_open_the_website() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = app.access_token(&admin, None).await;
    let response = app.get("/admin/stats", Some(&token)).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2Fadmin%2Fstats");
}

// --- The login form ---

#[tokio::test]
async fn the_login_page_is_a_labelled_form_with_a_csrf_token() {
    let app = spawn_app().await;
    let response = app.get("/login", None).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = html_page(response, 200).await;

    assert!(body.contains(r#"<form method="post" action="/login""#), "{body}");
    let username = input_tag(&body, "username");
    assert!(username.contains(r#"name="username""#), "{username}");
    assert!(username.contains(r#"autocomplete="username""#), "{username}");
    assert!(username.contains(r#"value="""#), "{username}");
    let password = input_tag(&body, "password");
    assert!(password.contains(r#"name="password""#), "{password}");
    assert!(password.contains(r#"type="password""#), "{password}");
    assert!(password.contains(r#"autocomplete="current-password""#), "{password}");
    assert!(!password.contains("value="), "{password}");
    assert!(body.contains(r#"<label for="username">"#), "{body}");
    assert!(body.contains(r#"<label for="password">"#), "{body}");
    assert!(body.contains(r#"<input type="hidden" name="csrf_token" value=""#), "{body}");
    assert!(csrf_from(&body).len() >= 32);
    assert_eq!(hidden_value(&body, "next"), None);
    assert!(!body.contains("<script"), "{body}");
}

#[tokio::test]
async fn the_login_page_starts_a_session_cookie_that_is_http_only_same_site_lax_and_secure() {
    let app = spawn_app().await;
    let response = app.get("/login", None).await;
    assert_eq!(response.status(), 200);
    let cookie = response.cookies().find(|cookie| cookie.name() == SESSION_COOKIE).expect("a session cookie");
    assert!(cookie.http_only());
    assert!(cookie.same_site_lax());
    assert!(cookie.secure());
    assert_eq!(cookie.path(), Some("/"));
}

#[tokio::test]
async fn a_local_next_path_is_carried_in_a_hidden_field() {
    let app = spawn_app().await;
    let body = html_page(app.get("/login?next=%2Fadmin%2Fstats", None).await, 200).await;
    assert_eq!(hidden_value(&body, "next").as_deref(), Some("/admin/stats"));
}

#[tokio::test]
async fn a_repeated_next_is_a_bad_request_page_not_a_guess() {
    let app = spawn_app().await;
    let body = html_page(app.get("/login?next=%2Fa&next=%2Fb", None).await, 400).await;
    assert!(body.contains("That request could not be understood."), "{body}");
}

#[tokio::test]
async fn a_next_that_leads_to_another_host_is_dropped_from_the_form() {
    let app = spawn_app().await;
    for query in [
        "next=%2F%2Fevil.example",
        "next=https%3A%2F%2Fevil.example",
        "next=%2F%5Cevil.example",
        "next=%2F%09%2Fevil.example",
        "next=evil.example",
    ] {
        let body = html_page(app.get(&format!("/login?{query}"), None).await, 200).await;
        assert_eq!(hidden_value(&body, "next"), None, "?{query}");
        assert!(!body.contains("evil.example"), "?{query}: {body}");
    }
}

// --- Signing in ---

#[tokio::test]
async fn a_successful_sign_in_sends_the_browser_home_with_a_session_cookie() {
    let app = spawn_app().await;
    let alice = app.alice();
    let response = sign_in(&app, &app.client, "alice", "alice-password", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/");
    let cookie = response.cookies().find(|cookie| cookie.name() == SESSION_COOKIE).expect("a session cookie");
    assert!(cookie.http_only());
    assert!(cookie.same_site_lax());
    assert!(cookie.secure());

    let home = html_page(app.get("/", None).await, 200).await;
    assert!(home.contains(r#"<dd id="username">alice</dd>"#), "{home}");

    let event = app.events().into_iter().find(|e| e.kind == "login_ok").expect("a login_ok event");
    assert_eq!(event.channel, "web");
    assert_eq!(event.user_id, Some(alice.id));
    assert_eq!(event.client_addr.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_sign_in_goes_to_the_local_next_path() {
    let app = spawn_app().await;
    app.admin();
    let response = sign_in(&app, &app.client, "root-admin", "admin-password", Some("/admin/stats")).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/admin/stats");
    assert_eq!(app.get("/admin/stats", None).await.status(), 200);
}

#[tokio::test]
async fn the_whole_round_trip_from_a_protected_page_through_the_form_lands_back_on_it() {
    let app = spawn_app().await;
    app.admin();
    let first = app.get("/admin/stats", None).await;
    let login_url = location(&first).to_owned();
    let form = html_page(app.get(&login_url, None).await, 200).await;
    assert!(hidden_value(&form, "next").is_some(), "the form has no next field: {form}");
    let response = submit_rendered_form(&app, &form, "root-admin", "admin-password").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/admin/stats");
}

#[tokio::test]
async fn a_sign_in_never_redirects_to_another_host() {
    let app = spawn_app().await;
    app.alice();
    for next in ["//evil.example", "https://evil.example", "/\\evil.example", "/\t/evil.example", "evil.example"] {
        let response = sign_in(&app, &browser(), "alice", "alice-password", Some(next)).await;
        assert_eq!(response.status(), 303, "next={next:?}");
        assert_eq!(location(&response), "/", "next={next:?}");
    }
}

#[tokio::test]
async fn an_already_signed_in_visitor_of_the_login_page_is_sent_on() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let response = app.get("/login?next=%2Fsomewhere", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/somewhere");
}

#[tokio::test]
async fn signing_in_changes_the_session_id_and_the_old_one_stays_anonymous() {
    let app = spawn_app().await;
    app.alice();
    let page = app.get("/login", None).await;
    let before = session_cookie(&page).expect("a session cookie before signing in");
    let csrf = csrf_from(&page.text().await.unwrap());
    let sessions_before: i64 = count_sessions(&app);

    let fields = [("csrf_token", csrf.as_str()), ("username", "alice"), ("password", "alice-password")];
    let response = app.client.post(app.url("/login")).form(&fields).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let after = session_cookie(&response).expect("a new session cookie");
    assert_ne!(before, after);
    // An anonymous visitor costs no row; the sign-in writes exactly one.
    assert_eq!(sessions_before, 0);
    assert_eq!(count_sessions(&app), 1);

    let replayed = replay(&app, &before, "/").await;
    assert_eq!(replayed.status(), 303);
    assert_eq!(location(&replayed), "/login?next=%2F");
    assert_eq!(replay(&app, &after, "/").await.status(), 200);
}

fn count_sessions(app: &TestApp) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS n FROM sessions").load(&mut app.db.conn()).unwrap();
    rows[0].n
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_with_401_a_generic_message_and_the_username_kept() {
    let app = spawn_app().await;
    app.alice();
    let response = sign_in(&app, &app.client, "alice", "Wr0ng-secret-pa55", None).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = html_page(response, 401).await;
    assert!(body.contains(&format!(r#"role="alert">{GENERIC_FAILURE}</p>"#)), "{body}");
    assert!(input_tag(&body, "username").contains(r#"value="alice""#), "{body}");
    assert!(!input_tag(&body, "password").contains("value="), "{body}");
    assert!(!body.contains("Wr0ng-secret-pa55"), "{body}");
    // The form can be submitted again as it is.
    assert!(csrf_from(&body).len() >= 32);
    assert_eq!(app.get("/", None).await.status(), 303);
}

#[tokio::test]
async fn a_failed_sign_in_keeps_the_next_path_for_the_retry() {
    let app = spawn_app().await;
    app.admin();
    let response = sign_in(&app, &app.client, "root-admin", "wrong", Some("/admin/stats")).await;
    let body = html_page(response, 401).await;
    assert_eq!(hidden_value(&body, "next").as_deref(), Some("/admin/stats"));

    let response = submit_rendered_form(&app, &body, "root-admin", "admin-password").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/admin/stats");
}

#[tokio::test]
async fn an_unknown_user_gets_exactly_the_answer_of_a_wrong_password() {
    let app = spawn_app().await;
    app.alice();
    let wrong_password = sign_in(&app, &app.client, "alice", "not-her-password", None).await;
    let status_a = wrong_password.status();
    let page_a = wrong_password.text().await.unwrap();
    let unknown_user = sign_in(&app, &app.client, "mallory", "not-her-password", None).await;
    let status_b = unknown_user.status();
    let page_b = unknown_user.text().await.unwrap();

    assert_eq!(status_a, 401);
    assert_eq!(status_b, 401);
    assert!(page_b.contains(GENERIC_FAILURE), "{page_b}");
    // Same session, so the same CSRF token: only the echoed username differs.
    assert_eq!(page_a.replace(r#"value="alice""#, "U"), page_b.replace(r#"value="mallory""#, "U"));
}

#[tokio::test]
async fn an_empty_username_or_password_is_a_failed_sign_in_not_an_error() {
    let app = spawn_app().await;
    app.alice();
    for (username, password) in [("", "alice-password"), ("alice", "")] {
        let body = html_page(sign_in(&app, &browser(), username, password, None).await, 401).await;
        assert!(body.contains(GENERIC_FAILURE), "{body}");
    }
}

#[tokio::test]
async fn failed_sign_ins_on_the_form_are_audited_on_the_web_channel() {
    let app = spawn_app().await;
    let alice = app.alice();
    assert_eq!(sign_in(&app, &app.client, "alice", "wrong", None).await.status(), 401);
    assert_eq!(sign_in(&app, &app.client, "mallory", "wrong", None).await.status(), 401);

    let failures: Vec<_> = app.events().into_iter().filter(|e| e.kind == "login_failed").collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures.iter().all(|e| e.channel == "web"), "{failures:?}");
    assert!(failures.iter().all(|e| e.client_addr.as_deref() == Some("127.0.0.1")), "{failures:?}");
    assert_eq!(failures[0].attempted_username.as_deref(), Some("alice"));
    assert_eq!(failures[0].user_id, Some(alice.id));
    assert_eq!(failures[1].attempted_username.as_deref(), Some("mallory"));
    assert_eq!(failures[1].user_id, None);
}

#[tokio::test]
async fn a_body_that_is_not_a_form_gets_a_400_page_never_a_500() {
    let app = spawn_app().await;
    app.alice();
    let page = app.get("/login", None).await.text().await.unwrap();
    let csrf = csrf_from(&page);
    let json = format!(r#"{{"csrf_token":"{csrf}","username":"alice","password":"alice-password"}}"#);
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("application/json"), json.clone().into_bytes()),
        (Some("text/plain"), format!("csrf_token={csrf}&username=alice&password=alice-password").into_bytes()),
        (None, format!("csrf_token={csrf}&username=alice&password=alice-password").into_bytes()),
        (Some(form), format!("csrf_token={csrf}&username=alice&username=bob&password=x").into_bytes()),
        (Some(form), [format!("csrf_token={csrf}&username=alice&password=").as_bytes(), b"\xff\xfe"].concat()),
        (Some(form), format!("csrf_token={csrf}&username=alice&password={}", "a".repeat(8 * 1024)).into_bytes()),
    ];
    for (content_type, body) in cases {
        let mut request = app.client.post(app.url("/login")).body(body);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        let page = html_page(response, 400).await;
        assert!(page.contains("That request could not be understood."), "{content_type:?}: {page}");
    }
    assert_eq!(app.get("/", None).await.status(), 303);
}

// --- CSRF ---

#[tokio::test]
async fn a_sign_in_without_a_csrf_token_is_refused_with_a_403_page() {
    let app = spawn_app().await;
    app.alice();
    app.get("/login", None).await;
    let fields = [("username", "alice"), ("password", "alice-password")];
    let response = app.client.post(app.url("/login")).form(&fields).send().await.unwrap();
    let body = html_page(response, 403).await;
    assert!(body.contains("The form expired or did not come from this site."), "{body}");
    assert_eq!(app.get("/", None).await.status(), 303);
    assert!(app.events().is_empty(), "{:?}", app.events());
}

#[tokio::test]
async fn a_sign_in_with_a_wrong_csrf_token_is_refused_with_a_403_page() {
    let app = spawn_app().await;
    app.alice();
    let page = app.get("/login", None).await.text().await.unwrap();
    let wrong = format!("{}x", csrf_from(&page));
    let fields = [("csrf_token", wrong.as_str()), ("username", "alice"), ("password", "alice-password")];
    let response = app.client.post(app.url("/login")).form(&fields).send().await.unwrap();
    html_page(response, 403).await;
    assert_eq!(app.get("/", None).await.status(), 303);
}

#[tokio::test]
async fn a_sign_in_with_a_csrf_token_from_another_session_is_refused() {
    let app = spawn_app().await;
    app.alice();
    let attacker = browser();
    let attackers_token = csrf_from(&attacker.get(app.url("/login")).send().await.unwrap().text().await.unwrap());
    let victims_token = csrf_from(&app.get("/login", None).await.text().await.unwrap());
    assert_ne!(attackers_token, victims_token);

    let fields = [("csrf_token", attackers_token.as_str()), ("username", "alice"), ("password", "alice-password")];
    let response = app.client.post(app.url("/login")).form(&fields).send().await.unwrap();
    html_page(response, 403).await;
    // A browser with no session at all is refused too.
    let fresh = Client::builder().redirect(Policy::none()).build().unwrap();
    let response = fresh.post(app.url("/login")).form(&fields).send().await.unwrap();
    html_page(response, 403).await;
    assert_eq!(app.get("/", None).await.status(), 303);
}

#[tokio::test]
async fn a_sign_out_without_the_right_csrf_token_is_refused_and_the_user_stays_signed_in() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let token = sign_out_token(&app, &app.client).await;
    let wrong = format!("{token}x");
    let other_session = csrf_from(&browser().get(app.url("/login")).send().await.unwrap().text().await.unwrap());

    let mut attempts = vec![app.client.post(app.url("/logout")).form(&[("csrf_token", wrong.as_str())])];
    attempts.push(app.client.post(app.url("/logout")).form(&[("csrf_token", other_session.as_str())]));
    attempts.push(app.client.post(app.url("/logout")).form(&[("other", "x")]));
    for attempt in attempts {
        html_page(attempt.send().await.unwrap(), 403).await;
        assert_eq!(app.get("/", None).await.status(), 200);
    }
    assert!(!app.event_kinds().contains(&"logout".to_owned()));
    assert_eq!(active_sessions(&app), 1);
}

// --- Signing out ---

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server() {
    let app = spawn_app().await;
    let alice = app.alice();
    let cookie = signed_in(&app, &app.client, "alice", "alice-password").await;
    assert_eq!(active_sessions(&app), 1);
    let token = sign_out_token(&app, &app.client).await;

    let response = app.client.post(app.url("/logout")).form(&[("csrf_token", token.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login");

    assert_eq!(active_sessions(&app), 0);
    assert_eq!(count_sessions(&app), 0);
    let replayed = replay(&app, &cookie, "/").await;
    assert_eq!(replayed.status(), 303);
    assert_eq!(location(&replayed), "/login?next=%2F");
    assert_eq!(app.get("/", None).await.status(), 303);

    let event = app.events().into_iter().find(|e| e.kind == "logout").expect("a logout event");
    assert_eq!(event.channel, "web");
    assert_eq!(event.user_id, Some(alice.id));
    assert_eq!(event.attempted_username.as_deref(), Some("alice"));
}

// --- The home page ---

#[tokio::test]
async fn the_home_page_shows_who_is_signed_in_and_their_roles() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let response = app.get("/", None).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = html_page(response, 200).await;
    assert!(body.contains("<h1>Hello, Test Person</h1>"), "{body}");
    assert!(body.contains(r#"<dd id="username">alice</dd>"#), "{body}");
    assert!(body.contains(r#"<dd id="roles"><span class="badge">user</span> </dd>"#), "{body}");
    assert!(body.contains("alice@example.org"), "{body}");
    assert!(body.contains(r#"<form class="inline" method="post" action="/logout">"#), "{body}");
    assert!(!body.contains("/admin/stats"), "a plain user sees no admin link: {body}");
}

#[tokio::test]
async fn an_admin_sees_a_link_to_the_statistics() {
    let app = spawn_app().await;
    app.admin();
    signed_in(&app, &app.client, "root-admin", "admin-password").await;
    let body = html_page(app.get("/", None).await, 200).await;
    assert!(body.contains(r#"<dd id="username">root-admin</dd>"#), "{body}");
    assert!(body.contains(r#"<span class="badge">admin</span>"#), "{body}");
    assert!(body.contains(r#"<span class="badge">user</span>"#), "{body}");
    assert!(body.contains(r#"<a href="/admin/stats">Statistics</a>"#), "{body}");
}

// --- The admin page ---

#[tokio::test]
async fn a_plain_user_gets_the_403_page_for_the_statistics() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let response = app.get("/admin/stats", None).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = html_page(response, 403).await;
    assert!(body.contains("You do not have access to this page."), "{body}");
    assert!(!body.contains("chart-hourly"), "{body}");
}

#[tokio::test]
async fn an_admin_sees_the_statistics_with_two_server_drawn_charts() {
    let app = spawn_app().await;
    let alice = app.alice();
    app.admin();
    app.login(&alice, None).await;
    assert_eq!(sign_in(&app, &browser(), "alice", "wrong", None).await.status(), 401);
    signed_in(&app, &app.client, "root-admin", "admin-password").await;

    let response = app.get("/admin/stats", None).await;
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = html_page(response, 200).await;

    assert!(body.contains(r#"<figure class="chart" id="chart-hourly"><svg xmlns="http://www.w3.org/2000/svg""#));
    assert!(body.contains(r#"<figure class="chart" id="chart-daily"><svg xmlns="http://www.w3.org/2000/svg""#));
    assert_eq!(body.matches("<svg").count(), 2);
    assert!(!body.contains("<script"), "{body}");

    assert_eq!(stat_value(&body, "users"), "2");
    assert_eq!(stat_value(&body, "active users"), "2");
    assert_eq!(stat_value(&body, "sign-ins, 24 h"), "2");
    assert_eq!(stat_value(&body, "failed sign-ins, 24 h"), "1");
    assert_eq!(stat_value(&body, "active sessions"), "1");
    assert_eq!(stat_value(&body, "refresh tokens outstanding"), "1");

    let events_at = body.find(r#"<table class="table" id="events">"#).expect("the events table");
    let events = &body[events_at..];
    assert!(events.contains(r#"<span class="badge kind-login_ok">login_ok</span>"#), "{events}");
    assert!(events.contains(r#"<span class="badge kind-login_failed">login_failed</span>"#), "{events}");
    assert!(events.contains("<td>root-admin</td>"), "{events}");
    assert!(events.contains("<td>web</td>") && events.contains("<td>api</td>"), "{events}");
}

// --- Headers and errors ---

#[tokio::test]
async fn an_unknown_page_is_a_404_html_page_even_for_a_json_client() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/no-such-page")).header(header::ACCEPT, "application/json").send().await;
    let body = html_page(response.unwrap(), 404).await;
    assert!(body.contains("There is no page at this address."), "{body}");
}

#[tokio::test]
async fn the_stylesheet_is_served_by_the_app_with_nosniff() {
    let app = spawn_app().await;
    let login = app.get("/login", None).await.text().await.unwrap();
    let href_at = login.find(r#"href="/static/style.css?v="#).expect("a versioned stylesheet link") + 6;
    let href = &login[href_at..href_at + login[href_at..].find('"').unwrap()];
    let response = app.get(href, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

// --- Sessions end on the server ---

#[tokio::test]
async fn signing_out_everywhere_through_the_api_ends_the_browser_session() {
    let app = spawn_app().await;
    let alice = app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let token = app.access_token(&alice, Some("profile")).await;

    let response = app.post_empty("/api/users/me/sign-out-all", Some(&token)).await;
    assert_eq!(response.status(), 204);

    let response = app.get("/", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
    assert_eq!(active_sessions(&app), 0);

    // Signing in again afterwards works.
    let other = browser();
    signed_in(&app, &other, "alice", "alice-password").await;
    assert_eq!(other.get(app.url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn deactivating_a_user_ends_their_browser_session() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    assert_eq!(app.get("/", None).await.status(), 200);

    let deactivate = gatehouse::db::users::AccountChange { roles: None, active: Some(false) };
    let event = gatehouse::db::auth_events::NewEvent::new(
        gatehouse::domain::EventKind::Deactivated,
        gatehouse::domain::Channel::Cli,
    );
    gatehouse::db::users::change(&mut app.db.conn(), "alice", &deactivate, &event, None).unwrap();

    let response = app.get("/", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
    assert_eq!(active_sessions(&app), 0);
    let body = html_page(sign_in(&app, &browser(), "alice", "alice-password", None).await, 401).await;
    assert!(body.contains(GENERIC_FAILURE), "{body}");
}

#[tokio::test]
async fn a_session_of_a_user_deactivated_behind_the_apps_back_is_anonymous_too() {
    let app = spawn_app().await;
    app.alice();
    let cookie = signed_in(&app, &app.client, "alice", "alice-password").await;
    diesel::sql_query("UPDATE users SET is_active = false WHERE username = 'alice'")
        .execute(&mut app.db.conn())
        .unwrap();

    let response = replay(&app, &cookie, "/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
    // Reactivation does not bring the old session back.
    diesel::sql_query("UPDATE users SET is_active = true WHERE username = 'alice'")
        .execute(&mut app.db.conn())
        .unwrap();
    assert_eq!(replay(&app, &cookie, "/").await.status(), 303);
}

// --- Throttling ---

#[tokio::test]
async fn the_login_form_shares_the_per_address_throttle_with_the_token_endpoint() {
    // 10 a minute keeps the burst at 10 while refilling slowly enough that a busy machine cannot
    // earn a request back in the middle of the test.
    let app = spawn_app_with(&[("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "10")]).await;
    app.alice();
    let csrf = csrf_from(&app.get("/login", None).await.text().await.unwrap());
    for _ in 0..10 {
        let response = app.post_token(&[("username", "nobody"), ("password", "guess")]).await;
        assert_eq!(response.status(), 400);
    }
    let fields = [("csrf_token", csrf.as_str()), ("username", "alice"), ("password", "alice-password")];
    let response = app.client.post(app.url("/login")).form(&fields).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry_after), "Retry-After: {retry_after}");
    let body = html_page(response, 429).await;
    assert!(body.contains("Too many sign-in attempts from your address."), "{body}");
    assert_eq!(app.get("/", None).await.status(), 303);
}

// --- More session rules ---

#[tokio::test]
async fn a_forged_session_cookie_is_anonymous_not_an_error() {
    let app = spawn_app().await;
    for forged in ["garbage", "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let response = replay(&app, forged, "/").await;
        assert_eq!(response.status(), 303, "cookie {forged:?}");
        assert_eq!(location(&response), "/login?next=%2F");
        html_page(replay(&app, forged, "/login").await, 200).await;
    }
}

#[tokio::test]
async fn the_login_forms_csrf_token_is_replaced_at_sign_in() {
    let app = spawn_app().await;
    app.alice();
    let form_token = csrf_from(&app.get("/login", None).await.text().await.unwrap());
    let fields = [("csrf_token", form_token.as_str()), ("username", "alice"), ("password", "alice-password")];
    assert_eq!(app.client.post(app.url("/login")).form(&fields).send().await.unwrap().status(), 303);
    assert_ne!(sign_out_token(&app, &app.client).await, form_token);

    let response = app.client.post(app.url("/logout")).form(&[("csrf_token", form_token.as_str())]).send().await;
    html_page(response.unwrap(), 403).await;
    assert_eq!(app.get("/", None).await.status(), 200);
}

#[tokio::test]
async fn a_get_request_never_signs_anyone_out() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let response = app.get("/logout", None).await;
    assert_eq!(response.headers()[header::ALLOW], "POST");
    html_page(response, 405).await;
    assert_eq!(app.get("/", None).await.status(), 200);
}

#[tokio::test]
async fn signing_out_an_anonymous_session_just_goes_to_the_login_page() {
    let app = spawn_app().await;
    let token = csrf_from(&app.get("/login", None).await.text().await.unwrap());
    let response = app.client.post(app.url("/logout")).form(&[("csrf_token", token.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login");
    assert!(app.events().is_empty(), "{:?}", app.events());
}

#[tokio::test]
async fn a_session_idle_past_its_timeout_is_anonymous() {
    let app = spawn_app().await;
    app.alice();
    let cookie = signed_in(&app, &app.client, "alice", "alice-password").await;
    diesel::sql_query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&mut app.db.conn())
        .unwrap();
    let response = replay(&app, &cookie, "/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
    assert_eq!(active_sessions(&app), 0);
}

/// Seconds until the one session's idle expiry, and since it was last seen, by the database's clock.
fn session_clock(app: &TestApp) -> (f64, f64) {
    #[derive(diesel::QueryableByName)]
    struct Clock {
        #[diesel(sql_type = diesel::sql_types::Double)]
        idle_left: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        seen_ago: f64,
    }
    let rows: Vec<Clock> = diesel::sql_query(
        "SELECT extract(epoch FROM expires_at - now())::float8 AS idle_left, \
                extract(epoch FROM now() - last_seen_at)::float8 AS seen_ago FROM sessions",
    )
    .load(&mut app.db.conn())
    .unwrap();
    assert_eq!(rows.len(), 1);
    (rows[0].idle_left, rows[0].seen_ago)
}

#[tokio::test]
async fn every_request_of_a_signed_in_session_pushes_its_idle_timeout_and_an_idle_one_goes_to_login() {
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;

    for path in ["/", "/admin/stats", "/"] {
        // As if the browser had been idle for 25 of its 30 minutes.
        diesel::sql_query(
            "UPDATE sessions SET expires_at = now() + interval '5 minutes', \
                                 last_seen_at = now() - interval '25 minutes'",
        )
        .execute(&mut app.db.conn())
        .unwrap();

        let response = app.get(path, None).await;
        assert!(matches!(response.status().as_u16(), 200 | 403), "GET {path}: {}", response.status());

        let (idle_left, seen_ago) = session_clock(&app);
        assert!((1740.0..=1800.0).contains(&idle_left), "GET {path}: idle timeout not pushed: {idle_left} s left");
        assert!((-5.0..=60.0).contains(&seen_ago), "GET {path}: last seen {seen_ago} s ago");
    }

    diesel::sql_query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&mut app.db.conn())
        .unwrap();
    let response = app.get("/", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login?next=%2F");
    let form = html_page(app.get("/login?next=%2F", None).await, 200).await;
    assert!(form.contains(r#"<form method="post" action="/login""#), "{form}");
    assert_eq!(hidden_value(&form, "next").as_deref(), Some("/"));
    assert_eq!(active_sessions(&app), 0);
}

#[tokio::test]
async fn a_session_past_its_absolute_lifetime_is_anonymous_however_active() {
    let app = spawn_app().await;
    app.alice();
    let cookie = signed_in(&app, &app.client, "alice", "alice-password").await;
    diesel::sql_query("UPDATE sessions SET absolute_expires_at = now() - interval '1 second'")
        .execute(&mut app.db.conn())
        .unwrap();
    let response = replay(&app, &cookie, "/").await;
    assert_eq!(response.status(), 303);
    // A request does not extend it either.
    assert_eq!(replay(&app, &cookie, "/").await.status(), 303);
}

#[tokio::test]
async fn a_session_lives_thirty_idle_minutes_at_most_twelve_hours() {
    #[derive(diesel::QueryableByName)]
    struct Lifetimes {
        #[diesel(sql_type = diesel::sql_types::Double)]
        idle_secs: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        absolute_secs: f64,
    }
    let app = spawn_app().await;
    app.alice();
    signed_in(&app, &app.client, "alice", "alice-password").await;
    let rows: Vec<Lifetimes> = diesel::sql_query(
        "SELECT extract(epoch FROM expires_at - now())::float8 AS idle_secs, \
         extract(epoch FROM absolute_expires_at - now())::float8 AS absolute_secs \
         FROM sessions WHERE user_id IS NOT NULL",
    )
    .load(&mut app.db.conn())
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert!((1700.0..=1800.0).contains(&rows[0].idle_secs), "idle: {}", rows[0].idle_secs);
    assert!((43_100.0..=43_200.0).contains(&rows[0].absolute_secs), "absolute: {}", rows[0].absolute_secs);
}

#[tokio::test]
async fn usernames_on_the_form_are_matched_without_regard_to_case() {
    let app = spawn_app().await;
    app.alice();
    let response = sign_in(&app, &app.client, "ALICE", "alice-password", None).await;
    assert_eq!(response.status(), 303);
    let body = html_page(app.get("/", None).await, 200).await;
    assert!(body.contains(r#"<dd id="username">alice</dd>"#), "{body}");
}

#[tokio::test]
async fn what_the_visitor_typed_is_escaped_when_the_form_comes_back() {
    let app = spawn_app().await;
    let typed = r#""><script>alert(1)</script>"#;
    let body = html_page(sign_in(&app, &app.client, typed, "whatever", None).await, 401).await;
    assert!(!body.contains("<script>"), "{body}");
    let username = input_tag(&body, "username");
    assert!(username.contains(r#"value="&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;""#), "{username}");

    let body = html_page(app.get("/login?next=%2Fx%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E", None).await, 200).await;
    assert!(!body.contains("<script>"), "{body}");
}

#[tokio::test]
async fn an_anonymous_cookie_that_claims_a_sign_in_signs_nobody_in() {
    // A cookie sealed with the right key (as if the key had leaked, or a bug let state through)
    // whose anonymous state names a user: signed-in state comes only from a session row.
    use actix_web::cookie::{Cookie, CookieJar};
    let app = spawn_app().await;
    let alice = app.alice();
    let key = gatehouse::auth::session::cookie_key(None, &crate::helpers::JWT_SECRET.into());
    let state = serde_json::json!({
        "user_id": serde_json::to_string(&alice.id).unwrap(),
        "signed_in_at": serde_json::to_string(&chrono::Utc::now()).unwrap(),
        "sid": serde_json::to_string(&uuid::Uuid::new_v4()).unwrap(),
    });
    let mut jar = CookieJar::new();
    jar.private_mut(&key).add(Cookie::new(SESSION_COOKIE, format!("anon:{state}")));
    let sealed = jar.get(SESSION_COOKIE).unwrap().value().to_owned();
    for path in ["/", "/account"] {
        let response = replay(&app, &sealed, path).await;
        assert_eq!(response.status(), 303, "{path}");
        assert!(location(&response).starts_with("/login"), "{path}: {}", location(&response));
    }
}
