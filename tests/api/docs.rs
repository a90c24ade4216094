//! `/openapi.json` and `/docs`: the document matches the routes the server really answers.

use std::collections::BTreeSet;

use gatehouse::routes::ROUTES;
use serde_json::Value;

use crate::helpers::spawn_app;

/// Routes that answer HTML or assets: not part of the API document.
fn is_documented_kind(path: &str) -> bool {
    path.starts_with("/api/")
        || matches!(
            path,
            "/token"
                | "/revoke"
                | "/introspect"
                | "/.well-known/oauth-authorization-server"
                | "/.well-known/jwks.json"
                | "/.well-known/openid-configuration"
                | "/userinfo"
                | "/device_authorization"
                | "/healthz"
                | "/readyz"
        )
}

async fn document(app: &crate::helpers::TestApp) -> Value {
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_api_routes() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|(_, path)| is_documented_kind(path))
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_route_in_the_route_table_is_really_served() {
    // Mail on (the pages of a password reset exist only then); nothing is ever sent.
    let app = crate::helpers::spawn_app_with(&[
        ("GATEHOUSE_SMTP_URL", "smtp://127.0.0.1:9"),
        ("GATEHOUSE_MAIL_FROM", "gatehouse <gatehouse@example.org>"),
    ])
    .await;
    for (method, path) in ROUTES {
        let request = match *method {
            "GET" => app.client.get(app.url(path)),
            "POST" => app.client.post(app.url(path)),
            "PATCH" => app.client.patch(app.url(path)),
            "DELETE" => app.client.delete(app.url(path)),
            other => panic!("unexpected method {other}"),
        };
        let response = request.send().await.unwrap();
        // The route exists: whatever it answers to an empty request, it is not the fallback 404,
        // and an empty request is the client's mistake, never a failure of ours.
        let status = response.status();
        assert!(status != 404 && status != 405 && status.as_u16() < 500, "{method} {path} answered {status}");
    }
}

#[tokio::test]
async fn the_oauth2_scheme_is_the_password_flow_against_token_with_every_scope() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let scheme = &doc["components"]["securitySchemes"]["oauth2"];
    assert_eq!(scheme["type"], "oauth2");
    let flow = &scheme["flows"]["password"];
    assert_eq!(flow["tokenUrl"], "/token");
    let scopes: BTreeSet<&str> = flow["scopes"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        scopes,
        BTreeSet::from([
            "profile",
            "items:read",
            "items:write",
            "admin:stats",
            "admin:users",
            "tokens:introspect",
            "openid",
            "email"
        ])
    );
    for (_, description) in flow["scopes"].as_object().unwrap() {
        assert!(!description.as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn each_protected_operation_names_the_scope_it_needs_and_its_error_answers() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let expectations = [
        ("/api/users/me", "get", "profile"),
        ("/api/users/me/sign-out-all", "post", "profile"),
        ("/api/items", "post", "items:write"),
        ("/api/admin/stats", "get", "admin:stats"),
        ("/api/admin/users", "get", "admin:users"),
        ("/api/admin/users", "post", "admin:users"),
        ("/api/admin/users/{username}", "patch", "admin:users"),
        ("/api/admin/users/{username}/sign-out-all", "post", "admin:users"),
    ];
    for (path, method, scope) in expectations {
        let operation = &doc["paths"][path][method];
        let security = operation["security"].as_array().unwrap_or_else(|| panic!("{method} {path} has no security"));
        assert!(
            security
                .iter()
                .any(|requirement| requirement["oauth2"].as_array().is_some_and(|s| s.iter().any(|v| v == scope))),
            "{method} {path}: {security:?}"
        );
        for status in ["401", "403"] {
            assert!(operation["responses"][status].is_object(), "{method} {path} documents no {status}");
        }
    }
    // Items can be listed anonymously or with items:read.
    let list_security = doc["paths"]["/api/items"]["get"]["security"].as_array().unwrap();
    assert!(list_security.iter().any(|r| r.as_object().unwrap().is_empty()));
    // The token endpoint takes a form and documents its RFC 6749 error body.
    let token = &doc["paths"]["/token"]["post"];
    assert!(token["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    assert!(token["responses"]["400"]["content"]["application/json"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_by_gatehouse_itself_under_the_site_csp() {
    let app = spawn_app().await;
    let response = app.get("/docs", None).await;
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/docs/");

    let response = app.get("/docs/", None).await;
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(!html.contains("http://") && !html.contains("https://"), "the page must not load anything from elsewhere");

    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/swagger-initializer.js"] {
        let response = app.get(asset, None).await;
        assert_eq!(response.status(), 200, "{asset}");
    }
    let initializer = app.get("/docs/swagger-initializer.js", None).await.text().await.unwrap();
    assert!(initializer.contains("\"/openapi.json\""));
    assert!(initializer.contains("initOAuth"));
}

/// Every `#[get]`/`#[post]`/… handler under `src/routes`, as (method, full path): API handlers are
/// mounted under `/api`.
fn handlers_in_the_sources() -> BTreeSet<(String, String)> {
    fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }
    let routes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut files = Vec::new();
    walk(&routes, &mut files);
    let mut handlers = BTreeSet::new();
    for file in files {
        let prefix = if file.starts_with(routes.join("api")) { "/api" } else { "" };
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let line = line.trim();
            for method in ["get", "post", "patch", "put", "delete"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let path = rest.split('"').next().unwrap();
                    handlers.insert((method.to_uppercase(), format!("{prefix}{path}")));
                }
            }
        }
    }
    handlers
}

#[test]
fn every_handler_is_in_the_route_table() {
    let handlers = handlers_in_the_sources();
    assert!(handlers.len() > 20, "the scan found the handlers: {handlers:?}");
    let table: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(method, path)| ((*method).to_owned(), (*path).to_owned())).collect();
    // The stylesheet is a static asset, not a route of the table.
    let missing: Vec<_> =
        handlers.iter().filter(|(_, path)| !path.starts_with("/static/")).filter(|h| !table.contains(*h)).collect();
    assert!(
        missing.is_empty(),
        "served but not in routes::ROUTES (so no 405, docs or method test covers them): {missing:?}"
    );
}
