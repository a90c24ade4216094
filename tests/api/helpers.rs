//! The test harness: a fresh PostgreSQL database per test (dropped afterwards), the real server on a
//! loopback port, and one helper per endpoint.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Once};

use actix_web::web;
use gatehouse::routes::AppState;

use diesel::{Connection, PgConnection, RunQueryDsl};
use gatehouse::config::Settings;
use gatehouse::db;
use reqwest::{Client, Response, header};
use serde_json::Value;
use uuid::Uuid;

/// bcrypt at cost 4 keeps the suite fast; tests of the cost itself set their own.
pub const TEST_BCRYPT_COST: u32 = 4;
pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";

/// The PostgreSQL server the tests create databases on (no database name).
pub fn server_url() -> String {
    std::env::var("GATEHOUSE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// The URL of `database` on the test server. Without TLS: the test server has none, and libpq
/// otherwise sets up OpenSSL for every connection, which a connection still being made by a pool's
/// worker thread can crash into (SIGSEGV) while the test process exits (diesel-rs/diesel#3441).
pub fn database_url(server: &str, database: &str) -> String {
    format!("{server}/{database}?sslmode=disable")
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = gatehouse::log_context::logger("info").try_init();
        }
    });
}

/// A database of its own for one test, migrated; dropped when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

/// A migrated database that every test's database is copied from (`CREATE DATABASE … TEMPLATE`),
/// so a test pays for a file copy instead of running every migration. Its name carries a hash of
/// the migrations, so a changed migration makes a new one.
fn template_on(server: &str) -> String {
    use std::hash::{Hash, Hasher};
    static TEMPLATES: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut made = TEMPLATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, name)) = made.iter().find(|(on, _)| on == server) {
        return name.clone();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let dir = entry.unwrap().path();
        dir.file_name().hash(&mut hasher);
        std::fs::read(dir.join("up.sql")).unwrap_or_default().hash(&mut hasher);
    }
    let name = format!("gatehouse_test_template_{:016x}", hasher.finish());
    let mut admin = PgConnection::establish(&database_url(server, "postgres"))
        .unwrap_or_else(|err| panic!("cannot reach the test PostgreSQL at {server}: {err}"));
    // Test processes may start together: one makes the template, the others wait for it.
    diesel::sql_query("SELECT pg_advisory_lock(7306)").execute(&mut admin).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let existing: Vec<Name> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'gatehouse_test_template_%'")
            .load(&mut admin)
            .unwrap();
    // Several work trees (other migrations, other templates) may test on one server at once: a
    // template is dropped only when its comment says it was made more than a day ago, so a run never
    // pulls the template from under another one that is still cloning it.
    let stale: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'gatehouse_test_template_%' \
         AND shobj_description(oid, 'pg_database') ~ '^made at [0-9]+$' \
         AND substring(shobj_description(oid, 'pg_database') FROM '[0-9]+')::bigint < extract(epoch FROM now()) - 86400",
    )
    .load(&mut admin)
    .unwrap();
    if !existing.iter().any(|db| db.datname == name) {
        for stale in stale {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", stale.datname))
                .execute(&mut admin);
        }
        let building = format!("{name}_building");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).execute(&mut admin).unwrap();
        diesel::sql_query(format!("CREATE DATABASE {building}")).execute(&mut admin).unwrap();
        {
            let mut conn = PgConnection::establish(&database_url(server, &building)).unwrap();
            db::migrate(&mut conn).unwrap();
        }
        diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}")).execute(&mut admin).unwrap();
        let made_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        diesel::sql_query(format!("COMMENT ON DATABASE {name} IS 'made at {made_at}'")).execute(&mut admin).unwrap();
    }
    diesel::sql_query("SELECT pg_advisory_unlock(7306)").execute(&mut admin).unwrap();
    made.push((server.to_owned(), name.clone()));
    name
}

impl TestDb {
    pub fn create() -> Self {
        Self::create_on(&server_url())
    }

    pub fn create_on(server: &str) -> Self {
        let template = template_on(server);
        let name = format!("gatehouse_test_{}", Uuid::new_v4().simple());
        let admin_url = database_url(server, "postgres");
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|err| panic!("cannot reach the test PostgreSQL at {admin_url}: {err}"));
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}")).execute(&mut admin).unwrap();
        let url = database_url(server, &name);
        Self { name, url, admin_url }
    }

    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropped on a plain thread: the test's async runtime may be shutting down around us.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut admin) = PgConnection::establish(&admin_url) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
            }
        })
        .join();
    }
}

