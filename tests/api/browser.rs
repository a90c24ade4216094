//! The website in a real browser: headless Chromium driven through chromedriver (WebDriver), doing what a
//! person does — finding fields by their labels, typing, clicking buttons and links — against the real server.
//! Every page visited is saved as a PNG under `target/screenshots/`.
//!
//! chromedriver and Chromium must be installed (Debian: `chromium-driver` and `chromium`; scripts/test installs
//! them). Without them these tests fail with a message saying so; they never skip silently.
//! `GATEHOUSE_TEST_CHROMEDRIVER` and `GATEHOUSE_TEST_CHROMIUM` point elsewhere if needed.
//!
//! Each test has its own chromedriver (on a port it picks itself) and its own throw-away Chromium profile,
//! so the tests run in parallel like the rest of the suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, spawn_app};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WINDOW: (u32, u32) = (1280, 900);
/// How long a driver may take to start or a page to show what we wait for before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// One chromedriver process and the Chromium profile directory it uses; both go away with this value,
/// even when the test panics: the browser session is ended, chromedriver is killed, the profile deleted.
struct Driver {
    process: Child,
    port: u16,
    session: Option<String>,
    profile: PathBuf,
}

impl Driver {
    /// Starts chromedriver on a free port of its choosing and waits until it answers `/status`.
    async fn start() -> Self {
        let chromedriver = program("GATEHOUSE_TEST_CHROMEDRIVER", CHROMEDRIVER);
        let mut process = Command::new(&chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start chromedriver ({}): {err}. The browser tests need Debian's `chromium-driver` \
                     and `chromium` packages (scripts/test installs them).",
                    chromedriver.display()
                )
            });
        let stdout = process.stdout.take().unwrap();
        let profile = std::env::temp_dir().join(format!("gatehouse-chromium-{}", Uuid::new_v4().simple()));
        let mut driver = Self { process, port: 0, session: None, profile };
        std::fs::create_dir_all(&driver.profile).unwrap();

        // chromedriver says "ChromeDriver was started successfully on port N." once it listens.
        // The rest of its output is drained so that it can never block on a full pipe.
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            let mut output = BufReader::new(stdout);
            let mut line = String::new();
            while output.read_line(&mut line).is_ok_and(|read| read > 0) {
                let port = line.trim().strip_prefix("ChromeDriver was started successfully on port ");
                if let Some(port) = port.and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                line.clear();
            }
        });
        driver.port = tokio::time::timeout(PATIENCE, port_rx)
            .await
            .unwrap_or_else(|_| panic!("chromedriver did not say which port it listens on within {PATIENCE:?}"))
            .unwrap_or_else(|_| panic!("chromedriver exited before listening: {:?}", driver.process.try_wait()));

        let status_url = format!("http://127.0.0.1:{}/status", driver.port);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = match reqwest::get(&status_url).await {
                Ok(response) => response.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if status.as_ref().is_some_and(|status| status["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver is not ready after {PATIENCE:?}: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `DELETE /session/{id}`, synchronously: chromedriver answers once Chromium has quit.
    fn end_session(&self, session: &str) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return };
        let _ = stream.set_read_timeout(Some(PATIENCE));
        let request = format!(
            "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read(&mut [0; 512]);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.end_session(&session);
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A headless Chromium pointed at one test server.
struct Browser {
    client: Client,
    base: String,
    // Declared last so that it is dropped after the client.
    _driver: Driver,
}

impl Browser {
    async fn open(app: &TestApp) -> Self {
        let chromium = program("GATEHOUSE_TEST_CHROMIUM", CHROMIUM);
        assert!(
            chromium.is_file(),
            "Chromium is not installed at {}. The browser tests need Debian's `chromium` and `chromium-driver` \
             packages (scripts/test installs them).",
            chromium.display()
        );
        let mut driver = Driver::start().await;

        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", driver.profile.display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), json!({ "binary": chromium, "args": args }));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|err| panic!("chromedriver could not start Chromium ({}): {err}", chromium.display()));
        driver.session = client.session_id().await.unwrap();
        Self { client, base: app.address.clone(), _driver: driver }
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The address bar without the origin: path and query.
    async fn location(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        assert_eq!(url.origin().ascii_serialization(), self.base, "the browser left the site: {url}");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the address bar shows `expected` (path and query).
    async fn wait_for_location(&self, expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let location = self.location().await;
            if location == expected {
                return;
            }
            assert!(Instant::now() < deadline, "waited for {expected}, but the browser stays at {location}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(err) => panic!("no `{css}` on {}: {err}", self.location().await),
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The form field a person finds by reading its label: the `<label>` with this text, then the
    /// element its `for` names.
    async fn field_labelled(&self, label: &str) -> Element {
        let xpath = format!("//label[normalize-space()='{label}']");
        let label_element = self.client.find(Locator::XPath(&xpath)).await.unwrap_or_else(|err| {
            panic!("no label `{label}` on the page: {err}");
        });
        let id = label_element.attr("for").await.unwrap().unwrap_or_else(|| panic!("label `{label}` has no `for`"));
        self.client.find(Locator::Id(&id)).await.unwrap()
    }

    /// An element a person finds by its visible text, inside `scope` (`header`, `main`, …).
    async fn by_text(&self, scope: &str, tag: &str, text: &str) -> Element {
        let xpath = format!("//{scope}//{tag}[normalize-space()='{text}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|err| panic!("no {tag} `{text}` in the {scope}: {err}"))
    }

    /// Types the user's name and password into the login form and presses "Sign in".
    async fn submit_login(&self, username: &str, password: &str) {
        self.field_labelled("Username").await.send_keys(username).await.unwrap();
        self.field_labelled("Password").await.send_keys(password).await.unwrap();
        self.by_text("main", "button", "Sign in").await.click().await.unwrap();
    }

    /// Signs `user` in through the login page, as a person would, and waits for the home page.
    async fn sign_in(&self, user: &TestUser) {
        self.goto("/login").await;
        self.submit_login(&user.username, &user.password).await;
        self.wait_for_location("/").await;
    }

    /// Saves the whole page (not just the window) as `target/screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        // The window is taller than what it shows of the page; grow it until the whole page fits.
        let sizes = self
            .client
            .execute("return [window.innerHeight, document.documentElement.scrollHeight]", vec![])
            .await
            .unwrap();
        let (viewport, page) = (sizes[0].as_u64().unwrap() as u32, sizes[1].as_u64().unwrap() as u32);
        if page > viewport {
            self.client.set_window_size(WINDOW.0, WINDOW.1 + page - viewport).await.unwrap();
        }
        let png = self.client.screenshot().await.unwrap();
        if page > viewport {
            self.client.set_window_size(WINDOW.0, WINDOW.1).await.unwrap();
        }
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot {name} is not a PNG");
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots");
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test]
async fn a_person_signs_in_with_the_form_and_sees_their_name_on_the_home_page() {
    let app = spawn_app().await;
    app.alice();
    let browser = Browser::open(&app).await;

    browser.goto("/login").await;
    assert_eq!(browser.client.title().await.unwrap(), "Sign in · gatehouse");
    assert_eq!(browser.text("main h1").await, "Sign in");
    browser.screenshot("login").await;

    browser.submit_login("alice", "alice-password").await;
    browser.wait_for_location("/").await;
    assert_eq!(browser.client.title().await.unwrap(), "Home · gatehouse");
    assert_eq!(browser.text("main h1").await, "Hello, Test Person");
    assert_eq!(browser.text("#username").await, "alice");
    assert_eq!(browser.text("#roles").await, "user");
    assert!(browser.by_text("header", "button", "Sign out (alice)").await.is_displayed().await.unwrap());
    browser.screenshot("home").await;

    // The browser kept the session cookie although it is `Secure` on plain http: 127.0.0.1 is
    // trustworthy. The `__Host-` prefix holds it to this host, path `/`.
    let cookie = browser.client.get_named_cookie("__Host-gatehouse_session").await.unwrap();
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site().map(|same_site| same_site.to_string()), Some("Lax".to_owned()));
}

#[tokio::test]
async fn a_wrong_password_shows_the_error_with_the_username_kept_and_the_password_empty() {
    let app = spawn_app().await;
    app.alice();
    let browser = Browser::open(&app).await;

    browser.goto("/login").await;
    browser.submit_login("alice", "not-her-password").await;

    let alert = browser.find("[role=alert]").await;
    assert_eq!(alert.text().await.unwrap(), "Incorrect username or password.");
    assert!(alert.is_displayed().await.unwrap());
    assert_eq!(browser.location().await, "/login");
    let username = browser.field_labelled("Username").await;
    assert_eq!(username.prop("value").await.unwrap().as_deref(), Some("alice"));
    let password = browser.field_labelled("Password").await;
    assert_eq!(password.prop("value").await.unwrap().as_deref(), Some(""));
    browser.screenshot("login-error").await;

    // Still signed out: home sends the person back to the login page.
    browser.goto("/").await;
    browser.wait_for_location("/login?next=%2F").await;
}

#[tokio::test]
async fn an_admin_opens_the_statistics_from_the_header_and_sees_both_charts_and_the_events() {
    let app = spawn_app().await;
    let admin = app.admin();
    let browser = Browser::open(&app).await;
    browser.sign_in(&admin).await;

    browser.by_text("header", "a", "Statistics").await.click().await.unwrap();
    browser.wait_for_location("/admin/stats").await;
    assert_eq!(browser.client.title().await.unwrap(), "Statistics · gatehouse");
    assert_eq!(browser.text("main h1").await, "Statistics");

    for chart in ["#chart-hourly", "#chart-daily"] {
        let svg = browser.find(&format!("{chart} svg")).await;
        assert!(svg.is_displayed().await.unwrap(), "{chart} is not visible");
        let (_, _, width, height) = svg.rectangle().await.unwrap();
        assert!(width > 300.0 && height > 80.0, "{chart} is drawn {width}×{height}");
        // The admin's own sign-in a moment ago is a visible bar.
        let mut bar_heights = Vec::new();
        for bar in browser.client.find_all(Locator::Css(&format!("{chart} rect.bar-ok"))).await.unwrap() {
            bar_heights.push(bar.attr("height").await.unwrap().unwrap().parse::<f64>().unwrap());
        }
        assert_eq!(bar_heights.iter().filter(|height| **height > 0.0).count(), 1, "{chart}: {bar_heights:?}");
    }

    let events = browser.find("table#events").await;
    assert!(events.is_displayed().await.unwrap());
    let mut rows = Vec::new();
    for row in events.find_all(Locator::Css("tbody tr")).await.unwrap() {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.unwrap() {
            cells.push(cell.text().await.unwrap());
        }
        rows.push(cells);
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1..5], ["login_ok", "web", "root-admin", "127.0.0.1"], "{rows:?}");
    browser.screenshot("admin-stats").await;
}

#[tokio::test]
async fn a_plain_user_who_opens_the_statistics_page_sees_the_403_page() {
    let app = spawn_app().await;
    let alice = app.alice();
    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;
    assert!(
        browser.client.find(Locator::XPath("//header//a[normalize-space()='Statistics']")).await.is_err(),
        "a plain user is offered the statistics link"
    );

    browser.goto("/admin/stats").await;
    assert_eq!(browser.location().await, "/admin/stats");
    assert_eq!(browser.client.title().await.unwrap(), "Forbidden · gatehouse");
    assert_eq!(browser.text("main .status-code").await, "403");
    assert_eq!(browser.text("main h1").await, "Forbidden");
    assert!(browser.text("main").await.contains("You do not have access to this page."));
    assert!(browser.client.find(Locator::Css("#chart-hourly")).await.is_err(), "the forbidden page shows a chart");
    browser.screenshot("forbidden").await;
}

#[tokio::test]
async fn signing_out_with_the_header_button_returns_to_the_login_page_and_home_asks_to_sign_in_again() {
    let app = spawn_app().await;
    let alice = app.alice();
    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;

    browser.by_text("header", "button", "Sign out (alice)").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    assert_eq!(browser.text("main h1").await, "Sign in");
    assert!(browser.by_text("header", "a", "Sign in").await.is_displayed().await.unwrap());

    browser.goto("/").await;
    browser.wait_for_location("/login?next=%2F").await;
    assert_eq!(browser.text("main h1").await, "Sign in");
}

/// Swagger UI: press Authorize, run the password flow, then "Try it out" on two endpoints.
#[tokio::test]
async fn swagger_ui_authorizes_with_the_password_flow_and_calls_the_api() {
    let app = spawn_app().await;
    app.alice();
    let browser = Browser::open(&app).await;

    browser.goto("/docs").await;
    browser.wait_for_location("/docs/").await;
    browser.find(".swagger-ui .btn.authorize").await.click().await.unwrap();
    browser.find("#oauth_username").await.send_keys("alice").await.unwrap();
    browser.find("#oauth_password").await.send_keys("alice-password").await.unwrap();
    // The scopes are offered as checkboxes; the user ones come ticked.
    let checkboxes = browser.client.find_all(Locator::Css(".modal-ux input[type=checkbox]")).await.unwrap();
    assert!(checkboxes.len() >= 5, "expected a checkbox per scope, found {}", checkboxes.len());
    browser.screenshot("docs-authorize").await;
    browser.find(".modal-ux .auth-btn-wrapper .btn.modal-btn.auth.authorize").await.click().await.unwrap();
    // Authorized: the dialog now offers to log out.
    browser.find(".modal-ux .auth-btn-wrapper .btn.modal-btn.auth:not(.authorize)").await;
    browser.find(".modal-ux .btn-done").await.click().await.unwrap();

    assert_eq!(try_it_out(&browser, "#operations-users-me").await, "200");
    let body = shown_response(&browser, "#operations-users-me").await;
    assert!(body.contains("\"username\": \"alice\""), "{body}");
    browser.screenshot("docs-users-me").await;

    assert_eq!(try_it_out(&browser, "#operations-admin-stats").await, "403");
    let answer = shown_response(&browser, "#operations-admin-stats").await;
    assert!(answer.to_lowercase().contains("www-authenticate: bearer error=\"insufficient_scope\""), "{answer}");
}

/// Opens an operation, presses "Try it out" and "Execute", and returns the status shown.
async fn try_it_out(browser: &Browser, operation: &str) -> String {
    browser.find(&format!("{operation} .opblock-summary")).await.click().await.unwrap();
    browser.find(&format!("{operation} .try-out__btn")).await.click().await.unwrap();
    browser.find(&format!("{operation} .btn.execute")).await.click().await.unwrap();
    browser.text(&format!("{operation} .live-responses-table .response .response-col_status")).await
}

/// Everything the page shows of the live response (body and headers), as text.
async fn shown_response(browser: &Browser, operation: &str) -> String {
    let column = browser.find(&format!("{operation} .live-responses-table .response .response-col_description")).await;
    column.prop("textContent").await.unwrap().unwrap_or_default()
}
