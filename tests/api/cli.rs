//! The `gatehouse` command line, run as the real binary: every command of the contract, its effect on
//! the database and on a running server, and its exit codes (0 ok, 2 bad usage, 1 other failure with
//! one line on stderr).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use gatehouse::db;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestDb, TestUser, assert_bearer_error, assert_token_error, server_url, spawn_app_on};

/// How long one command may take before the test gives up on it (the machine may be busy compiling).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// One finished run of the binary.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Exit code 0; returns standard output.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success: {self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        &self.stdout
    }

    /// Exit code 1 with exactly one line on stderr and no panic; returns that line.
    fn failure(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected a failure: {self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr must be one line: {self:?}");
        assert!(!lines[0].trim().is_empty(), "{self:?}");
        lines[0]
    }

    /// Exit code 2 (clap's usage error), with something said on stderr and nothing on stdout.
    fn usage_error(&self) {
        assert_eq!(self.code, Some(2), "expected a usage error: {self:?}");
        assert!(!self.stderr.trim().is_empty(), "{self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
    }
}

/// The `gatehouse` binary with a clean environment: this database, bcrypt cost 4, and none of the
/// caller's `GATEHOUSE_*` settings, run outside the source tree so no `.env` file is read.
struct Gatehouse {
    command: Command,
    stdin: String,
}

fn gatehouse(database_url: &str) -> Gatehouse {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GATEHOUSE_") {
            command.env_remove(&name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", database_url)
        .env("GATEHOUSE_BCRYPT_COST", "4")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Gatehouse { command, stdin: String::new() }
}

impl Gatehouse {
    fn env(mut self, name: &str, value: &str) -> Self {
        self.command.env(name, value);
        self
    }

    fn without_env(mut self, name: &str) -> Self {
        self.command.env_remove(name);
        self
    }

    /// What standard input carries (a password line, for `user add` and `user set-password`).
    fn stdin(mut self, input: &str) -> Self {
        self.stdin = input.to_owned();
        self
    }

    fn spawn(mut self, args: &[&str]) -> Child {
        let mut child = self.command.args(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        // The command may exit without reading (e.g. a usage error): a broken pipe is no failure.
        let _ = input.write_all(self.stdin.as_bytes());
        child
    }

    /// Runs to completion; a command that does not exit in time is killed and fails the test.
    fn run(self, args: &[&str]) -> Outcome {
        let child = self.spawn(args);
        let pid = child.id();
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        let output = match result.recv_timeout(COMMAND_DEADLINE) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                panic!("`gatehouse {}` did not exit within {COMMAND_DEADLINE:?}", args.join(" "));
            }
        };
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A database on the test server that the test names itself (so it may not exist yet); dropped
/// at the end whatever happens.
struct NamedDatabase {
    name: String,
    url: String,
}

impl NamedDatabase {
    fn fresh() -> Self {
        let name = format!("gatehouse_test_cli_{}", Uuid::new_v4().simple());
        let url = format!("{}/{name}", server_url());
        Self { name, url }
    }

    fn admin() -> PgConnection {
        PgConnection::establish(&format!("{}/postgres", server_url())).unwrap()
    }

    fn create_empty(&self) {
        diesel::sql_query(format!("CREATE DATABASE {}", self.name)).execute(&mut Self::admin()).unwrap();
    }

    fn exists(&self) -> bool {
        let sql = format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{}'", self.name);
        count(&mut Self::admin(), &sql) == 1
    }
}

impl Drop for NamedDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", server_url())) {
            let _ =
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin);
        }
    }
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

fn roles_of(db: &TestDb, username: &str) -> Vec<String> {
    let mut conn = db.conn();
    let user = db::users::find_by_username(&mut conn, username).unwrap().expect("the user exists");
    db::users::roles_of(&mut conn, user.id).unwrap()
}

fn user_exists(db: &TestDb, username: &str) -> bool {
    db::users::find_by_username(&mut db.conn(), username).unwrap().is_some()
}

/// `gatehouse user add NAME --role R…` with `password` on stdin; panics unless it succeeds.
fn add_user(db: &TestDb, username: &str, password: &str, roles: &[&str]) -> TestUser {
    let mut args = vec!["user", "add", username];
    for role in roles {
        args.extend(["--role", role]);
    }
    gatehouse(&db.url).stdin(&format!("{password}\n")).run(&args).ok();
    let user = db::users::find_by_username(&mut db.conn(), username).unwrap().unwrap();
    TestUser { id: user.id, username: username.to_owned(), password: password.to_owned() }
}

/// The line of `user list` output that is about `username`, split into words.
fn list_line(listing: &str, username: &str) -> Vec<String> {
    listing
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|words| words.first().map(String::as_str) == Some(username))
        .unwrap_or_else(|| panic!("no line for {username} in:\n{listing}"))
}

/// A database that cannot be reached, whatever else runs on this machine: its Unix socket directory
/// does not exist (a guessed free TCP port might be taken by the time the command connects).
const UNREACHABLE_DATABASE: &str = "postgres://postgres@localhost/gatehouse?host=/nonexistent/gatehouse-test-socket";

// ---- migrate ----

#[test]
fn migrate_applies_every_migration_to_an_empty_database_and_a_second_run_changes_nothing() {
    let database = NamedDatabase::fresh();
    database.create_empty();

    gatehouse(&database.url).run(&["migrate"]).ok();
    let mut conn = PgConnection::establish(&database.url).unwrap();
    let applied = count(&mut conn, "SELECT count(*) AS n FROM __diesel_schema_migrations");
    assert_eq!(applied, db::MIGRATIONS_COUNT as i64);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM roles WHERE name IN ('user', 'admin')"), 2);

    gatehouse(&database.url).run(&["migrate"]).ok();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM __diesel_schema_migrations"), applied);
}