/// Settings as a test server uses them, with `overrides` applied on top.
pub fn test_settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("GATEHOUSE_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("GATEHOUSE_BCRYPT_COST".to_owned(), TEST_BCRYPT_COST.to_string()),
    ]);
    for (name, value) in overrides {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    Settings::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    /// Shared by the instances of a pair; dropped with the last of them.
    pub db: Arc<TestDb>,
    /// The running server's shared state (to hold its hasher, for instance).
    pub state: web::Data<AppState>,
    server: actix_web::dev::ServerHandle,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.server.clone();
        // Stop accepting and let the workers go; the database is dropped after.
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the real server on a random loopback port, against a fresh database.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    init_logging();
    spawn_app_on(TestDb::create(), overrides).await
}

pub async fn spawn_app_on(db: TestDb, overrides: &[(&str, &str)]) -> TestApp {
    spawn_instance_on(Arc::new(db), overrides).await
}

/// Two instances of the server on one database, as behind a load balancer: PostgreSQL is all
/// they share.
/// Like instances behind one address, they share one issuer (`GATEHOUSE_ISSUER`, which otherwise
/// follows each one's own port), so a token from either is good on both.
pub async fn spawn_pair(overrides: &[(&str, &str)]) -> (TestApp, TestApp) {
    init_logging();
    let db = Arc::new(TestDb::create());
    let overrides: Vec<(&str, &str)> =
        [("GATEHOUSE_ISSUER", PAIR_ISSUER)].into_iter().chain(overrides.iter().copied()).collect();
    let first = spawn_instance_on(Arc::clone(&db), &overrides).await;
    let second = spawn_instance_on(db, &overrides).await;
    (first, second)
}

/// The issuer both instances of a pair share.
pub const PAIR_ISSUER: &str = "http://gatehouse.test";

/// Another instance on an existing database (a second server, or a restart with other settings).
pub async fn spawn_instance_on(db: Arc<TestDb>, overrides: &[(&str, &str)]) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    spawn_on_listener(db, listener, overrides, None).await
}

/// An instance whose issuer is `http://localhost:<port>` (a name, so passkeys are on) and whose
/// address the tests and the browser use is that too. `issuer`: another instance's, to share it.
pub async fn spawn_on_localhost(db: Arc<TestDb>, issuer: Option<&str>, overrides: &[(&str, &str)]) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let issuer = issuer.map_or_else(|| format!("http://localhost:{port}"), str::to_owned);
    let overrides: Vec<(&str, &str)> =
        [("GATEHOUSE_ISSUER", issuer.as_str())].into_iter().chain(overrides.iter().copied()).collect();
    spawn_on_listener(db, listener, &overrides, Some(format!("http://localhost:{port}"))).await
}

async fn spawn_on_listener(
    db: Arc<TestDb>,
    listener: TcpListener,
    overrides: &[(&str, &str)],
    address: Option<String>,
) -> TestApp {
    init_logging();
    let settings = test_settings(&db.url, overrides);
    let port = listener.local_addr().unwrap().port();
    let pool = db::pool(&db.url, 4);
    let state = gatehouse::startup::build_state(&listener, pool, settings).unwrap();
    let server = gatehouse::startup::serve(listener, state.clone()).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    let client = Client::builder().redirect(reqwest::redirect::Policy::none()).cookie_store(true).build().unwrap();
    let address = address.unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
    TestApp { address, client, db, state, server: handle }
}

