//! MCP connectors against real servers: a Python stdio server and a Python
//! streamable-HTTP server (tests/fixtures/mcp/), spoken to through
//! `connectors::mcp::McpSession`; the connector's checks and views through
//! the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use multijob::connectors::mcp::{McpError, McpSession};
use multijob::spec::model::{Connector, McpTransport, Provider};
use multijob::testkit::connector_spec;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> String {
    common::repo()
        .join("tests/fixtures/mcp")
        .join(name)
        .display()
        .to_string()
}

/// A data dir with `work/notes.txt`, and a secret file for references.
struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    fn new() -> Data {
        let dir = tempfile::tempdir().expect("data dir");
        std::fs::create_dir_all(dir.path().join("work")).expect("work dir");
        std::fs::write(dir.path().join("work/notes.txt"), "hello from notes\n").expect("notes");
        Data { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// A `${file:...}` reference to a file holding `value`.
    fn secret(&self, name: &str, value: &str) -> String {
        let p: PathBuf = self.dir.path().join(format!("{name}.secret"));
        std::fs::write(&p, value).expect("secret file");
        format!("${{file:{}}}", p.display())
    }
}

const GH_TOKEN: &str = "ghp_S3cretValueNobodySees1234";

fn stdio(data: &Data, timeout_ms: Option<u64>) -> Connector {
    let mut c = connector_spec("fs", Provider::Mcp, "http://unused");
    c.base_url = None;
    c.mcp.transport = Some(McpTransport::Stdio);
    c.mcp.command = vec!["python3".into(), fixture("fs_server.py")];
    c.mcp.cwd = Some("work".into());
    c.mcp
        .env
        .insert("GH_TOKEN".into(), data.secret("gh", GH_TOKEN));
    c.mcp.timeout_ms = timeout_ms;
    c
}

async fn open(c: &Connector, revision: &str, data: &Data) -> McpSession {
    McpSession::open(c, revision, data.path(), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", c.id))
}

async fn pgid_of(s: &mut McpSession) -> i32 {
    let out = s.call("pid", json!({})).await.expect("pid");
    let v: Value = serde_json::from_str(&out.text).expect("pid json");
    let pgid = v["pgid"].as_i64().expect("pgid") as i32;
    assert_eq!(
        Some(pgid),
        s.process_group(),
        "the server leads its own group"
    );
    assert_eq!(v["pid"], v["pgid"]);
    pgid
}

#[tokio::test]
async fn stdio_lists_pages_calls_tools_and_closes_without_a_process() {
    let data = Data::new();
    let mut s = open(&stdio(&data, None), "rev-basic", &data).await;
    let tools = s.tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    // Nine tools served two per page: the cursor was followed to the end.
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(
        names.contains(&"read_file") && names.contains(&"hang"),
        "{names:?}"
    );
    assert_eq!(tools[0].input_schema, json!({"type": "object"}));

    let echo = s
        .call("echo", json!({"text": "hi there"}))
        .await
        .expect("echo");
    assert_eq!(echo.text, "hi there");
    let notes = s
        .call("read_file", json!({"path": "notes.txt"}))
        .await
        .expect("read_file");
    assert_eq!(notes.text, "hello from notes\n", "cwd is data_dir/work");

    // isError is a tool error, and the session goes on.
    match s.call("fail", json!({})).await {
        Err(McpError::Tool { tool, text, .. }) => {
            assert_eq!((tool.as_str(), text.as_str()), ("fail", "no such thing"))
        }
        other => panic!("expected a tool error, got {other:?}"),
    }
    // An unknown tool is the server's JSON-RPC error, with the connector named.
    let err = s.call("nope", json!({})).await.unwrap_err().to_string();
    assert!(
        err.contains("MCP server `fs`") && err.contains("unknown tool nope"),
        "{err}"
    );

    // The server's own requests: ping answered, anything else refused.
    let asked = s.call("ask_client", json!({})).await.expect("ask_client");
    let v: Value = serde_json::from_str(&asked.text).expect("json");
    assert_eq!(v["ping"]["result"], json!({}), "{v}");
    assert_eq!(v["other"]["error"]["code"], json!(-32601), "{v}");

    let pgid = pgid_of(&mut s).await;
    s.close().await;
    common::procs::assert_group_gone(pgid);
}

#[tokio::test]
async fn a_hanging_tool_times_out_and_its_process_group_is_killed() {
    let data = Data::new();
    let mut s = open(&stdio(&data, Some(700)), "rev-hang", &data).await;
    let pgid = pgid_of(&mut s).await;
    let started = Instant::now();
    let err = s.call("hang", json!({})).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let McpError::Failed(run_error) = &err else {
        panic!("{err:?}")
    };
    assert!(run_error.is_retryable(), "a timeout may be retried: {err}");
    assert!(err.to_string().contains("no answer within 700 ms"), "{err}");
    // The server and the `sleep` it started are gone.
    common::procs::assert_group_gone(pgid);
    // The session is over: a later call says so instead of hanging.
    let again = s
        .call("echo", json!({"text": "x"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("session is closed"), "{again}");
}

#[tokio::test]
async fn a_five_mib_answer_is_refused_as_too_large() {
    let data = Data::new();
    let mut s = open(&stdio(&data, None), "rev-big", &data).await;
    let pgid = pgid_of(&mut s).await;
    let err = s.call("big", json!({})).await.unwrap_err().to_string();
    assert!(
        err.contains("larger than max_output_bytes (1048576 bytes)"),
        "{err}"
    );
    common::procs::assert_group_gone(pgid);
}

#[tokio::test]
async fn tools_list_changed_drops_the_cached_list() {
    let data = Data::new();
    let c = stdio(&data, None);
    let mut s = open(&c, "rev-changed", &data).await;
    assert_eq!(s.tools().await.expect("list").len(), 9);
    // A second session of the same revision reads the cache: its server is
    // never asked (it would not know `late` either way, so check identity).
    let mut other = open(&c, "rev-changed", &data).await;
    let cached = other.tools().await.expect("cached");
    assert!(std::sync::Arc::ptr_eq(
        &cached,
        &s.tools().await.expect("again")
    ));
    other.close().await;

    s.call("add_tool", json!({"name": "late"}))
        .await
        .expect("add_tool");
    let tools = s.tools().await.expect("refreshed");
    assert_eq!(tools.len(), 10);
    assert!(tools.iter().any(|t| t.name == "late"));
    s.close().await;
}

#[tokio::test]
async fn the_server_sees_only_its_declared_environment() {
    let data = Data::new();
    // cargo sets these for the test process; the daemon's own variables
    // would be in the same place.
    let marker = "CARGO_MANIFEST_DIR";
    assert!(
        std::env::var(marker).is_ok(),
        "{marker} is set for the test process"
    );
    let mut s = open(&stdio(&data, None), "rev-env", &data).await;
    let out = s.call("environ", json!({})).await.expect("environ");
    let env: serde_json::Map<String, Value> = serde_json::from_str(&out.text).expect("json");
    assert!(!env.contains_key(marker), "{env:?}");
    assert!(!env.contains_key("HOME"), "{env:?}");
    assert!(env.contains_key("PATH"), "{env:?}");
    // The declared variable is there, and its value never leaves the session.
    let token = env
        .get("GH_TOKEN")
        .and_then(Value::as_str)
        .expect("GH_TOKEN");
    assert_ne!(token, GH_TOKEN);
    assert!(!out.text.contains(GH_TOKEN), "{}", out.text);
    s.close().await;
}

/// The error opening `c` gives (it must fail).
async fn open_error(c: &Connector, data: &Data) -> String {
    match McpSession::open(c, "rev-h", data.path(), CancellationToken::new()).await {
        Ok(_) => panic!("{} opened", c.id),
        Err(e) => e.to_string(),
    }
}

/// `python3 -c CODE` as a server's argv.
fn python(code: &str) -> Vec<String> {
    vec!["python3".into(), "-c".into(), code.into()]
}

#[tokio::test]
async fn hostile_servers_and_settings_fail_clearly() {
    let data = Data::new();
    // Garbage on stdout instead of JSON-RPC.
    let mut c = stdio(&data, Some(2000));
    c.mcp.command = python("print('not json', flush=True); import time; time.sleep(30)");
    let err = open_error(&c, &data).await;
    assert!(
        err.contains("MCP server `fs` (initialize)") && err.contains("not JSON"),
        "{err}"
    );
    // A server that exits at once: its stderr explains.
    c.mcp.command = python("import sys; sys.stderr.write('boom: no config'); sys.exit(3)");
    let err = open_error(&c, &data).await;
    assert!(err.contains("boom: no config"), "{err}");
    // No such program.
    c.mcp.command = vec!["/nonexistent/mcp-server".into()];
    let err = open_error(&c, &data).await;
    assert!(
        err.contains("cannot start `/nonexistent/mcp-server`"),
        "{err}"
    );
    // A cwd that climbs out, and a missing secret.
    let mut c = stdio(&data, None);
    c.mcp.cwd = Some("../etc".into());
    let err = open_error(&c, &data).await;
    assert!(err.contains("cwd `../etc` climbs out"), "{err}");
    let mut c = stdio(&data, None);
    c.mcp
        .env
        .insert("X".into(), "${env:MULTIJOB_TEST_SURELY_UNSET}".into());
    let err = open_error(&c, &data).await;
    assert!(
        err.contains("MULTIJOB_TEST_SURELY_UNSET is not set"),
        "{err}"
    );
    // Cancel stops a call at once and the server with it.
    let token = CancellationToken::new();
    let mut s = McpSession::open(&stdio(&data, None), "rev-h", data.path(), token.clone())
        .await
        .expect("open");
    let pgid = pgid_of(&mut s).await;
    let cancel_soon = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel_soon.cancel();
    });
    let err = s.call("hang", json!({})).await.unwrap_err().to_string();
    assert!(err.contains("cancelled"), "{err}");
    common::procs::assert_group_gone(pgid);
}

/// The Python streamable-HTTP server on a free loopback port.
struct HttpServer {
    child: std::process::Child,
    url: String,
}

impl HttpServer {
    fn start(token: &str) -> HttpServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(fixture("http_server.py"))
            .env("MCP_EXPECT_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 http_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("PORT line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("PORT n")
            .to_string();
        HttpServer {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HTTP_TOKEN: &str = "mcp-bearer-Token-Value-5678";
const X_KEY: &str = "x-key-Value-Never-Shown-9012";

fn http_connector(data: &Data, url: &str) -> Connector {
    let mut c = connector_spec("web", Provider::Mcp, url);
    c.mcp.transport = Some(McpTransport::Http);
    c.mcp.token = Some(data.secret("token", HTTP_TOKEN));
    c.mcp
        .headers
        .insert("X-Key".into(), data.secret("xkey", X_KEY));
    c
}

#[tokio::test]
async fn streamable_http_answers_json_and_sse_with_the_session_id() {
    let data = Data::new();
    let server = HttpServer::start(HTTP_TOKEN);
    let mut s = open(&http_connector(&data, &server.url), "rev-http", &data).await;
    let sid = s
        .http_session_id()
        .expect("a session id from initialize")
        .to_string();
    assert!(sid.starts_with("sess-"), "{sid}");
    let tools = s.tools().await.expect("tools/list");
    assert_eq!(tools.len(), 5);
    assert_eq!(
        s.call("echo", json!({"text": "plain"}))
            .await
            .expect("json")
            .text,
        "plain"
    );
    assert_eq!(
        s.call("echo_sse", json!({"text": "streamed"}))
            .await
            .expect("sse")
            .text,
        "streamed"
    );
    // A stream the server leaves open: the answer is taken as it arrives.
    let started = Instant::now();
    assert_eq!(
        s.call("echo_open", json!({"text": "open"}))
            .await
            .expect("open sse")
            .text,
        "open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let who = s.call("whoami", json!({})).await.expect("whoami");
    let v: Value = serde_json::from_str(&who.text).expect("json");
    assert_eq!(v["token_ok"], json!(true), "the bearer token was sent: {v}");
    assert_eq!(v["session"], json!(sid), "the session id goes back: {v}");
    assert!(
        !who.text.contains(X_KEY) && v["x_key"].is_string(),
        "header sent, value scrubbed: {v}"
    );
    s.close().await;
}

#[tokio::test]
async fn http_to_a_metadata_or_link_local_address_is_refused() {
    let data = Data::new();
    for url in [
        "http://169.254.169.254/mcp",
        "http://[fe80::1]:80/mcp",
        "http://metadata.google.internal/mcp",
    ] {
        let c = http_connector(&data, url);
        let started = Instant::now();
        let err = McpSession::open(&c, "rev-egress", data.path(), CancellationToken::new())
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("egress") && err.contains("refused"),
            "{url}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused before any connect"
        );
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// Round trips of a trivial `tools/call` (run with `--nocapture` to see).
#[tokio::test]
async fn tools_call_round_trip_figures() {
    let data = Data::new();
    let server = HttpServer::start(HTTP_TOKEN);
    for (what, c) in [
        ("stdio", stdio(&data, None)),
        ("http", http_connector(&data, &server.url)),
    ] {
        let mut s = open(&c, "rev-figures", &data).await;
        let mut samples = Vec::with_capacity(200);
        for i in 0..200 {
            let t = Instant::now();
            let out = s
                .call("echo", json!({"text": i.to_string()}))
                .await
                .expect("echo");
            samples.push(t.elapsed());
            assert_eq!(out.text, i.to_string());
        }
        let (p50, p99) = percentiles(samples);
        println!("MCP tools/call over {what}: p50 {p50:?}, p99 {p99:?} (200 calls)");
        s.close().await;
    }
}

#[tokio::test]
async fn connectors_open_only_mcp_connectors_of_the_revision() {
    let data = Data::new();
    let conns = multijob::testkit::connectors_of(vec![
        stdio(&data, None),
        connector_spec("api", Provider::Http, "http://127.0.0.1:9"),
    ]);
    let open =
        |id: &'static str| conns.open_mcp(id, "rev-conns", data.path(), CancellationToken::new());
    let mut s = open("fs").await.expect("fs opens");
    assert_eq!(
        s.call("echo", json!({"text": "via connectors"}))
            .await
            .expect("echo")
            .text,
        "via connectors"
    );
    let pgid = s.process_group().expect("pgid");
    drop(s);
    // Dropping the session kills the server's group too.
    common::procs::assert_group_gone(pgid);
    let err = open("api").await.err().expect("not mcp").to_string();
    assert!(
        err.contains("connector `api` has provider http") && err.contains("mcp"),
        "{err}"
    );
    let err = open("fss").await.err().expect("unknown").to_string();
    assert!(err.contains("no connector `fss`"), "{err}");
}
