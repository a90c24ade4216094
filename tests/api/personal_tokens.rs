//! Personal access tokens (issue #17): made through the API, the account page and the command line,
//! used as `Authorization: Bearer gth_…` under the one authorization rule, and ended by revocation,
//! expiry and the invalidation cut-off on every instance from the next request, races included.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, header};
use serde_json::{Value, json};
use sha2::Digest;
use uuid::Uuid;

use crate::helpers::{
    PAIR_ISSUER, TEST_BCRYPT_COST, TestApp, TestUser, assert_bearer_error, lock_waiters, spawn_app, spawn_pair,
};

const ME: &str = "/api/users/me";
const TOKENS: &str = "/api/users/me/tokens";
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token", error_description="*"#;
const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

// --- Helpers ---

async fn create_token(app: &TestApp, access: &str, body: &Value) -> Response {
    app.post_json(TOKENS, Some(access), body).await
}

/// A personal access token for `user`, made through the API with an access token; returns the 201 body.
async fn made_token(app: &TestApp, user: &TestUser, scopes: &[&str]) -> Value {
    let access = app.access_token(user, None).await;
    let response = create_token(app, &access, &json!({"name": "script", "scopes": scopes})).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn secret(body: &Value) -> String {
    body["token"].as_str().unwrap().to_owned()
}

async fn delete(app: &TestApp, path: &str, token: &str) -> Response {
    app.client.delete(app.url(path)).bearer_auth(token).send().await.unwrap()
}

/// Runs one or more SQL statements.
fn execute(app: &TestApp, sql: &str) {
    use diesel::connection::SimpleConnection as _;
    app.db.conn().batch_execute(sql).unwrap();
}

fn count(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Row>(&mut app.db.conn()).unwrap().n
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The CRC32 check a leak scanner runs, written out here from the format's definition.
fn checksum_of(body: &str) -> String {
    let mut value = crc32fast::hash(body.as_bytes()) as u64;
    let mut digits = Vec::new();
    for _ in 0..6 {
        digits.push(BASE62.as_bytes()[(value % 62) as usize] as char);
        value /= 62;
    }
    digits.iter().rev().collect()
}

// --- Making one through the API ---

#[tokio::test]
async fn an_issued_token_is_gth_and_36_base62_characters_ending_in_the_crc32_of_the_thirty_before() {
    let app = spawn_app().await;
    let alice = app.alice();
    let access = app.access_token(&alice, None).await;
    let response = create_token(
        &app,
        &access,
        &json!({"name": "deploy", "scopes": ["profile", "items:read"], "expires_in_days": 7}),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    let body: Value = response.json().await.unwrap();
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["created_at", "expires_at", "id", "name", "scopes", "token"]);
    assert_eq!(body["name"], "deploy");
    assert_eq!(body["scopes"], json!(["items:read", "profile"]));

    let token = secret(&body);
    assert_eq!(token.len(), 40);
    let (prefix, rest) = token.split_at(4);
    assert_eq!(prefix, "gth_");
    assert!(rest.chars().all(|c| BASE62.contains(c)), "{token}");
    let (random, sum) = rest.split_at(30);
    assert_eq!(sum, checksum_of(random));

    let created: chrono::DateTime<chrono::Utc> = body["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - created, chrono::Duration::days(7));
    // Only the SHA-256 is stored.
    let hex: String = sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        count(&app, &format!("SELECT count(*) AS n FROM personal_access_tokens WHERE token_hash = '\\x{hex}'")),
        1
    );
    assert_eq!(count(&app, &format!("SELECT count(*) AS n FROM auth_events WHERE detail LIKE '%{token}%'")), 0);
}

#[tokio::test]
async fn without_an_expiry_a_token_lives_thirty_days() {
    let app = spawn_app().await;
    let body = made_token(&app, &app.alice(), &["profile"]).await;
    let created: chrono::DateTime<chrono::Utc> = body["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - created, chrono::Duration::days(30));
    let events = app.events();
    let made: Vec<_> = events.iter().filter(|e| e.kind == "pat_created").collect();
    assert_eq!(made.len(), 1);
    assert_eq!((made[0].channel.as_str(), made[0].client_addr.as_deref()), ("api", Some("127.0.0.1")));
}

#[tokio::test]
async fn bad_names_scopes_and_expiries_are_refused_with_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    let alice = app.alice();
    let access = app.access_token(&alice, None).await;
    let cases = [
        (json!({"name": "", "scopes": ["profile"]}), "invalid_request"),
        (json!({"name": "x".repeat(101), "scopes": ["profile"]}), "invalid_request"),
        (json!({"scopes": ["profile"]}), "invalid_request"),
        (json!({"name": "n", "scopes": ["profile"], "expires_in_days": 0}), "invalid_request"),
        (json!({"name": "n", "scopes": ["profile"], "expires_in_days": 366}), "invalid_request"),
        (json!({"name": "n", "scopes": ["profile"], "expires_in_days": "30"}), "invalid_request"),
        (json!({"name": "n", "scopes": ["profile"], "owner": "bob"}), "invalid_request"),
        (json!({"name": "n", "scopes": []}), "invalid_scope"),
        (json!({"name": "n", "scopes": ["admin:users"]}), "invalid_scope"),
        (json!({"name": "n", "scopes": ["no such scope"]}), "invalid_scope"),
    ];
    for (body, error) in cases {
        let response = create_token(&app, &access, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], error, "{body} → {answer}");
        assert!(answer["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{answer}");
    }
    assert_eq!(count(&app, "SELECT count(*) AS n FROM personal_access_tokens"), 0);
    assert!(!app.event_kinds().contains(&"pat_created".to_owned()));
}

#[tokio::test]
async fn making_a_token_needs_the_profile_scope() {
    let app = spawn_app().await;
    let alice = app.alice();
    let access = app.access_token(&alice, Some("items:read")).await;
    let response = create_token(&app, &access, &json!({"name": "n", "scopes": ["items:read"]})).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="profile""#),
        "insufficient_scope",
    )
    .await;
    let response = app.post_json(TOKENS, None, &json!({"name": "n", "scopes": ["profile"]})).await;
    assert_bearer_error(response, 401, Some("Bearer"), "unauthorized").await;
}

#[tokio::test]
async fn a_personal_access_token_cannot_make_personal_access_tokens() {
    let app = spawn_app().await;
    let token = secret(&made_token(&app, &app.alice(), &["profile"]).await);
    let response = create_token(&app, &token, &json!({"name": "child", "scopes": ["profile"]})).await;
    let body = assert_bearer_error(
        response,
        403,
        Some(
            r#"Bearer error="insufficient_scope", error_description="This request needs an OAuth access token; a personal access token cannot make it""#,
        ),
        "insufficient_scope",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "This request needs an OAuth access token; a personal access token cannot make it"
    );
    assert_eq!(count(&app, "SELECT count(*) AS n FROM personal_access_tokens"), 1);
}

// --- Listing and revoking ---

#[tokio::test]
async fn the_list_shows_every_token_but_never_a_secret_and_records_the_first_use() {
    let app = spawn_app().await;
    let alice = app.alice();
    let first = made_token(&app, &alice, &["profile"]).await;
    let second = made_token(&app, &alice, &["items:read"]).await;
    assert_eq!(app.get(ME, Some(&secret(&first))).await.status(), 200);

    let response = app.get(TOKENS, Some(&secret(&first))).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("gth_"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], second["id"], "newest first");
    assert_eq!(list[1]["id"], first["id"]);
    let keys: Vec<&str> = list[1].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["created_at", "expires_at", "id", "last_used_address", "last_used_at", "name", "scopes"]);
    assert!(list[1]["last_used_at"].is_string());
    assert_eq!(list[1]["last_used_address"], "127.0.0.1");
    assert_eq!(list[0]["last_used_at"], Value::Null);
    assert_eq!(list[0]["last_used_address"], Value::Null);
}

