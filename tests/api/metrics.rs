//! Prometheus metrics: on their own listener only, counting what really happened, by route pattern.

use std::collections::HashMap;

use crate::helpers::{TestApp, assert_token_error, spawn_app_with};

/// Every sample of the scrape as `name{labels}` → value, in the classic text format.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let text = scrape_text(app, None).await;
    assert!(text.contains("# TYPE gatehouse_logins_total counter\n"), "{text}");
    assert!(!text.contains("# EOF"));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.parse().unwrap()))
        .collect()
}

/// The scrape's text, asked for with this `Accept` header (Prometheus sends OpenMetrics first).
async fn scrape_text(app: &TestApp, accept: Option<&str>) -> String {
    let addr = app.state.metrics_endpoint.as_ref().expect("a metrics listener").addr;
    let mut request = reqwest::Client::new().get(format!("http://{addr}/metrics"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let expected = if accept.is_some() { "application/openmetrics-text" } else { "text/plain; version=0.0.4" };
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with(expected));
    response.text().await.unwrap()
}

#[tokio::test]
async fn prometheus_gets_openmetrics_when_it_asks_and_everyone_else_the_classic_format() {
    let app = spawn_app_with(&[("GATEHOUSE_METRICS_BIND", "127.0.0.1:0")]).await;
    let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";
    let open_metrics = scrape_text(&app, Some(prometheus)).await;
    assert!(open_metrics.contains("# TYPE gatehouse_lockouts counter\ngatehouse_lockouts_total 0\n"), "{open_metrics}");
    assert!(open_metrics.ends_with("# EOF\n"));
    let classic = scrape_text(&app, None).await;
    assert!(classic.contains("# TYPE gatehouse_lockouts_total counter\ngatehouse_lockouts_total 0\n"), "{classic}");
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| {
        let mut names: Vec<_> = samples.keys().filter(|k| k.starts_with(series.split('{').next().unwrap())).collect();
        names.sort();
        panic!("no sample {series}; similar: {names:#?}")
    })
}

#[tokio::test]
async fn the_metrics_count_requests_by_route_pattern_and_every_sign_in_outcome() {
    let app =
        spawn_app_with(&[("GATEHOUSE_METRICS_BIND", "127.0.0.1:0"), ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "10")]).await;
    let alice = app.alice();
    let tokens = app.login(&alice, Some("profile")).await;
    let access = tokens["access_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 200);
    }
    for _ in 0..5 {
        let wrong = [("grant_type", "password"), ("username", "alice"), ("password", "wrong-password")];
        assert_token_error(app.post_token(&wrong).await, 400, "invalid_grant").await;
    }
    let unknown = [("grant_type", "password"), ("username", "nobody"), ("password", "wrong-password")];
    assert_token_error(app.post_token(&unknown).await, 400, "invalid_grant").await;
    // The account is locked now; the budget of 10 attempts is spent after three more.
    let right = [("grant_type", "password"), ("username", "alice"), ("password", "alice-password")];
    for _ in 0..3 {
        assert_token_error(app.post_token(&right).await, 400, "invalid_grant").await;
    }
    assert_token_error(app.post_token(&right).await, 429, "slow_down").await;
    // A refresh token used twice.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(refresh, None).await.status(), 200);
    assert_token_error(app.refresh(refresh, None).await, 400, "invalid_grant").await;
    // Raw paths never become labels, nor do made-up methods.
    assert_eq!(app.get("/no/such/page/12345", None).await.status(), 404);
    for made_up in ["BREW", "FROBNICATE"] {
        let method = reqwest::Method::from_bytes(made_up.as_bytes()).unwrap();
        app.client.request(method, format!("{}/token", app.address)).send().await.unwrap();
    }

    let samples = scrape(&app).await;
    let me = r#"gatehouse_http_requests_total{route="/api/users/me",method="GET",status="200"}"#;
    assert_eq!(value(&samples, me), 3.0);
    assert_eq!(value(&samples, r#"gatehouse_http_requests_total{route="/token",method="POST",status="429"}"#), 1.0);
    assert_eq!(value(&samples, r#"gatehouse_http_requests_total{route="unmatched",method="GET",status="404"}"#), 1.0);
    assert!(!samples.keys().any(|series| series.contains("12345")), "a raw path became a label");
    let other: f64 = samples.iter().filter(|(series, _)| series.contains(r#"method="other""#)).map(|(_, n)| n).sum();
    assert_eq!(other, 2.0, "made-up methods share the label `other`");
    assert!(!samples.keys().any(|series| series.contains("BREW")), "a made-up method became a label");
    assert_eq!(value(&samples, r#"gatehouse_http_request_duration_seconds_count{route="/api/users/me"}"#), 3.0);
    assert_eq!(value(&samples, r#"gatehouse_logins_total{channel="api",outcome="ok"}"#), 1.0);
    // A wrong password and an unknown user are one outcome: the metrics tell no more than the answer.
    assert_eq!(value(&samples, r#"gatehouse_logins_total{channel="api",outcome="invalid_credentials"}"#), 6.0);
    assert!(!samples.keys().any(|series| series.contains("unknown_user") || series.contains("wrong_password")));
    assert_eq!(value(&samples, r#"gatehouse_logins_total{channel="api",outcome="locked"}"#), 3.0);
    assert_eq!(value(&samples, r#"gatehouse_tokens_issued_total{grant="password"}"#), 1.0);
    assert_eq!(value(&samples, r#"gatehouse_tokens_issued_total{grant="refresh_token"}"#), 1.0);
    assert_eq!(value(&samples, "gatehouse_refresh_reuse_total"), 1.0);
    assert_eq!(value(&samples, "gatehouse_lockouts_total"), 1.0);
    assert_eq!(value(&samples, "gatehouse_throttled_total"), 1.0);
    assert_eq!(value(&samples, "gatehouse_password_hash_queue"), 0.0);
    assert_eq!(value(&samples, "gatehouse_password_hash_seconds_count"), 10.0, "one per password check that ran");
    assert!(value(&samples, r#"gatehouse_db_pool_connections{state="idle"}"#) >= 1.0);
    assert!(value(&samples, "gatehouse_bearer_batch_size_count") >= 1.0);
    assert_eq!(
        value(&samples, "gatehouse_bearer_batch_size_sum"),
        value(&samples, "gatehouse_bearer_batch_size_count"),
        "one lookup per batch when requests come one at a time"
    );
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_listener() {
    let app = spawn_app_with(&[("GATEHOUSE_METRICS_BIND", "127.0.0.1:0")]).await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), 404);
    assert!(!response.text().await.unwrap().contains("gatehouse_http_requests_total"));
    // Without the setting there is no metrics listener at all.
    assert!(spawn_app_with(&[]).await.state.metrics_endpoint.is_none());
}

#[test]
fn serve_refuses_metrics_on_the_public_address() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--bind", "127.0.0.1:9199"])
        .env("GATEHOUSE_METRICS_BIND", "127.0.0.1:9199")
        .env("GATEHOUSE_JWT_SECRET", crate::helpers::JWT_SECRET)
        // Refused before any database is touched: this one does not exist.
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "gatehouse: GATEHOUSE_METRICS_BIND is not valid: must differ from GATEHOUSE_BIND: metrics are never served on the public listener"
    );
}
