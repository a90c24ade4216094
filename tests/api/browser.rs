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
    /// Starts chromedriver on a free port of its choosing and waits until it answers `/status`. Under
    /// the load of the whole suite a chromedriver has been seen to exit before it listened: up to
    /// three tries.
    async fn start() -> Self {
        for attempt in 1..=3 {
            match Self::try_start().await {
                Ok(driver) => return driver,
                Err(why) if attempt < 3 => eprintln!("chromedriver, try {attempt} of 3: {why}"),
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the third try returns or panics")
    }

    async fn try_start() -> Result<Self, String> {
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
        driver.port = match tokio::time::timeout(PATIENCE, port_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => {
                // Its output ended: it is exiting, if it has not exited yet.
                let exit = driver.process.try_wait();
                return Err(format!("chromedriver exited before listening: {exit:?}"));
            }
            Err(_) => return Err(format!("chromedriver did not say which port it listens on within {PATIENCE:?}")),
        };

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
            if Instant::now() >= deadline {
                return Err(format!("chromedriver is not ready after {PATIENCE:?}: {status:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(driver)
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

    /// Waits until nothing matches `css` any more (a closing dialog's backdrop, say).
    async fn wait_until_gone(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{css} never went away");
            tokio::time::sleep(Duration::from_millis(25)).await;
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

    /// Waits until the element `css` finds reads `expected`: right after a click, the page it
    /// leads to may still be loading, and an element of the old page would answer.
    async fn wait_for_text(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text == expected {
                return;
            }
            assert!(Instant::now() < deadline, "waited for `{css}` to read {expected:?}, but it reads {text:?}");
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
    // The dialog fades out: a click before its backdrop is gone would land on the backdrop.
    browser.wait_until_gone(".backdrop-ux").await;

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

// --- Administration and self-service (issue #13) ---

/// A password the strength estimate lets through.
const STRONG: &str = "velvet-otter-sings-47";

impl Browser {
    /// Ticks or unticks the checkbox whose label (wrapping it) reads `label`.
    async fn set_checkbox(&self, label: &str, ticked: bool) {
        let xpath = format!("//label[normalize-space()='{label}']/input[@type='checkbox']");
        let checkbox =
            self.client.find(Locator::XPath(&xpath)).await.unwrap_or_else(|err| panic!("no checkbox {label}: {err}"));
        if checkbox.is_selected().await.unwrap() != ticked {
            checkbox.click().await.unwrap();
        }
    }

    async fn type_into(&self, label: &str, text: &str) {
        let field = self.field_labelled(label).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn notice(&self) -> String {
        self.text("main .notice").await
    }

    /// The cells of every body row of the table with this id.
    async fn rows(&self, table: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for row in self.client.find_all(Locator::Css(&format!("table#{table} tbody tr"))).await.unwrap() {
            let mut cells = Vec::new();
            for cell in row.find_all(Locator::Css("td")).await.unwrap() {
                cells.push(cell.text().await.unwrap());
            }
            rows.push(cells);
        }
        rows
    }
}

#[tokio::test]
async fn an_admin_creates_a_user_makes_them_admin_deactivates_them_resets_their_password_and_finds_it_in_the_audit_trail()
 {
    let app = spawn_app().await;
    let admin = app.admin();
    let browser = Browser::open(&app).await;
    browser.sign_in(&admin).await;

    browser.by_text("header", "a", "Users").await.click().await.unwrap();
    browser.wait_for_location("/admin/users").await;
    assert_eq!(browser.text("main h1").await, "Users");

    // A too-short password is named next to its field; what was typed (but the password) stays.
    browser.type_into("Username", "bob").await;
    browser.type_into("Email", "bob@example.org").await;
    browser.type_into("Full name", "Bob Builder").await;
    browser.type_into("Password", "short").await;
    browser.type_into("Password again", "short").await;
    browser.set_checkbox("user", true).await;
    browser.by_text("main", "button", "Create user").await.click().await.unwrap();
    assert_eq!(browser.text("#new-password-error").await, "Password must be at least 8 characters.");
    assert_eq!(browser.field_labelled("Username").await.prop("value").await.unwrap().as_deref(), Some("bob"));
    assert_eq!(browser.field_labelled("Password").await.prop("value").await.unwrap().as_deref(), Some(""));
    browser.screenshot("admin-users-error").await;

    browser.type_into("Password", STRONG).await;
    browser.type_into("Password again", STRONG).await;
    browser.by_text("main", "button", "Create user").await.click().await.unwrap();
    browser.wait_for_location("/admin/users/bob?done=created").await;
    assert_eq!(browser.notice().await, "The user was created.");
    assert_eq!(browser.text("#roles").await, "user");

    browser.set_checkbox("admin", true).await;
    browser.by_text("main", "button", "Save roles").await.click().await.unwrap();
    browser.wait_for_location("/admin/users/bob?done=roles").await;
    assert_eq!(browser.text("#roles").await, "admin user");

    browser.by_text("main", "button", "Deactivate").await.click().await.unwrap();
    browser.wait_for_location("/admin/users/bob?done=deactivated").await;
    assert_eq!(browser.text("#active").await, "no");

    browser.type_into("New password", "a-brand-new-velvet-otter").await;
    browser.type_into("New password again", "a-brand-new-velvet-otter").await;
    browser.by_text("main", "button", "Set password").await.click().await.unwrap();
    browser.wait_for_location("/admin/users/bob?done=password").await;
    assert!(browser.notice().await.starts_with("The password was set"));
    browser.screenshot("admin-user").await;

    // The list finds bob by part of his email address.
    browser.by_text("main", "a", "Users").await.click().await.unwrap();
    browser.type_into("Username or email contains", "BOB@example").await;
    browser.by_text("main", "button", "Search").await.click().await.unwrap();
    browser.wait_for_location("/admin/users?q=BOB%40example").await;
    let rows = browser.rows("users").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][..5], ["bob", "bob@example.org", "Bob Builder", "admin, user", "no"], "{rows:?}");
    browser.type_into("Username or email contains", "").await;
    browser.by_text("main", "button", "Search").await.click().await.unwrap();
    browser.screenshot("admin-users").await;

    browser.by_text("main", "a", "Audit trail").await.click().await.unwrap();
    browser.wait_for_location("/admin/audit").await;
    browser.type_into("User", "bob").await;
    browser.by_text("main", "button", "Show events").await.click().await.unwrap();
    browser.wait_for_location("/admin/audit?user=bob&kind=&from=&until=").await;
    let kinds: Vec<String> = browser.rows("events").await.into_iter().map(|row| row[1].clone()).collect();
    assert_eq!(kinds, ["password_changed", "deactivated", "roles_changed", "user_created"]);
    let deactivation = browser.rows("events").await.into_iter().find(|row| row[1] == "deactivated").unwrap();
    assert_eq!(deactivation[2..6], ["web", "bob", "root-admin", "127.0.0.1"], "{deactivation:?}");
    browser.screenshot("admin-audit").await;
}

#[tokio::test]
async fn a_person_ends_another_session_and_changes_their_password_on_the_account_page() {
    let app = spawn_app().await;
    let alice = app.alice();
    // Another device: alice signed in elsewhere (a plain HTTP client with its own cookies).
    let phone = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("PhoneBrowser/1.0")
        .build()
        .unwrap();
    let form = phone.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let start = form.find(marker).unwrap() + marker.len();
    let csrf = &form[start..start + form[start..].find('"').unwrap()];
    let fields = [("csrf_token", csrf), ("username", "alice"), ("password", "alice-password")];
    assert_eq!(phone.post(app.url("/login")).form(&fields).send().await.unwrap().status(), 303);
    let tokens = app.login(&alice, None).await;

    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;
    browser.by_text("header", "a", "Account").await.click().await.unwrap();
    browser.wait_for_location("/account").await;
    let sessions = browser.rows("sessions").await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let this_one = sessions.iter().position(|row| row[4].contains("this session")).unwrap();
    assert!(sessions[1 - this_one][1].contains("PhoneBrowser/1.0"), "{sessions:?}");
    assert_eq!(browser.rows("families").await.len(), 1);
    browser.screenshot("account").await;

    browser.by_text("main", "button", "End session").await.click().await.unwrap();
    browser.wait_for_location("/account?done=session-ended").await;
    assert_eq!(browser.notice().await, "The session was ended.");
    assert_eq!(browser.rows("sessions").await.len(), 1);
    assert_eq!(phone.get(app.url("/account")).send().await.unwrap().status(), 303, "the phone is signed out");

    // A weak new password is refused next to its field, with the estimator's advice.
    browser.type_into("Current password", "alice-password").await;
    browser.type_into("New password", "password123").await;
    browser.type_into("New password again", "password123").await;
    browser.by_text("main", "button", "Change password").await.click().await.unwrap();
    let advice = browser.text("#new-password-error").await;
    assert!(advice.starts_with("This password is too easy to guess"), "{advice}");
    browser.screenshot("account-password-error").await;

    browser.type_into("Current password", "alice-password").await;
    browser.type_into("New password", STRONG).await;
    browser.type_into("New password again", STRONG).await;
    browser.by_text("main", "button", "Change password").await.click().await.unwrap();
    browser.wait_for_location("/account?done=password-changed").await;
    assert!(browser.notice().await.starts_with("Your password was changed."));
    // Still signed in here; the refresh token of before is dead.
    assert_eq!(browser.rows("sessions").await.len(), 1);
    assert!(browser.rows("families").await[0][0].contains("No live refresh tokens"));
    assert_eq!(app.refresh(tokens["refresh_token"].as_str().unwrap(), None).await.status(), 400);
    browser.goto("/").await;
    browser.wait_for_location("/").await;
}

#[tokio::test]
async fn an_admin_registers_a_client_copies_its_secret_once_rotates_it_and_removes_the_client() {
    let app = spawn_app().await;
    let admin = app.admin();
    let browser = Browser::open(&app).await;
    browser.sign_in(&admin).await;

    browser.by_text("header", "a", "Clients").await.click().await.unwrap();
    browser.wait_for_location("/admin/clients").await;
    assert_eq!(browser.text("main h1").await, "Clients");

    // A redirect URI with a fragment is refused with the reason; the name typed stays.
    browser.type_into("Name", "reports").await;
    browser.set_checkbox("tokens:introspect", true).await;
    browser.type_into("Redirect URIs (one a line)", "https://reports.example/cb#x").await;
    browser.by_text("main", "button", "Register client").await.click().await.unwrap();
    assert!(browser.text("#create-error").await.contains("fragment"));
    assert_eq!(browser.field_labelled("Name").await.prop("value").await.unwrap().as_deref(), Some("reports"));

    browser.type_into("Redirect URIs (one a line)", "").await;
    browser.by_text("main", "button", "Register client").await.click().await.unwrap();
    assert_eq!(browser.text("#secret-heading").await, "Client registered");
    let client_id = browser.field_labelled("client_id").await.prop("value").await.unwrap().unwrap();
    let secret = browser.field_labelled("client_secret").await.prop("value").await.unwrap().unwrap();
    assert!(client_id.starts_with("gc_") && secret.starts_with("gcs_"));
    let rows = browser.rows("clients").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..5],
        ["reports", client_id.as_str(), "confidential", "client_credentials", "tokens:introspect"]
    );
    browser.screenshot("admin-clients").await;
    let token = app
        .client
        .post(app.url("/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);

    browser.by_text("main", "button", "Rotate secret").await.click().await.unwrap();
    browser.wait_for_text("#secret-heading", "New secret").await;
    let rotated = browser.field_labelled("client_secret").await.prop("value").await.unwrap().unwrap();
    assert_ne!(rotated, secret);

    browser.by_text("main", "button", "Remove").await.click().await.unwrap();
    browser.wait_for_location("/admin/clients?done=removed").await;
    assert!(browser.notice().await.starts_with("The client was removed"));
    assert_eq!(browser.rows("clients").await[0][0], "No clients are registered.");
}

impl Browser {
    /// Sends keys to whatever has the focus, as a person typing does.
    async fn press(&self, keys: &str) {
        self.client.active_element().await.unwrap().send_keys(keys).await.unwrap();
    }
}

#[tokio::test]
async fn a_person_makes_a_personal_access_token_with_the_keyboard_alone_copies_it_and_revokes_it() {
    use fantoccini::key::Key;
    let app = spawn_app().await;
    let alice = app.alice();
    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;
    browser.goto("/account").await;
    browser.by_text("main", "a", "Manage your personal access tokens").await.click().await.unwrap();
    browser.wait_for_location("/account/tokens").await;
    assert_eq!(browser.text("main h1").await, "Personal access tokens");

    // Keyboard only: type the name, Tab through the scope checkboxes to profile, Space ticks it, Tab
    // past the rest to the expiry, pick 7 days by typing, Tab to the button, Enter.
    let offered: Vec<String> = browser.texts("fieldset.checks label").await;
    let profile = offered.iter().position(|scope| scope == "profile").unwrap_or_else(|| panic!("{offered:?}"));
    let name = browser.field_labelled("Name").await;
    name.send_keys("ci deploy").await.unwrap();
    for _ in 0..=profile {
        browser.press(&Key::Tab.to_string()).await;
    }
    browser.press(" ").await;
    for _ in profile..offered.len() {
        browser.press(&Key::Tab.to_string()).await;
    }
    browser.press("7").await;
    browser.press(&Key::Tab.to_string()).await;
    browser.screenshot("account-tokens-form").await;
    browser.press(&Key::Enter.to_string()).await;

    let shown = browser.field_labelled("Token").await;
    let token = shown.prop("value").await.unwrap().unwrap();
    assert!(token.starts_with("gth_") && token.len() == 40, "{token}");
    assert_eq!(shown.attr("readonly").await.unwrap().as_deref(), Some("true"));
    browser.screenshot("account-tokens-new").await;
    let me: Value = app.get("/api/users/me", Some(&token)).await.json().await.unwrap();
    assert_eq!(me["scopes"], json!(["profile"]));
    let expires: Value = app.get("/api/users/me/tokens", Some(&token)).await.json().await.unwrap();
    let (created, expires) = (expires[0]["created_at"].as_str().unwrap(), expires[0]["expires_at"].as_str().unwrap());
    let at = |text: &str| text.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let days = at(expires) - at(created);
    assert_eq!(days, chrono::Duration::days(7));

    // Shown once: the list names it but never shows it again.
    browser.goto("/account/tokens").await;
    let rows = browser.rows("tokens").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str(), rows[0][6].as_str()), ("ci deploy", "profile", "live"));
    browser.by_text("main", "button", "Revoke").await.click().await.unwrap();
    browser.wait_for_location("/account/tokens?done=revoked").await;
    assert_eq!(browser.notice().await, "The token was revoked; it no longer works.");
    browser.screenshot("account-tokens").await;
    assert_eq!(app.get("/api/users/me", Some(&token)).await.status(), 401);
}

#[tokio::test]
async fn a_person_adds_an_authenticator_app_keeps_the_recovery_codes_and_signs_in_with_a_code() {
    use gatehouse::auth::second_factor::totp;
    let app = spawn_app().await;
    let alice = app.alice();
    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;
    browser.goto("/account").await;
    browser.by_text("main", "a", "Add an authenticator app").await.click().await.unwrap();
    browser.wait_for_location("/account/second-factor").await;
    browser.field_labelled("Current password").await.send_keys(&alice.password).await.unwrap();
    browser.by_text("main", "button", "Continue").await.click().await.unwrap();

    // The QR code is drawn on the page; the key is there to type by hand, as a person would.
    browser.find(".qr svg").await;
    browser.screenshot("second-factor-qr").await;
    let key = browser.text("#totp-secret").await.replace(' ', "");
    let secret = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &key).unwrap();
    let now = || u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let code = totp::code_at(&secret, now()).unwrap();
    browser.field_labelled("The 6-digit code the app shows").await.send_keys(&code).await.unwrap();
    browser.by_text("main", "button", "Turn on").await.click().await.unwrap();
    browser.wait_for_text("main h1", "Your recovery codes").await;
    let codes = browser.client.find_all(Locator::Css("#recovery-codes li")).await.unwrap();
    assert_eq!(codes.len(), 10);
    browser.screenshot("recovery-codes").await;

    // Signing in again: the password, then the code of the next step (this one is spent).
    browser.by_text("header", "button", "Sign out (alice)").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    browser.submit_login(&alice.username, &alice.password).await;
    browser.wait_for_location("/login/verify").await;
    browser.screenshot("login-verify").await;
    let next = totp::code_at(&secret, now() + 30).unwrap();
    browser.field_labelled("Code").await.send_keys(&next).await.unwrap();
    browser.by_text("main", "button", "Verify").await.click().await.unwrap();
    browser.wait_for_location("/").await;
    browser.goto("/account").await;
    assert!(browser.text("#two-step-status").await.contains("10 recovery codes left"));
}

/// chromedriver's WebAuthn extension (W3C WebAuthn §11.3): a virtual authenticator for this session.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/webauthn/authenticator", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        // A platform authenticator that keeps discoverable credentials and verifies its user (a PIN
        // or a fingerprint), answering every request at once.
        let body = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// A passkey added on the account page signs in without a password, serves as the second step after
/// one, and a sign-in ceremony begun on one instance finishes on another (once).
#[tokio::test]
async fn a_person_adds_a_passkey_and_signs_in_with_it_on_either_instance() {
    use crate::helpers::{TestDb, spawn_on_localhost};
    let db = std::sync::Arc::new(TestDb::create());
    let first = spawn_on_localhost(std::sync::Arc::clone(&db), None, &[]).await;
    let issuer = first.address.clone();
    let second = spawn_on_localhost(db, Some(&issuer), &[]).await;
    let alice = first.alice();
    let browser = Browser::open(&first).await;
    browser.client.issue_cmd(AddVirtualAuthenticator).await.unwrap();

    browser.sign_in(&alice).await;
    browser.goto("/account/second-factor").await;
    browser.field_labelled("Name of the new passkey").await.send_keys("laptop").await.unwrap();
    // A wrong password adds nothing, and says so.
    let password = browser.field_labelled("Your current password, to add a passkey").await;
    password.send_keys("not-the-password").await.unwrap();
    browser.by_text("main", "button", "Add a passkey").await.click().await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while browser.text("#passkey-status").await.is_empty() {
        assert!(Instant::now() < deadline, "no message after a wrong password");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(browser.text("#passkey-status").await, "This is not your current password.");
    password.clear().await.unwrap();
    password.send_keys(&alice.password).await.unwrap();
    browser.by_text("main", "button", "Add a passkey").await.click().await.unwrap();
    browser.wait_for_location("/account/second-factor?done=passkey-added").await;
    let rows = browser.rows("passkeys").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "laptop");
    browser.screenshot("passkeys").await;

    // Without a password: "Sign in with a passkey" on the login page.
    browser.by_text("header", "button", "Sign out (alice)").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    browser.by_text("main", "button", "Sign in with a passkey").await.click().await.unwrap();
    browser.wait_for_location("/").await;
    assert!(browser.text("main").await.contains("alice"));

    // After the password, the passkey is the second step.
    browser.by_text("header", "button", "Sign out (alice)").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    browser.submit_login(&alice.username, &alice.password).await;
    browser.wait_for_location("/login/verify").await;
    browser.screenshot("login-verify-passkey").await;
    browser.by_text("main", "button", "Use a passkey").await.click().await.unwrap();
    browser.wait_for_location("/").await;
    let used = first
        .events()
        .iter()
        .filter(|e| e.kind == "second_factor_used" && e.detail.as_deref() == Some("passkey"))
        .count();
    assert_eq!(used, 2);

    // Begun on the first instance, finished on the second: the ceremony lives in PostgreSQL.
    let api =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = api.get(first.url("/login")).send().await.unwrap().text().await.unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let start = page.find(marker).unwrap() + marker.len();
    let csrf = &page[start..start + page[start..].find('"').unwrap()];
    let begun: Value = api
        .post(first.url("/login/passkey/begin"))
        .header("X-CSRF-Token", csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let script = "const [options, done] = arguments; \
                  navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey) }) \
                    .then(credential => done(credential.toJSON()), error => done(String(error)));";
    let credential = browser.client.execute_async(script, vec![begun["options"].clone()]).await.unwrap();
    assert!(credential.is_object(), "the authenticator answered: {credential}");
    let finish = json!({ "ceremony": begun["ceremony"], "credential": credential });
    let finished = api.post(second.url("/login/passkey/finish")).header("X-CSRF-Token", csrf).json(&finish).send();
    let finished = finished.await.unwrap();
    assert_eq!(finished.status(), 200);
    assert_eq!(finished.json::<Value>().await.unwrap(), json!({ "redirect": "/" }));
    let home = api.get(second.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200, "signed in on the second instance");
    // A ceremony finishes once (asked with the signed-in session's new CSRF token).
    let home = home.text().await.unwrap();
    let start = home.find(marker).unwrap() + marker.len();
    let csrf = &home[start..start + home[start..].find('"').unwrap()];
    let again = api.post(second.url("/login/passkey/finish")).header("X-CSRF-Token", csrf).json(&finish).send();
    assert_eq!(again.await.unwrap().status(), 400);
}

#[tokio::test]
async fn a_person_who_forgot_their_password_resets_it_from_the_mailed_link() {
    use crate::mail::{SmtpServer, link_in, mail_settings};
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let settings = mail_settings(&smtp);
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let app = crate::helpers::spawn_app_with(&overrides).await;
    let alice = app.alice();
    let browser = Browser::open(&app).await;
    browser.goto("/login").await;
    browser.by_text("main", "a", "Forgot your password?").await.click().await.unwrap();
    browser.wait_for_location("/password-reset").await;
    browser.field_labelled("Username or email address").await.send_keys("alice@example.org").await.unwrap();
    browser.by_text("main", "button", "Send the link").await.click().await.unwrap();
    assert!(browser.text("#reset-sent").await.contains("If an account matches"));
    browser.screenshot("password-reset").await;

    let mail = smtp.wait_for(1, Duration::from_secs(15)).await.remove(0);
    let link = link_in(&mail, &app);
    browser.goto(&link).await;
    browser.field_labelled("New password").await.send_keys(STRONG).await.unwrap();
    browser.field_labelled("New password again").await.send_keys(STRONG).await.unwrap();
    browser.screenshot("password-reset-form").await;
    browser.by_text("main", "button", "Set the new password").await.click().await.unwrap();
    assert!(browser.text("#reset-done").await.contains("Your password was changed"));
    browser.by_text("main", "a", "Sign in").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    browser.submit_login(&alice.username, STRONG).await;
    browser.wait_for_location("/").await;
}

#[tokio::test]
async fn a_person_changes_their_email_address_through_the_mailed_link_and_an_invited_user_chooses_a_password() {
    use crate::mail::{SmtpServer, mail_settings};
    let smtp = SmtpServer::start_on(SmtpServer::free_port());
    let settings = mail_settings(&smtp);
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let app = crate::helpers::spawn_app_with(&overrides).await;
    let alice = app.alice();
    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;
    browser.goto("/account").await;
    let name = browser.field_labelled("Full name").await;
    name.clear().await.unwrap();
    name.send_keys("Alice Liddell").await.unwrap();
    let email = browser.field_labelled("Email address").await;
    email.clear().await.unwrap();
    email.send_keys("alice.new@example.org").await.unwrap();
    let password = browser.field_labelled("Current password (only to change your email address)").await;
    password.send_keys(&alice.password).await.unwrap();
    browser.screenshot("account-profile").await;
    browser.by_text("main", "button", "Save profile").await.click().await.unwrap();
    browser.wait_for_location("/account?done=email-pending").await;
    assert!(browser.notice().await.starts_with("A link was mailed to the new address"));
    assert_eq!(browser.text("#email").await, "alice@example.org not verified", "the old address until the link");

    let mails = smtp.wait_for(2, Duration::from_secs(15)).await;
    let confirmation = mails.iter().find(|mail| mail.contains("To: alice.new@example.org")).unwrap();
    let prefix = format!("{}/email-confirm/", app.address);
    let start = confirmation.find(&prefix).unwrap() + app.address.len();
    let link: String = confirmation[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
    browser.goto(&link).await;
    browser.screenshot("email-confirm").await;
    browser.by_text("main", "button", "Confirm this address").await.click().await.unwrap();
    assert!(browser.text("#email-confirmed").await.contains("alice.new@example.org"));
    browser.goto("/account").await;
    assert_eq!(browser.text("#email").await, "alice.new@example.org verified");

    // An invitation opens the same kind of form, in its own words.
    let admin = app.admin();
    let admin_token = app.access_token(&admin, Some("admin:users")).await;
    let body = json!({"username": "carol", "email": "carol@example.org", "roles": ["user"]});
    assert_eq!(app.post_json("/api/admin/users", Some(&admin_token), &body).await.status(), 201);
    let mails = smtp.wait_for(3, Duration::from_secs(15)).await;
    let invitation = mails.iter().find(|mail| mail.contains("To: carol@example.org")).unwrap();
    let prefix = format!("{}/invitation/", app.address);
    let start = invitation.find(&prefix).unwrap() + app.address.len();
    let link: String = invitation[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
    browser.by_text("header", "button", "Sign out (alice)").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    browser.goto(&link).await;
    browser.field_labelled("Password").await.send_keys(STRONG).await.unwrap();
    browser.field_labelled("Password again").await.send_keys(STRONG).await.unwrap();
    browser.screenshot("invitation").await;
    browser.by_text("main", "button", "Set my password").await.click().await.unwrap();
    assert!(browser.text("#reset-done").await.contains("Your password was set"));
    browser.by_text("main", "a", "Sign in").await.click().await.unwrap();
    browser.wait_for_location("/login").await;
    browser.submit_login("carol", STRONG).await;
    browser.wait_for_location("/").await;
}

// --- Sign in with gatehouse ---

/// A public app allowed `openid profile`, registered as `gatehouse client add` would; no `grants`: the default.
fn register_app(app: &TestApp, name: &str, grants: &[&str], redirect_uris: &[String]) -> String {
    use gatehouse::accounts::{Actor, clients};
    let draft = gatehouse::domain::ClientDraft {
        name: name.to_owned(),
        public: true,
        scopes: vec!["openid".to_owned(), "profile".to_owned()],
        grants: grants.iter().map(|grant| (*grant).to_owned()).collect(),
        redirect_uris: redirect_uris.to_vec(),
        ..gatehouse::domain::ClientDraft::default()
    };
    let registered = clients::register(&mut app.db.conn(), &Actor::command_line(), draft, chrono::Utc::now()).unwrap();
    registered.client.client_id
}

impl Browser {
    /// Waits until the browser arrives at `path` (whatever the query) and returns the whole address.
    async fn wait_for_path(&self, path: &str) -> url::Url {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let url = self.client.current_url().await.unwrap();
            if url.path() == path {
                return url;
            }
            assert!(Instant::now() < deadline, "waited for {path}, but the browser stays at {url}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The text of each element matching `css`, in page order.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }
}

#[tokio::test]
async fn a_person_signs_in_to_an_app_through_gatehouse_allows_it_and_disconnects_it_from_the_account_page() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let app = spawn_app().await;
    let alice = app.alice();
    // The app's redirect URI is a path of gatehouse itself that answers 404, under another name, so
    // another origin (as an app's is): the browser only has to get there. Chromium holds the redirects
    // after the consent form to the page's CSP `form-action`, so this also proves the pages allow it.
    let redirect_uri = app.url("/callback-of-the-app").replace("127.0.0.1", "localhost");
    let client_id = register_app(&app, "Photo Album", &[], std::slice::from_ref(&redirect_uri));

    // What the app puts in the link: PKCE (RFC 7636, S256), a state and a nonce of its own.
    let verifier = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&verifier));
    let state = Uuid::new_v4().simple().to_string();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid profile")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("nonce", &Uuid::new_v4().simple().to_string())
        .finish();
    let authorize = format!("/authorize?{query}");

    let browser = Browser::open(&app).await;
    browser.goto(&authorize).await;
    assert!(browser.location().await.starts_with("/login?next="), "{}", browser.location().await);
    browser.submit_login(&alice.username, &alice.password).await;

    browser.find("#consent").await;
    assert_eq!(browser.location().await, authorize, "back at the request after signing in");
    assert_eq!(browser.text("#consent-client").await, "Photo Album");
    assert_eq!(browser.texts("#consent-scopes li code").await, ["openid", "profile"]);
    browser.screenshot("consent").await;
    browser.find("#consent-allow").await.click().await.unwrap();

    let arrived = browser.wait_for_path("/callback-of-the-app").await;
    let answer: Vec<(String, String)> = arrived.query_pairs().into_owned().collect();
    let mut names: Vec<&str> = answer.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["code", "iss", "state"], "{arrived}");
    let value = |name: &str| answer.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone()).unwrap();
    assert!(!value("code").is_empty());
    assert_eq!(value("state"), state);
    assert_eq!(value("iss"), app.address);

    // The app trades the code for tokens, as it would behind the redirect URI.
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", &value("code")),
        ("redirect_uri", &redirect_uri),
        ("client_id", &client_id),
        ("code_verifier", &verifier),
    ];
    let tokens = app.post_token(&fields).await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();

    browser.goto("/account").await;
    let apps = browser.rows("connected-apps").await;
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(apps[0][..2], ["Photo Album", "openid profile"], "{apps:?}");
    let families = browser.rows("families").await;
    assert_eq!((families.len(), families[0][0].as_str()), (1, "openid profile"), "the app's refresh token");
    browser.screenshot("connected-apps").await;
    browser.by_text("main", "button", "Disconnect").await.click().await.unwrap();
    browser.wait_for_location("/account?done=app-disconnected").await;
    assert_eq!(
        browser.notice().await,
        "The app was disconnected: its refresh tokens ended, and it asks again next time."
    );
    assert_eq!(browser.rows("connected-apps").await, [["No connected apps."]]);
    assert_eq!(browser.rows("families").await, [["No live refresh tokens."]]);
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", &refresh_token), ("client_id", &client_id)];
    crate::helpers::assert_token_error(app.post_token(&refresh).await, 400, "invalid_grant").await;

    // The same link again: the consent was forgotten, so the question comes back.
    browser.goto(&authorize).await;
    browser.find("#consent").await;
    assert_eq!(browser.location().await, authorize);
    assert_eq!(browser.text("#consent-client").await, "Photo Album");
}

#[tokio::test]
async fn a_person_connects_a_device_by_typing_its_code() {
    let app = spawn_app().await;
    let alice = app.alice();
    let device_grant = "urn:ietf:params:oauth:grant-type:device_code";
    let client_id = register_app(&app, "Living Room TV", &[device_grant, "refresh_token"], &[]);

    // The device asks for a code and shows it (RFC 8628 §3.1–3.2).
    let started = crate::oidc::start_device(&app, &client_id, Some("openid profile")).await;
    let user_code = started["user_code"].as_str().unwrap().to_owned();
    assert!(
        user_code.len() == 9
            && user_code.chars().enumerate().all(|(at, c)| if at == 4 { c == '-' } else { c.is_ascii_uppercase() }),
        "{user_code}"
    );
    assert_eq!(started["verification_uri"], format!("{}/device", app.address));
    assert_eq!(started["verification_uri_complete"], format!("{}/device?user_code={user_code}", app.address));
    let interval = Duration::from_secs(started["interval"].as_u64().unwrap());
    assert_eq!(interval, Duration::from_secs(5));
    let poll = [
        ("grant_type", device_grant),
        ("device_code", started["device_code"].as_str().unwrap()),
        ("client_id", &client_id),
    ];
    crate::helpers::assert_token_error(app.post_token(&poll).await, 400, "authorization_pending").await;
    let polled = Instant::now();

    // The person types the code on their phone as it comes: lower case, no dash.
    let browser = Browser::open(&app).await;
    browser.sign_in(&alice).await;
    browser.goto("/device").await;
    let typed = user_code.replace('-', "").to_lowercase();
    browser.field_labelled("Code").await.send_keys(&typed).await.unwrap();
    browser.find("#device-continue").await.click().await.unwrap();
    assert_eq!(browser.text("#device-client").await, "Living Room TV");
    assert_eq!(browser.text("#device-code").await, user_code);
    assert_eq!(browser.texts("#device-scopes li code").await, ["openid", "profile"]);
    browser.screenshot("device").await;
    browser.find("#device-allow").await.click().await.unwrap();
    assert_eq!(browser.text("#device-done").await, "Done: the device is connected. You can return to it now.");

    // The device's next poll, an interval after the last one, brings the tokens; the code is spent.
    tokio::time::sleep_until((polled + interval).into()).await;
    let tokens = app.post_token(&poll).await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    for field in ["access_token", "refresh_token", "id_token"] {
        assert!(tokens[field].as_str().is_some_and(|token| !token.is_empty()), "no {field}: {tokens}");
    }
    assert_eq!(tokens["scope"], "openid profile");
    crate::helpers::assert_token_error(app.post_token(&poll).await, 400, "invalid_grant").await;
}
