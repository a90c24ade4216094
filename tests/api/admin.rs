//! User administration and self-service over real HTTP: the admin pages, `/account`, and the admin
//! API. Every rule of issue #13 is a test here: who may see and do what, CSRF on every form,
//! messages next to the fields, nothing half-written, the last-admin guard (also when two admins act
//! at the same moment on two instances), and that a change made in the browser takes effect on the
//! user's very next API request.

use diesel::{Connection, PgConnection, RunQueryDsl};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_bearer_error, lock_waiters, spawn_app, spawn_pair, until_lock_waiters};

/// A password the strength estimate lets through.
const STRONG: &str = "velvet-otter-sings-47";

fn browser() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in:\n{html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

fn location(response: &Response) -> String {
    response.headers()[header::LOCATION].to_str().unwrap().to_owned()
}

/// A browser signed in as `user` on `app`, and its CSRF token.
async fn signed_in(app: &TestApp, user: &TestUser) -> (Client, String) {
    let client = browser();
    let form = client.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let fields = [
        ("csrf_token", hidden(&form, "csrf_token")),
        ("username", user.username.clone()),
        ("password", user.password.clone()),
    ];
    let response = client.post(app.url("/login")).form(&fields).send().await.unwrap();
    assert_eq!(response.status(), 303, "sign-in of {}", user.username);
    let home = client.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&home, "csrf_token");
    (client, csrf)
}

async fn post_form(app: &TestApp, client: &Client, path: &str, fields: &[(&str, &str)]) -> Response {
    client.post(app.url(path)).form(fields).send().await.unwrap()
}

async fn page(response: Response, status: u16) -> String {
    let url = response.url().to_string();
    assert_eq!(response.status(), status, "{url}");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8", "{url}");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store", "{url}");
    response.text().await.unwrap()
}

/// The markup of the table with this id.
fn table(html: &str, id: &str) -> String {
    let start = html
        .find(&format!(r#"<table class="table" id="{id}""#))
        .unwrap_or_else(|| panic!("no table #{id} in:\n{html}"));
    let end = start + html[start..].find("</table>").unwrap();
    html[start..end].to_owned()
}

/// The text of the element with this id (up to its first closing tag).
fn element_text(html: &str, id: &str) -> String {
    let start = html.find(&format!(r#"id="{id}""#)).unwrap_or_else(|| panic!("no #{id} in:\n{html}"));
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let close = open_end + html[open_end..].find("</").unwrap();
    html[open_end..close].trim().to_owned()
}

fn scalar(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Row>(&mut app.db.conn()).unwrap().n
}

fn roles(app: &TestApp, username: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        role_name: String,
    }
    diesel::sql_query(
        "SELECT role_name FROM user_roles JOIN users ON users.id = user_id WHERE username = $1 ORDER BY role_name",
    )
    .bind::<diesel::sql_types::Text, _>(username)
    .load::<Row>(&mut app.db.conn())
    .unwrap()
    .into_iter()
    .map(|row| row.role_name)
    .collect()
}

fn second_admin(app: &TestApp) -> TestUser {
    app.create_user("second-admin", "second-admin-password", &["user", "admin"])
}

// --- Who may see what ---

#[tokio::test]
async fn anonymous_visitors_of_the_admin_and_account_pages_are_sent_to_sign_in_and_back() {
    let app = spawn_app().await;
    for (path, next) in [
        ("/admin/users", "%2Fadmin%2Fusers"),
        ("/admin/users/alice", "%2Fadmin%2Fusers%2Falice"),
        ("/admin/audit?kind=logout", "%2Fadmin%2Faudit%3Fkind%3Dlogout"),
        ("/account", "%2Faccount"),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(location(&response), format!("/login?next={next}"), "{path}");
    }
}

#[tokio::test]
async fn a_signed_in_user_without_the_admin_role_gets_the_403_page_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.alice();
    let admin = app.admin();
    let (client, csrf) = signed_in(&app, &alice).await;
    for path in ["/admin/users", "/admin/users/root-admin", "/admin/audit"] {
        let body = page(client.get(app.url(path)).send().await.unwrap(), 403).await;
        assert!(body.contains("You do not have access to this page."), "{path}");
    }
    let posts = [
        ("/admin/users", vec![("username", "mallory"), ("password", STRONG), ("password_again", STRONG)]),
        ("/admin/users/alice/roles", vec![("role.admin", "on"), ("role.user", "on")]),
        ("/admin/users/root-admin/active", vec![("active", "false")]),
        ("/admin/users/root-admin/password", vec![("password", STRONG), ("password_again", STRONG)]),
        ("/admin/users/root-admin/sign-out-all", vec![]),
    ];
    for (path, mut fields) in posts {
        fields.push(("csrf_token", &csrf));
        page(post_form(&app, &client, path, &fields).await, 403).await;
    }
    assert_eq!(roles(&app, "alice"), ["user"]);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM users"), 2);
    // The admin's password is unchanged: the old one still signs in.
    assert!(!app.access_token(&admin, None).await.is_empty());
}

#[tokio::test]
async fn every_admin_and_account_form_refuses_a_missing_or_foreign_csrf_token_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.alice();
    let (client, _) = signed_in(&app, &admin).await;
    let (_, foreign) = signed_in(&app, &admin).await;
    let session_id = scalar(&app, "SELECT count(*) AS n FROM sessions");
    assert_eq!(session_id, 2);
    let some_session = "00000000-0000-0000-0000-000000000001";
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/admin/users".into(), vec![("username", "mallory"), ("password", STRONG), ("password_again", STRONG)]),
        ("/admin/users/alice/roles".into(), vec![("role.admin", "on")]),
        ("/admin/users/alice/active".into(), vec![("active", "false")]),
        ("/admin/users/alice/password".into(), vec![("password", STRONG), ("password_again", STRONG)]),
        ("/admin/users/alice/sign-out-all".into(), vec![]),
        (
            "/account/password".into(),
            vec![("current_password", "admin-password"), ("new_password", STRONG), ("new_password_again", STRONG)],
        ),
        (format!("/account/sessions/{some_session}/end"), vec![]),
        (format!("/account/families/{some_session}/revoke"), vec![]),
    ];
    for (path, fields) in &forms {
        for token in [None, Some(foreign.as_str())] {
            let mut fields = fields.clone();
            if let Some(token) = token {
                fields.push(("csrf_token", token));
            }
            let body = page(post_form(&app, &client, path, &fields).await, 403).await;
            assert!(body.contains("The form expired or did not come from this site"), "{path}");
        }
    }
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM users"), 2);
    assert_eq!(roles(&app, "alice"), ["user"]);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM users WHERE is_active"), 2);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM sessions"), 2);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM auth_events WHERE kind <> 'login_ok'"), 0);
}

// --- Creating users on the page ---

