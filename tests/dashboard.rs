//! The dashboard in a real browser: Debian's headless Chromium, driven over
//! the Chrome DevTools Protocol, loads the page from a real daemon and must
//! show a run triggered from the CLI without reloading.
//!
//! Without `chromium` on PATH these tests fail (run `scripts/test`, which
//! installs it) unless `MULTIJOB_SKIP_BROWSER=1` says to skip them. With
//! `MULTIJOB_DASHBOARD_SCREENSHOTS=DIR` they also save screenshots there.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon, http_full};
use serde_json::{Value, json};

const JOB: &str = "id: hello\ntype: noop\ndescription: Says hello when asked.\n";

// ----------------------------------------------------------------- HTTP

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[test]
fn the_page_and_its_assets_are_served_fresh() {
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    let daemon = Daemon::start(d.path(), &[]);
    let (code, headers, body) = http_full(&daemon.url, "GET", "/", &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    let etag = header(&headers, "etag").to_string();
    assert!(!etag.is_empty());
    // Asset links carry the content hash, so a new binary is never served stale JS.
    let version = etag.trim_matches('"');
    assert!(
        body.contains(&format!("/assets/app.js?v={version}")),
        "{body}"
    );
    for (path, ty) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let (code, headers, body) = http_full(&daemon.url, "GET", path, &[]);
        assert_eq!(code, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), ty, "{path}");
        assert_eq!(header(&headers, "cache-control"), "no-cache", "{path}");
        assert!(!body.is_empty());
        // Revalidation: unchanged assets answer 304.
        let (code, _, _) = http_full(&daemon.url, "GET", path, &[("If-None-Match", &etag)]);
        assert_eq!(code, 304, "{path}");
    }
    let (code, _, _) = http_full(&daemon.url, "GET", "/assets/nope.js", &[]);
    assert_eq!(code, 404);
    let (code, _, _) = http_full(&daemon.url, "POST", "/", &[]);
    assert_eq!(code, 405);
}

#[test]
fn with_a_token_the_page_loads_but_its_data_needs_the_token() {
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    let daemon = Daemon::start_env(d.path(), &[], &[("MULTIJOB_API_TOKEN", "s3cret/+=")]);
    let get = |path: &str, headers: &[(&str, &str)]| http_full(&daemon.url, "GET", path, headers).0;
    assert_eq!(get("/", &[]), 200);
    assert_eq!(get("/assets/app.js", &[]), 200);
    assert_eq!(get("/assets/style.css", &[]), 200);
    assert_eq!(get("/api/v1/jobs", &[]), 401);
    assert_eq!(
        get("/api/v1/jobs", &[("Authorization", "Bearer s3cret/+=")]),
        200
    );
    // EventSource cannot send headers: the event stream alone takes the
    // token in its query string (percent-encoded).
    assert_eq!(get("/api/v1/events?access_token=s3cret%2F%2B%3D", &[]), 200);
    assert_eq!(get("/api/v1/events?access_token=wrong", &[]), 401);
    assert_eq!(get("/api/v1/jobs?access_token=s3cret%2F%2B%3D", &[]), 401);
    assert_eq!(get("/api/v1/status?access_token=s3cret%2F%2B%3D", &[]), 401);
}

// -------------------------------------------------------------- browser

/// One browser at a time: two cores, and Chromium is heavy.
static BROWSER_LOCK: Mutex<()> = Mutex::new(());

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The browser, or None when the environment says to skip browser tests.
fn browser() -> Option<Browser> {
    match chromium() {
        Some(path) => Some(Browser::launch(&path)),
        None if std::env::var("MULTIJOB_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("dashboard browser test SKIPPED: no chromium and MULTIJOB_SKIP_BROWSER=1");
            None
        }
        None => panic!(
            "the dashboard test needs a headless Chromium, and `chromium` is not on PATH.\n\
             Run scripts/test (it installs chromium on Debian), or \
             `sudo apt-get install -y chromium`; set MULTIJOB_SKIP_BROWSER=1 to skip."
        ),
    }
}

