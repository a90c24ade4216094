//! Email addresses and the mails about an account, through a real SMTP server (see `mail.rs`):
//! invitations for users created without a password, a new address that takes effect only through
//! the link mailed to it, `email_verified`, and the security notices.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::helpers::{TestApp, spawn_app_with, spawn_pair};
use crate::mail::{SmtpServer, ask_for_a_link, mail_settings, spawn_with_mail};
use crate::second_factor::seed_second_factor;
use crate::web::{browser, hidden_value, signed_in};

const STRONG: &str = "velvet-otter-sings-47";
const PATIENCE: Duration = Duration::from_secs(15);

/// The path of the first link in `mail` to `{issuer}{path_prefix}…`.
fn link(mail: &str, issuer: &str, path_prefix: &str) -> String {
    let prefix = format!("{issuer}{path_prefix}");
    let start = mail.find(&prefix).unwrap_or_else(|| panic!("no {prefix} link in:\n{mail}"));
    let token: String = mail[start + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{path_prefix}{token}")
}

fn mail_to<'a>(mails: &'a [String], address: &str) -> Vec<&'a String> {
    mails.iter().filter(|mail| mail.contains(&format!("To: {address}"))).collect()
}

async fn me(app: &TestApp, username: &str, password: &str) -> Value {
    let response = app.post_token(&[("username", username), ("password", password)]).await;
    assert_eq!(response.status(), 200, "{username} signs in");
    let token = response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    app.get("/api/users/me", Some(&token)).await.json().await.unwrap()
}