#[tokio::test]
async fn an_admin_creates_a_user_with_the_form_and_the_audit_trail_names_the_admin() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (client, csrf) = signed_in(&app, &admin).await;
    let fields = [
        ("csrf_token", csrf.as_str()),
        ("username", "bob"),
        ("email", "bob@example.org"),
        ("full_name", "Bob Example"),
        ("password", STRONG),
        ("password_again", STRONG),
        ("role.user", "on"),
    ];
    let response = post_form(&app, &client, "/admin/users", &fields).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/admin/users/bob?done=created");
    let body = page(client.get(app.url("/admin/users/bob?done=created")).send().await.unwrap(), 200).await;
    assert!(body.contains("The user was created."), "{body}");
    assert_eq!(element_text(&body, "roles"), r#"<span class="badge">user"#);

    let bob = TestUser { id: uuid::Uuid::nil(), username: "bob".into(), password: STRONG.into() };
    assert_eq!(app.get("/api/users/me", Some(&app.access_token(&bob, None).await)).await.status(), 200);
    let created = app.events().into_iter().find(|event| event.kind == "user_created").unwrap();
    assert_eq!((created.channel.as_str(), created.detail.as_deref()), ("web", Some("user")));
    assert_eq!(
        scalar(
            &app,
            &format!("SELECT count(*) AS n FROM auth_events WHERE kind = 'user_created' AND actor_id = '{}'", admin.id)
        ),
        1
    );
}

