//! A database outage: the server answers 503 instead of crashing or hanging, and recovers by itself
//! when the database returns. The outage is staged on a private PostgreSQL cluster started for the
//! test, so the shared server the other tests use is never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Response, header};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, spawn_app_on};

/// The longest a request may take while the database is down before it counts as hanging.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long the server may take to notice that the database is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(15);

/// A throw-away PostgreSQL cluster in a temporary directory, on its own port. Dropping it stops the
/// server and deletes the directory, whether the test passed or not.
struct PrivateCluster {
    root: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: the tools then run as the `postgres` OS user.
    as_postgres: bool,
}

/// How many ports to try before giving up: a port that was free when picked may be taken by the
/// time PostgreSQL binds it (other tests and other engineers' builds run on this machine too).
const PORT_ATTEMPTS: usize = 5;

impl PrivateCluster {
    fn start_new() -> Self {
        let root = std::env::temp_dir().join(format!("gatehouse-outage-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root).unwrap();
        let as_postgres = stdout_of(Command::new("id").arg("-u")) == "0";
        let mut cluster = Self { root, bindir: postgres_bindir(), port: unused_port(), as_postgres };
        if as_postgres {
            let chown = Command::new("chown").arg("postgres:postgres").arg(&cluster.root).status().unwrap();
            assert!(chown.success(), "cannot hand {} to the postgres user", cluster.root.display());
        }
        let data = cluster.data_dir();
        cluster.tool("initdb", &["-D", path_str(&data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
        for attempt in 1..=PORT_ATTEMPTS {
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(failure) if failure.port_taken && attempt < PORT_ATTEMPTS => cluster.port = unused_port(),
                Err(failure) => {
                    panic!("the private PostgreSQL did not start on port {}: {}", cluster.port, failure.text)
                }
            }
        }
        unreachable!("the loop above returns or panics")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server URL without a database name, as `TestDb::create_on` takes it.
    fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the port it had (after [`crash`](Self::crash)).
    fn start(&self) {
        if let Err(failure) = self.try_start() {
            panic!("the private PostgreSQL did not restart on port {}: {}", self.port, failure.text);
        }
    }

    fn try_start(&self) -> Result<(), StartFailure> {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, path_str(&self.root));
        // A log per start, so a failure is read from this start's log only.
        let log = self.root.join(format!("server-{}.log", self.port));
        let _ = std::fs::remove_file(&log);
        let data = self.data_dir();
        let args = ["-w", "-t", "30", "-D", path_str(&data), "-l", path_str(&log), "-o", &options, "start"];
        let output = self.command("pg_ctl", &args).output().unwrap();
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(StartFailure {
            port_taken: log.contains("Address already in use"),
            text: format!("{}\n{log}", String::from_utf8_lossy(&output.stderr)),
        })
    }

    /// Stops the server the hard way, as a crash or a pulled cable would.
    fn crash(&self) {
        self.tool("pg_ctl", &["-w", "-D", path_str(&self.data_dir()), "-m", "immediate", "stop"]);
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root); panics unless it succeeds.
    fn tool(&self, program: &str, args: &[&str]) -> Output {
        let output = self.command(program, args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.root.join(format!("server-{}.log", self.port))).unwrap_or_default()
        );
        output
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bindir.join(program);
        let mut command = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        // A directory the postgres user may enter, so the tools can resolve relative paths.
        command.args(args).current_dir(&self.root).stdin(Stdio::null());
        command
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let data = self.data_dir();
            let _ = self.command("pg_ctl", &["-w", "-D", path_str(&data), "-m", "immediate", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Why `pg_ctl start` failed.
struct StartFailure {
    /// Another process had the port by the time PostgreSQL tried to bind it.
    port_taken: bool,
    text: String,
}

/// A port nothing listens on right now (it may be taken before PostgreSQL binds it: see
/// [`PORT_ATTEMPTS`]).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?} failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Where `initdb` and `pg_ctl` live: `pg_config --bindir`, else the newest Debian-style install.
fn postgres_bindir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return dir;
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(Result::ok).map(|entry| entry.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.retain(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists());
    candidates.sort_by_key(|dir| {
        dir.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    candidates.pop().expect("initdb and pg_ctl (PostgreSQL server binaries) are needed for the outage test")
}

/// A request that must be answered promptly, database or not.
async fn promptly(request: impl Future<Output = Response>, what: &str) -> Response {
    tokio::time::timeout(ANSWER_WITHIN, request)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {ANSWER_WITHIN:?} during the outage"))
}

/// The outage answer to an API client: 503 JSON, and `Retry-After: 5`.
async fn assert_unavailable_json(response: Response) -> Value {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "body: {body}");
    body
}

async fn password_grant(app: &TestApp) -> Response {
    app.post_token(&[("grant_type", "password"), ("username", "alice"), ("password", "alice-password")]).await
}

#[tokio::test]
async fn a_database_outage_answers_503_and_the_server_recovers_by_itself() {
    // Declared first so it is dropped last: the app and its database go before the cluster stops.
    let cluster = PrivateCluster::start_new();
    let app = spawn_app_on(TestDb::create_on(&cluster.server_url()), &[]).await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    assert_eq!(app.get("/api/users/me", Some(&token)).await.status(), 200);

    cluster.crash();

    let ready = promptly(app.get("/readyz", None), "/readyz").await;
    assert_unavailable_json(ready).await;

    let me = promptly(app.get("/api/users/me", Some(&token)), "/api/users/me").await;
    assert_unavailable_json(me).await;

    // Many at once, as on a busy server (their lookups share batches): each answers 503 promptly,
    // none queues behind the failures of the others.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let request = app.client.get(app.url("/api/users/me")).bearer_auth(&token).send();
        burst.spawn(async move {
            let response = request.await.unwrap();
            let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
            (response.status().as_u16(), retry_after)
        });
    }
    let answers = tokio::time::timeout(ANSWER_WITHIN, burst.join_all())
        .await
        .unwrap_or_else(|_| panic!("40 concurrent /api/users/me took longer than {ANSWER_WITHIN:?} during the outage"));
    assert!(answers.iter().all(|answer| *answer == (503, Some("5".to_owned()))), "{answers:?}");

    let login = promptly(password_grant(&app), "/token").await;
    assert_eq!(login.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(login.headers()[header::PRAGMA], "no-cache");
    assert_unavailable_json(login).await;

    let health = promptly(app.get("/healthz", None), "/healthz").await;
    assert_eq!(health.status(), 200);

    cluster.start();

    let since = Instant::now();
    loop {
        let ready = app.get("/readyz", None).await;
        if ready.status() == 200 {
            break;
        }
        assert_eq!(ready.status(), 503);
        assert_eq!(ready.headers()[header::RETRY_AFTER], "5");
        assert!(
            since.elapsed() < RECOVER_WITHIN,
            "/readyz still not 200 {RECOVER_WITHIN:?} after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let me = app.get("/api/users/me", Some(&token)).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], "alice");

    let login = password_grant(&app).await;
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.unwrap();
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/users/me", Some(fresh)).await.status(), 200);

    // The app (and the database it owns) must be dropped while the cluster still runs.
    drop(app);
    drop(cluster);
}

#[tokio::test]
async fn during_a_database_outage_pages_answer_the_html_503_page_without_its_cause() {
    // Declared first so it is dropped last, as above.
    let cluster = PrivateCluster::start_new();
    let app = spawn_app_on(TestDb::create_on(&cluster.server_url()), &[]).await;
    app.alice();
    crate::web::signed_in(&app, &app.client, "alice", "alice-password").await;
    assert_eq!(app.get("/", None).await.status(), 200);

    cluster.crash();

    // A signed-in browser: its session lives in the database, so every page needs it.
    for path in ["/", "/login"] {
        let response = promptly(app.get(path, None), path).await;
        assert_eq!(response.headers()[header::RETRY_AFTER], "5", "GET {path}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store", "GET {path}");
        let body = crate::web::html_page(response, 503).await;
        assert!(body.contains("<h1>Temporarily unavailable</h1>"), "GET {path}: {body}");
        assert!(
            body.contains("<p>The service is temporarily unavailable. Please try again in a moment.</p>"),
            "GET {path}: {body}"
        );
        let cluster_address = format!("127.0.0.1:{}", cluster.port);
        for cause in ["session", "database", "connect", "postgres", "refused", "closed", "error:", &cluster_address] {
            assert!(!body.to_lowercase().contains(cause), "GET {path} tells the cause ({cause:?}): {body}");
        }
    }

    drop(app);
    drop(cluster);
}
