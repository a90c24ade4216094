//! A real load balancer in front: `deploy/nginx.conf`, run by Debian's nginx, balancing two instances on one
//! database. Clients connect from their own loopback addresses (127.0.0.5, 127.0.0.6); nginx reaches the
//! instances from 127.0.0.1, the one trusted proxy. So what the instances see is exactly what they would see
//! in production: a trusted peer and an `X-Forwarded-For` that nginx appended to.
//!
//! nginx must be installed (Debian's `nginx`; scripts/test installs it). Without it this test fails with a
//! message saying so; it never skips. `GATEHOUSE_TEST_NGINX` points to another binary if needed.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Response, header};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_token_error, spawn_pair};

const NGINX: &str = "/usr/sbin/nginx";
/// The shipped example; the test changes only ports and adds a header that names the instance that answered.
const DEPLOY_CONF: &str = include_str!("../../deploy/nginx.conf");
/// How long nginx may take to start answering before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// Both instances get the same issuer, as deploy/README.md asks, so a token from one is good on the other.
/// (Nothing ever fetches this URL.)
const ISSUER: &str = "http://gatehouse.test";

const FIRST_CLIENT: &str = "127.0.0.5";
const SECOND_CLIENT: &str = "127.0.0.6";
const FORGED: &str = "198.51.100.9";