#[tokio::test]
async fn the_create_form_shows_each_problem_next_to_its_field_keeps_the_input_and_writes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.alice();
    let (client, csrf) = signed_in(&app, &admin).await;
    let submit = |fields: Vec<(&'static str, &'static str)>| {
        let mut fields = fields;
        let csrf = csrf.clone();
        let client = client.clone();
        let url = app.url("/admin/users");
        async move {
            let mut all: Vec<(&str, String)> = fields.drain(..).map(|(k, v)| (k, v.to_owned())).collect();
            all.push(("csrf_token", csrf));
            client.post(url).form(&all).send().await.unwrap()
        }
    };

    let body = page(
        submit(vec![
            ("username", "a b"),
            ("email", "not-an-email"),
            ("password", "short"),
            ("password_again", "short"),
        ])
        .await,
        400,
    )
    .await;
    assert_eq!(element_text(&body, "new-username-error"), "Username may contain only letters, digits and . _ - @ +.");
    assert_eq!(element_text(&body, "new-email-error"), "`not-an-email` is not an email address.");
    assert_eq!(element_text(&body, "new-password-error"), "Password must be at least 8 characters.");
    assert!(body.contains(r#"value="a b""#), "the username is kept");
    assert!(!body.contains(r#"value="short""#), "a password is never sent back");

    let body = page(
        submit(vec![("username", "bob"), ("password", "password123"), ("password_again", "password123")]).await,
        400,
    )
    .await;
    let advice = element_text(&body, "new-password-error");
    assert!(advice.starts_with("This password is too easy to guess"), "{advice}");
    assert!(advice.contains("common password"), "the estimator's own feedback: {advice}");

    let body = page(
        submit(vec![("username", "bob"), ("password", STRONG), ("password_again", "velvet-otter-sings-48")]).await,
        400,
    )
    .await;
    assert_eq!(element_text(&body, "new-password-again-error"), "The two passwords are not the same.");

    let body = page(
        submit(vec![("username", "bob"), ("password", STRONG), ("password_again", STRONG), ("role.wizard", "on")])
            .await,
        400,
    )
    .await;
    assert_eq!(element_text(&body, "new-roles-error"), "There is no role named wizard.");

    let body =
        page(submit(vec![("username", "ALICE"), ("password", STRONG), ("password_again", STRONG)]).await, 409).await;
    assert_eq!(element_text(&body, "new-username-error"), "This username is taken.");

    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM users"), 2, "nothing was written");
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM auth_events WHERE kind = 'user_created'"), 0);
}

#[tokio::test]
async fn two_admins_creating_the_same_username_at_once_make_one_user_and_one_is_told_it_is_taken() {
    let (a, b) = spawn_pair(&[]).await;
    let admin = a.admin();
    // Each instance is its own issuer: a token works where it was issued.
    let (token_a, token_b) = (a.access_token(&admin, None).await, b.access_token(&admin, None).await);
    for round in 0..10 {
        let username = format!("twin-{round}");
        let body = json!({"username": username, "password": STRONG, "roles": ["user"]});
        let first = tokio::spawn(a.client.post(a.url("/api/admin/users")).bearer_auth(&token_a).json(&body).send());
        let second = tokio::spawn(b.client.post(b.url("/api/admin/users")).bearer_auth(&token_b).json(&body).send());
        let mut statuses =
            [first.await.unwrap().unwrap().status().as_u16(), second.await.unwrap().unwrap().status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}");
    }
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM users WHERE username LIKE 'twin-%'"), 10);
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM auth_events WHERE kind = 'user_created'"), 10);
}

// --- Changing users on the page ---

#[tokio::test]
async fn a_deactivation_in_the_browser_takes_effect_on_the_users_very_next_api_request() {
    let app = spawn_app().await;
    let admin = app.admin();
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.get("/api/users/me", Some(&token)).await.status(), 200);
    let (client, csrf) = signed_in(&app, &admin).await;

    let response =
        post_form(&app, &client, "/admin/users/alice/active", &[("csrf_token", &csrf), ("active", "false")]).await;
    assert_eq!(location(&response), "/admin/users/alice?done=deactivated");
    assert_bearer_error(app.get("/api/users/me", Some(&token)).await, 403, None, "inactive_user").await;

    // Reactivated, the old token stays dead (deactivation ended it); a new sign-in works.
    post_form(&app, &client, "/admin/users/alice/active", &[("csrf_token", &csrf), ("active", "true")]).await;
    assert_bearer_error(
        app.get("/api/users/me", Some(&token)).await,
        401,
        Some("Bearer error=\"invalid_token\"*"),
        "invalid_token",
    )
    .await;
    assert_eq!(app.get("/api/users/me", Some(&app.access_token(&alice, None).await)).await.status(), 200);
    let kinds: Vec<String> = app.events().into_iter().filter(|e| e.channel == "web").map(|e| e.kind).collect();
    assert_eq!(kinds, ["login_ok", "deactivated", "activated"]);
}

#[tokio::test]
async fn a_role_change_in_the_browser_takes_effect_on_the_users_very_next_api_request() {
    let app = spawn_app().await;
    let admin = app.admin();
    let second = second_admin(&app);
    let token = app.access_token(&second, None).await;
    assert_eq!(app.get("/api/admin/stats", Some(&token)).await.status(), 200);
    let (client, csrf) = signed_in(&app, &admin).await;

    let response =
        post_form(&app, &client, "/admin/users/second-admin/roles", &[("csrf_token", &csrf), ("role.user", "on")])
            .await;
    assert_eq!(location(&response), "/admin/users/second-admin?done=roles");
    assert_bearer_error(
        app.get("/api/admin/stats", Some(&token)).await,
        403,
        Some("Bearer error=\"insufficient_scope\""),
        "insufficient_scope",
    )
    .await;
    assert_eq!(roles(&app, "second-admin"), ["user"]);
    let event = app.events().into_iter().find(|event| event.kind == "roles_changed").unwrap();
    assert_eq!(event.detail.as_deref(), Some("admin, user → user"));
}

#[tokio::test]
async fn an_admin_sets_a_password_which_ends_the_users_tokens_and_refuses_a_weak_one_next_to_the_field() {
    let app = spawn_app().await;
    let admin = app.admin();
    let alice = app.alice();
    let tokens = app.login(&alice, None).await;
    let (client, csrf) = signed_in(&app, &admin).await;

    let weak = [("csrf_token", csrf.as_str()), ("password", "alice1234"), ("password_again", "alice1234")];
    let body = page(post_form(&app, &client, "/admin/users/alice/password", &weak).await, 400).await;
    assert!(element_text(&body, "password-error").starts_with("This password is too easy to guess"), "{body}");
    assert_eq!(app.get("/api/users/me", Some(tokens["access_token"].as_str().unwrap())).await.status(), 200);

    let strong = [("csrf_token", csrf.as_str()), ("password", STRONG), ("password_again", STRONG)];
    let response = post_form(&app, &client, "/admin/users/alice/password", &strong).await;
    assert_eq!(location(&response), "/admin/users/alice?done=password");
    assert_eq!(app.get("/api/users/me", Some(tokens["access_token"].as_str().unwrap())).await.status(), 401);
    assert_eq!(app.refresh(tokens["refresh_token"].as_str().unwrap(), None).await.status(), 400);
    let renewed = TestUser { password: STRONG.into(), ..alice };
    assert_eq!(app.get("/api/users/me", Some(&app.access_token(&renewed, None).await)).await.status(), 200);
}

#[tokio::test]
async fn an_admin_cannot_set_their_own_password_on_the_admin_page_without_the_current_one() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (client, csrf) = signed_in(&app, &admin).await;
    let own = format!("/admin/users/{}/password", admin.username);
    let strong = [("csrf_token", csrf.as_str()), ("password", STRONG), ("password_again", STRONG)];
    let body = page(post_form(&app, &client, &own, &strong).await, 400).await;
    assert_eq!(
        element_text(&body, "password-error"),
        "Change your own password on your account page: it asks for your current password."
    );
    // Unchanged.
    assert_eq!(app.post_token(&[("username", &admin.username), ("password", &admin.password)]).await.status(), 200);
    assert!(app.events().iter().all(|event| event.kind != "password_changed"));
}

#[tokio::test]
async fn the_user_page_shows_the_users_sessions_and_refresh_tokens_and_signs_them_out_everywhere() {
    let app = spawn_app().await;
    let admin = app.admin();
    let alice = app.alice();
    let tokens = app.login(&alice, Some("profile items:read")).await;
    let (alice_browser, _) = signed_in(&app, &alice).await;
    let (client, csrf) = signed_in(&app, &admin).await;

    let body = page(client.get(app.url("/admin/users/alice")).send().await.unwrap(), 200).await;
    let sessions = table(&body, "sessions");
    assert!(sessions.contains("<td>127.0.0.1</td>"), "{sessions}");
    assert!(body.contains("<td>items:read profile</td>"), "{body}");

    let response = post_form(&app, &client, "/admin/users/alice/sign-out-all", &[("csrf_token", &csrf)]).await;
    assert_eq!(location(&response), "/admin/users/alice?done=signed-out");
    assert_eq!(alice_browser.get(app.url("/account")).send().await.unwrap().status(), 303);
    assert_eq!(app.refresh(tokens["refresh_token"].as_str().unwrap(), None).await.status(), 400);
    let body = page(client.get(app.url("/admin/users/alice")).send().await.unwrap(), 200).await;
    assert!(body.contains("No live sessions.") && body.contains("No live refresh tokens."), "{body}");
}

#[tokio::test]
async fn an_unknown_user_page_is_the_404_page() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (client, csrf) = signed_in(&app, &admin).await;
    page(client.get(app.url("/admin/users/nobody")).send().await.unwrap(), 404).await;
    page(
        post_form(&app, &client, "/admin/users/nobody/active", &[("csrf_token", &csrf), ("active", "false")]).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_nul_in_a_username_or_search_and_a_year_postgresql_cannot_store_are_answered_not_server_errors() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (client, csrf) = signed_in(&app, &admin).await;
    page(client.get(app.url("/admin/users/a%00b")).send().await.unwrap(), 404).await;
    page(post_form(&app, &client, "/admin/users/a%00b/sign-out-all", &[("csrf_token", &csrf)]).await, 404).await;
    let body = page(client.get(app.url("/admin/audit?from=-10000-01-01")).send().await.unwrap(), 400).await;
    assert!(element_text(&body, "filter-from-error").starts_with("Use a date and time like"), "{body}");

    let token = app.access_token(&admin, Some("admin:users")).await;
    let patch = app.client.patch(app.url("/api/admin/users/a%00b")).bearer_auth(&token).json(&json!({"roles": []}));
    assert_eq!(patch.send().await.unwrap().status(), 404);
    assert_eq!(app.post_json("/api/admin/users/a%00b/sign-out-all", Some(&token), &json!({})).await.status(), 404);
    let found = app.get("/api/admin/users?q=%00", Some(&token)).await;
    assert_eq!(found.status(), 200);
    assert_eq!(found.json::<Value>().await.unwrap()["users"], json!([]));
}

// --- The last admin ---

#[tokio::test]
async fn the_last_active_admin_cannot_remove_their_own_role_nor_deactivate_themselves() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (client, csrf) = signed_in(&app, &admin).await;

    let body = page(
        post_form(&app, &client, "/admin/users/root-admin/roles", &[("csrf_token", &csrf), ("role.user", "on")]).await,
        409,
    )
    .await;
    assert!(body.contains("This would leave no active admin"), "{body}");
    let body = page(
        post_form(&app, &client, "/admin/users/root-admin/active", &[("csrf_token", &csrf), ("active", "false")]).await,
        409,
    )
    .await;
    assert!(body.contains("Sign out"), "the 409 page keeps the signed-in header");
    assert_eq!(roles(&app, "root-admin"), ["admin", "user"]);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM users WHERE is_active"), 1);
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM auth_events WHERE kind IN ('roles_changed', 'deactivated')"), 0);

    // An inactive admin does not count: with the other admin deactivated, the guard still holds.
    let other = second_admin(&app);
    post_form(&app, &client, "/admin/users/second-admin/active", &[("csrf_token", &csrf), ("active", "false")]).await;
    page(post_form(&app, &client, "/admin/users/root-admin/roles", &[("csrf_token", &csrf)]).await, 409).await;
    // With a second active admin, demoting oneself is fine.
    post_form(&app, &client, "/admin/users/second-admin/active", &[("csrf_token", &csrf), ("active", "true")]).await;
    let response =
        post_form(&app, &client, "/admin/users/root-admin/roles", &[("csrf_token", &csrf), ("role.user", "on")]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(roles(&app, &other.username), ["admin", "user"]);
}

#[tokio::test]
async fn the_api_refuses_to_remove_the_last_admin_with_409_last_admin() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = app.access_token(&admin, None).await;
    for body in [json!({"roles": ["user"]}), json!({"is_active": false}), json!({"roles": [], "is_active": true})] {
        let response = app
            .client
            .patch(app.url("/api/admin/users/root-admin"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 409, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "last_admin");
        assert!(answer["error_description"].as_str().unwrap().contains("no active admin"), "{answer}");
    }
    assert_eq!(roles(&app, "root-admin"), ["admin", "user"]);
}

/// Two admins demote (or deactivate) each other at the same moment, each on its own instance. The
/// test holds the lock that serializes such changes, lets both queue on it, then lets go: whichever
/// goes second must see that it would remove the last admin.
async fn race_two_admins(first_change: Value, second_change: Value) {
    let (a, b) = spawn_pair(&[]).await;
    let one = a.admin();
    let two = second_admin(&a);
    let (token_one, token_two) = (a.access_token(&one, None).await, b.access_token(&two, None).await);
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT name FROM roles WHERE name = 'admin' FOR UPDATE").execute(&mut holder).unwrap();

    let patch = |app: &TestApp, token: &str, target: &str, body: &Value| {
        tokio::spawn(
            app.client.patch(app.url(&format!("/api/admin/users/{target}"))).bearer_auth(token).json(body).send(),
        )
    };
    let demote_two = patch(&a, &token_one, "second-admin", &first_change);
    let demote_one = patch(&b, &token_two, "root-admin", &second_change);
    until_lock_waiters(&a, 2, "both changes wait for the admin lock").await;
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let mut statuses =
        [demote_two.await.unwrap().unwrap().status().as_u16(), demote_one.await.unwrap().unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let active_admins = scalar(
        &a,
        "SELECT count(*) AS n FROM users JOIN user_roles ON user_id = id WHERE role_name = 'admin' AND is_active",
    );
    assert_eq!(active_admins, 1);
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_on_two_instances_leave_one_admin() {
    race_two_admins(json!({"roles": ["user"]}), json!({"roles": ["user"]})).await;
}

#[tokio::test]
async fn two_admins_deactivating_each_other_at_once_on_two_instances_leave_one_admin() {
    race_two_admins(json!({"is_active": false}), json!({"is_active": false})).await;
}

#[tokio::test]
async fn a_role_change_and_a_creation_touching_the_same_roles_at_once_both_succeed() {
    // Giving alice {admin, user} removes her `user` row and adds both; creating bob with both adds
    // them in name order. Each moves the per-role member counters: the test holds `role:user` so
    // the role change waits for it first and the creation next, the order in which taking the
    // counters as the rows change would deadlock. (The creation is the command line's, which takes
    // no admin lock: an admin's creation would wait for the role change's.)
    let a = spawn_app().await;
    a.alice();
    let admin = a.admin();
    let token_a = a.access_token(&admin, Some("admin:users")).await;
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT value FROM account_counts WHERE name = 'role:user' FOR UPDATE")
        .execute(&mut holder)
        .unwrap();

    let promote = tokio::spawn(
        a.client
            .patch(a.url("/api/admin/users/alice"))
            .bearer_auth(&token_a)
            .json(&json!({"roles": ["admin", "user"]}))
            .send(),
    );
    until_lock_waiters(&a, 1, "the role change waits for the counter").await;
    let db = std::sync::Arc::clone(&a.db);
    let create = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn();
        let new_user = gatehouse::db::users::NewUser {
            id: uuid::Uuid::now_v7(),
            username: "bob",
            email: None,
            full_name: None,
            password_hash: "$2b$04$not.a.real.hash.but.never.checked.here......",
        };
        gatehouse::db::users::create(&mut conn, &new_user, &["admin".to_owned(), "user".to_owned()])
    });
    until_lock_waiters(&a, 2, "the creation waits too").await;
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    assert_eq!(promote.await.unwrap().unwrap().status(), 200);
    assert!(matches!(create.await.unwrap(), Ok(gatehouse::db::users::UserWrite::Done(_))));
    assert_eq!(roles(&a, "alice"), ["admin", "user"]);
    assert_eq!(roles(&a, "bob"), ["admin", "user"]);
    let counted = scalar(&a, "SELECT value AS n FROM account_counts WHERE name = 'role:admin'");
    assert_eq!(counted, scalar(&a, "SELECT count(*) AS n FROM user_roles WHERE role_name = 'admin'"));
}

#[tokio::test]
async fn an_admin_demoted_while_their_changes_are_in_flight_changes_nothing() {
    // root-admin sends a role change through the API and a new password through the page; both
    // were authorized when they arrived. The test holds the admin lock, takes root-admin's admin
    // role away (second-admin stays) while both wait, and lets go.
    let app = spawn_app().await;
    let admin = app.admin();
    second_admin(&app);
    let alice = app.alice();
    let token = app.access_token(&admin, Some("admin:users")).await;
    let (client, csrf) = signed_in(&app, &admin).await;
    let mut holder = PgConnection::establish(&app.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT name FROM roles WHERE name = 'admin' FOR UPDATE").execute(&mut holder).unwrap();

    let promote = tokio::spawn(
        app.client
            .patch(app.url("/api/admin/users/alice"))
            .bearer_auth(&token)
            .json(&json!({"roles": ["admin", "user"]}))
            .send(),
    );
    let fields = [("csrf_token", csrf), ("password", STRONG.to_owned()), ("password_again", STRONG.to_owned())];
    let new_password = tokio::spawn(client.post(app.url("/admin/users/alice/password")).form(&fields).send());
    until_lock_waiters(&app, 2, "both changes wait for the admin lock").await;
    diesel::sql_query(
        "DELETE FROM user_roles WHERE role_name = 'admin' AND user_id = (SELECT id FROM users WHERE username = 'root-admin')",
    )
    .execute(&mut holder)
    .unwrap();
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let refused = promote.await.unwrap().unwrap();
    assert_bearer_error(refused, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
    page(new_password.await.unwrap().unwrap(), 403).await;
    assert_eq!(roles(&app, "alice"), ["user"]);
    assert_eq!(app.post_token(&[("username", "alice"), ("password", &alice.password)]).await.status(), 200);
    assert!(app.events().iter().all(|event| event.kind != "roles_changed" && event.kind != "password_changed"));
}

#[tokio::test]
async fn a_demotion_and_a_deactivation_racing_without_any_hold_still_leave_one_admin() {
    let (a, b) = spawn_pair(&[]).await;
    let one = a.admin();
    let two = second_admin(&a);
    let (token_one, token_two) = (a.access_token(&one, None).await, b.access_token(&two, None).await);
    let demote = tokio::spawn(
        a.client
            .patch(a.url("/api/admin/users/second-admin"))
            .bearer_auth(&token_one)
            .json(&json!({"roles": []}))
            .send(),
    );
    let deactivate = tokio::spawn(
        b.client
            .patch(b.url("/api/admin/users/root-admin"))
            .bearer_auth(&token_two)
            .json(&json!({"is_active": false}))
            .send(),
    );
    let statuses = [demote.await.unwrap().unwrap().status(), deactivate.await.unwrap().unwrap().status()];
    // One of the two loses: told 409 last_admin when both were checked as admins, or 403 when the
    // demotion committed before the other request's own authorization read the roles.
    let refused = [reqwest::StatusCode::CONFLICT, reqwest::StatusCode::FORBIDDEN];
    assert_eq!(statuses.iter().filter(|status| refused.contains(status)).count(), 1, "{statuses:?}");
    assert_eq!(
        scalar(
            &a,
            "SELECT count(*) AS n FROM users JOIN user_roles ON user_id = id WHERE role_name = 'admin' AND is_active"
        ),
        1
    );
}

// --- The audit trail ---

#[tokio::test]
async fn the_audit_trail_filters_by_user_kind_and_time_and_pages_back_through_older_events() {
    let app = spawn_app().await;
    let admin = app.admin();
    let alice = app.alice();
    // 120 failed sign-ins of nobody, then alice's deactivation by the admin.
    diesel::sql_query(
        "INSERT INTO auth_events (occurred_at, kind, attempted_username, channel, reason) \
         SELECT now() - make_interval(mins => n), 'login_failed', 'nobody', 'api', 'unknown_user' \
         FROM generate_series(1, 120) AS n",
    )
    .execute(&mut app.db.conn())
    .unwrap();
    let (client, csrf) = signed_in(&app, &admin).await;
    post_form(&app, &client, "/admin/users/alice/active", &[("csrf_token", &csrf), ("active", "false")]).await;

    let body = page(client.get(app.url("/admin/audit?user=ALICE")).send().await.unwrap(), 200).await;
    let events = table(&body, "events");
    assert!(events.contains("deactivated") && events.contains("root-admin"), "{events}");
    assert!(!events.contains("login_failed"), "{events}");

    let body = page(client.get(app.url("/admin/audit?kind=login_failed")).send().await.unwrap(), 200).await;
    assert_eq!(body.matches("kind-login_failed").count(), 50);
    let older = hidden_href(&body, "Older events");
    let body = page(client.get(app.url(&older)).send().await.unwrap(), 200).await;
    assert_eq!(body.matches("kind-login_failed").count(), 50);
    let oldest = hidden_href(&body, "Older events");
    assert_ne!(older, oldest);
    let body = page(client.get(app.url(&oldest)).send().await.unwrap(), 200).await;
    assert_eq!(body.matches("kind-login_failed").count(), 20);
    assert!(!body.contains("Older events"));

    let from = (chrono::Utc::now() - chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M").to_string();
    let body =
        page(client.get(app.url(&format!("/admin/audit?kind=login_failed&from={from}"))).send().await.unwrap(), 200)
            .await;
    let count = body.matches("kind-login_failed").count();
    assert!((29..=31).contains(&count), "{count}");
    let _ = alice;
}

/// The `href` of the link with this text.
fn hidden_href(html: &str, text: &str) -> String {
    let end = html.find(&format!(">{text}</a>")).unwrap_or_else(|| panic!("no link {text}"));
    let start = html[..end].rfind("href=\"").unwrap() + "href=\"".len();
    html[start..start + html[start..].find('"').unwrap()].replace("&#38;", "&").replace("&amp;", "&")
}

#[tokio::test]
async fn audit_filters_that_do_not_parse_are_named_next_to_their_field() {
    let app = spawn_app().await;
    let admin = app.admin();
    let (client, _) = signed_in(&app, &admin).await;
    let body = page(
        client
            .get(app.url("/admin/audit?user=nobody&kind=login_maybe&from=yesterday&until=2020-01-01"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(element_text(&body, "filter-user-error"), "There is no user named nobody.");
    assert_eq!(element_text(&body, "filter-kind-error"), "There is no event kind login_maybe.");
    assert!(element_text(&body, "filter-from-error").starts_with("Use a date and time like"));
    page(client.get(app.url("/admin/audit?after=garbage")).send().await.unwrap(), 400).await;
}

// --- /account ---

#[tokio::test]
async fn changing_your_password_keeps_this_session_and_ends_every_other_session_and_token() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let tokens = a.login(&alice, None).await;
    let (other_browser, _) = signed_in(&b, &alice).await;
    let (client, csrf) = signed_in(&a, &alice).await;

    let fields = [
        ("csrf_token", csrf.as_str()),
        ("current_password", "alice-password"),
        ("new_password", STRONG),
        ("new_password_again", STRONG),
    ];
    let response = post_form(&a, &client, "/account/password", &fields).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/account?done=password-changed");

    let body = page(client.get(a.url("/account?done=password-changed")).send().await.unwrap(), 200).await;
    assert!(body.contains("Your password was changed."), "{body}");
    assert_eq!(table(&body, "sessions").matches("<tr").count(), 2, "a header and this session: {body}");
    assert_eq!(body.matches(">this session<").count(), 1);
    // On the other instance too, the other session and the tokens are gone.
    assert_eq!(other_browser.get(b.url("/account")).send().await.unwrap().status(), 303);
    assert_eq!(b.get("/api/users/me", Some(tokens["access_token"].as_str().unwrap())).await.status(), 401);
    assert_eq!(b.refresh(tokens["refresh_token"].as_str().unwrap(), None).await.status(), 400);
    let renewed = TestUser { password: STRONG.into(), ..alice };
    assert_eq!(a.post_token(&[("username", "alice"), ("password", STRONG)]).await.status(), 200);
    let _ = renewed;
    let event = a.events().into_iter().find(|event| event.kind == "password_changed").unwrap();
    assert_eq!(event.channel, "web");
    // The re-issued session has a new form token: one read before the change is refused.
    let stale = [("csrf_token", csrf.as_str())];
    let nobody = "/account/sessions/00000000-0000-0000-0000-000000000000/end";
    assert_eq!(post_form(&a, &client, nobody, &stale).await.status(), 403);
    let fresh = hidden(&page(client.get(a.url("/account")).send().await.unwrap(), 200).await, "csrf_token");
    assert_ne!(fresh, csrf);
}

#[tokio::test]
async fn a_wrong_current_password_or_a_weak_new_one_is_named_next_to_its_field_and_nothing_changes() {
    let app = spawn_app().await;
    let alice = app.alice();
    let (client, csrf) = signed_in(&app, &alice).await;
    let attempt = |current: &'static str, new: &'static str, again: &'static str| {
        let fields = [
            ("csrf_token", csrf.clone()),
            ("current_password", current.to_owned()),
            ("new_password", new.to_owned()),
            ("new_password_again", again.to_owned()),
        ];
        client.post(app.url("/account/password")).form(&fields).send()
    };
    let body = page(attempt("not-her-password", STRONG, STRONG).await.unwrap(), 400).await;
    assert_eq!(element_text(&body, "current-password-error"), "This is not your current password.");
    let body = page(attempt("alice-password", "password1234", "password1234").await.unwrap(), 400).await;
    assert!(element_text(&body, "new-password-error").starts_with("This password is too easy to guess"), "{body}");
    let body = page(attempt("alice-password", STRONG, "something-else-entirely").await.unwrap(), 400).await;
    assert_eq!(element_text(&body, "new-password-again-error"), "The two passwords are not the same.");

    assert_eq!(app.post_token(&[("username", "alice"), ("password", "alice-password")]).await.status(), 200);
    assert_eq!(client.get(app.url("/account")).send().await.unwrap().status(), 200, "still signed in");
    // The wrong current password counted as a failed sign-in (the lockout applies here too).
    let failures: Vec<_> = app.events().into_iter().filter(|e| e.kind == "login_failed").collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason.as_deref(), Some("wrong_password"));
}

#[tokio::test]
async fn a_new_password_is_judged_only_after_the_current_one_is_proven_and_the_form_is_throttled() {
    let app = crate::helpers::spawn_app_with(&[("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "1")]).await;
    let alice = app.alice();
    let (client, csrf) = signed_in(&app, &alice).await;
    let attempt = |current: &str, new: &str| {
        let fields = [
            ("csrf_token", csrf.clone()),
            ("current_password", current.to_owned()),
            ("new_password", new.to_owned()),
            ("new_password_again", new.to_owned()),
        ];
        client.post(app.url("/account/password")).form(&fields).send()
    };
    // A wrong current password with a weak new one: only the current password is named (the
    // strength estimate, which can cost a large part of a second, never ran for a stranger).
    let body = page(attempt("not-her-password", "password1234").await.unwrap(), 400).await;
    assert_eq!(element_text(&body, "current-password-error"), "This is not your current password.");
    assert!(!body.contains(r#"id="new-password-error""#), "{body}");
    // The sign-in budget of the address (a burst of 10) covers this form too: the sign-in above
    // and the attempt spent two.
    for _ in 0..8 {
        attempt("not-her-password", "password1234").await.unwrap();
    }
    let throttled = attempt("alice-password", STRONG).await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn a_password_change_whose_session_is_ended_while_the_passwords_are_checked_changes_nothing() {
    // Someone holding alice's old password changes it from a session she ends from her other
    // device while their request checks the passwords: the ended session must neither set the
    // password nor come back as the session the change keeps. The test holds alice's row, ends the
    // session while the request waits for it, and lets go.
    let a = spawn_app().await;
    let alice = a.alice();
    let (intruder, csrf) = signed_in(&a, &alice).await;
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT id FROM users WHERE username = 'alice' FOR UPDATE").execute(&mut holder).unwrap();

    let fields = [
        ("csrf_token", csrf.clone()),
        ("current_password", "alice-password".to_owned()),
        ("new_password", STRONG.to_owned()),
        ("new_password_again", STRONG.to_owned()),
    ];
    let change = tokio::spawn(intruder.post(a.url("/account/password")).form(&fields).send());
    until_lock_waiters(&a, 1, "the change waits for alice's row").await;
    diesel::sql_query("DELETE FROM sessions").execute(&mut holder).unwrap();
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let response = change.await.unwrap().unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login");
    assert_eq!(intruder.get(a.url("/account")).send().await.unwrap().status(), 303, "signed out");
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM sessions"), 0);
    assert_eq!(a.post_token(&[("username", "alice"), ("password", "alice-password")]).await.status(), 200);
    assert_eq!(a.post_token(&[("username", "alice"), ("password", STRONG)]).await.status(), 400);
    assert!(a.events().iter().all(|event| event.kind != "password_changed"));
}

#[tokio::test]
async fn ending_another_session_from_the_account_page_ends_it_at_once_on_the_other_instance() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let (phone, _) = signed_in(&b, &alice).await;
    let (laptop, csrf) = signed_in(&a, &alice).await;
    assert_eq!(phone.get(b.url("/account")).send().await.unwrap().status(), 200);

    let body = page(laptop.get(a.url("/account")).send().await.unwrap(), 200).await;
    assert_eq!(body.matches(">this session<").count(), 1);
    assert_eq!(body.matches("/end\"").count(), 2);
    let other = scalar_text(&a, "SELECT id::text AS t FROM sessions ORDER BY created_at LIMIT 1");
    let response = post_form(&a, &laptop, &format!("/account/sessions/{other}/end"), &[("csrf_token", &csrf)]).await;
    assert_eq!(location(&response), "/account?done=session-ended");
    assert_eq!(phone.get(b.url("/account")).send().await.unwrap().status(), 303);
    assert_eq!(laptop.get(a.url("/account")).send().await.unwrap().status(), 200);
    // Someone else's session id is not yours to end.
    let bob = a.create_user("bob", "bob-password", &["user"]);
    let (bob_browser, _) = signed_in(&a, &bob).await;
    let bobs = scalar_text(
        &a,
        "SELECT id::text AS t FROM sessions WHERE user_id <> (SELECT id FROM users WHERE username = 'alice')",
    );
    page(post_form(&a, &laptop, &format!("/account/sessions/{bobs}/end"), &[("csrf_token", &csrf)]).await, 404).await;
    assert_eq!(bob_browser.get(a.url("/account")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn revoking_a_refresh_token_from_the_account_page_ends_its_family() {
    let app = spawn_app().await;
    let alice = app.alice();
    let tokens = app.login(&alice, Some("profile")).await;
    let (client, csrf) = signed_in(&app, &alice).await;
    let family = scalar_text(&app, "SELECT id::text AS t FROM refresh_families");
    let body = page(client.get(app.url("/account")).send().await.unwrap(), 200).await;
    assert!(body.contains(&format!("/account/families/{family}/revoke")), "{body}");
    let response =
        post_form(&app, &client, &format!("/account/families/{family}/revoke"), &[("csrf_token", &csrf)]).await;
    assert_eq!(location(&response), "/account?done=family-revoked");
    assert_eq!(app.refresh(tokens["refresh_token"].as_str().unwrap(), None).await.status(), 400);
    page(post_form(&app, &client, &format!("/account/families/{family}/revoke"), &[("csrf_token", &csrf)]).await, 404)
        .await;
}

fn scalar_text(app: &TestApp, sql: &str) -> String {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    diesel::sql_query(sql).get_result::<Row>(&mut app.db.conn()).unwrap().t
}

// --- The admin API ---

async fn admin_token(app: &TestApp) -> String {
    let admin = app.admin();
    app.access_token(&admin, Some("admin:users")).await
}

#[tokio::test]
async fn the_admin_api_lists_users_by_page_and_search() {
    let app = spawn_app().await;
    let token = admin_token(&app).await;
    diesel::sql_query(
        "INSERT INTO users (id, username, email, password_hash) \
         SELECT gen_random_uuid(), 'user' || lpad(n::text, 3, '0'), 'u' || n || '@corp.example', 'x' FROM generate_series(1, 120) AS n",
    )
    .execute(&mut app.db.conn())
    .unwrap();
    let page1: Value = app.get("/api/admin/users", Some(&token)).await.json().await.unwrap();
    assert_eq!(page1["users"].as_array().unwrap().len(), 50);
    assert_eq!((page1["page"].clone(), page1["has_more"].clone()), (json!(1), json!(true)));
    assert_eq!(page1["users"][0]["username"], "root-admin");
    let blank: Value = app.get("/api/admin/users?q=&page=", Some(&token)).await.json().await.unwrap();
    assert_eq!((blank["page"].clone(), blank["users"][0].clone()), (json!(1), page1["users"][0].clone()));
    let page3: Value = app.get("/api/admin/users?page=3", Some(&token)).await.json().await.unwrap();
    assert_eq!(page3["users"].as_array().unwrap().len(), 21);
    assert_eq!(page3["has_more"], false);

    let found: Value = app.get("/api/admin/users?q=U11", Some(&token)).await.json().await.unwrap();
    let names: Vec<&str> = found["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "user011", "user110", "user111", "user112", "user113", "user114", "user115", "user116", "user117",
            "user118", "user119"
        ]
    );
    let by_email: Value = app.get("/api/admin/users?q=7%40corp", Some(&token)).await.json().await.unwrap();
    assert_eq!(by_email["users"].as_array().unwrap().len(), 12);
    let literal: Value = app.get("/api/admin/users?q=%25", Some(&token)).await.json().await.unwrap();
    assert_eq!(literal["users"].as_array().unwrap().len(), 0, "% is searched for, not a wildcard");

    for bad in [
        "/api/admin/users?page=0",
        "/api/admin/users?page=x",
        "/api/admin/users?page=1&page=2",
        "/api/admin/users?sort=name",
    ] {
        assert_bearer_error(app.get(bad, Some(&token)).await, 400, None, "invalid_request").await;
    }
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_users_scope_and_the_admin_role() {
    let app = spawn_app().await;
    let admin = app.admin();
    let alice = app.alice();
    assert_bearer_error(app.get("/api/admin/users", None).await, 401, Some("Bearer"), "unauthorized").await;
    let without_scope = app.access_token(&admin, Some("admin:stats")).await;
    assert_bearer_error(
        app.get("/api/admin/users", Some(&without_scope)).await,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="admin:users""#),
        "insufficient_scope",
    )
    .await;
    let plain = app.access_token(&alice, None).await;
    let response = app.post_empty("/api/admin/users/alice/sign-out-all", Some(&plain)).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="admin:users""#),
        "insufficient_scope",
    )
    .await;
    // A token with the scope, of a user who lost the role since: the role decides, at once.
    let demoted = second_admin(&app);
    let token = app.access_token(&demoted, Some("admin:users")).await;
    diesel::sql_query("DELETE FROM user_roles WHERE role_name = 'admin' AND user_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(demoted.id)
        .execute(&mut app.db.conn())
        .unwrap();
    let response = app.post_empty("/api/admin/users/alice/sign-out-all", Some(&token)).await;
    assert_bearer_error(response, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
}

#[tokio::test]
async fn who_may_call_is_answered_before_what_the_body_or_query_gets_wrong() {
    let app = spawn_app().await;
    let alice = app.alice();
    let plain = app.access_token(&alice, None).await;
    let challenge = Some(r#"Bearer error="insufficient_scope", scope="admin:users""#);
    let requests = [
        app.client.post(app.url("/api/admin/users")).json(&json!({})),
        app.client.post(app.url("/api/admin/users")).header(header::CONTENT_TYPE, "text/plain").body("x"),
        app.client.patch(app.url("/api/admin/users/alice")).header(header::CONTENT_TYPE, "application/json").body("{"),
        app.client.get(app.url("/api/admin/users?page=0&nonsense=1")),
    ];
    for request in requests {
        let response = request.bearer_auth(&plain).send().await.unwrap();
        assert_bearer_error(response, 403, challenge, "insufficient_scope").await;
    }
    let response = app.client.post(app.url("/api/admin/users")).body("not json").send().await.unwrap();
    assert_bearer_error(response, 401, Some("Bearer"), "unauthorized").await;
    let read_only = app.access_token(&alice, Some("items:read")).await;
    let response =
        app.client.post(app.url("/api/items")).bearer_auth(&read_only).json(&json!({})).send().await.unwrap();
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="items:write""#),
        "insufficient_scope",
    )
    .await;
}

#[tokio::test]
async fn the_admin_api_creates_a_user_with_201_and_refuses_bad_input_with_the_reason() {
    let app = spawn_app().await;
    let token = admin_token(&app).await;
    let body = json!({"username": "bob", "password": STRONG, "email": "bob@example.org", "full_name": "Bob B", "roles": ["user"]});
    let response = app.post_json("/api/admin/users", Some(&token), &body).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!((created["username"].clone(), created["roles"].clone()), (json!("bob"), json!(["user"])));
    assert_eq!(created["is_active"], true);

    let refusals = [
        (json!({"username": "bob", "password": STRONG}), 409, "username_taken", "already exists"),
        (json!({"username": "carol", "password": "carol"}), 400, "invalid_request", "at least 8 characters"),
        (json!({"username": "carol", "password": "carolcarol1"}), 400, "invalid_request", "too easy to guess"),
        (
            json!({"username": "carol", "password": STRONG, "roles": ["wizard"]}),
            400,
            "invalid_request",
            "no role named wizard",
        ),
        (
            json!({"username": "carol", "password": STRONG, "email": "carol"}),
            400,
            "invalid_request",
            "not an email address",
        ),
        (json!({"username": "carol", "password": STRONG, "is_admin": true}), 400, "invalid_request", "unknown field"),
    ];
    for (body, status, error, says) in refusals {
        let response = app.post_json("/api/admin/users", Some(&token), &body).await;
        let answer = assert_bearer_error(response, status, None, error).await;
        let description = answer["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{body}: {description}");
    }
    assert_eq!(scalar(&app, "SELECT count(*) AS n FROM users"), 2);
}

#[tokio::test]
async fn the_admin_api_patches_roles_and_the_active_flag_and_signs_a_user_out_everywhere() {
    let app = spawn_app().await;
    let token = admin_token(&app).await;
    let alice = app.alice();
    let alice_token = app.access_token(&alice, None).await;

    let patch =
        |body: Value, path: &'static str| app.client.patch(app.url(path)).bearer_auth(&token).json(&body).send();
    let changed: Value =
        patch(json!({"roles": ["user", "admin"]}), "/api/admin/users/alice").await.unwrap().json().await.unwrap();
    assert_eq!(changed["roles"], json!(["admin", "user"]));
    let changed: Value =
        patch(json!({"is_active": false}), "/api/admin/users/Alice").await.unwrap().json().await.unwrap();
    assert_eq!(changed["is_active"], false);
    assert_bearer_error(app.get("/api/users/me", Some(&alice_token)).await, 403, None, "inactive_user").await;

    assert_bearer_error(patch(json!({}), "/api/admin/users/alice").await.unwrap(), 400, None, "invalid_request").await;
    assert_bearer_error(
        patch(json!({"roles": ["x y"]}), "/api/admin/users/alice").await.unwrap(),
        400,
        None,
        "invalid_request",
    )
    .await;
    assert_bearer_error(
        patch(json!({"is_active": true}), "/api/admin/users/nobody").await.unwrap(),
        404,
        None,
        "not_found",
    )
    .await;

    patch(json!({"is_active": true}), "/api/admin/users/alice").await.unwrap();
    let fresh = app.access_token(&alice, None).await;
    let response = app.post_empty("/api/admin/users/alice/sign-out-all", Some(&token)).await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.get("/api/users/me", Some(&fresh)).await.status(), 401);
    assert_bearer_error(
        app.post_empty("/api/admin/users/nobody/sign-out-all", Some(&token)).await,
        404,
        None,
        "not_found",
    )
    .await;
    let administrative = ["roles_changed", "deactivated", "activated", "sign_out_all"];
    let kinds: Vec<String> = app
        .events()
        .into_iter()
        .filter(|e| e.channel == "api" && e.user_id == Some(alice.id) && administrative.contains(&e.kind.as_str()))
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, administrative.map(String::from));
}

#[tokio::test]
async fn a_refresh_racing_a_revocation_from_the_account_page_never_leaves_a_working_child() {
    let (a, b) = spawn_pair(&[("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0")]).await;
    let alice = a.alice();
    let (browser, csrf) = signed_in(&b, &alice).await;
    for round in 0..20 {
        let tokens = a.login(&alice, None).await;
        let presented = tokens["refresh_token"].as_str().unwrap().to_owned();
        let family = scalar_text(&a, "SELECT id::text AS t FROM refresh_families WHERE revoked_at IS NULL");
        let refresh = tokio::spawn(
            a.client
                .post(a.url("/token"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &presented)])
                .send(),
        );
        let revoke = tokio::spawn(
            browser.post(b.url(&format!("/account/families/{family}/revoke"))).form(&[("csrf_token", &csrf)]).send(),
        );
        let refreshed = refresh.await.unwrap().unwrap();
        assert_eq!(revoke.await.unwrap().unwrap().status(), 303, "round {round}");
        if refreshed.status() == 200 {
            let child: Value = refreshed.json().await.unwrap();
            let child = child["refresh_token"].as_str().unwrap();
            assert_eq!(b.refresh(child, None).await.status(), 400, "round {round}: the child must end with its family");
        }
    }
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM refresh_families WHERE revoked_at IS NULL"), 0);
}

#[tokio::test]
async fn the_cli_and_the_api_removing_the_two_admins_at_once_leave_one_and_the_cli_says_why_in_one_line() {
    let (a, _b) = spawn_pair(&[]).await;
    let one = a.admin();
    second_admin(&a);
    let token = a.access_token(&one, None).await;
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT name FROM roles WHERE name = 'admin' FOR UPDATE").execute(&mut holder).unwrap();
    let mut watcher = PgConnection::establish(&a.db.url).unwrap();

    // The operator deactivates root-admin on the command line while root-admin demotes the other
    // admin through the API; the test lets the CLI queue on the lock first.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["user", "deactivate", "root-admin"])
        .env("DATABASE_URL", &a.db.url)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..1000 {
        if lock_waiters(&mut watcher) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(lock_waiters(&mut watcher), 1, "the CLI waits for the admin lock");
    let demote = tokio::spawn(
        a.client
            .patch(a.url("/api/admin/users/second-admin"))
            .bearer_auth(&token)
            .json(&json!({"roles": ["user"]}))
            .send(),
    );
    for _ in 0..1000 {
        if lock_waiters(&mut watcher) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(lock_waiters(&mut watcher), 2, "both wait for the admin lock");
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let output = tokio::task::spawn_blocking(move || cli.wait_with_output().unwrap()).await.unwrap();
    assert!(output.status.success(), "the CLI went first: {}", String::from_utf8_lossy(&output.stderr));
    // root-admin was deactivated first; the demotion, queued behind it, sees that second-admin is
    // now the last active admin.
    let answer = demote.await.unwrap().unwrap();
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.json::<Value>().await.unwrap()["error"], "last_admin");
    assert_eq!(roles(&a, "second-admin"), ["admin", "user"]);
    // Now the only active admin left cannot be deactivated from the command line either.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["user", "deactivate", "second-admin"])
        .env("DATABASE_URL", &a.db.url)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no active admin"), "{stderr}");
    assert_eq!(
        scalar(
            &a,
            "SELECT count(*) AS n FROM users JOIN user_roles ON user_id = id WHERE role_name = 'admin' AND is_active"
        ),
        1
    );
}

#[test]
fn the_last_days_figures_from_hourly_counts_equal_a_count_of_the_events() {
    // Events at the window's edges: before it, inside its first (partial) hour, in whole hours, now.
    let db = crate::helpers::TestDb::create();
    let mut conn = db.conn();
    diesel::sql_query(
        "INSERT INTO auth_events (occurred_at, kind, channel) \
         SELECT now() - make_interval(mins => m), k, 'api' \
         FROM unnest(ARRAY[1500, 1441, 1439, 1430, 1380, 700, 61, 59, 1, 0]) AS m, \
              unnest(ARRAY['login_ok', 'login_failed', 'token_issued']) AS k",
    )
    .execute(&mut conn)
    .unwrap();
    // A statement of many rows and one of a single row both reach the hourly counts.
    diesel::sql_query("INSERT INTO auth_events (occurred_at, kind, channel) VALUES (now(), 'lockout', 'web')")
        .execute(&mut conn)
        .unwrap();
    let now = chrono::Utc::now();
    let since = gatehouse::db::stats::last_day(now);
    let counted = gatehouse::db::stats::event_counts_since(&mut conn, since).unwrap();
    // Minutes 1439 and below are inside the last 24 hours (1440 minutes): 8 of the 10.
    assert_eq!((counted.logins, counted.failures, counted.tokens_issued, counted.lockouts), (8, 8, 8, 1));
}