/// A headless Chromium and one page in it, driven over CDP.
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Uncaught exceptions and console errors from the page.
    problems: Vec<String>,
    stderr: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(path: &std::path::Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(path)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so Drop can stop the renderers too.
            .process_group(0)
            .spawn()
            .expect("spawn chromium");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let pipe = child.stderr.take().expect("stderr");
            let log = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "chromium did not print its DevTools URL\n--- stderr ---\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let host = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&host).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
            stderr,
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        b.call("Runtime.enable", json!({}));
        b.call("Page.enable", json!({}));
        b
    }

    /// Send one CDP command (to the page once attached) and wait for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|err| panic!("CDP {method} failed: {err}"))
    }

    /// As [`Browser::call`], with the error CDP answered (e.g. "Inspected
    /// target navigated or closed" while the page reloads) as `Err`.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("CDP send {method}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => t.to_string(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("CDP read during {method}: {e}\n{}", self.explain()),
            };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(err.clone());
                }
                return Ok(v["result"].clone());
            }
            self.note_event(&v);
        }
        panic!("CDP {method}: no answer in 30 s\n{}", self.explain());
    }

    fn note_event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &v["params"]["exceptionDetails"];
                self.problems.push(format!(
                    "uncaught: {} {}",
                    d["text"].as_str().unwrap_or(""),
                    d["exception"]["description"].as_str().unwrap_or("")
                ));
            }
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                self.problems
                    .push(format!("console.error: {}", v["params"]["args"]));
            }
            _ => {}
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Evaluate a JS expression in the page; its JSON value.
    #[track_caller]
    fn eval(&mut self, expr: &str) -> Value {
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("evaluating {expr}: {e}"))
    }

    fn try_eval(&mut self, expr: &str) -> Result<Value, String> {
        // A page that navigates (reloads) during the call fails it: for
        // a wait that is "not yet", like an exception.
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .map_err(|err| format!("CDP Runtime.evaluate failed: {err}"))?;
        match r.get("exceptionDetails") {
            Some(ex) => Err(ex["exception"]["description"]
                .as_str()
                .map_or_else(|| ex.to_string(), str::to_string)),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Poll `expr` until `ok` holds on its value, or fail explaining what the page shows.
    #[track_caller]
    fn wait(
        &mut self,
        what: &str,
        within: Duration,
        expr: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        let mut last;
        loop {
            // The page may still be loading: an exception is "not yet".
            last = self
                .try_eval(expr)
                .unwrap_or_else(|e| json!({"exception": e}));
            if ok(&last) {
                return last;
            }
            if start.elapsed() > within {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {within:?} waiting for {what}\nexpression: {expr}\nlast value: {last}\n{}",
            self.explain()
        );
    }

    /// What the page shows and what went wrong in it.
    fn explain(&mut self) -> String {
        let text = self
            .call(
                "Runtime.evaluate",
                json!({"expression": "location.href + '\\n' + document.body.innerText", "returnByValue": true}),
            )
            .pointer("/result/value")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_default();
        format!(
            "--- page ---\n{}\n--- page problems ---\n{}\n--- chromium stderr (tail) ---\n{}",
            text.chars().take(3000).collect::<String>(),
            self.problems.join("\n"),
            tail(&self.stderr.lock().unwrap_or_else(|p| p.into_inner()), 20),
        )
    }

    /// With MULTIJOB_DASHBOARD_SCREENSHOTS=DIR, save the page as DIR/dash-NAME.png.
    fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("MULTIJOB_DASHBOARD_SCREENSHOTS") else {
            return;
        };
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        let path = PathBuf::from(dir).join(format!("dash-{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group: the browser and its renderers.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the group we created
        // at spawn (process_group(0)); it touches no memory.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn trigger(d: &ConfigDir, job: &str, inputs: &str) -> String {
    let run = d.run(&["trigger", job, "--inputs", inputs]);
    run.assert_code(0);
    run.stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no run id in {}", run.explain()))
        .to_string()
}

const JOBS_ROW: &str = "(() => { const r = document.querySelector('tr[data-job-id=\"hello\"]'); \
                        return r ? r.innerText : null; })()";

#[test]
fn the_page_shows_a_triggered_run_without_a_reload() {
    let _one = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let Some(mut b) = browser() else { return };

    b.navigate(&format!("{}/#/jobs", daemon.url));
    let row = b.wait(
        "the jobs table to list `hello`",
        Duration::from_secs(20),
        JOBS_ROW,
        |v| v.is_string(),
    );
    let row = row.as_str().unwrap();
    assert!(
        row.contains("noop") && row.contains("never"),
        "row: {row:?}"
    );
    b.screenshot("jobs");

    // The periodic full refresh goes to 60 s, so only the live path (event
    // stream or event polling) can bring the run within the wait below.
    b.eval(
        // The reload runs after this evaluation has answered: reloading
        // inside it can destroy its context first, and CDP then fails the
        // call (seen under load).
        "localStorage.setItem('multijob.refresh_sec', '60'); window.__old = true; setTimeout(() => location.reload(), 0); true",
    );
    b.wait(
        "the page to come back after the reload",
        Duration::from_secs(20),
        "!window.__old && document.readyState === 'complete' \
         && document.querySelector('#refresh-interval').value === '60' \
         && (document.body.dataset.live === 'sse' || document.body.dataset.live === 'polling')",
        |v| v == true,
    );
    b.eval("location.hash = '#/runs'; true");
    b.wait(
        "an empty runs table",
        Duration::from_secs(20),
        "document.querySelector('#filter-status') !== null && document.querySelector('.slot .table-wrap') !== null \
         && document.querySelectorAll('tr[data-run-id]').length",
        |v| v == 0,
    );
    // Anything that reloads the page drops this.
    b.eval("window.__sameDocument = 'yes'; true");

    // Markup in API strings must stay text.
    let id = trigger(
        &d,
        "hello",
        r#"{"note": "<img src=x onerror=\"window.__xss=1\">"}"#,
    );
    let status = b.wait(
        &format!("run {id} to appear as succeeded"),
        Duration::from_secs(20),
        &format!(
            "(() => {{ const r = document.querySelector('tr[data-run-id=\"{id}\"]'); \
             return r ? r.dataset.status : null; }})()"
        ),
        |v| v == "succeeded",
    );
    assert_eq!(status, "succeeded");
    assert_eq!(
        b.eval("window.__sameDocument || null"),
        "yes",
        "the page reloaded instead of updating itself"
    );
    b.screenshot("runs");

    // Its detail page shows the inputs as text.
    b.eval(&format!("location.hash = '#/runs/{id}'; true"));
    b.wait(
        "the run's inputs",
        Duration::from_secs(20),
        "Array.from(document.querySelectorAll('pre.json')).some((p) => p.textContent.includes('<img src=x'))",
        |v| v == true,
    );
    assert_eq!(
        b.eval("window.__xss === undefined && document.querySelector('img') === null"),
        true,
        "markup from the API was rendered as HTML"
    );

    // The jobs page (a hash change, still no reload) shows it as the last run.
    b.eval("location.hash = '#/jobs'; true");
    b.wait(
        "the job's last run to be succeeded",
        Duration::from_secs(20),
        JOBS_ROW,
        |v| v.as_str().is_some_and(|t| t.contains("succeeded")),
    );
    b.eval("location.hash = '#/overview'; true");
    b.wait(
        "the overview with the revision and the chart",
        Duration::from_secs(20),
        "document.querySelector('#revision') !== null && document.querySelector('svg.chart rect.ok') !== null",
        |v| v == true,
    );
    b.screenshot("overview");
    assert_eq!(
        b.eval("window.__sameDocument || null"),
        "yes",
        "the page reloaded"
    );
    assert!(
        b.problems.is_empty(),
        "the page had errors:\n{}",
        b.problems.join("\n")
    );
}

#[test]
fn a_token_protected_daemon_asks_for_the_token_once() {
    let _one = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    let daemon = Daemon::start_env(d.path(), &[], &[("MULTIJOB_API_TOKEN", "s3cret")]);
    daemon.wait_until("/healthz", "up", |v| v["status"] == "ok");
    let Some(mut b) = browser() else { return };

    let dialog_open = "!document.querySelector('#token-dialog').classList.contains('hidden')";
    let submit = |b: &mut Browser, token: &str| {
        b.eval(&format!(
            "document.querySelector('#token-input').value = {}; \
             document.querySelector('#token-form').requestSubmit(); true",
            json!(token)
        ));
    };
    b.navigate(&format!("{}/#/jobs", daemon.url));
    b.wait(
        "the token form",
        Duration::from_secs(20),
        dialog_open,
        |v| v == true,
    );
    submit(&mut b, "wrong");
    b.wait(
        "the token form to ask again",
        Duration::from_secs(20),
        &format!("{dialog_open} && document.querySelector('#token-message').textContent"),
        |v| v.as_str().is_some_and(|t| t.contains("refused")),
    );
    submit(&mut b, "s3cret");
    b.wait("the jobs table", Duration::from_secs(20), JOBS_ROW, |v| {
        v.is_string()
    });
    assert_eq!(b.eval(dialog_open), false);
    assert_eq!(
        b.eval("localStorage.getItem('multijob.api_token')"),
        "s3cret"
    );

    // Live updates carry the token too.
    b.eval("location.hash = '#/runs'; true");
    b.wait(
        "the runs page",
        Duration::from_secs(20),
        "document.querySelector('.slot .table-wrap') !== null",
        |v| v == true,
    );
    let id = trigger(&d, "hello", "{}");
    b.wait(
        &format!("run {id} to appear"),
        Duration::from_secs(20),
        &format!("document.querySelector('tr[data-run-id=\"{id}\"]') !== null"),
        |v| v == true,
    );

    // Kept: a reload does not ask again.
    b.eval("window.__old = true; setTimeout(() => location.reload(), 0); true");
    b.wait(
        "the runs table after a reload",
        Duration::from_secs(20),
        &format!(
            "!window.__old && document.readyState === 'complete' \
             && document.querySelector('tr[data-run-id=\"{id}\"]') !== null"
        ),
        |v| v == true,
    );
    assert_eq!(b.eval(dialog_open), false, "asked for the token again");
    assert!(
        b.problems.is_empty(),
        "the page had errors:\n{}",
        b.problems.join("\n")
    );
}

#[test]
fn the_triggers_page_says_a_sync_trigger_makes_no_run() {
    let _one = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    d.write(
        "jobs.d/push.yaml",
        "kind: Trigger\nid: push\nsource: github\naction: sync\nsecret: ${env:HOOK_SECRET}\n",
    );
    let daemon = Daemon::start_env(d.path(), &[], &[("HOOK_SECRET", "k")]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let Some(mut b) = browser() else { return };
    b.navigate(&format!("{}/#/triggers", daemon.url));
    let row = b.wait(
        "the triggers table to list `push`",
        Duration::from_secs(20),
        "(() => { const r = document.querySelector('tr[data-trigger-id=\"push\"]'); \
         return r ? r.innerText : null; })()",
        |v| v.is_string(),
    );
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.contains("no run: a git fetch (action: sync)"),
        "{row:?}"
    );
    assert!(b.problems.is_empty(), "{}", b.problems.join("\n"));
}

#[test]
fn the_triggers_page_lists_a_trigger_without_its_secret() {
    let _one = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    d.write(
        "jobs.d/hook.yaml",
        "kind: Trigger\nid: shop-paid\nsource: github\njob: hello\nsecret: ${env:HOOK_SECRET}\nrequires_approval: true\nrate_limit: {per_minute: 60, burst: 10}\n",
    );
    let secret = "hook-secret-value-3f9a";
    let daemon = Daemon::start_env(d.path(), &[], &[("HOOK_SECRET", secret)]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let Some(mut b) = browser() else { return };
    b.navigate(&format!("{}/#/triggers", daemon.url));
    let row = b.wait(
        "the triggers table to list `shop-paid`",
        Duration::from_secs(20),
        "(() => { const r = document.querySelector('tr[data-trigger-id=\"shop-paid\"]'); \
         return r ? r.innerText : null; })()",
        |v| v.is_string(),
    );
    let row = row.as_str().unwrap_or_default();
    for want in [
        "POST /hooks/shop-paid",
        "github",
        "job hello",
        "60/min, burst 10",
        "requires approval",
    ] {
        assert!(row.contains(want), "{want:?} not in row {row:?}");
    }
    assert_eq!(
        b.eval(&format!("document.body.innerText.includes('{secret}')")),
        false,
        "the page shows the secret's value"
    );
    b.eval("location.hash = '#/overview'; true");
    b.wait(
        "the overview to count the trigger",
        Duration::from_secs(20),
        "Array.from(document.querySelectorAll('a[href=\"#/triggers\"]')).some((a) => a.textContent === '1')",
        |v| v == true,
    );
    b.screenshot("triggers");
    assert!(
        b.problems.is_empty(),
        "the page had errors:\n{}",
        b.problems.join("\n")
    );
}

#[test]
fn the_workers_page_lists_live_workers_with_their_groups() {
    let _one = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let redis = multijob::testkit::RedisServer::start().expect("redis-server");
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", JOB);
    let url = redis.url();
    let daemon = Daemon::start_env(
        d.path(),
        &["--redis", &url, "--workers", "0"],
        &common::worker::FAST,
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let worker = common::worker::WorkerProc::start_with(&redis, 2, &["--group", "gpu"]);
    let Some(mut b) = browser() else { return };
    b.navigate(&format!("{}/#/workers", daemon.url));
    let row = b.wait(
        "the workers table to list the gpu worker",
        Duration::from_secs(20),
        &format!(
            "(() => {{ const r = document.querySelector('tr[data-worker-id=\"{}\"]'); \
             return r ? r.innerText : null; }})()",
            worker.node
        ),
        |v| v.is_string(),
    );
    let row = row.as_str().unwrap_or_default();
    for want in ["gpu", "0 / 2", env!("CARGO_PKG_VERSION")] {
        assert!(row.contains(want), "{want:?} not in row {row:?}");
    }
    b.screenshot("workers");
    assert!(
        b.problems.is_empty(),
        "the page had errors:\n{}",
        b.problems.join("\n")
    );
}