#[test]
fn migrate_creates_the_database_when_it_does_not_exist_yet() {
    let database = NamedDatabase::fresh();
    assert!(!database.exists());

    gatehouse(&database.url).run(&["migrate"]).ok();

    assert!(database.exists());
    let mut conn = PgConnection::establish(&database.url).unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM __diesel_schema_migrations"), db::MIGRATIONS_COUNT as i64);
}

#[test]
fn a_database_server_that_cannot_be_reached_fails_with_one_line() {
    let line = gatehouse(UNREACHABLE_DATABASE).run(&["migrate"]).failure().to_owned();
    assert!(line.starts_with("gatehouse: "), "{line}");
    gatehouse(UNREACHABLE_DATABASE).run(&["user", "list"]).failure();
}

// ---- user add ----

#[test]
fn user_add_stores_the_user_with_email_full_name_and_roles() {
    let db = TestDb::create();
    let stdout = gatehouse(&db.url)
        .stdin("bob-password-1\n")
        .run(&["user", "add", "bob", "--role", "user", "--email", "bob@example.org", "--full-name", "Bob B"])
        .ok()
        .to_owned();
    assert!(stdout.contains("bob"), "{stdout}");

    let user = db::users::find_by_username(&mut db.conn(), "bob").unwrap().expect("bob is stored");
    assert_eq!(user.username, "bob");
    assert_eq!(user.email.as_deref(), Some("bob@example.org"));
    assert_eq!(user.full_name.as_deref(), Some("Bob B"));
    assert!(user.is_active);
    assert_eq!(roles_of(&db, "bob"), ["user"]);

    let listing = gatehouse(&db.url).run(&["user", "list"]).ok().to_owned();
    let line = list_line(&listing, "bob").join(" ");
    for expected in ["yes", "user", "bob@example.org", "Bob B"] {
        assert!(line.contains(expected), "{expected} missing from: {line}");
    }
}

#[tokio::test]
async fn a_password_set_by_user_add_works_at_the_token_endpoint() {
    let db = TestDb::create();
    gatehouse(&db.url)
        .stdin("bob-password-1\n")
        .run(&["user", "add", "bob", "--role", "user", "--email", "bob@example.org", "--full-name", "Bob B"])
        .ok();
    let app = spawn_app_on(db, &[]).await;

    let response = app.post_token(&[("username", "bob"), ("password", "bob-password-1")]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "email items:read items:write openid profile");

    let me = app.get("/api/users/me", body["access_token"].as_str()).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], "bob");
    assert_eq!(me["email"], "bob@example.org");
    assert_eq!(me["full_name"], "Bob B");
    assert_eq!(me["roles"], serde_json::json!(["user"]));
}

#[test]
fn user_add_refuses_a_username_that_is_taken_in_any_case() {
    let db = TestDb::create();
    add_user(&db, "bob", "bob-password-1", &["user"]);

    for taken in ["bob", "BOB", "Bob"] {
        let line = gatehouse(&db.url).stdin("other-password\n").run(&["user", "add", taken]).failure().to_owned();
        assert!(line.contains("already exists"), "{line}");
    }
    assert_eq!(count(&mut db.conn(), "SELECT count(*) AS n FROM users"), 1);
}

#[test]
fn user_add_with_an_unknown_role_fails_and_stores_no_user() {
    let db = TestDb::create();
    let outcome =
        gatehouse(&db.url).stdin("bob-password-1\n").run(&["user", "add", "bob", "--role", "user", "--role", "wizard"]);
    let line = outcome.failure();
    assert!(line.contains("wizard"), "{line}");
    assert!(!user_exists(&db, "bob"));
    assert_eq!(count(&mut db.conn(), "SELECT count(*) AS n FROM users"), 0);
}

#[test]
fn user_add_refuses_a_password_shorter_than_eight_characters() {
    let db = TestDb::create();
    let line = gatehouse(&db.url).stdin("seven77\n").run(&["user", "add", "bob"]).failure().to_owned();
    assert!(line.contains('8'), "{line}");
    assert!(!user_exists(&db, "bob"));
}

#[test]
fn user_add_refuses_a_password_longer_than_72_bytes_and_says_so() {
    let db = TestDb::create();
    // 73 ASCII bytes, and 37 two-byte characters (74 bytes, though only 37 characters).
    for password in ["x".repeat(73), "é".repeat(37)] {
        let line = gatehouse(&db.url).stdin(&format!("{password}\n")).run(&["user", "add", "bob"]).failure().to_owned();
        assert!(line.contains("72"), "{line}");
    }
    assert!(!user_exists(&db, "bob"));

    // Exactly 72 bytes is allowed.
    gatehouse(&db.url).stdin(&format!("{}\n", "x".repeat(72))).run(&["user", "add", "bob"]).ok();
    assert!(user_exists(&db, "bob"));
}

#[test]
fn user_add_refuses_an_invalid_username() {
    let db = TestDb::create();
    gatehouse(&db.url).stdin("bob-password-1\n").run(&["user", "add", "a b"]).failure();
    assert_eq!(count(&mut db.conn(), "SELECT count(*) AS n FROM users"), 0);
}

#[test]
fn a_password_read_from_stdin_loses_only_its_line_ending() {
    let db = TestDb::create();
    gatehouse(&db.url).stdin("  spaced password  \r\n").run(&["user", "add", "bob"]).ok();
    let hash: String = {
        use diesel::prelude::*;
        use gatehouse::db::schema::users;
        users::table.filter(users::username.eq("bob")).select(users::password_hash).first(&mut db.conn()).unwrap()
    };
    assert!(bcrypt::verify("  spaced password  ", &hash).unwrap());
}

// ---- user set-roles ----