/// A running nginx and its prefix directory (configuration, pid file, logs, temp files); nginx is stopped
/// and the directory deleted when this value is dropped, also when the test panics.
struct Nginx {
    program: PathBuf,
    process: Child,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    /// Starts nginx with deploy/nginx.conf in front of `instances`, on a free loopback port, and waits until a
    /// request goes through it to an instance.
    async fn start(instances: [&TestApp; 2]) -> Self {
        let program = std::env::var_os("GATEHOUSE_TEST_NGINX").map_or_else(|| PathBuf::from(NGINX), PathBuf::from);
        assert!(
            program.is_file(),
            "nginx is not installed ({} not found). This test runs Debian's nginx in front of two instances: \
             run scripts/test, which installs it (or `apt-get install --no-install-recommends nginx`).",
            program.display()
        );
        // The free port is found by binding port 0 and letting go of it, so another process could take it
        // before nginx binds it: then nginx exits saying so, and we try another.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let prefix = std::env::temp_dir().join(format!("gatehouse-nginx-{}", Uuid::new_v4().simple()));
            std::fs::create_dir_all(&prefix).unwrap();
            std::fs::write(prefix.join("nginx.conf"), test_config(port, instances)).unwrap();
            let process = Command::new(&program)
                .arg("-p")
                .arg(&prefix)
                .args(["-c", "nginx.conf", "-e", "error.log", "-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(prefix.join("stderr.log")).unwrap())
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
            let mut nginx = Self { program: program.clone(), process, prefix, port };
            if nginx.answers().await {
                return nginx;
            }
            let logs = nginx.logs();
            assert!(logs.contains("Address already in use"), "nginx did not start:\n{logs}");
        }
        panic!("nginx found no free port in three tries");
    }

    /// Waits until `/healthz` through nginx answers 200 (true), or until nginx exits (false). Panics if
    /// neither happens in time.
    async fn answers(&mut self) -> bool {
        let probe = Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.process.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(response) = probe.get(self.url("/healthz")).send().await
                && response.status() == 200
            {
                return true;
            }
            assert!(Instant::now() < deadline, "nginx does not pass requests on after {PATIENCE:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What nginx wrote to stderr and to its error log, for failure messages.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.prefix.join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` signals the master through the pid file; the master takes its workers down with it,
        // which killing only the master would not do.
        let _ = Command::new(&self.program)
            .arg("-p")
            .arg(&self.prefix)
            .args(["-c", "nginx.conf", "-e", "error.log", "-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// deploy/nginx.conf with nginx's port and the instances' addresses put in, and an `X-Upstream` header on
/// every answer saying which instance gave it.
fn test_config(port: u16, [first, second]: [&TestApp; 2]) -> String {
    let mut config = DEPLOY_CONF.to_owned();
    for (line, with) in [
        ("listen 127.0.0.1:8080;", format!("listen 127.0.0.1:{port};")),
        ("server 127.0.0.1:8081;", format!("server {};", host_port(first))),
        ("server 127.0.0.1:8082;", format!("server {};", host_port(second))),
        (
            "proxy_pass http://gatehouse;",
            "proxy_pass http://gatehouse;\n            add_header X-Upstream $upstream_addr always;".to_owned(),
        ),
    ] {
        assert_eq!(
            config.matches(line).count(),
            1,
            "deploy/nginx.conf should contain `{line}` once: tests/api/nginx.rs puts the test's own values there"
        );
        config = config.replace(line, &with);
    }
    config
}

/// `127.0.0.1:PORT` of an instance, as nginx's `$upstream_addr` names it.
fn host_port(app: &TestApp) -> &str {
    app.address.strip_prefix("http://").unwrap()
}

/// A client whose connections come from `address` (any 127.0.0.0/8 address is this machine on Linux).
fn client_from(address: &str) -> Client {
    Client::builder().local_address(address.parse::<IpAddr>().unwrap()).build().unwrap()
}

/// The password grant for `user` through nginx, with an `X-Forwarded-For` of the client's own if given.
async fn sign_in(nginx: &Nginx, client: &Client, user: &TestUser, forwarded_for: Option<&str>) -> Response {
    let mut request = client.post(nginx.url("/token"));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("X-Forwarded-For", forwarded_for);
    }
    request.form(&[("username", &user.username), ("password", &user.password)]).send().await.unwrap()
}

/// The instance that answered, from the `X-Upstream` header the test configuration adds.
fn upstream(response: &Response) -> String {
    response.headers().get("x-upstream").expect("an X-Upstream header").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn behind_nginx_each_client_is_audited_and_throttled_by_the_address_nginx_saw_across_both_instances() {
    let (first, second) = spawn_pair(&[
        ("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1"),
        // Burst 10, then one attempt every 6 s: far longer than this test takes, so timing cannot matter.
        ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "10"),
        ("GATEHOUSE_ISSUER", ISSUER),
    ])
    .await;
    let alice = first.alice();
    let nginx = Nginx::start([&first, &second]).await;
    let first_client = client_from(FIRST_CLIENT);
    let second_client = client_from(SECOND_CLIENT);

    // Ten sign-ins from 127.0.0.5, each claiming to be relayed for 198.51.100.9: the whole burst.
    let mut served = Vec::new();
    let mut access_token = String::new();
    for _ in 0..10 {
        let response = sign_in(&nginx, &first_client, &alice, Some(FORGED)).await;
        assert_eq!(response.status(), 200);
        served.push(upstream(&response));
        let body: Value = response.json().await.unwrap();
        access_token = body["access_token"].as_str().unwrap().to_owned();
    }
    // nginx spread them over both instances, so neither saw the whole burst by itself.
    let instances = BTreeSet::from([host_port(&first).to_owned(), host_port(&second).to_owned()]);
    assert_eq!(served.iter().cloned().collect::<BTreeSet<_>>(), instances, "served by {served:?}");

    // The eleventh is refused, whichever instance gets it: the budget is kept in PostgreSQL.
    let response = sign_in(&nginx, &first_client, &alice, Some(FORGED)).await;
    let retry_after = response.headers().get(header::RETRY_AFTER).expect("a Retry-After header").to_str().unwrap();
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "Retry-After: {retry_after}");
    assert_token_error(response, 429, "slow_down").await;

    // Another address has a budget of its own, on both instances (nginx alternates between them).
    let mut served = BTreeSet::new();
    for _ in 0..2 {
        let response = sign_in(&nginx, &second_client, &alice, None).await;
        assert_eq!(response.status(), 200);
        served.insert(upstream(&response));
    }
    assert_eq!(served, instances);

    // A token issued through one instance is good on the other.
    let mut served = BTreeSet::new();
    for _ in 0..2 {
        let response = second_client.get(nginx.url("/api/users/me")).bearer_auth(&access_token).send().await.unwrap();
        let instance = upstream(&response);
        assert_eq!(response.status(), 200, "from {instance}");
        served.insert(instance);
    }
    assert_eq!(served, instances);

    // The audit trail has the address nginx saw, never the forged one nor nginx's own.
    let events: Vec<(String, Option<String>)> =
        first.events().into_iter().map(|event| (event.kind, event.client_addr)).collect();
    assert!(events.iter().all(|(_, addr)| matches!(addr.as_deref(), Some(FIRST_CLIENT | SECOND_CLIENT))), "{events:?}");
    let logins_from = |address: &str| {
        events.iter().filter(|(kind, addr)| kind == "login_ok" && addr.as_deref() == Some(address)).count()
    };
    assert_eq!(logins_from(FIRST_CLIENT), 10, "{events:?}");
    assert_eq!(logins_from(SECOND_CLIENT), 2, "{events:?}");
}
