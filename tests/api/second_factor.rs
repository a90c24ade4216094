//! A second factor for people: enrolment through the pages, the `/login/verify` step, `otp` on the
//! password grant, recovery codes, the lockout they share with passwords, the policy, and an
//! admin's reset. Races run on two instances: a code or a recovery code passes once.

use std::sync::Arc;

use base64::Engine as _;
use chrono::Utc;
use diesel::RunQueryDsl;
use gatehouse::auth::second_factor::{TotpSealer, recovery, totp};
use gatehouse::db;
use reqwest::header;
use reqwest::{Client, Response};
use serde_json::Value;
use tokio::sync::Barrier;

use crate::helpers::{JWT_SECRET, TestApp, TestUser, spawn_app_with, spawn_pair};
use crate::web::{browser, hidden_value};

/// Password sign-ins in these tests come many from one address: the per-address budget is off.
const NO_ADDRESS_BUDGET: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0");

fn location(response: &Response) -> String {
    response.headers().get(header::LOCATION).expect("a Location header").to_str().unwrap().to_owned()
}

fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap()
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// An authenticator app and recovery codes for `user`, stored as a confirmed enrolment would leave
/// them, with no step spent since ten steps ago (so the current code passes once).
pub(crate) fn seed_second_factor(app: &TestApp, user: &TestUser) -> (Vec<u8>, Vec<String>) {
    let secret = totp::new_secret().to_vec();
    let sealed = TotpSealer::new(&JWT_SECRET.to_owned().into()).seal(user.id, &secret).unwrap();
    let codes = recovery::generate();
    let mut conn = app.db.conn();
    assert!(db::second_factors::begin_enrolment(&mut conn, user.id, &sealed).unwrap());
    let old_step = totp::step_at(unix_now()) - 10;
    assert!(
        db::second_factors::confirm_enrolment(
            &mut conn,
            user.id,
            &sealed,
            old_step,
            &recovery::hashes(user.id, &codes),
            &[]
        )
        .unwrap()
    );
    (secret, codes)
}

/// GET a page, then POST its first form's CSRF token with `fields` to `action`.
async fn submit(app: &TestApp, client: &Client, page: &str, action: &str, fields: &[(&str, &str)]) -> Response {
    let html = client.get(app.url(page)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&html, "csrf_token").unwrap_or_else(|| panic!("no CSRF token on {page}:\n{html}"));
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    client.post(app.url(action)).form(&form).send().await.unwrap()
}

async fn password_step(app: &TestApp, client: &Client, user: &TestUser) -> Response {
    submit(app, client, "/login", "/login", &[("username", &user.username), ("password", &user.password)]).await
}

async fn password_grant(app: &TestApp, user: &TestUser, password: &str, otp: Option<&str>) -> Response {
    let mut fields = vec![("grant_type", "password"), ("username", user.username.as_str()), ("password", password)];
    if let Some(otp) = otp {
        fields.push(("otp", otp));
    }
    app.post_token(&fields).await
}

/// The status, headers that matter and body of an answer, for byte-for-byte comparison.
async fn answer(response: Response) -> (u16, Option<String>, Option<String>, String) {
    let header = |name: header::HeaderName| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (content_type, cache) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
    (response.status().as_u16(), content_type, cache, response.text().await.unwrap())
}

fn events_of(app: &TestApp, kind: &str) -> usize {
    app.events().iter().filter(|event| event.kind == kind).count()
}