#[tokio::test]
async fn revoking_answers_204_and_the_token_stops_working() {
    let app = spawn_app().await;
    let alice = app.alice();
    let body = made_token(&app, &alice, &["profile"]).await;
    let token = secret(&body);
    let access = app.access_token(&alice, None).await;
    let path = format!("{TOKENS}/{}", body["id"].as_str().unwrap());
    let response = delete(&app, &path, &access).await;
    assert_eq!(response.status(), 204);
    assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    // Gone from the list; a second revocation finds nothing.
    assert_eq!(app.get(TOKENS, Some(&access)).await.json::<Value>().await.unwrap(), json!([]));
    assert_eq!(delete(&app, &path, &access).await.status(), 404);
    let events = app.events();
    let revoked: Vec<_> = events.iter().filter(|e| e.kind == "pat_revoked").collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!((revoked[0].channel.as_str(), revoked[0].user_id), ("api", Some(alice.id)));
}

#[tokio::test]
async fn a_token_may_revoke_itself() {
    let app = spawn_app().await;
    let body = made_token(&app, &app.alice(), &["profile"]).await;
    let token = secret(&body);
    let response = delete(&app, &format!("{TOKENS}/{}", body["id"].as_str().unwrap()), &token).await;
    assert_eq!(response.status(), 204);
    assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

#[tokio::test]
async fn another_users_token_id_or_a_malformed_id_is_not_found() {
    let app = spawn_app().await;
    let alice = app.alice();
    let bob = app.create_user("bob", "bob-password", &["user"]);
    let bobs = made_token(&app, &bob, &["profile"]).await;
    let access = app.access_token(&alice, None).await;
    for id in [bobs["id"].as_str().unwrap(), "not-a-uuid", &Uuid::now_v7().to_string()] {
        let response = delete(&app, &format!("{TOKENS}/{id}"), &access).await;
        assert_eq!(response.status(), 404, "{id}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "not_found");
    }
    assert_eq!(app.get(ME, Some(&secret(&bobs))).await.status(), 200, "bob's token still works");
}

// --- Use ---

#[tokio::test]
async fn a_token_works_on_users_me_with_exactly_its_own_scopes() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = secret(&made_token(&app, &alice, &["profile", "items:read"]).await);
    let response = app.get(ME, Some(&token)).await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["id"], alice.id.to_string());
    assert_eq!(me["scopes"], json!(["items:read", "profile"]));
    // Without items:write, the same 403 an access token without it gets.
    let response = app.post_json("/api/items", Some(&token), &json!({"title": "t", "body": "b", "public": true})).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="items:write""#),
        "insufficient_scope",
    )
    .await;
}