#[test]
fn user_set_roles_replaces_the_users_roles() {
    let db = TestDb::create();
    // Another admin, so that taking bob's admin role back away does not remove the last admin.
    add_user(&db, "root", "root-password-1", &["admin"]);
    add_user(&db, "bob", "bob-password-1", &["user"]);

    gatehouse(&db.url).run(&["user", "set-roles", "bob", "admin", "user"]).ok();
    assert_eq!(roles_of(&db, "bob"), ["admin", "user"]);

    gatehouse(&db.url).run(&["user", "set-roles", "BOB", "user"]).ok();
    assert_eq!(roles_of(&db, "bob"), ["user"]);
}

#[test]
fn user_set_roles_for_an_unknown_user_fails_with_one_line() {
    let db = TestDb::create();
    let line = gatehouse(&db.url).run(&["user", "set-roles", "nobody", "user"]).failure().to_owned();
    assert!(line.contains("nobody"), "{line}");
}

#[test]
fn user_set_roles_with_an_unknown_role_fails_and_leaves_the_roles_unchanged() {
    let db = TestDb::create();
    add_user(&db, "bob", "bob-password-1", &["user"]);

    let line = gatehouse(&db.url).run(&["user", "set-roles", "bob", "admin", "wizard"]).failure().to_owned();
    assert!(line.contains("wizard"), "{line}");
    assert_eq!(roles_of(&db, "bob"), ["user"]);
}

// ---- user set-password ----