/// A user created straight in the database, as `gatehouse user add` would.
pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub password: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn create_user(&self, username: &str, password: &str, roles: &[&str]) -> TestUser {
        let hash = bcrypt::hash(password, TEST_BCRYPT_COST).unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let email = format!("{username}@example.org");
        let new_user = db::users::NewUser {
            id: Uuid::now_v7(),
            username,
            email: Some(&email),
            full_name: Some("Test Person"),
            password_hash: &hash,
        };
        let db::users::UserWrite::Done(user) = db::users::create(&mut self.db.conn(), &new_user, &roles).unwrap()
        else {
            panic!("creating {username} failed");
        };
        TestUser { id: user.id, username: username.to_owned(), password: password.to_owned() }
    }

    /// A user with role `user`.
    pub fn alice(&self) -> TestUser {
        self.create_user("alice", "alice-password", &["user"])
    }

    /// A user with roles `user` and `admin`.
    pub fn admin(&self) -> TestUser {
        self.create_user("root-admin", "admin-password", &["user", "admin"])
    }

    /// `POST /token` with these form fields, form-encoded.
    pub async fn post_token(&self, fields: &[(&str, &str)]) -> Response {
        self.client.post(self.url("/token")).form(fields).send().await.unwrap()
    }

    pub async fn post_token_raw(&self, content_type: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client.post(self.url("/token")).header(header::CONTENT_TYPE, content_type).body(body).send().await.unwrap()
    }

    /// The password grant for `user`; panics unless it succeeds. Returns the whole token response.
    pub async fn login(&self, user: &TestUser, scope: Option<&str>) -> Value {
        let mut fields = vec![("grant_type", "password"), ("username", &user.username), ("password", &user.password)];
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        let response = self.post_token(&fields).await;
        assert_eq!(response.status(), 200, "login of {} failed", user.username);
        response.json().await.unwrap()
    }

    pub async fn access_token(&self, user: &TestUser, scope: Option<&str>) -> String {
        self.login(user, scope).await["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn refresh(&self, refresh_token: &str, scope: Option<&str>) -> Response {
        let mut fields = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        self.post_token(&fields).await
    }

    pub async fn revoke(&self, token: &str, hint: Option<&str>) -> Response {
        let mut fields = vec![("token", token)];
        if let Some(hint) = hint {
            fields.push(("token_type_hint", hint));
        }
        self.client.post(self.url("/revoke")).form(&fields).send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn post_empty(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.post(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// The kinds of the audit events stored so far, oldest first.
    pub fn event_kinds(&self) -> Vec<String> {
        self.events().into_iter().map(|event| event.kind).collect()
    }

    /// The audit trail as stored (plain text, as an operator's SQL would see it), oldest first.
    pub fn events(&self) -> Vec<StoredEvent> {
        diesel::sql_query(
            "SELECT kind, channel, user_id, attempted_username, client_addr, reason, detail, actor_id, request_id \
             FROM auth_events ORDER BY id",
        )
        .load(&mut self.db.conn())
        .unwrap()
    }
}

/// One row of `auth_events`, read with SQL rather than through the server's own types.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct StoredEvent {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub kind: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub channel: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
    pub user_id: Option<Uuid>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub attempted_username: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub client_addr: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub detail: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Uuid>)]
    pub actor_id: Option<Uuid>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub request_id: Option<String>,
}

/// Asserts the RFC 6749 §5.2 error shape, the no-store headers and the status; returns the body.
pub async fn assert_token_error(response: Response, status: u16, error: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "body: {body}");
    assert!(body["error_description"].is_string(), "body: {body}");
    body
}

/// Asserts a bearer failure: status, the exact `WWW-Authenticate` value, and the body's `error`.
pub async fn assert_bearer_error(response: Response, status: u16, challenge: Option<&str>, error: &str) -> Value {
    assert_eq!(response.status(), status);
    let actual = response.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
    match challenge {
        Some(expected) if expected.ends_with('*') => {
            let actual = actual.expect("a WWW-Authenticate header");
            assert!(actual.starts_with(expected.trim_end_matches('*')), "WWW-Authenticate: {actual}");
        }
        expected => assert_eq!(actual.as_deref(), expected),
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "body: {body}");
    body
}

/// Backends of this test's database waiting for a lock.
pub fn lock_waiters(conn: &mut PgConnection) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<Row>(conn)
    .unwrap()
    .n
}

/// Waits until `n` requests wait for a row lock (one the test holds, or one they hold among them).
pub async fn until_lock_waiters(app: &TestApp, n: i64, what: &str) {
    let mut watcher = PgConnection::establish(&app.db.url).unwrap();
    for _ in 0..1000 {
        if lock_waiters(&mut watcher) == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(lock_waiters(&mut watcher), n, "{what}");
}