#[tokio::test]
async fn malformed_and_unknown_tokens_are_invalid_tokens() {
    let app = spawn_app().await;
    let token = secret(&made_token(&app, &app.alice(), &["profile"]).await);
    let mut wrong_checksum = token.clone();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let random: String = "Z".repeat(30);
    let unknown = format!("gth_{random}{}", checksum_of(&random));
    let cases = [
        (wrong_checksum.as_str(), "The access token is malformed"),
        ("gth_tooshort", "The access token is malformed"),
        (unknown.as_str(), "The access token is not known"),
    ];
    for (presented, description) in cases {
        let body =
            assert_bearer_error(app.get(ME, Some(presented)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
        assert_eq!(body["error_description"], description, "{presented}");
    }
}

#[tokio::test]
async fn a_token_loses_a_scope_when_its_owner_loses_the_role_and_regains_it_with_the_role() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = secret(&made_token(&app, &admin, &["profile", "admin:stats"]).await);
    assert_eq!(app.get("/api/admin/stats", Some(&token)).await.status(), 200);

    execute(&app, &format!("DELETE FROM user_roles WHERE user_id = '{}' AND role_name = 'admin'", admin.id));
    let response = app.get("/api/admin/stats", Some(&token)).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="admin:stats""#),
        "insufficient_scope",
    )
    .await;
    let me: Value = app.get(ME, Some(&token)).await.json().await.unwrap();
    assert_eq!(me["scopes"], json!(["profile"]));

    execute(&app, &format!("INSERT INTO user_roles (user_id, role_name) VALUES ('{}', 'admin')", admin.id));
    assert_eq!(app.get("/api/admin/stats", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn an_expired_token_is_refused_with_401() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = secret(&made_token(&app, &alice, &["profile"]).await);
    // Made two days ago for one day (the cut-off moved back with it, so only the expiry counts).
    execute(
        &app,
        &format!(
            "UPDATE users SET tokens_valid_after = tokens_valid_after - interval '3 days' WHERE id = '{}'; \
             UPDATE personal_access_tokens SET created_at = created_at - interval '2 days', \
                                               expires_at = created_at - interval '1 day'",
            alice.id
        ),
    );
    let body = assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_eq!(body["error_description"], "The access token expired");
}

#[tokio::test]
async fn the_last_use_is_written_at_once_then_at_most_every_ten_minutes() {
    let app = spawn_app().await;
    let body = made_token(&app, &app.alice(), &["profile"]).await;
    let token = secret(&body);
    // Count the writes of last_used_at with a trigger of the test's own.
    execute(
        &app,
        "CREATE TABLE use_writes (at timestamptz); \
         CREATE FUNCTION count_use_write() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO use_writes VALUES (NEW.last_used_at); RETURN NEW; END $$; \
         CREATE TRIGGER use_written AFTER UPDATE OF last_used_at ON personal_access_tokens \
           FOR EACH ROW EXECUTE FUNCTION count_use_write()",
    );
    for _ in 0..3 {
        assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    }
    assert_eq!(count(&app, "SELECT count(*) AS n FROM use_writes"), 1);
    execute(&app, "UPDATE personal_access_tokens SET last_used_at = last_used_at - interval '11 minutes'");
    execute(&app, "DELETE FROM use_writes");
    for _ in 0..3 {
        assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    }
    assert_eq!(count(&app, "SELECT count(*) AS n FROM use_writes"), 1);
}

#[tokio::test]
async fn racing_first_uses_on_two_instances_write_the_last_use_once() {
    let (a, b) = spawn_pair(&[]).await;
    let token = secret(&made_token(&a, &a.alice(), &["profile"]).await);
    execute(
        &a,
        "CREATE TABLE use_writes (at timestamptz); \
         CREATE FUNCTION count_use_write() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO use_writes VALUES (NEW.last_used_at); RETURN NEW; END $$; \
         CREATE TRIGGER use_written AFTER UPDATE OF last_used_at ON personal_access_tokens \
           FOR EACH ROW EXECUTE FUNCTION count_use_write()",
    );
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            tokio::spawn(app.client.get(app.url(ME)).bearer_auth(&token).send())
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(count(&a, "SELECT count(*) AS n FROM use_writes"), 1);
}

// --- Revocation, expiry and the cut-off, across instances ---

#[tokio::test]
async fn a_token_revoked_on_one_instance_is_refused_on_the_other_on_the_very_next_request() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let body = made_token(&a, &alice, &["profile"]).await;
    let token = secret(&body);
    assert_eq!(b.get(ME, Some(&token)).await.status(), 200);
    assert_eq!(b.get(ME, Some(&token)).await.status(), 200);
    let access = a.access_token(&alice, None).await;
    assert_eq!(delete(&a, &format!("{TOKENS}/{}", body["id"].as_str().unwrap()), &access).await.status(), 204);
    assert_bearer_error(b.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

/// A revocation held open from the test (its row updated, not committed) stands for a revoking
/// request on the other instance at the moment it commits.
#[tokio::test]
async fn a_request_during_an_uncommitted_revocation_is_served_without_waiting_and_the_first_after_its_commit_is_refused()
 {
    let (a, b) = spawn_pair(&[]).await;
    let body = made_token(&a, &a.alice(), &["profile"]).await;
    let token = secret(&body);
    assert_eq!(b.get(ME, Some(&token)).await.status(), 200);
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    let mut watcher = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("UPDATE personal_access_tokens SET revoked_at = now()").execute(&mut holder).unwrap();

    // Not revoked yet: served, and no bearer check waits on the revoker's row lock.
    assert_eq!(b.get(ME, Some(&token)).await.status(), 200);
    assert_eq!(lock_waiters(&mut watcher), 0);
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();
    // From the commit on, on either instance.
    assert_bearer_error(b.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_bearer_error(a.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

/// Two first uses on two instances: the second to write finds the row held by the first's write,
/// waits for it, then finds a fresh last use and writes nothing over it (one write per interval).
#[tokio::test]
async fn a_first_use_racing_another_instances_last_use_write_waits_for_it_and_writes_nothing_over_it() {
    let (a, b) = spawn_pair(&[]).await;
    let token = secret(&made_token(&a, &a.alice(), &["profile"]).await);
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    let mut watcher = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("UPDATE personal_access_tokens SET last_used_at = now(), last_used_address = '192.0.2.1'")
        .execute(&mut holder)
        .unwrap();
    // The held write stands for another instance's first use; this one wants to write too.
    let first = tokio::spawn(b.client.get(b.url(ME)).bearer_auth(&token).send());
    wait_until("the first use waits to write its last use", || lock_waiters(&mut watcher) == 1).await;
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    // The write it waited for was fresh: it wrote nothing over it.
    #[derive(diesel::QueryableByName)]
    struct Address {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        last_used_address: Option<String>,
    }
    let address: Address =
        diesel::sql_query("SELECT last_used_address FROM personal_access_tokens").get_result(&mut a.db.conn()).unwrap();
    assert_eq!(address.last_used_address.as_deref(), Some("192.0.2.1"));
}

#[tokio::test]
async fn a_revocation_and_requests_sent_together_on_two_instances_leave_nothing_served_after_it() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let body = made_token(&a, &alice, &["profile"]).await;
    let token = secret(&body);
    let access = a.access_token(&alice, None).await;
    let path = format!("{TOKENS}/{}", body["id"].as_str().unwrap());
    let requests: Vec<_> = (0..10)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            tokio::spawn(app.client.get(app.url(ME)).bearer_auth(&token).send())
        })
        .collect();
    let revoke = tokio::spawn(a.client.delete(a.url(&path)).bearer_auth(&access).send());
    assert_eq!(revoke.await.unwrap().unwrap().status(), 204);
    // Whatever raced it, every request from now on, on either instance, is refused.
    for request in requests {
        let status = request.await.unwrap().unwrap().status();
        assert!(status == 200 || status == 401, "{status}");
    }
    for app in [&a, &b, &a, &b] {
        assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    }
}

#[tokio::test]
async fn a_password_change_ends_every_earlier_token_on_both_instances() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let token = secret(&made_token(&a, &alice, &["profile"]).await);
    let hash = bcrypt::hash("a-new-password", TEST_BCRYPT_COST).unwrap();
    gatehouse::db::users::set_password_hash(&mut a.db.conn(), alice.id, &hash).unwrap();
    assert_bearer_error(a.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_bearer_error(b.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

#[tokio::test]
async fn signing_out_everywhere_with_a_token_ends_that_token_too() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let token = secret(&made_token(&a, &alice, &["profile"]).await);
    assert_eq!(a.post_empty("/api/users/me/sign-out-all", Some(&token)).await.status(), 204);
    assert_bearer_error(b.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    // A token made after the sign-out works.
    let fresh = secret(&made_token(&a, &alice, &["profile"]).await);
    assert_eq!(b.get(ME, Some(&fresh)).await.status(), 200);
}

#[tokio::test]
async fn a_deactivated_owners_token_gets_inactive_user_and_stays_dead_after_reactivation() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let admin = a.admin();
    let token = secret(&made_token(&a, &alice, &["profile"]).await);
    let admins = a.access_token(&admin, None).await;
    let patch = |active: bool| {
        a.client.patch(a.url("/api/admin/users/alice")).bearer_auth(&admins).json(&json!({"is_active": active})).send()
    };
    assert_eq!(patch(false).await.unwrap().status(), 200);
    // As an access token of an inactive user is answered.
    let response = b.get(ME, Some(&token)).await;
    assert_eq!(response.status(), 403);
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "inactive_user");

    assert_eq!(patch(true).await.unwrap().status(), 200);
    assert_bearer_error(b.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_bearer_error(a.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
}

#[tokio::test]
async fn an_access_token_from_before_a_sign_out_everywhere_cannot_make_a_token_after_it() {
    let app = spawn_app().await;
    let alice = app.alice();
    let old_access = app.access_token(&alice, None).await;
    gatehouse::db::users::invalidate_credentials(&mut app.db.conn(), alice.id).unwrap();
    let response = create_token(&app, &old_access, &json!({"name": "n", "scopes": ["profile"]})).await;
    assert_bearer_error(response, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_eq!(count(&app, "SELECT count(*) AS n FROM personal_access_tokens"), 0);
}

// --- Introspection ---

async fn introspect(app: &TestApp, caller: &str, token: &str) -> Value {
    let response =
        app.client.post(app.url("/introspect")).bearer_auth(caller).form(&[("token", token)]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    response.json().await.unwrap()
}

#[tokio::test]
async fn introspection_describes_a_live_token_as_a_personal_access_token_and_a_revoked_one_as_inactive() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let service = a.create_user("billing", "billing-password", &["service"]);
    let caller = a.access_token(&service, Some("tokens:introspect")).await;
    let body = made_token(&a, &alice, &["profile", "items:read"]).await;
    let token = secret(&body);

    let answer = introspect(&b, &caller, &token).await;
    let created: chrono::DateTime<chrono::Utc> = body["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        answer,
        json!({
            "active": true,
            "scope": "items:read profile",
            "username": "alice",
            "sub": alice.id,
            "exp": expires.timestamp(),
            "iat": created.timestamp(),
            "token_type": "bearer",
            "token_use": "personal_access_token",
            "iss": PAIR_ISSUER,
            "jti": body["id"],
        })
    );

    let access = a.access_token(&alice, None).await;
    assert_eq!(delete(&a, &format!("{TOKENS}/{}", body["id"].as_str().unwrap()), &access).await.status(), 204);
    assert_eq!(introspect(&b, &caller, &token).await, json!({"active": false}));
    assert_eq!(introspect(&b, &caller, "gth_malformed").await, json!({"active": false}));
}

#[tokio::test]
async fn a_personal_access_token_with_the_introspect_scope_may_introspect() {
    let app = spawn_app().await;
    let alice = app.alice();
    // Making a token takes `profile` (role user); the token carries only the introspection scope.
    let service = app.create_user("billing", "billing-password", &["user", "service"]);
    let caller = secret(&made_token(&app, &service, &["tokens:introspect"]).await);
    let access = app.access_token(&alice, None).await;
    assert_eq!(introspect(&app, &caller, &access).await["token_use"], "access_token");
    // Without the scope: the same 403 an access token without it gets.
    let plain = secret(&made_token(&app, &alice, &["profile"]).await);
    let response =
        app.client.post(app.url("/introspect")).bearer_auth(&plain).form(&[("token", &access)]).send().await.unwrap();
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="tokens:introspect""#),
        "insufficient_scope",
    )
    .await;
}

// --- The command line ---

fn gatehouse(app: &TestApp, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GATEHOUSE_") {
            command.env_remove(&name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", &app.db.url)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Exit code 1 with one line on stderr; returns it.
fn failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"));
    stderr
}

#[tokio::test]
async fn the_cli_makes_lists_and_revokes_tokens_and_audits_it() {
    let app = spawn_app().await;
    let alice = app.alice();
    let output =
        gatehouse(&app, &["token", "create", "alice", "--name", "ci", "--scope", "profile", "--expires-in", "7d"]);
    let printed = stdout(&output);
    let token = printed.strip_suffix('\n').unwrap();
    assert_eq!(token.len(), 40, "the token alone: {printed:?}");
    assert!(token.starts_with("gth_"));
    let me: Value = app.get(ME, Some(token)).await.json().await.unwrap();
    assert_eq!(me["scopes"], json!(["profile"]));

    let listing = stdout(&gatehouse(&app, &["token", "list", "alice"]));
    assert!(!listing.contains("gth_"), "{listing}");
    let line = listing.lines().find(|line| line.contains(" ci ")).unwrap_or_else(|| panic!("{listing}"));
    let id = line.split_whitespace().next().unwrap().to_owned();
    assert!(line.contains("live") && line.ends_with("profile"), "{line}");

    let revoked = stdout(&gatehouse(&app, &["token", "revoke", &id]));
    assert_eq!(revoked, format!("revoked token {id} (ci)\n"));
    assert_bearer_error(app.get(ME, Some(token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_eq!(
        failure(&gatehouse(&app, &["token", "revoke", &id])),
        format!("gatehouse: no live personal access token with id {id}\n")
    );

    let events = app.events();
    let kinds: Vec<(&str, &str, Option<Uuid>)> = events
        .iter()
        .filter(|e| e.kind.starts_with("pat_"))
        .map(|e| (e.kind.as_str(), e.channel.as_str(), e.user_id))
        .collect();
    assert_eq!(kinds, [("pat_created", "cli", Some(alice.id)), ("pat_revoked", "cli", Some(alice.id))]);
}

#[tokio::test]
async fn the_cli_refuses_bad_usage_with_2_and_failures_with_1() {
    let app = spawn_app().await;
    app.alice();
    let usage = [
        vec!["token", "create", "alice", "--name", "ci", "--scope", "profile", "--expires-in", "400d"],
        vec!["token", "create", "alice", "--name", "ci", "--scope", "profile", "--expires-in", "2w"],
        vec!["token", "create", "alice", "--name", "ci"],
        vec!["token", "revoke", "not-a-uuid"],
    ];
    for args in usage {
        let output = gatehouse(&app, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty());
    }
    assert_eq!(
        failure(&gatehouse(&app, &["token", "create", "nobody", "--name", "ci", "--scope", "profile"])),
        "gatehouse: no user named nobody\n"
    );
    let refused = failure(&gatehouse(&app, &["token", "create", "alice", "--name", "ci", "--scope", "admin:users"]));
    assert!(refused.contains("admin:users"), "{refused}");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM personal_access_tokens"), 0);
}

// --- The account page and the admin page ---

fn browser() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in:\n{html}")) + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

async fn signed_in(app: &TestApp, user: &TestUser) -> Client {
    let client = browser();
    let form = client.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let fields = [
        ("csrf_token", hidden(&form, "csrf_token")),
        ("username", user.username.clone()),
        ("password", user.password.clone()),
    ];
    let response = client.post(app.url("/login")).form(&fields).send().await.unwrap();
    assert_eq!(response.status(), 303, "sign-in of {}", user.username);
    client
}

async fn page(response: Response, status: u16) -> String {
    assert_eq!(response.status(), status, "{}", response.url());
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_account_page_makes_a_token_shows_it_once_lists_it_and_revokes_it() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = signed_in(&app, &alice).await;
    let account = page(client.get(app.url("/account")).send().await.unwrap(), 200).await;
    assert!(account.contains(r#"<a href="/account/tokens">"#), "linked from /account");

    let form = page(client.get(app.url("/account/tokens")).send().await.unwrap(), 200).await;
    for scope in ["profile", "items:read", "items:write"] {
        assert!(form.contains(&format!(r#"name="scope.{scope}""#)), "a checkbox for {scope}");
    }
    assert!(!form.contains("scope.admin:users"));
    for days in [7, 30, 90, 365] {
        assert!(form.contains(&format!(r#"<option value="{days}""#)), "{days} days offered");
    }
    assert!(form.contains(r#"<label for="token-name">Name</label>"#));
    assert!(!form.contains("<script"));
    let csrf = hidden(&form, "csrf_token");

    let fields =
        [("csrf_token", csrf.as_str()), ("name", "laptop script"), ("scope.profile", "on"), ("expires_in_days", "90")];
    let made = page(client.post(app.url("/account/tokens")).form(&fields).send().await.unwrap(), 200).await;
    assert!(made.contains(r#"<label for="new-token">Token</label>"#));
    let input_at = made.find(r#"<input id="new-token""#).unwrap_or_else(|| panic!("{made}"));
    let input = &made[input_at..input_at + made[input_at..].find('>').unwrap()];
    assert!(input.contains(" readonly"), "{input}");
    let token = input.split(r#"value=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(token.starts_with("gth_") && token.len() == 40, "{token}");
    let me: Value = app.get(ME, Some(&token)).await.json().await.unwrap();
    assert_eq!(me["scopes"], json!(["profile"]));

    // Shown once: the list never again.
    let listed = page(client.get(app.url("/account/tokens")).send().await.unwrap(), 200).await;
    assert!(!listed.contains(&token));
    assert!(listed.contains("laptop script"));
    let id: String = diesel::sql_query("SELECT id FROM personal_access_tokens")
        .get_result::<IdRow>(&mut app.db.conn())
        .unwrap()
        .id
        .to_string();
    let action = format!("/account/tokens/{id}/revoke");
    assert!(listed.contains(&format!(r#"action="{action}""#)));

    let revoked = client.post(app.url(&action)).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(revoked.status(), 303);
    assert_eq!(revoked.headers()[header::LOCATION], "/account/tokens?done=revoked");
    assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    let after = page(client.get(app.url("/account/tokens?done=revoked")).send().await.unwrap(), 200).await;
    assert!(after.contains("The token was revoked"));
    assert!(!after.contains("laptop script"));
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

#[tokio::test]
async fn the_account_page_refuses_a_form_without_csrf_or_with_bad_input() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = signed_in(&app, &alice).await;
    let form = page(client.get(app.url("/account/tokens")).send().await.unwrap(), 200).await;
    let csrf = hidden(&form, "csrf_token");

    let forged =
        client.post(app.url("/account/tokens")).form(&[("name", "x"), ("scope.profile", "on")]).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let no_scope = [("csrf_token", csrf.as_str()), ("name", "kept name"), ("expires_in_days", "30")];
    let refused = page(client.post(app.url("/account/tokens")).form(&no_scope).send().await.unwrap(), 400).await;
    assert!(refused.contains("A token needs at least one scope."), "{refused}");
    assert!(refused.contains(r#"value="kept name""#));
    let long = [("csrf_token", csrf.as_str()), ("name", "n"), ("scope.profile", "on"), ("expires_in_days", "400")];
    let refused = page(client.post(app.url("/account/tokens")).form(&long).send().await.unwrap(), 400).await;
    assert!(refused.contains("A token expires in 1 to 365 days."), "{refused}");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM personal_access_tokens"), 0);
}

#[tokio::test]
async fn an_admin_sees_a_users_tokens_and_revokes_one_audited_as_the_admin() {
    let app = spawn_app().await;
    let alice = app.alice();
    let admin = app.admin();
    let body = made_token(&app, &alice, &["profile"]).await;
    let token = secret(&body);
    let id = body["id"].as_str().unwrap();
    let client = signed_in(&app, &admin).await;
    let html = page(client.get(app.url("/admin/users/alice")).send().await.unwrap(), 200).await;
    let action = format!("/admin/users/alice/tokens/{id}/revoke");
    assert!(html.contains(&format!(r#"action="{action}""#)), "{html}");
    assert!(!html.contains(&token));
    let csrf = hidden(&html, "csrf_token");

    let response = client.post(app.url(&action)).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/admin/users/alice?done=token-revoked");
    assert_bearer_error(app.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    let actor: IdRow = diesel::sql_query("SELECT actor_id AS id FROM auth_events WHERE kind = 'pat_revoked'")
        .get_result(&mut app.db.conn())
        .unwrap();
    assert_eq!(actor.id, admin.id);
    // Someone else's token id under alice's name is not found.
    let bob = app.create_user("bob", "bob-password", &["user"]);
    let bobs = made_token(&app, &bob, &["profile"]).await;
    let wrong = format!("/admin/users/alice/tokens/{}/revoke", bobs["id"].as_str().unwrap());
    let response = client.post(app.url(&wrong)).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(app.get(ME, Some(&secret(&bobs))).await.status(), 200);
}

#[tokio::test]
async fn the_purge_deletes_tokens_a_month_after_they_expired_or_were_revoked_and_keeps_the_others() {
    let app = spawn_app().await;
    let alice = app.alice();
    for name in ["live", "expired-lately", "expired-long-ago", "revoked-lately", "revoked-long-ago"] {
        let access = app.access_token(&alice, None).await;
        let response = create_token(&app, &access, &json!({"name": name, "scopes": ["profile"]})).await;
        assert_eq!(response.status(), 201);
    }
    execute(
        &app,
        "UPDATE personal_access_tokens SET created_at = now() - interval '100 days', expires_at = now() - interval '1 day' \
           WHERE name = 'expired-lately'; \
         UPDATE personal_access_tokens SET created_at = now() - interval '100 days', expires_at = now() - interval '31 days' \
           WHERE name = 'expired-long-ago'; \
         UPDATE personal_access_tokens SET revoked_at = now() - interval '1 day' WHERE name = 'revoked-lately'; \
         UPDATE personal_access_tokens SET revoked_at = now() - interval '31 days' WHERE name = 'revoked-long-ago'",
    );
    let purged = gatehouse::db::purge_expired(&mut app.db.conn(), chrono::Utc::now()).unwrap();
    assert_eq!(purged, Some(2));
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let left: Vec<String> = diesel::sql_query("SELECT name FROM personal_access_tokens ORDER BY name")
        .load::<Name>(&mut app.db.conn())
        .unwrap()
        .into_iter()
        .map(|row| row.name)
        .collect();
    assert_eq!(left, ["expired-lately", "live", "revoked-lately"]);
}

#[tokio::test]
async fn whoever_holds_a_token_may_revoke_it_at_the_revocation_endpoint() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let token = secret(&made_token(&a, &alice, &["profile"]).await);
    // RFC 7009: 200 whether or not there was something to revoke.
    let response = a.revoke(&token, None).await;
    assert_eq!(response.status(), 200);
    assert_bearer_error(b.get(ME, Some(&token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert_eq!(a.revoke(&token, None).await.status(), 200);
    assert_eq!(a.revoke("gth_not-even-well-formed", None).await.status(), 200);
    let events = a.events();
    let revoked: Vec<_> = events.iter().filter(|e| e.kind == "pat_revoked").collect();
    assert_eq!(revoked.len(), 1, "once, by the first request");
    assert_eq!(revoked[0].user_id, Some(alice.id));
}