#[tokio::test]
async fn user_set_password_makes_the_new_password_work_and_ends_earlier_tokens() {
    let db = TestDb::create();
    let bob = add_user(&db, "bob", "old-password-1", &["user"]);
    let app = spawn_app_on(db, &[]).await;
    let before = app.login(&bob, None).await;
    let (access, refresh) = (before["access_token"].as_str().unwrap(), before["refresh_token"].as_str().unwrap());
    assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 200);

    gatehouse(&app.db.url).stdin("new-password-2\n").run(&["user", "set-password", "bob"]).ok();

    let old = app.post_token(&[("username", "bob"), ("password", "old-password-1")]).await;
    assert_token_error(old, 400, "invalid_grant").await;
    let new = app.post_token(&[("username", "bob"), ("password", "new-password-2")]).await;
    assert_eq!(new.status(), 200);

    let me = app.get("/api/users/me", Some(access)).await;
    assert_bearer_error(me, 401, Some(r#"Bearer error="invalid_token"*"#), "invalid_token").await;
    assert_token_error(app.refresh(refresh, None).await, 400, "invalid_grant").await;
}

#[test]
fn user_set_password_for_an_unknown_user_fails_with_one_line() {
    let db = TestDb::create();
    let line =
        gatehouse(&db.url).stdin("new-password-2\n").run(&["user", "set-password", "nobody"]).failure().to_owned();
    assert!(line.contains("nobody"), "{line}");
}

#[tokio::test]
async fn user_set_password_refuses_a_too_short_password_and_keeps_the_old_one() {
    let db = TestDb::create();
    add_user(&db, "bob", "old-password-1", &["user"]);
    let app = spawn_app_on(db, &[]).await;

    gatehouse(&app.db.url).stdin("short\n").run(&["user", "set-password", "bob"]).failure();

    let response = app.post_token(&[("username", "bob"), ("password", "old-password-1")]).await;
    assert_eq!(response.status(), 200);
}

// ---- user deactivate / activate ----

#[tokio::test]
async fn a_deactivated_user_is_refused_at_once_and_an_activated_one_signs_in_again() {
    let db = TestDb::create();
    let bob = add_user(&db, "bob", "bob-password-1", &["user"]);
    let app = spawn_app_on(db, &[]).await;
    let token = app.access_token(&bob, None).await;
    assert_eq!(app.get("/api/users/me", Some(&token)).await.status(), 200);

    gatehouse(&app.db.url).run(&["user", "deactivate", "bob"]).ok();

    let me = app.get("/api/users/me", Some(&token)).await;
    assert_eq!(me.status(), 403);
    let body: Value = me.json().await.unwrap();
    assert_eq!(body["error"], "inactive_user");
    let login = app.post_token(&[("username", "bob"), ("password", "bob-password-1")]).await;
    assert_token_error(login, 400, "invalid_grant").await;
    let listing = gatehouse(&app.db.url).run(&["user", "list"]).ok().to_owned();
    assert!(list_line(&listing, "bob").contains(&"no".to_owned()), "{listing}");

    gatehouse(&app.db.url).run(&["user", "activate", "bob"]).ok();

    let fresh = app.access_token(&bob, None).await;
    assert_eq!(app.get("/api/users/me", Some(&fresh)).await.status(), 200);
    let me = app.get("/api/users/me", Some(&token)).await;
    assert_bearer_error(me, 401, Some(r#"Bearer error="invalid_token"*"#), "invalid_token").await;
}

#[test]
fn deactivating_or_activating_an_unknown_user_fails_with_one_line() {
    let db = TestDb::create();
    for command in ["deactivate", "activate"] {
        let line = gatehouse(&db.url).run(&["user", command, "nobody"]).failure().to_owned();
        assert!(line.contains("nobody"), "{line}");
    }
}

// ---- user list ----

#[test]
fn user_list_prints_every_user_with_roles_and_active_flag() {
    let db = TestDb::create();
    add_user(&db, "alice", "alice-password", &["user"]);
    add_user(&db, "root-admin", "admin-password", &["user", "admin"]);
    add_user(&db, "nobody-special", "plain-password", &[]);
    add_user(&db, "carol", "carol-password", &["user"]);
    gatehouse(&db.url).run(&["user", "deactivate", "carol"]).ok();

    let listing = gatehouse(&db.url).run(&["user", "list"]).ok().to_owned();

    let alice = list_line(&listing, "alice");
    assert!(alice.contains(&"yes".to_owned()) && alice.contains(&"user".to_owned()), "{listing}");
    let admin = list_line(&listing, "root-admin");
    assert!(admin.contains(&"yes".to_owned()) && admin.contains(&"admin,user".to_owned()), "{listing}");
    let carol = list_line(&listing, "carol");
    assert!(carol.contains(&"no".to_owned()) && carol.contains(&"user".to_owned()), "{listing}");
    let plain = list_line(&listing, "nobody-special");
    assert!(plain.contains(&"yes".to_owned()), "{listing}");
    assert!(!plain.iter().any(|word| word.contains("user") || word.contains("admin")), "{listing}");
}

// ---- audit tail ----

/// Every stored event as `audit tail` should print it, oldest first: read with plain SQL, formatted
/// by the test (time to the millisecond, UTC; kind and channel padded; `-` for what is missing).
fn expected_tail_lines(db: &TestDb) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        at: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        channel: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        user_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        attempted: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        addr: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        actor: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        rest: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS\"Z\"') AS at, kind, channel, \
                coalesce(user_id::text, '-') AS user_id, coalesce(attempted_username, '-') AS attempted, \
                coalesce(client_addr, '-') AS addr, coalesce(actor_id::text, '-') AS actor, \
                concat_ws(' ', reason, detail) AS rest \
         FROM auth_events ORDER BY id",
    )
    .load(&mut db.conn())
    .unwrap();
    rows.into_iter()
        .map(|row| {
            format!(
                "{}  {:<14} {:<3} user={} attempted={} addr={} actor={} {}",
                row.at, row.kind, row.channel, row.user_id, row.attempted, row.addr, row.actor, row.rest
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_tail_prints_the_latest_events_newest_last_and_at_most_n_of_them() {
    let app = spawn_app_on(TestDb::create(), &[]).await;
    let alice = app.alice();
    for _ in 0..3 {
        app.login(&alice, None).await;
    }
    let login = app.login(&alice, Some("profile")).await;
    assert_eq!(app.refresh(login["refresh_token"].as_str().unwrap(), None).await.status(), 200);
    let failed = app.post_token(&[("username", "nobody"), ("password", "whatever")]).await;
    assert_token_error(failed, 400, "invalid_grant").await;
    let failed = app.post_token(&[("username", "alice"), ("password", "wrong-password")]).await;
    assert_token_error(failed, 400, "invalid_grant").await;
    let expected = expected_tail_lines(&app.db);
    assert_eq!(expected.len(), 11, "{expected:#?}");
    // What the lines say, spelled out for the newest ones.
    assert!(expected[8].contains(" refresh        api user="), "{}", expected[8]);
    assert!(expected[8].ends_with(" attempted=alice addr=127.0.0.1 actor=- profile"), "{}", expected[8]);
    assert!(expected[9].contains(" login_failed   api user=- attempted=nobody addr=127.0.0.1 actor=- unknown_user"));
    let alice_failed =
        format!(" login_failed   api user={} attempted=alice addr=127.0.0.1 actor=- wrong_password", alice.id);
    assert!(expected[10].ends_with(&alice_failed), "{}", expected[10]);

    // Field by field (the column padding has a test of its own below).
    let words = |lines: &[String]| -> Vec<Vec<String>> {
        lines.iter().map(|line| line.split_whitespace().map(str::to_owned).collect()).collect()
    };
    let tail = gatehouse(&app.db.url).run(&["audit", "tail", "-n", "5"]).ok().to_owned();
    let printed: Vec<String> = tail.lines().map(str::to_owned).collect();
    assert_eq!(words(&printed), words(&expected[expected.len() - 5..]), "{tail}");

    let everything = gatehouse(&app.db.url).run(&["audit", "tail", "-n", "1000"]).ok().to_owned();
    let printed: Vec<String> = everything.lines().map(str::to_owned).collect();
    assert_eq!(words(&printed), words(&expected), "{everything}");
}

#[tokio::test]
async fn audit_tail_lines_up_its_columns() {
    let app = spawn_app_on(TestDb::create(), &[]).await;
    let alice = app.alice();
    app.login(&alice, None).await;
    let failed = app.post_token(&[("username", "nobody"), ("password", "whatever")]).await;
    assert_token_error(failed, 400, "invalid_grant").await;
    let expected = expected_tail_lines(&app.db);
    assert_eq!(expected.len(), 3, "{expected:#?}");

    let tail = gatehouse(&app.db.url).run(&["audit", "tail"]).ok().to_owned();
    let printed: Vec<&str> = tail.lines().collect();
    assert_eq!(printed, expected, "{tail}");
}

// ---- bad usage ----

#[test]
fn bad_usage_exits_with_2() {
    // Nothing listens there: a command that got past argument parsing would fail with 1, not 2.
    for args in [
        &[][..],
        &["user"][..],
        &["user", "add"][..],
        &["user", "set-roles", "bob"][..],
        &["user", "add", "bob", "--colour", "blue"][..],
        &["frobnicate"][..],
        &["audit", "tail", "-n", "0"][..],
        &["audit", "tail", "-n", "many"][..],
        &["serve", "--bind"][..],
    ] {
        let outcome = gatehouse(UNREACHABLE_DATABASE).run(args);
        assert_eq!(outcome.code, Some(2), "gatehouse {}: {outcome:?}", args.join(" "));
        outcome.usage_error();
    }
}

// ---- serve: configuration ----

#[test]
fn serve_without_a_jwt_secret_refuses_to_start_with_one_line_naming_the_variable() {
    let db = TestDb::create();
    let outcome = gatehouse(&db.url).without_env("GATEHOUSE_JWT_SECRET").run(&["serve", "--bind", "127.0.0.1:0"]);
    let line = outcome.failure();
    assert!(line.contains("GATEHOUSE_JWT_SECRET"), "{line}");
}

#[test]
fn serve_with_a_short_jwt_secret_refuses_to_start_saying_at_least_32_bytes() {
    let db = TestDb::create();
    let outcome = gatehouse(&db.url).env("GATEHOUSE_JWT_SECRET", "short").run(&["serve", "--bind", "127.0.0.1:0"]);
    let line = outcome.failure();
    assert!(line.contains("GATEHOUSE_JWT_SECRET"), "{line}");
    assert!(line.contains("at least 32 bytes"), "{line}");
}

#[test]
fn serve_with_an_absurd_bcrypt_cost_refuses_to_start_with_one_line() {
    let db = TestDb::create();
    let outcome = gatehouse(&db.url)
        .env("GATEHOUSE_JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("GATEHOUSE_BCRYPT_COST", "99")
        .run(&["serve", "--bind", "127.0.0.1:0"]);
    let line = outcome.failure();
    assert!(line.contains("GATEHOUSE_BCRYPT_COST"), "{line}");
}

#[test]
fn serve_with_an_unparseable_bind_address_fails_with_one_line() {
    let db = TestDb::create();
    let outcome = gatehouse(&db.url).env("GATEHOUSE_JWT_SECRET", crate::helpers::JWT_SECRET).run(&[
        "serve",
        "--bind",
        "not-an-address",
    ]);
    outcome.failure();
}

// ---- serve: a running server ----

/// Everything a child wrote to one of its streams so far, read line by line on a thread of its own
/// (so a full pipe never blocks the child, and the test can look at lines as they come).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn read_from(stream: impl Read + Send + 'static) -> (Self, std::thread::JoinHandle<()>) {
        let captured = Self::default();
        let sink = captured.clone();
        let reader = std::thread::spawn(move || {
            let mut stream = BufReader::new(stream);
            let mut line = Vec::new();
            while stream.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
                sink.0.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        (captured, reader)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A `gatehouse serve` process, killed if the test ends before it exits.
struct Serving {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the server said it listens.
    base: String,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// The address after `listening on http://` in `text`, if the server has said it yet.
fn listening_address(text: &str) -> Option<String> {
    let marker = "listening on http://";
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let end = rest.find(char::is_whitespace)?;
    Some(rest[..end].to_owned())
}

impl Gatehouse {
    /// Runs `args` (a `serve` command binding port 0) and waits until the server says where it
    /// listens: on stdout in `--dev`, in the info log on stderr otherwise.
    async fn serve(self, args: &[&str]) -> Serving {
        let mut child = self.spawn(args);
        let (stdout, out_reader) = Captured::read_from(child.stdout.take().unwrap());
        let (stderr, err_reader) = Captured::read_from(child.stderr.take().unwrap());
        let started = Instant::now();
        let address = loop {
            if let Some(address) = listening_address(&stdout.text()).or_else(|| listening_address(&stderr.text())) {
                break address;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("`gatehouse {}` exited early with {status}: {}", args.join(" "), stderr.text());
            }
            assert!(started.elapsed() < COMMAND_DEADLINE, "`gatehouse {}` never said where it listens", args.join(" "));
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(address.starts_with("127.0.0.1:") && !address.ends_with(":0"), "listening on {address}");
        Serving { child, base: format!("http://{address}"), stdout, stderr, readers: vec![out_reader, err_reader] }
    }
}

impl Serving {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/healthz` answers 200.
    async fn until_healthy(&mut self, client: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited early with {status}: {}", self.stderr.text());
            }
            if let Ok(response) = client.get(self.url("/healthz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "/healthz did not answer 200 within 15 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// Waits for the process to exit (at most `within`); returns its status, stdout and stderr.
    async fn exit(mut self, within: Duration) -> (ExitStatus, String, String) {
        let signalled = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(signalled.elapsed() < within, "the server did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for reader in std::mem::take(&mut self.readers) {
            reader.join().unwrap();
        }
        (status, self.stdout.text(), self.stderr.text())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn serve_dev_prints_demo_credentials_that_work_and_stops_on_sigterm() {
    let db = TestDb::create();
    let mut server = gatehouse(&db.url)
        .without_env("GATEHOUSE_JWT_SECRET")
        .serve(&["serve", "--dev", "--bind", "127.0.0.1:0"])
        .await;
    let base = server.base.clone();
    let bind = base.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();
    server.until_healthy(&client).await;

    for (username, password) in [("alice", "alice-demo-password"), ("admin", "admin-demo-password")] {
        let response = client
            .post(format!("{base}/token"))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "demo login of {username}");
    }
    let response = client
        .post(format!("{base}/token"))
        .form(&[("username", "alice"), ("password", "alice-demo-password"), ("scope", "profile")])
        .send()
        .await
        .unwrap();
    let token: Value = response.json().await.unwrap();
    // --dev: the session cookie works over plain http, so it is not `Secure` (it is otherwise).
    let login_page = client.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login_page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("gatehouse_session=") && cookie.contains("HttpOnly"), "{cookie}");
    assert!(!cookie.contains("Secure"), "--dev must not mark the session cookie Secure: {cookie}");
    let me = client.get(format!("{base}/api/users/me")).bearer_auth(token["access_token"].as_str().unwrap());
    assert_eq!(me.send().await.unwrap().status(), 200);

    server.sigterm();
    let (status, stdout, stderr) = server.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status} after SIGTERM; stderr:\n{stderr}");
    assert!(stdout.contains("alice / alice-demo-password"), "{stdout}");
    assert!(stdout.contains(&bind), "{stdout}");
    assert!(stderr.contains("ephemeral"), "--dev must say that its JWT secret is ephemeral:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_dev_refuses_a_database_it_did_not_make_and_changes_nothing_in_it() {
    let db = TestDb::create();
    {
        let mut conn = db.conn();
        diesel::sql_query(
            "INSERT INTO users (id, username, password_hash) VALUES (gen_random_uuid(), 'production-user', 'x')",
        )
        .execute(&mut conn)
        .unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--dev", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env_remove("GATEHOUSE_JWT_SECRET")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--dev will not use") && stderr.contains("1 user(s), 0 signing key(s)"), "{stderr}");
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.conn();
    let users: Count = diesel::sql_query("SELECT count(*) AS n FROM users").get_result(&mut conn).unwrap();
    let keys: Count = diesel::sql_query("SELECT count(*) AS n FROM signing_keys").get_result(&mut conn).unwrap();
    assert_eq!((users.n, keys.n), (1, 0), "no demo user, no key");
}

/// The HS256 secret for a `serve` that is not `--dev`.
fn secret(gatehouse: Gatehouse) -> Gatehouse {
    gatehouse.env("GATEHOUSE_JWT_SECRET", crate::helpers::JWT_SECRET)
}

#[tokio::test]
async fn serve_without_dev_logs_the_port_it_bound_and_answers_there() {
    let db = TestDb::create();
    let mut server = secret(gatehouse(&db.url)).serve(&["serve", "--bind", "127.0.0.1:0"]).await;
    let client = reqwest::Client::new();
    server.until_healthy(&client).await;
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(client);

    server.sigterm();
    let (status, stdout, stderr) = server.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status} after SIGTERM; stderr:\n{stderr}");
    // Outside --dev the address is only in the log; nothing is printed to stdout.
    assert!(listening_address(&stderr).is_some(), "{stderr}");
    assert_eq!(stdout, "");
}

#[tokio::test]
async fn the_request_log_names_each_path_but_never_a_query_string_a_token_a_cookie_or_a_password() {
    let db = TestDb::create();
    add_user(&db, "bob", "bob-secret-password", &["user"]);
    let mut server =
        secret(gatehouse(&db.url)).env("RUST_LOG", "info").serve(&["serve", "--bind", "127.0.0.1:0"]).await;
    let client =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    server.until_healthy(&client).await;

    // The password grant (a password in a form), then the API with the token in the header and a
    // secret in the query string, then a refresh.
    let login = client
        .post(server.url("/token"))
        .form(&[("username", "bob"), ("password", "bob-secret-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let me = client.get(server.url("/api/users/me?token=secret-in-query")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let refreshed = client
        .post(server.url("/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let second_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();

    // The sign-in form (a password and a CSRF token in a form), then a page with the session cookie.
    let page = client.get(server.url("/login?next=%2F&token=secret-in-query")).send().await.unwrap().text().await;
    let page = page.unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let at = page.find(marker).expect("a CSRF field") + marker.len();
    let csrf = page[at..at + page[at..].find('"').unwrap()].to_owned();
    let form = [("csrf_token", csrf.as_str()), ("username", "bob"), ("password", "bob-secret-password")];
    let signed_in = client.post(server.url("/login")).form(&form).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.cookies().next().expect("a session cookie").value().to_owned();
    assert_eq!(client.get(server.url("/")).send().await.unwrap().status(), 200);
    drop(client);

    server.sigterm();
    let (status, _, log) = server.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status} after SIGTERM; log:\n{log}");
    for line in [r#""POST /token" 200"#, r#""GET /api/users/me" 200"#, r#""GET /login" 200"#, r#""POST /login" 303"#] {
        assert!(log.contains(line), "the log has no {line}:\n{log}");
    }
    for secret in [
        "secret-in-query",
        "token=",
        "bob-secret-password",
        access.as_str(),
        refresh.as_str(),
        second_refresh.as_str(),
        csrf.as_str(),
        cookie.as_str(),
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

/// How long the test keeps a request in flight after SIGTERM: longer than actix's one-second
/// shutdown poll, so a server that gave requests in flight no grace would have dropped it by then.
const HELD_AFTER_SIGTERM: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn sigterm_lets_a_sign_in_in_flight_finish_with_200_and_then_exits_0() {
    let db = TestDb::create();
    add_user(&db, "slow", "slow-password-1", &["user"]);
    let mut server = secret(gatehouse(&db.url)).serve(&["serve", "--bind", "127.0.0.1:0"]).await;
    let client = reqwest::Client::new();
    server.until_healthy(&client).await;

    // Another transaction holds the account's row, so the sign-in's check waits for it: the request
    // stays in flight exactly as long as the test wants, whatever the machine's speed.
    let mut holder = db.conn();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT id FROM users WHERE username = 'slow' FOR UPDATE").execute(&mut holder).unwrap();
    let sign_in = client.post(server.url("/token")).form(&[("username", "slow"), ("password", "slow-password-1")]);
    let sign_in = tokio::spawn(sign_in.send());
    let mut watcher = db.conn();
    let started = Instant::now();
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%check_claims%'";
    while count(&mut watcher, waiting) == 0 {
        assert!(!sign_in.is_finished(), "the sign-in finished without waiting for the account's row");
        assert!(started.elapsed() < COMMAND_DEADLINE, "the sign-in never reached its credential check");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.sigterm();
    tokio::time::sleep(HELD_AFTER_SIGTERM).await;
    assert!(!sign_in.is_finished(), "the sign-in in flight was answered before it could finish");
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let response = sign_in.await.unwrap().expect("an answer to the sign-in in flight");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    drop(client);
    let (status, _, log) = server.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status} after SIGTERM; log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn audit_tail_shows_control_characters_from_clients_escaped_never_raw() {
    let db = TestDb::create();
    let app = spawn_app_on(db, &[]).await;
    // A username that would recolour the operator's terminal and forge a second line.
    let hostile = "evil\u{1b}[31mred\nforged line\u{7}";
    let response =
        app.post_token(&[("grant_type", "password"), ("username", hostile), ("password", "whatever-it-is")]).await;
    assert_eq!(response.status(), 400);
    let printed = gatehouse(&app.db.url).run(&["audit", "tail", "-n", "5"]).ok().to_owned();
    assert!(!printed.contains('\u{1b}') && !printed.contains('\u{7}'), "raw control characters: {printed:?}");
    assert_eq!(printed.lines().count(), 1, "one event, one line: {printed:?}");
    assert!(printed.contains(r"attempted=evil\x1b[31mred\x0aforged line\x07"), "{printed}");
}

// ---- administration through the accounts layer (issue #13) ----

fn events_of_kind(db: &TestDb, kind: &str) -> i64 {
    count(
        &mut db.conn(),
        &format!(
            "SELECT count(*) AS n FROM auth_events WHERE kind = '{kind}' AND channel = 'cli' AND actor_id IS NULL"
        ),
    )
}

#[test]
fn the_cli_cannot_remove_the_last_active_admin_and_says_so_in_one_line() {
    let db = TestDb::create();
    add_user(&db, "root", "root-password-1", &["user", "admin"]);
    let line = gatehouse(&db.url).run(&["user", "set-roles", "root", "user"]).failure().to_owned();
    assert!(line.contains("no active admin"), "{line}");
    let line = gatehouse(&db.url).run(&["user", "deactivate", "root"]).failure().to_owned();
    assert!(line.contains("no active admin"), "{line}");
    assert_eq!(roles_of(&db, "root"), ["admin", "user"]);

    add_user(&db, "deputy", "deputy-password-1", &["admin"]);
    gatehouse(&db.url).run(&["user", "deactivate", "root"]).ok();
    assert_eq!(events_of_kind(&db, "deactivated"), 1);
    assert_eq!(events_of_kind(&db, "roles_changed"), 0, "refused changes leave no audit row");
}

#[test]
fn the_cli_warns_about_a_weak_password_and_still_sets_it() {
    let db = TestDb::create();
    let outcome = gatehouse(&db.url).stdin("password1\n").run(&["user", "add", "bob", "--role", "user"]);
    outcome.ok();
    assert!(outcome.stderr.starts_with("warning: this password is too easy to guess"), "{outcome:?}");
    assert!(outcome.stderr.contains("common"), "the estimator's feedback: {outcome:?}");
    assert!(user_exists(&db, "bob"));

    let outcome = gatehouse(&db.url).stdin("velvet-otter-sings-47\n").run(&["user", "set-password", "bob"]);
    outcome.ok();
    assert_eq!(outcome.stderr, "", "a strong password needs no warning");
    assert_eq!(events_of_kind(&db, "user_created"), 1);
    assert_eq!(events_of_kind(&db, "password_changed"), 1);
}

#[test]
fn the_cli_signs_a_user_out_everywhere() {
    let db = TestDb::create();
    add_user(&db, "bob", "bob-password-1", &["user"]);
    let before = count(&mut db.conn(), "SELECT extract(epoch FROM tokens_valid_after)::bigint * 0 + 1 AS n FROM users");
    assert_eq!(before, 1);
    let out = gatehouse(&db.url).run(&["user", "sign-out-all", "bob"]).ok().to_owned();
    assert!(out.contains("signed out everywhere"), "{out}");
    assert_eq!(events_of_kind(&db, "sign_out_all"), 1);
    gatehouse(&db.url).run(&["user", "sign-out-all", "nobody"]).failure();
}

/// The operator's way back in for someone who lost their authenticator: the app, the recovery codes
/// and the passkeys go, and so do the user's sessions and tokens (a cut-off).
#[test]
fn the_cli_removes_a_users_second_factors_and_ends_their_sessions() {
    use gatehouse::auth::second_factor::{TotpSealer, recovery, totp};
    let db = TestDb::create();
    let bob = add_user(&db, "bob", "bob-password-1", &["user"]);
    let untouched = gatehouse(&db.url).run(&["user", "reset-second-factor", "bob"]).ok().to_owned();
    assert!(untouched.contains("had no second factor"), "{untouched}");
    let sealed = TotpSealer::new(&"x".repeat(40).into()).seal(bob.id, &totp::new_secret()).unwrap();
    let mut conn = db.conn();
    db::second_factors::begin_enrolment(&mut conn, bob.id, &sealed).unwrap();
    let codes = recovery::hashes(bob.id, &recovery::generate());
    db::second_factors::confirm_enrolment(&mut conn, bob.id, &sealed, 1, &codes, &[]).unwrap();
    let cutoff_before =
        count(&mut conn, "SELECT (extract(epoch FROM tokens_valid_after) * 1000000)::bigint AS n FROM users");
    let out = gatehouse(&db.url).run(&["user", "reset-second-factor", "bob"]).ok().to_owned();
    assert!(out.contains("second factors removed"), "{out}");
    let factors = db::second_factors::of_user(&mut conn, bob.id).unwrap();
    assert!(!factors.any() && factors.recovery_codes_left == 0);
    let cutoff_after =
        count(&mut conn, "SELECT (extract(epoch FROM tokens_valid_after) * 1000000)::bigint AS n FROM users");
    assert!(cutoff_after > cutoff_before, "a cut-off");
    assert_eq!(events_of_kind(&db, "second_factors_reset"), 1);
    gatehouse(&db.url).run(&["user", "reset-second-factor", "nobody"]).failure();
}

#[test]
fn user_list_searches_and_limits_and_prints_everyone_by_default() {
    let db = TestDb::create();
    diesel::sql_query(
        "INSERT INTO users (id, username, email, password_hash) \
         SELECT gen_random_uuid(), 'member' || lpad(n::text, 4, '0'), 'm' || n || '@corp.example', 'x' \
         FROM generate_series(1, 2000) AS n",
    )
    .execute(&mut db.conn())
    .unwrap();
    let everyone = gatehouse(&db.url).run(&["user", "list"]).ok().to_owned();
    assert_eq!(everyone.lines().count(), 2001, "a header and every user");
    let found = gatehouse(&db.url).run(&["user", "list", "--search", "MEMBER001"]).ok().to_owned();
    let names: Vec<&str> = found.lines().skip(1).map(|line| line.split_whitespace().next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "member0010",
            "member0011",
            "member0012",
            "member0013",
            "member0014",
            "member0015",
            "member0016",
            "member0017",
            "member0018",
            "member0019"
        ]
    );
    let limited = gatehouse(&db.url).run(&["user", "list", "--search", "@corp", "--limit", "3"]).ok().to_owned();
    assert_eq!(limited.lines().count(), 4);
    gatehouse(&db.url).run(&["user", "list", "--limit", "0"]).usage_error();
}

#[tokio::test]
async fn every_answer_and_log_line_of_a_request_carries_its_request_id_and_so_does_its_audit_row() {
    let db = TestDb::create();
    let mut server =
        secret(gatehouse(&db.url)).env("RUST_LOG", "info").serve(&["serve", "--bind", "127.0.0.1:0"]).await;
    let client = reqwest::Client::new();
    server.until_healthy(&client).await;
    // A sane incoming id is kept; a failed sign-in is logged and audited under it.
    let failed = client
        .post(server.url("/token"))
        .header("X-Request-Id", "proxy-id.42")
        .form(&[("username", "nobody"), ("password", "wrong-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 400);
    assert_eq!(failed.headers()["x-request-id"], "proxy-id.42");
    // Anything else is replaced by an id of our own.
    let odd = client.get(server.url("/healthz")).header("X-Request-Id", "a b\"c").send().await.unwrap();
    let made = odd.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 32, "{made}");
    assert!(made.chars().all(|c| c.is_ascii_hexdigit()), "{made}");
    // A path with a quote cannot forge fields of the request line.
    let forged = client.get(server.url("/x%22%20200%200%20x")).send().await.unwrap();
    let forged_id = forged.headers()["x-request-id"].to_str().unwrap().to_owned();
    drop(client);

    server.sigterm();
    let (status, _, stderr) = server.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{stderr}");
    let request_line = stderr
        .lines()
        .find(|line| line.contains(" proxy-id.42 ") && line.contains("\"POST /token\" 400"))
        .unwrap_or_else(|| panic!("no request line with the id:\n{stderr}"));
    assert!(request_line.starts_with('[') && request_line.contains(" INFO  gatehouse::request] "), "{request_line}");
    assert!(stderr.lines().any(|line| line.contains(&made) && line.contains("\"GET /healthz\" 200")), "{stderr}");
    let forged_line = stderr.lines().find(|line| line.contains(&forged_id)).unwrap();
    assert_eq!(forged_line.matches('"').count() - forged_line.matches("\\\"").count(), 2, "{forged_line}");

    #[derive(diesel::QueryableByName)]
    struct Audited {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        request_id: Option<String>,
    }
    let rows: Vec<Audited> = diesel::sql_query("SELECT request_id FROM auth_events WHERE kind = 'login_failed'")
        .load(&mut db.conn())
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].request_id.as_deref(), Some("proxy-id.42"));
}

// ---- security notices from the command line ----

#[test]
fn the_command_line_queues_security_notices_when_mail_and_the_issuer_are_set() {
    let db = TestDb::create();
    gatehouse(&db.url)
        .stdin("old-password-1\n")
        .run(&["user", "add", "bob", "--role", "user", "--email", "bob@example.org"])
        .ok();
    let notices = |db: &TestDb| {
        count(&mut db.conn(), "SELECT count(*) AS n FROM mail_outbox WHERE recipient = 'bob@example.org'")
    };
    let with_mail = |db: &TestDb| {
        gatehouse(&db.url)
            .env("GATEHOUSE_SMTP_URL", "smtp://127.0.0.1:9")
            .env("GATEHOUSE_MAIL_FROM", "gatehouse <gatehouse@example.org>")
    };
    // Without an issuer the links of a notice would point nowhere: nothing is queued.
    with_mail(&db).stdin("new-password-2\n").run(&["user", "set-password", "bob"]).ok();
    assert_eq!(notices(&db), 0);
    let issued = |db: &TestDb| with_mail(db).env("GATEHOUSE_ISSUER", "https://id.example.com");
    issued(&db).stdin("new-password-3\n").run(&["user", "set-password", "bob"]).ok();
    issued(&db).run(&["token", "create", "bob", "--name", "ci", "--scope", "profile", "--expires-in", "7d"]).ok();
    let kinds: Vec<String> = {
        #[derive(diesel::QueryableByName)]
        struct Kind {
            #[diesel(sql_type = diesel::sql_types::Text)]
            kind: String,
        }
        diesel::sql_query("SELECT kind FROM mail_outbox ORDER BY created_at")
            .load::<Kind>(&mut db.conn())
            .unwrap()
            .into_iter()
            .map(|row| row.kind)
            .collect()
    };
    assert_eq!(kinds, ["password_changed", "pat_created"]);
    // No second factor to remove: nothing to tell.
    issued(&db).run(&["user", "reset-second-factor", "bob"]).ok();
    assert_eq!(notices(&db), 2);
}
