//! The password-hashing pool: a bounded queue shared fairly, and threads whose priorities really are
//! what the design relies on (read back from /proc, also for an unprivileged process).

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::header;
use serde_json::Value;

use crate::helpers::{JWT_SECRET, TestApp, assert_token_error, spawn_app_with};

const TRUST_LOOPBACK: (&str, &str) = ("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1");
const NO_THROTTLE: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0");

/// A password grant for `username` from the client address `from` (through a trusted proxy).
fn sign_in_from(app: &TestApp, username: &str, password: &str, from: &str) -> reqwest::RequestBuilder {
    app.client.post(app.url("/token")).header("X-Forwarded-For", from).form(&[
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
    ])
}

async fn wait_for_queue(app: &TestApp, waiting: usize) {
    for _ in 0..500 {
        if app.state.grants.hasher.waiting() == waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the hashing queue never held {waiting}");
}

async fn assert_busy(response: reqwest::Response) {
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    let body = assert_token_error(response, 503, "temporarily_unavailable").await;
    assert_eq!(body["error_description"], "Too many sign-ins are waiting to be checked; try again in 5 seconds");
}

/// One client (an address, or everyone trying one username) over its share sent too many: `429`
/// with a short `Retry-After`, held back a moment so a loop of retries stays slow, and worded so
/// it tells nothing of whether the account exists.
async fn assert_over_share(response: reqwest::Response) {
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let body = assert_token_error(response, 429, "slow_down").await;
    assert_eq!(
        body["error_description"],
        "Too many sign-ins from this address or for this username are waiting; try again in 1 seconds"
    );
}

#[tokio::test]
async fn beyond_the_queue_sign_ins_get_503_within_a_moment_and_those_queued_still_get_through() {
    let app = spawn_app_with(&[("GATEHOUSE_HASH_QUEUE", "2"), TRUST_LOOPBACK, NO_THROTTLE]).await;
    for name in ["ann", "ben", "cat"] {
        app.create_user(name, &format!("{name}-password"), &["user"]);
    }
    let paused = app.state.grants.hasher.pause();
    let first = tokio::spawn(sign_in_from(&app, "ann", "ann-password", "198.51.100.1").send());
    let second = tokio::spawn(sign_in_from(&app, "ben", "ben-password", "198.51.100.2").send());
    wait_for_queue(&app, 2).await;

    // Full: the third is told within a moment (held back half a second each, so that a client
    // retrying at once does not spin), on the API and on the sign-in page.
    let started = std::time::Instant::now();
    assert_busy(sign_in_from(&app, "cat", "cat-password", "198.51.100.3").send().await.unwrap()).await;
    let form = app.client.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let csrf = form.split(r#"name="csrf_token" value=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    let page = app
        .client
        .post(app.url("/login"))
        .header("X-Forwarded-For", "198.51.100.4")
        .form(&[("csrf_token", csrf.as_str()), ("username", "cat"), ("password", "cat-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert_eq!(page.headers()[header::RETRY_AFTER], "5");
    assert!(page.text().await.unwrap().contains("Too many people are signing in right now"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "refused without waiting for the queue: {took:?}");
    assert!(took >= gatehouse::auth::credentials::SHED_HOLD * 2, "each refusal held back: {took:?}");

    drop(paused);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
    // A refusal is no verdict: nothing was recorded as a failed sign-in.
    assert!(app.events().iter().all(|event| event.kind != "login_failed"));
}

#[tokio::test]
async fn one_client_address_cannot_hold_more_than_its_share_of_the_queue() {
    // 16 places: one address or one account may hold two.
    let app = spawn_app_with(&[("GATEHOUSE_HASH_QUEUE", "16"), TRUST_LOOPBACK, NO_THROTTLE]).await;
    for name in ["ann", "ben", "cat", "dan"] {
        app.create_user(name, &format!("{name}-password"), &["user"]);
    }
    let paused = app.state.grants.hasher.pause();
    let flood: Vec<_> = ["ann", "ben"]
        .into_iter()
        .map(|name| tokio::spawn(sign_in_from(&app, name, &format!("{name}-password"), "203.0.113.9").send()))
        .collect();
    wait_for_queue(&app, 2).await;
    assert_over_share(sign_in_from(&app, "cat", "cat-password", "203.0.113.9").send().await.unwrap()).await;
    // The same address's /64 neighbour is another client only for IPv4; a real user elsewhere gets in.
    let real_user = tokio::spawn(sign_in_from(&app, "dan", "dan-password", "192.0.2.77").send());
    wait_for_queue(&app, 3).await;
    drop(paused);
    for login in flood {
        assert_eq!(login.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(real_user.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn one_account_cannot_hold_more_than_its_share_of_the_queue_from_many_addresses() {
    let app = spawn_app_with(&[("GATEHOUSE_HASH_QUEUE", "16"), TRUST_LOOPBACK, NO_THROTTLE]).await;
    let alice = app.alice();
    app.create_user("bob", "bob-password", &["user"]);
    let paused = app.state.grants.hasher.pause();
    let guesses: Vec<_> = (1..=2)
        .map(|i| tokio::spawn(sign_in_from(&app, "alice", "wrong-password", &format!("198.51.100.{i}")).send()))
        .collect();
    wait_for_queue(&app, 2).await;
    assert_over_share(sign_in_from(&app, "ALICE", &alice.password, "198.51.100.3").send().await.unwrap()).await;
    let bob = tokio::spawn(sign_in_from(&app, "bob", "bob-password", "198.51.100.4").send());
    wait_for_queue(&app, 3).await;
    drop(paused);
    for guess in guesses {
        let body: Value = guess.await.unwrap().unwrap().json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }
    assert_eq!(bob.await.unwrap().unwrap().status(), 200);
}

/// `(name, nice, scheduling policy)` of every thread of process `pid` named like `prefix*`.
/// The threads whose name starts with `prefix`, with their nice value and scheduling policy. Linux
/// lists `/proc/<pid>/task` by position, so a scan that races with threads exiting (a busy test
/// process, a server starting its workers) can skip live ones: scans are repeated until one finds some.
fn threads_named(pid: &str, prefix: &str) -> Vec<(String, i64, u64)> {
    for _ in 0..100 {
        let found = scan_threads_named(pid, prefix);
        if !found.is_empty() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Vec::new()
}

fn scan_threads_named(pid: &str, prefix: &str) -> Vec<(String, i64, u64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (comm) state …`: comm may hold spaces; fields after it are space-separated.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Field 3 is the state; nice is field 19 and the policy field 41 of proc(5).
        let nice: i64 = fields[19 - 3].parse().unwrap();
        let policy: u64 = fields[41 - 3].parse().unwrap();
        found.push((name, nice, policy));
    }
    found
}

const SCHED_OTHER: u64 = 0;
const SCHED_IDLE: u64 = 5;

#[tokio::test]
async fn spare_hashing_threads_run_at_idle_priority_and_the_floor_at_normal() {
    let app = spawn_app_with(&[]).await;
    // Threads set their own priority as they start.
    for _ in 0..200 {
        if app.state.grants.hasher.spare_priority().is_some()
            || std::thread::available_parallelism().unwrap().get() == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let floors = threads_named("self", "hash-floor");
    assert!(!floors.is_empty());
    assert!(floors.iter().all(|(_, nice, policy)| *nice == 0 && *policy == SCHED_OTHER), "{floors:?}");
    if std::thread::available_parallelism().unwrap().get() > 1 {
        let spares = threads_named("self", "hash-spare-");
        assert!(!spares.is_empty());
        assert!(spares.iter().all(|(_, _, policy)| *policy == SCHED_IDLE), "{spares:?}");
        assert_eq!(app.state.grants.hasher.spare_priority(), Some(gatehouse::auth::password::SparePriority::Idle));
    }
}

/// Root may do what a service account may not: the released binary, started as `nobody`, must still
/// get its spare threads to idle priority.
#[tokio::test]
async fn an_unprivileged_server_still_lowers_its_spare_hashing_threads() {
    if std::thread::available_parallelism().unwrap().get() == 1 {
        return; // one core: no spare threads
    }
    let db = crate::helpers::TestDb::create();
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0");
    let mut command = if is_root {
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", env!("CARGO_BIN_EXE_gatehouse")]);
        setpriv
    } else {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
    };
    let mut server = command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("GATEHOUSE_JWT_SECRET", JWT_SECRET)
        .env("GATEHOUSE_BCRYPT_COST", "4")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The whole log is read to its end, not just up to "listening on": a server whose stderr pipe
    // was closed under it could fail on its next line, and the log says why if it stops.
    let stderr = server.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let listening =
        tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(60)).is_ok()).await.unwrap();
    let pid = server.id().to_string();
    let spares = threads_named(&pid, "hash-spare-");
    let floors = threads_named(&pid, "hash-floor");
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    let exited = server.try_wait().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let log = log.join().unwrap();
    assert!(listening, "the server started: {log:#?}");
    assert_eq!(exited, None, "the server kept running: {log:#?}");
    if is_root {
        assert!(uid.split_whitespace().nth(1) == Some("65534"), "ran as nobody: {uid}");
    }
    assert!(!spares.is_empty() && spares.iter().all(|(_, _, policy)| *policy == SCHED_IDLE), "{spares:?}");
    assert!(floors.iter().all(|(_, nice, policy)| *nice == 0 && *policy == SCHED_OTHER), "{floors:?}");
}
