//! Mail through a real SMTP server (Debian's aiosmtpd, run by the test on a free port, writing each
//! mail it accepts to a maildir): "Forgot your password?" end to end, an SMTP outage, two instances
//! sharing the outbox, and a crashed instance's lease.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use gatehouse::db;
use tokio::sync::Barrier;

use crate::helpers::{TestApp, spawn_app_with, spawn_pair};
use crate::web::{browser, hidden_value};

const STRONG: &str = "velvet-otter-sings-47";

/// An SMTP server that keeps what it accepts in `dir`; stopped when dropped.
pub(crate) struct SmtpServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    pub(crate) fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    pub(crate) fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("gatehouse-mail-{}", uuid::Uuid::new_v4()));
        let mut server = Self { child: None, port, dir };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &listen, "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's python3-aiosmtpd (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start on {listen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail accepted so far, decoded from quoted-printable (soft line breaks joined).
    fn mails(&self) -> Vec<String> {
        let mut found = Vec::new();
        for folder in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(folder)) else { continue };
            for entry in entries {
                let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                found.push(raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="));
            }
        }
        found
    }

    /// Waits until `count` mails arrived (or fails after `patience`).
    pub(crate) async fn wait_for(&self, count: usize, patience: Duration) -> Vec<String> {
        let deadline = Instant::now() + patience;
        loop {
            let mails = self.mails();
            if mails.len() >= count {
                return mails;
            }
            assert!(Instant::now() < deadline, "{} of {count} mails arrived", mails.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn mail_settings(smtp: &SmtpServer) -> Vec<(&'static str, String)> {
    vec![
        ("GATEHOUSE_SMTP_URL", smtp.url()),
        ("GATEHOUSE_MAIL_FROM", "gatehouse <gatehouse@example.org>".to_owned()),
        ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0".to_owned()),
    ]
}

pub(crate) async fn spawn_with_mail(smtp: &SmtpServer) -> TestApp {
    let settings = mail_settings(smtp);
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(name, value)| (*name, value.as_str())).collect();
    spawn_app_with(&overrides).await
}

/// The reset link in a mail: `{issuer}/password-reset/{token}`.
pub(crate) fn link_in(mail: &str, app: &TestApp) -> String {
    let prefix = format!("{}/password-reset/", app.address);
    let start = mail.find(&prefix).unwrap_or_else(|| panic!("no link in:\n{mail}"));
    let token: String = mail[start + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("/password-reset/{token}")
}

pub(crate) async fn ask_for_a_link(app: &TestApp, client: &reqwest::Client, who: &str) -> (u16, String) {
    let page = client.get(app.url("/password-reset")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let response = client
        .post(app.url("/password-reset"))
        .form(&[("csrf_token", csrf.as_str()), ("username_or_email", who)])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn outbox_states(app: &TestApp) -> Vec<(String, Option<String>)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        body_text: Option<String>,
    }
    diesel::sql_query("SELECT state, body_text FROM mail_outbox ORDER BY created_at")
        .load::<Row>(&mut app.db.conn())
        .unwrap()
        .into_iter()
        .map(|row| (row.state, row.body_text))
        .collect()
}

/// The outbox once every mail in it is marked sent (or after ten seconds, as it is then): the SMTP
/// server holds a mail a moment before its sender has recorded the delivery.
async fn outbox_once_sent(app: &TestApp) -> Vec<(String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states = outbox_states(app);
        if states.iter().all(|(state, _)| state == "sent") || Instant::now() >= deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_forgotten_password_is_reset_through_the_mailed_link() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let alice = app.alice();
    let old_token = app.access_token(&alice, Some("profile")).await;
    let client = browser();
    let login = client.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    assert!(login.contains(r#"<a href="/password-reset">Forgot your password?</a>"#), "{login}");

    let (status, page) = ask_for_a_link(&app, &client, "alice").await;
    assert_eq!(status, 200);
    assert!(page.contains("If an account matches"), "{page}");
    let mails = smtp.wait_for(1, Duration::from_secs(15)).await;
    let mail = &mails[0];
    assert!(mail.contains("To: alice@example.org"), "{mail}");
    assert!(mail.contains("Subject: Reset your 127.0.0.1 password"), "{mail}");
    let link = link_in(mail, &app);
    // Delivered: the body (with its link) is gone from the outbox.
    assert_eq!(outbox_once_sent(&app).await, [("sent".to_owned(), None)]);

    // Opening the link (a mail scanner, or the person twice) spends nothing.
    for _ in 0..2 {
        let form = client.get(app.url(&link)).send().await.unwrap();
        assert_eq!(form.status(), 200);
        assert!(form.text().await.unwrap().contains("Choose a new password"));
    }
    let page = client.get(app.url(&link)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let weak = client
        .post(app.url(&link))
        .form(&[("csrf_token", csrf.as_str()), ("new_password", "password"), ("new_password_again", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 400, "zxcvbn refuses it; the link still works");
    let done = client
        .post(app.url(&link))
        .form(&[("csrf_token", csrf.as_str()), ("new_password", STRONG), ("new_password_again", STRONG)])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Your password was changed"));
    // A cut-off: the old token is dead, the old password too; the new one signs in. Not signed in here.
    assert_eq!(app.get("/api/users/me", Some(&old_token)).await.status(), 401);
    let old = app.post_token(&[("username", "alice"), ("password", alice.password.as_str())]).await;
    assert_eq!(old.status(), 400);
    assert_eq!(app.post_token(&[("username", "alice"), ("password", STRONG)]).await.status(), 200);
    assert_eq!(client.get(app.url("/account")).send().await.unwrap().status(), 303);
    // Used once.
    let again = client
        .post(app.url(&link))
        .form(&[("csrf_token", csrf.as_str()), ("new_password", STRONG), ("new_password_again", STRONG)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert_eq!(client.get(app.url(&link)).send().await.unwrap().status(), 400);
    // And a notice of the change.
    let mails = smtp.wait_for(2, Duration::from_secs(15)).await;
    assert!(mails.iter().any(|mail| mail.contains("Subject: Your 127.0.0.1 password was changed")), "{mails:?}");
}

#[tokio::test]
async fn an_unknown_account_gets_the_same_answer_and_no_mail_and_without_smtp_there_is_no_reset() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    app.alice();
    let client = browser();
    let (known_status, known) = ask_for_a_link(&app, &client, "alice@example.org").await;
    let (unknown_status, unknown) = ask_for_a_link(&app, &client, "nobody@example.org").await;
    assert_eq!((known_status, unknown_status), (200, 200));
    assert_eq!(known, unknown, "byte for byte");
    smtp.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.mails().len(), 1, "a mail for the account that exists only");
    // Three reset mails an hour per account, at most.
    for _ in 0..4 {
        ask_for_a_link(&app, &client, "alice").await;
    }
    smtp.wait_for(3, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.mails().len(), 3);

    let plain = spawn_app_with(&[]).await;
    assert_eq!(plain.client.get(plain.url("/password-reset")).send().await.unwrap().status(), 404);
    let login = plain.client.get(plain.url("/login")).send().await.unwrap().text().await.unwrap();
    assert!(!login.contains("Forgot your password?"));
}

#[tokio::test]
async fn the_same_link_raced_ten_times_sets_the_password_once() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = Arc::new(spawn_with_mail(&smtp).await);
    app.alice();
    let client = browser();
    ask_for_a_link(&app, &client, "alice").await;
    let link = link_in(&smtp.wait_for(1, Duration::from_secs(15)).await[0], &app);
    let page = client.get(app.url(&link)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let barrier = Arc::new(Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let (app, client, link, csrf, barrier) =
                (Arc::clone(&app), client.clone(), link.clone(), csrf.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let password = format!("{STRONG}-{n}");
                barrier.wait().await;
                let form =
                    [("csrf_token", csrf.as_str()), ("new_password", &password), ("new_password_again", &password)];
                client.post(app.url(&link)).form(&form).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|status| *status == 200 || *status == 400), "{statuses:?}");
    let changes = app.events().iter().filter(|event| event.kind == "password_changed").count();
    assert_eq!(changes, 1);
}

#[tokio::test]
async fn mail_waits_out_an_smtp_outage_and_goes_out_once() {
    let port = SmtpServer::free_port();
    let mut smtp = SmtpServer::start_on(port);
    smtp.stop();
    let app = spawn_with_mail(&smtp).await;
    app.alice();
    let client = browser();
    ask_for_a_link(&app, &client, "alice").await;
    // The first attempt fails (nothing listens) and is put off for 30 seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        #[derive(diesel::QueryableByName)]
        struct Attempts {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            attempts: i32,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            last_error: Option<String>,
        }
        let rows: Vec<Attempts> =
            diesel::sql_query("SELECT attempts, last_error FROM mail_outbox").load(&mut app.db.conn()).unwrap();
        if rows.first().is_some_and(|row| row.attempts >= 1 && row.last_error.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "the failed attempt was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbox_states(&app)[0].0, "pending");
    // The server comes back; the retry is due now (rather than wait out the backoff in a test).
    smtp.restart();
    diesel::sql_query("UPDATE mail_outbox SET next_attempt_at = now()").execute(&mut app.db.conn()).unwrap();
    smtp.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.mails().len(), 1, "once");
    assert_eq!(outbox_once_sent(&app).await, [("sent".to_owned(), None)]);
}

/// Fifty mails queued at once, two instances delivering: fifty arrive, none twice.
#[tokio::test]
async fn two_instances_deliver_fifty_queued_mails_once_each() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let settings = mail_settings(&smtp);
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let (first, _second) = spawn_pair(&overrides).await;
    let mut conn = first.db.conn();
    for n in 0..50 {
        let mail = db::outbox::NewMail {
            kind: "test",
            user_id: None,
            recipient: format!("person{n}@example.org"),
            subject: format!("mail number {n}"),
            body_text: "hello".to_owned(),
            body_html: "<p>hello</p>".to_owned(),
        };
        db::outbox::queue(&mut conn, &mail).unwrap();
    }
    let mails = smtp.wait_for(50, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mails = if smtp.mails().len() > mails.len() { smtp.mails() } else { mails };
    let mut subjects: Vec<String> = mails
        .iter()
        .filter_map(|mail| mail.lines().find(|line| line.starts_with("Subject: ")).map(str::to_owned))
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!((mails.len(), subjects.len()), (50, 50));
}

/// A row leased by an instance that died mid-send waits out the lease, then the living one sends it.
#[tokio::test]
async fn a_mail_held_by_a_crashed_instance_is_delivered_once_its_lease_ends() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let mail = db::outbox::NewMail {
        kind: "test",
        user_id: None,
        recipient: "person@example.org".to_owned(),
        subject: "held".to_owned(),
        body_text: "hello".to_owned(),
        body_html: "<p>hello</p>".to_owned(),
    };
    let mut conn = app.db.conn();
    // As the crashed instance left it: leased (for 3 more seconds), one attempt started.
    diesel::sql_query("BEGIN").execute(&mut conn).unwrap();
    let id = db::outbox::queue(&mut conn, &mail).unwrap();
    diesel::sql_query(format!(
        "UPDATE mail_outbox SET leased_until = now() + interval '3 seconds', attempts = 1 WHERE id = '{id}'"
    ))
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query("COMMIT").execute(&mut conn).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(smtp.mails().is_empty(), "not while the lease holds");
    smtp.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(outbox_once_sent(&app).await, [("sent".to_owned(), None)]);
}

/// Changing one's own password on `/account` mails a notice (queued with the change).
#[tokio::test]
async fn a_password_change_on_the_account_page_mails_a_notice() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let alice = app.alice();
    let client = browser();
    crate::web::signed_in(&app, &client, &alice.username, &alice.password).await;
    let account = client.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&account, "csrf_token").unwrap();
    let form = [
        ("csrf_token", csrf.as_str()),
        ("current_password", alice.password.as_str()),
        ("new_password", STRONG),
        ("new_password_again", STRONG),
    ];
    let changed = client.post(app.url("/account/password")).form(&form).send().await.unwrap();
    assert_eq!(changed.status(), 303);
    let mails = smtp.wait_for(1, Duration::from_secs(15)).await;
    assert!(mails[0].contains("Subject: Your 127.0.0.1 password was changed"), "{}", mails[0]);
    assert!(mails[0].contains("To: alice@example.org"));
}

/// An admin mails a user a reset link from the user's page.
#[tokio::test]
async fn an_admin_sends_a_user_a_reset_link() {
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let app = spawn_with_mail(&smtp).await;
    let admin = app.admin();
    app.alice();
    let client = browser();
    crate::web::signed_in(&app, &client, &admin.username, &admin.password).await;
    let page = client.get(app.url("/admin/users/alice")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Send a password-reset link"), "{page}");
    let csrf = hidden_value(&page, "csrf_token").unwrap();
    let sent = client.post(app.url("/admin/users/alice/password-reset")).form(&[("csrf_token", csrf.as_str())]).send();
    let sent = sent.await.unwrap();
    assert_eq!(sent.status(), 303);
    assert_eq!(sent.headers()["location"], "/admin/users/alice?done=reset-link-sent");
    let mail = smtp.wait_for(1, Duration::from_secs(15)).await.remove(0);
    assert!(mail.contains("To: alice@example.org"));
    let link = link_in(&mail, &app);
    assert_eq!(client.get(app.url(&link)).send().await.unwrap().status(), 200);
    let requested =
        app.events().iter().filter(|e| e.kind == "password_reset_requested" && e.actor_id == Some(admin.id)).count();
    assert_eq!(requested, 1);
}
