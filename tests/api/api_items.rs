//! `/api/items`: optional authentication for reading, the `items:write` scope and input validation for writing.

use diesel::{QueryDsl, RunQueryDsl};
use gatehouse::db::schema::items;
use reqwest::header;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_bearer_error, spawn_app};

const ITEMS: &str = "/api/items";

fn stored_items(app: &TestApp) -> i64 {
    items::table.count().get_result(&mut app.db.conn()).unwrap()
}

/// Creates an item through the API; panics unless it is created.
async fn create_item(app: &TestApp, token: &str, title: &str, public: bool) {
    let response = app.post_json(ITEMS, Some(token), &json!({"title": title, "public": public})).await;
    assert_eq!(response.status(), 201, "creating {title}");
}

/// The titles of `GET /api/items` in the order listed (newest first); panics unless it answers 200.
async fn listed_titles(app: &TestApp, token: Option<&str>) -> Vec<String> {
    let response = app.get(ITEMS, token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body.as_array().unwrap().iter().map(|item| item["title"].as_str().unwrap().to_owned()).collect()
}

/// Alice and Bob each with one public and one private item, created in this order: alice public,
/// alice private, bob public, bob private. Returns Alice and her token with every scope.
async fn two_owners_with_public_and_private_items(app: &TestApp) -> (TestUser, String) {
    let alice = app.alice();
    let bob = app.create_user("bob", "bob-password", &["user"]);
    let alice_token = app.access_token(&alice, None).await;
    let bob_token = app.access_token(&bob, None).await;
    create_item(app, &alice_token, "alice public", true).await;
    create_item(app, &alice_token, "alice private", false).await;
    create_item(app, &bob_token, "bob public", true).await;
    create_item(app, &bob_token, "bob private", false).await;
    (alice, alice_token)
}

/// A refused `POST /api/items`: the status, a JSON error body, and nothing stored.
async fn assert_refused_and_nothing_stored(app: &TestApp, response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "content-type {content_type}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "body: {body}");
    assert_eq!(stored_items(app), 0);
    body
}

#[tokio::test]
async fn anonymous_callers_see_only_public_items() {
    let app = spawn_app().await;
    two_owners_with_public_and_private_items(&app).await;
    assert_eq!(listed_titles(&app, None).await, ["bob public", "alice public"]);
}

#[tokio::test]
async fn a_token_with_items_read_adds_the_callers_own_private_items_but_not_others() {
    let app = spawn_app().await;
    let (_, alice_token) = two_owners_with_public_and_private_items(&app).await;
    assert_eq!(listed_titles(&app, Some(&alice_token)).await, ["bob public", "alice private", "alice public"]);
}

#[tokio::test]
async fn a_token_without_items_read_sees_only_public_items() {
    let app = spawn_app().await;
    let (alice, _) = two_owners_with_public_and_private_items(&app).await;
    let token = app.access_token(&alice, Some("profile items:write")).await;
    assert_eq!(listed_titles(&app, Some(&token)).await, ["bob public", "alice public"]);
}

#[tokio::test]
async fn listing_with_an_invalid_token_is_refused_not_treated_as_anonymous() {
    let app = spawn_app().await;
    two_owners_with_public_and_private_items(&app).await;
    let response = app.get(ITEMS, Some("not-a-jwt")).await;
    assert_bearer_error(response, 401, Some(r#"Bearer error="invalid_token", error_description="*"#), "invalid_token")
        .await;
}

#[tokio::test]
async fn creating_an_item_answers_201_with_the_stored_item() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    let response = app.post_json(ITEMS, Some(&token), &json!({"title": "  Groceries \n", "body": "milk"})).await;
    assert_eq!(response.status(), 201);
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["title"], "Groceries");
    assert_eq!(item["body"], "milk");
    assert_eq!(item["public"], false);
    assert_eq!(item["owner_id"], alice.id.to_string());
    assert!(uuid::Uuid::parse_str(item["id"].as_str().unwrap()).is_ok(), "{item}");
    assert!(item["created_at"].is_string(), "{item}");

    assert_eq!(stored_items(&app), 1);
    let stored: (String, bool) = items::table.select((items::title, items::public)).first(&mut app.db.conn()).unwrap();
    assert_eq!(stored, ("Groceries".to_owned(), false));
    // Alice sees it in her list; nobody else does.
    let read_token = app.access_token(&alice, Some("items:read")).await;
    assert_eq!(listed_titles(&app, Some(&read_token)).await, ["Groceries"]);
    assert!(listed_titles(&app, None).await.is_empty());
}

#[tokio::test]
async fn a_body_is_optional_and_public_items_are_listed_for_everyone() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    let response = app.post_json(ITEMS, Some(&token), &json!({"title": "Notice", "public": true})).await;
    assert_eq!(response.status(), 201);
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["body"], "");
    assert_eq!(item["public"], true);
    assert_eq!(listed_titles(&app, None).await, ["Notice"]);
}