#[tokio::test]
async fn enrolment_shows_a_qr_code_then_recovery_codes_and_the_enrolment_code_is_spent() {
    let app = spawn_app_with(&[]).await;
    let alice = app.alice();
    let client = browser();
    assert_eq!(password_step(&app, &client, &alice).await.status(), 303);

    // The current password first; a wrong one opens nothing.
    let wrong =
        submit(&app, &client, "/account/second-factor", "/account/second-factor", &[("current_password", "nope")])
            .await;
    assert_eq!(wrong.status(), 400);
    let opened = submit(
        &app,
        &client,
        "/account/second-factor",
        "/account/second-factor",
        &[("current_password", &alice.password)],
    )
    .await;
    assert_eq!(opened.status(), 303);
    let page = client.get(app.url("/account/second-factor")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg"), "an inline QR code:\n{html}");
    assert!(html.contains(r#"href="otpauth://totp/127.0.0.1:alice?secret="#), "{html}");
    let marker = r#"<code id="totp-secret" class="secret">"#;
    let start = html.find(marker).unwrap() + marker.len();
    let grouped = &html[start..start + html[start..].find('<').unwrap()];
    assert!(grouped.split(' ').all(|group| group.len() == 4), "groups of four: {grouped}");
    let secret = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &grouped.replace(' ', "")).unwrap();
    assert_eq!(secret.len(), 20, "160 bits");
    // Stored sealed: the secret's bytes are nowhere in the row.
    let sealed: Vec<u8> =
        db::second_factors::of_user(&mut app.db.conn(), alice.id).unwrap().pending.unwrap().secret_sealed;
    assert!(!sealed.windows(secret.len()).any(|window| window == secret.as_slice()));

    // A wrong code is refused (the enrolment stays open); the app's code turns it on.
    let refused =
        submit(&app, &client, "/account/second-factor", "/account/second-factor/confirm", &[("code", "000000")]).await;
    assert_eq!(refused.status(), 400);
    let code = totp::code_at(&secret, unix_now()).unwrap();
    let confirmed =
        submit(&app, &client, "/account/second-factor", "/account/second-factor/confirm", &[("code", &code)]).await;
    assert_eq!(confirmed.status(), 200);
    let html = confirmed.text().await.unwrap();
    let codes: Vec<&str> = html.match_indices("<li><code>").map(|(at, _)| &html[at + 10..at + 29]).collect();
    assert_eq!(codes.len(), 10, "{html}");
    assert!(codes.iter().all(|code| code.len() == 19 && code.matches('-').count() == 3), "{codes:?}");
    let account = client.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    assert!(account.contains("10 recovery codes left"), "{account}");

    // The enrolment's code cannot sign in (its step is spent), on the API or the pages…
    let replay = password_grant(&app, &alice, &alice.password, Some(&code)).await;
    assert_eq!(replay.status(), 400);
    // …a later step's code can, and the token says how the person signed in.
    let next_code = totp::code_at(&secret, unix_now() + 30).unwrap();
    let response = password_grant(&app, &alice, &alice.password, Some(&next_code)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let first = claims(body["access_token"].as_str().unwrap());
    assert_eq!(first["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert!(first["auth_time"].as_i64().unwrap() <= Utc::now().timestamp());
    // A refresh keeps both.
    let refreshed: Value = app.refresh(body["refresh_token"].as_str().unwrap(), None).await.json().await.unwrap();
    let again = claims(refreshed["access_token"].as_str().unwrap());
    assert_eq!((&again["amr"], &again["auth_time"]), (&first["amr"], &first["auth_time"]));
    assert_eq!(events_of(&app, "second_factor_added"), 1);
    assert_eq!(events_of(&app, "recovery_codes_generated"), 1);
}

#[tokio::test]
async fn a_missing_or_wrong_otp_is_answered_exactly_as_a_wrong_password_and_counts_for_the_lockout() {
    let app = spawn_app_with(&[NO_ADDRESS_BUDGET]).await;
    let alice = app.alice();
    let (secret, _) = seed_second_factor(&app, &alice);
    // A user without a second factor gets no different answer for a stray `otp`.
    let wrong_password = answer(password_grant(&app, &alice, "wrong-password", None).await).await;
    assert_eq!(wrong_password.0, 400);
    let missing = answer(password_grant(&app, &alice, &alice.password, None).await).await;
    let wrong = answer(password_grant(&app, &alice, &alice.password, Some("123456")).await).await;
    let garbage = answer(password_grant(&app, &alice, &alice.password, Some("not-a-code")).await).await;
    assert_eq!(missing, wrong_password);
    assert_eq!(wrong, wrong_password);
    assert_eq!(garbage, wrong_password);
    let failures = app
        .events()
        .iter()
        .filter(|e| e.kind == "login_failed" && e.reason.as_deref() == Some("second_factor"))
        .count();
    assert_eq!(failures, 3);
    // Five failures in all lock the account: now even the right password and code are refused…
    assert_eq!(password_grant(&app, &alice, &alice.password, Some("654321")).await.status(), 400);
    assert_eq!(events_of(&app, "lockout"), 1);
    let code = totp::code_at(&secret, unix_now()).unwrap();
    assert_eq!(password_grant(&app, &alice, &alice.password, Some(&code)).await.status(), 400);
    // …and the code was not spent by the refused attempt: after the lock, it signs in.
    diesel::sql_query("UPDATE users SET locked_until = now() - interval '1 second'")
        .execute(&mut app.db.conn())
        .unwrap();
    assert_eq!(password_grant(&app, &alice, &alice.password, Some(&code)).await.status(), 200);
    // A code sent with a wrong password stays unused as well.
    let next = totp::code_at(&secret, unix_now() + 30).unwrap();
    assert_eq!(password_grant(&app, &alice, "wrong-password", Some(&next)).await.status(), 400);
    assert_eq!(password_grant(&app, &alice, &alice.password, Some(&next)).await.status(), 200);
}

#[tokio::test]
async fn the_half_signed_in_session_opens_only_verify_and_a_code_completes_it_under_a_new_key() {
    let app = spawn_app_with(&[NO_ADDRESS_BUDGET]).await;
    let alice = app.alice();
    let (secret, codes) = seed_second_factor(&app, &alice);
    let client = browser();
    let response = submit(
        &app,
        &client,
        "/login?next=/account",
        "/login",
        &[("username", "alice"), ("password", "alice-password"), ("next", "/account")],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login/verify?next=%2Faccount");
    // Nothing else opens.
    for path in ["/", "/account", "/account/tokens", "/account/second-factor"] {
        let page = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 303, "{path}");
        assert!(location(&page).starts_with("/login"), "{path}: {}", location(&page));
    }
    let verify = client.get(app.url("/login/verify?next=/account")).send().await.unwrap();
    assert_eq!(verify.status(), 200);
    let html = verify.text().await.unwrap();
    assert!(html.contains(r#"<label for="code">"#) && html.contains(r#"autocomplete="one-time-code""#), "{html}");
    // A wrong code: the form again, 401, a generic message.
    let wrong = submit(&app, &client, "/login/verify", "/login/verify", &[("code", "000000")]).await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("That code did not work"));
    // A recovery code, typed in lower case with spaces: signed in, sent to `next`.
    let typed = codes[0].to_lowercase().replace('-', " ");
    let done = submit(&app, &client, "/login/verify", "/login/verify", &[("code", &typed), ("next", "/account")]).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/account");
    let account = client.get(app.url("/account")).send().await.unwrap();
    assert_eq!(account.status(), 200);
    assert!(account.text().await.unwrap().contains("9 recovery codes left"));
    // Only the complete sign-in reset the failure count and was recorded as a sign-in.
    assert_eq!(events_of(&app, "login_ok"), 1);
    assert_eq!(events_of(&app, "second_factor_used"), 1);

    // A second browser: past its five minutes the half-signed-in session ends.
    let late = browser();
    assert_eq!(password_step(&app, &late, &alice).await.status(), 303);
    diesel::sql_query(
        "UPDATE sessions SET state = jsonb_set(state, '{second_step_until}', to_jsonb('\"2000-01-01T00:00:00Z\"'::text)) \
         WHERE state ? 'second_step_until'",
    )
    .execute(&mut app.db.conn())
    .unwrap();
    let expired = late.get(app.url("/login/verify")).send().await.unwrap();
    assert_eq!(expired.status(), 303);
    assert_eq!(location(&expired), "/login");
    let code = totp::code_at(&secret, unix_now()).unwrap();
    let too_late = late.post(app.url("/login/verify")).form(&[("code", code.as_str())]).send().await.unwrap();
    assert!(too_late.status() == 303 || too_late.status() == 403, "{}", too_late.status());
}

#[tokio::test]
async fn when_the_lockout_engages_during_verify_the_half_signed_in_session_ends() {
    let app = spawn_app_with(&[NO_ADDRESS_BUDGET]).await;
    let alice = app.alice();
    seed_second_factor(&app, &alice);
    let client = browser();
    assert_eq!(password_step(&app, &client, &alice).await.status(), 303);
    for attempt in 1..=4 {
        let wrong = submit(&app, &client, "/login/verify", "/login/verify", &[("code", "000001")]).await;
        assert_eq!(wrong.status(), 401, "attempt {attempt}");
    }
    let fifth = submit(&app, &client, "/login/verify", "/login/verify", &[("code", "000001")]).await;
    assert_eq!(fifth.status(), 303);
    assert_eq!(location(&fifth), "/login");
    assert_eq!(client.get(app.url("/login/verify")).send().await.unwrap().status(), 303);
    assert_eq!(events_of(&app, "lockout"), 1);
}

/// Forty browsers on two instances have each given alice's password; all send the same code at once.
#[tokio::test]
async fn the_same_code_from_forty_sessions_on_two_instances_is_accepted_once() {
    let (first, second) = spawn_pair(&[NO_ADDRESS_BUDGET]).await;
    let alice = first.alice();
    let (secret, _) = seed_second_factor(&first, &alice);
    let apps = [Arc::new(first), Arc::new(second)];
    let mut browsers = Vec::new();
    for n in 0..40 {
        let app = Arc::clone(&apps[n % 2]);
        let client = browser();
        assert_eq!(password_step(&app, &client, &alice).await.status(), 303);
        let html = client.get(app.url("/login/verify")).send().await.unwrap().text().await.unwrap();
        browsers.push((app, client, hidden_value(&html, "csrf_token").unwrap()));
    }
    let code = totp::code_at(&secret, unix_now()).unwrap();
    let barrier = Arc::new(Barrier::new(browsers.len()));
    let tasks: Vec<_> = browsers
        .into_iter()
        .map(|(app, client, csrf)| {
            let (barrier, code) = (Arc::clone(&barrier), code.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let form = [("csrf_token", csrf.as_str()), ("code", code.as_str())];
                let response = client.post(app.url("/login/verify")).form(&form).send().await.unwrap();
                let signed_in = response.status() == 303 && location(&response) == "/";
                assert!([303, 401, 429, 503].contains(&response.status().as_u16()), "{}", response.status());
                signed_in
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += usize::from(task.await.unwrap());
    }
    assert_eq!(accepted, 1, "one code, one sign-in");
    assert_eq!(events_of(&apps[0], "second_factor_used"), 1);
}

/// One recovery code sent twenty times at once with the password, to two instances.
#[tokio::test]
async fn one_recovery_code_raced_twenty_times_passes_once() {
    let (first, second) = spawn_pair(&[NO_ADDRESS_BUDGET, ("GATEHOUSE_HASH_QUEUE", "64")]).await;
    let alice = first.alice();
    let (_, codes) = seed_second_factor(&first, &alice);
    let apps = [Arc::new(first), Arc::new(second)];
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (app, barrier, code) = (Arc::clone(&apps[n % 2]), Arc::clone(&barrier), codes[3].clone());
            let password = alice.password.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let fields =
                    [("grant_type", "password"), ("username", "alice"), ("password", &password), ("otp", &code)];
                let status = app.post_token(&fields).await.status().as_u16();
                assert!([200, 400, 429, 503].contains(&status), "{status}");
                status == 200
            })
        })
        .collect();
    let mut issued = 0;
    for task in tasks {
        issued += usize::from(task.await.unwrap());
    }
    assert_eq!(issued, 1);
    let left = db::second_factors::of_user(&mut apps[0].db.conn(), alice.id).unwrap().recovery_codes_left;
    assert_eq!(left, 9);
}

#[tokio::test]
async fn the_admins_policy_keeps_an_admin_without_a_factor_on_enrolment_and_out_of_the_password_grant() {
    let app = spawn_app_with(&[("GATEHOUSE_SECOND_FACTOR", "admins")]).await;
    let admin = app.admin();
    let alice = app.alice();
    let client = browser();
    let response = password_step(&app, &client, &admin).await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/account/second-factor");
    for path in ["/", "/admin/stats", "/admin/users", "/admin/audit", "/admin/clients", "/account"] {
        let page = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 303, "{path}");
        assert_eq!(location(&page), "/account/second-factor", "{path}");
    }
    let enrol = client.get(app.url("/account/second-factor")).send().await.unwrap();
    assert_eq!(enrol.status(), 200);
    assert!(enrol.text().await.unwrap().contains("needs a second factor"));
    assert_eq!(password_grant(&app, &admin, &admin.password, None).await.status(), 400);
    // Not covered: alice (no admin) signs in as before.
    assert_eq!(password_grant(&app, &alice, &alice.password, None).await.status(), 200);
    // Enrolled, the admin reaches the admin pages (after the second step) and the grant.
    let (secret, _) = seed_second_factor(&app, &admin);
    let code = totp::code_at(&secret, unix_now()).unwrap();
    assert_eq!(password_grant(&app, &admin, &admin.password, Some(&code)).await.status(), 200);
    assert_eq!(client.get(app.url("/admin/stats")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_admin_removes_a_users_second_factors_which_ends_their_sessions_and_tokens() {
    let app = spawn_app_with(&[]).await;
    let admin = app.admin();
    let alice = app.alice();
    let (secret, _) = seed_second_factor(&app, &alice);
    let code = totp::code_at(&secret, unix_now()).unwrap();
    let response = password_grant(&app, &alice, &alice.password, Some(&code)).await;
    let alice_token = response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let admin_token = app.access_token(&admin, Some("admin:users")).await;

    let forbidden = app
        .client
        .delete(app.url("/api/admin/users/root-admin/second-factors"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let missing = app.client.delete(app.url("/api/admin/users/nobody/second-factors")).bearer_auth(&admin_token).send();
    assert_eq!(missing.await.unwrap().status(), 404);
    let removed = app.client.delete(app.url("/api/admin/users/alice/second-factors")).bearer_auth(&admin_token).send();
    assert_eq!(removed.await.unwrap().status(), 204);
    assert_eq!(app.get("/api/users/me", Some(&alice_token)).await.status(), 401, "a cut-off");
    // The password alone signs in again; the admin page shows no factor.
    assert_eq!(password_grant(&app, &alice, &alice.password, None).await.status(), 200);
    assert_eq!(events_of(&app, "second_factors_reset"), 1);
    let client = browser();
    assert_eq!(password_step(&app, &client, &admin).await.status(), 303);
    let page = client.get(app.url("/admin/users/alice")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("No second factor."), "{page}");
}