/// POSTs the link's form (after a GET for its CSRF token) with `fields`.
async fn submit_link(app: &TestApp, client: &Client, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let page = client.get(app.url(path)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf_token").unwrap_or_else(|| panic!("no form on {path}:\n{page}"));
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    let response = client.post(app.url(path)).form(&form).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_user_created_without_a_password_is_invited_to_choose_one() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let admin = app.admin();
    let admin_token = app.access_token(&admin, Some("admin:users")).await;

    let no_address = app.post_json("/api/admin/users", Some(&admin_token), &json!({"username": "dave"})).await;
    assert_eq!(no_address.status(), 400, "an invitation needs an address");
    let body = json!({"username": "carol", "email": "carol@example.org", "roles": ["user"]});
    let created = app.post_json("/api/admin/users", Some(&admin_token), &body).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email_verified"], false);

    // Until the link is used, no password opens the account, and the answer is a wrong password's.
    let refused = app.post_token(&[("username", "carol"), ("password", "!")]).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "invalid_grant");

    let mails = smtp.wait_for(1, PATIENCE).await;
    let mail = mail_to(&mails, "carol@example.org")[0];
    let path = link(mail, &app.address, "/invitation/");
    let client = browser();
    for _ in 0..2 {
        let form = client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(form.status(), 200, "opening the link spends nothing");
        assert!(form.text().await.unwrap().contains("Choose your password"));
    }
    // Anyone may ask for a reset link in carol's name: the invitation stays alive.
    let (status, _) = ask_for_a_link(&app, &browser(), "carol").await;
    assert_eq!(status, 200);
    let mails = smtp.wait_for(2, PATIENCE).await;
    let reset_path = link(
        mail_to(&mails, "carol@example.org").iter().find(|m| m.contains("/password-reset/")).unwrap(),
        &app.address,
        "/password-reset/",
    );
    // An invitation is not a reset link: the reset page does not take it.
    let token = path.trim_start_matches("/invitation/");
    let as_reset = client.get(app.url(&format!("/password-reset/{token}"))).send().await.unwrap();
    assert_eq!(as_reset.status(), 400);

    let (status, page) =
        submit_link(&app, &client, &path, &[("new_password", STRONG), ("new_password_again", STRONG)]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Your password was set"));
    let profile = me(&app, "carol", STRONG).await;
    assert_eq!(profile["email_verified"], true, "the link proved the address");
    assert_eq!(client.get(app.url(&path)).send().await.unwrap().status(), 400, "used once");
    assert_eq!(client.get(app.url(&reset_path)).send().await.unwrap().status(), 400, "the password change ended it");
    assert!(app.event_kinds().contains(&"invitation_sent".to_owned()));

    // Without mail, a user needs a password.
    let plain = spawn_app_with(&[]).await;
    let admin = plain.admin();
    let admin_token = plain.access_token(&admin, Some("admin:users")).await;
    let body = json!({"username": "erin", "email": "erin@example.org"});
    let refused = plain.post_json("/api/admin/users", Some(&admin_token), &body).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn a_new_email_address_takes_effect_once_when_its_link_is_used() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let settings = mail_settings(&smtp);
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let (first, second) = spawn_pair(&overrides).await;
    let (app, second) = (Arc::new(first), Arc::new(second));
    let alice = app.alice();
    let client = browser();
    signed_in(&app, &client, "alice", &alice.password).await;
    let profile = |email: &'static str, password: &'static str| {
        [("full_name", "Alice Liddell"), ("email", email), ("current_password", password)]
    };

    // A wrong current password changes nothing and mails nothing.
    let account = client.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&account, "csrf_token").unwrap();
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend(profile("alice.new@example.org", "not-her-password"));
    let wrong = client.post(app.url("/account/profile")).form(&form).send().await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert!(wrong.text().await.unwrap().contains("This is not your current password."));
    assert_eq!(me(&app, "alice", &alice.password).await["full_name"], "Test Person");

    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend(profile("alice.new@example.org", "alice-password"));
    let saved = client.post(app.url("/account/profile")).form(&form).send().await.unwrap();
    assert_eq!(saved.status(), 303);
    assert_eq!(saved.headers()["location"], "/account?done=email-pending");
    let before = me(&app, "alice", &alice.password).await;
    assert_eq!(before["full_name"], "Alice Liddell", "the name changes at once");
    assert_eq!(before["email"], "alice@example.org", "the address only through its link");
    assert_eq!(before["email_verified"], false);

    let mails = smtp.wait_for(2, PATIENCE).await;
    let old = mail_to(&mails, "alice@example.org");
    assert!(old[0].contains("alice.new@example.org"), "the old address is told: {}", old[0]);
    let path = link(mail_to(&mails, "alice.new@example.org")[0], crate::helpers::PAIR_ISSUER, "/email-confirm/");
    for _ in 0..2 {
        let page = client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("Confirm this address"));
    }
    assert_eq!(me(&app, "alice", &alice.password).await["email"], "alice@example.org", "GET applies nothing");

    // Ten uses of the link at once on two instances, from another browser (the link needs no
    // session): one applies it.
    let other = browser();
    let page = other.get(app.url(&path)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let barrier = Arc::new(Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let instance = if n % 2 == 0 { &app } else { &second };
            let (app, other, path, csrf, barrier) =
                (Arc::clone(instance), other.clone(), path.clone(), csrf.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let form = [("csrf_token", csrf.as_str())];
                other.post(app.url(&path)).form(&form).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|status| *status == 200 || *status == 400), "{statuses:?}");
    let after = me(&app, "alice", &alice.password).await;
    assert_eq!(after["email"], "alice.new@example.org");
    assert_eq!(after["email_verified"], true);
    let changes = app.events().iter().filter(|event| event.kind == "email_changed").count();
    assert_eq!(changes, 1);
    let account = client.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    assert!(account.contains(r#"<span class="badge" id="email-verified">verified</span>"#), "{account}");

    // A change still waiting for its link dies when the address is removed.
    let csrf = hidden_value(&account, "csrf_token").unwrap();
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend(profile("alice.third@example.org", "alice-password"));
    assert_eq!(client.post(app.url("/account/profile")).form(&form).send().await.unwrap().status(), 303);
    let mails = smtp.wait_for(4, PATIENCE).await;
    let pending = link(mail_to(&mails, "alice.third@example.org")[0], crate::helpers::PAIR_ISSUER, "/email-confirm/");
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend(profile("", "alice-password"));
    let removed = client.post(app.url("/account/profile")).form(&form).send().await.unwrap();
    assert_eq!(removed.headers()["location"], "/account?done=email-removed");
    assert_eq!(client.get(app.url(&pending)).send().await.unwrap().status(), 400);
    assert_eq!(me(&app, "alice", &alice.password).await["email"], Value::Null);
}

#[tokio::test]
async fn a_new_token_and_second_factor_changes_are_mailed_to_the_owner() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let alice = app.alice();
    let admin = app.admin();
    let access = app.access_token(&alice, Some("profile")).await;
    let made = app
        .post_json("/api/users/me/tokens", Some(&access), &json!({"name": "nightly backup", "scopes": ["profile"]}))
        .await;
    assert_eq!(made.status(), 201);
    let mails = smtp.wait_for(1, PATIENCE).await;
    assert!(mails[0].contains("To: alice@example.org"), "{}", mails[0]);
    assert!(mails[0].contains("Subject: A new personal access token for your 127.0.0.1 account"), "{}", mails[0]);
    assert!(mails[0].contains("nightly backup"), "{}", mails[0]);
    assert!(!mails[0].contains("gth_"), "the token itself is never mailed");

    seed_second_factor(&app, &alice);
    let admin_token = app.access_token(&admin, Some("admin:users")).await;
    let removed = app.client.delete(app.url("/api/admin/users/alice/second-factors")).bearer_auth(&admin_token);
    assert_eq!(removed.send().await.unwrap().status(), 204);
    let mails = smtp.wait_for(2, PATIENCE).await;
    assert!(mails.iter().any(|mail| mail.contains("every second factor")), "{mails:?}");
    // Nothing to remove, nothing to tell.
    let again = app.client.delete(app.url("/api/admin/users/alice/second-factors")).bearer_auth(&admin_token);
    assert_eq!(again.send().await.unwrap().status(), 204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.wait_for(2, PATIENCE).await.len(), 2);
}

#[tokio::test]
async fn the_admin_page_invites_when_both_password_fields_are_left_empty_and_without_mail_refuses_it() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let admin = app.admin();
    let client = browser();
    signed_in(&app, &client, &admin.username, &admin.password).await;
    let page = client.get(app.url("/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Leave both empty to mail the user an invitation"), "{page}");
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let form = [
        ("csrf_token", csrf.as_str()),
        ("username", "dora"),
        ("email", "dora@example.org"),
        ("password", ""),
        ("password_again", ""),
        ("role.user", "on"),
    ];
    let created = client.post(app.url("/admin/users")).form(&form).send().await.unwrap();
    assert_eq!(created.status(), 303);
    let mails = smtp.wait_for(1, PATIENCE).await;
    assert!(mails[0].contains("To: dora@example.org") && mails[0].contains("/invitation/"), "{}", mails[0]);

    let plain = spawn_app_with(&[]).await;
    let admin = plain.admin();
    let client = browser();
    signed_in(&plain, &client, &admin.username, &admin.password).await;
    let page = client.get(plain.url("/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("Leave both empty"));
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let mut form = form;
    form[0].1 = csrf.as_str();
    let refused = client.post(plain.url("/admin/users")).form(&form).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("this server sends no mail"));
    let mut conn = plain.db.conn();
    assert!(gatehouse::db::users::find_by_username(&mut conn, "dora").unwrap().is_none(), "nothing written");
}