#[tokio::test]
async fn limits_are_counted_in_characters_and_the_limits_themselves_are_accepted() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    let title = "é".repeat(200);
    let body = "ü".repeat(10_000);
    let response = app.post_json(ITEMS, Some(&token), &json!({"title": title, "body": body})).await;
    assert_eq!(response.status(), 201);
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["title"], title);
    assert_eq!(item["body"], body);
}

#[tokio::test]
async fn creating_needs_the_items_write_scope() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("profile items:read")).await;
    let response = app.post_json(ITEMS, Some(&token), &json!({"title": "nope"})).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="items:write""#),
        "insufficient_scope",
    )
    .await;
    assert_eq!(stored_items(&app), 0);
}

#[tokio::test]
async fn creating_anonymously_is_unauthorized() {
    let app = spawn_app().await;
    let response = app.post_json(ITEMS, None, &json!({"title": "nope"})).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(stored_items(&app), 0);
}

#[tokio::test]
async fn invalid_titles_and_bodies_are_invalid_request_and_nothing_is_stored() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    let cases = [
        json!({"title": ""}),
        json!({"title": "   \t\n "}),
        json!({"title": "x".repeat(201)}),
        json!({"title": format!(" {} ", "x".repeat(201))}),
        json!({"title": "fine", "body": "b".repeat(10_001)}),
    ];
    for case in cases {
        let response = app.post_json(ITEMS, Some(&token), &case).await;
        assert_eq!(response.status(), 400, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{case} -> {body}");
        assert!(body["error_description"].is_string(), "{body}");
        assert_eq!(stored_items(&app), 0, "{case}");
    }
}

#[tokio::test]
async fn bodies_that_are_not_an_item_are_invalid_request_never_500() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    let cases = [
        r#"{"title": "unterminated"#,
        "",
        "null",
        "[]",
        r#""just a string""#,
        r#"{}"#,
        r#"{"title": 5}"#,
        r#"{"title": null}"#,
        r#"{"title": ["a"]}"#,
        r#"{"title": "x", "public": "yes"}"#,
        r#"{"title": "x", "body": 7}"#,
        r#"{"title": "x", "owner_id": "00000000-0000-0000-0000-000000000000"}"#,
        r#"{"title": "x", "id": "00000000-0000-0000-0000-000000000000"}"#,
        r#"{"title": "x", "title": "y"}"#,
    ];
    for case in cases {
        let response = app
            .client
            .post(app.url(ITEMS))
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(case)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "body {case:?}");
        let body = assert_refused_and_nothing_stored(&app, response, 400).await;
        assert_eq!(body["error"], "invalid_request", "body {case:?} -> {body}");
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_unsupported_media_type() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request = app.client.post(app.url(ITEMS)).bearer_auth(&token).body(r#"{"title": "x"}"#);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "content type {content_type:?}");
        assert_refused_and_nothing_stored(&app, response, 415).await;
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_json() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    let body = json!({"title": "big", "body": "b".repeat(300 * 1024)});
    let response = app.post_json(ITEMS, Some(&token), &body).await;
    assert_refused_and_nothing_stored(&app, response, 413).await;
}

#[tokio::test]
async fn a_nul_character_is_invalid_request_not_a_server_error() {
    // PostgreSQL text cannot hold U+0000; such input must be refused as input, never reach the database as a 500.
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:write")).await;
    for case in [json!({"title": "a\u{0}b"}), json!({"title": "fine", "body": "x\u{0}y"})] {
        let response = app.post_json(ITEMS, Some(&token), &case).await;
        let body = assert_refused_and_nothing_stored(&app, response, 400).await;
        assert_eq!(body["error"], "invalid_request", "{case} -> {body}");
    }
}
