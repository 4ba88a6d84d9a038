//! Test harness: run the real binary on temp config dirs, with failures that
//! explain themselves (command, dir listing, stdout, stderr).
#![allow(dead_code)]

pub mod deployment;
pub mod fake_telegram;
pub mod hooks;
pub mod origin;
pub mod procs;
pub mod secrets;
pub mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_multijob"))
}

/// The repository root (for fixtures, examples, schemas).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp config directory.
pub struct ConfigDir {
    pub tmp: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("jobs.d")).expect("jobs.d");
        ConfigDir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Write `relative` (e.g. "jobs.d/a.yaml") with `text`.
    pub fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
        self
    }

    pub fn remove(&self, relative: &str) {
        std::fs::remove_file(self.path().join(relative)).expect("remove");
    }

    /// Run `multijob <args> --dir <this dir>`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("--dir".into());
        all.push(self.path().display().to_string());
        run(&all, Some(self.path()))
    }

    pub fn listing(&self) -> String {
        listing(self.path())
    }

    /// `multijob trigger JOB ARGS…` on this directory; the queued run's id.
    #[track_caller]
    pub fn trigger(&self, job: &str, args: &[&str]) -> String {
        let mut all = vec!["trigger", job];
        all.extend_from_slice(args);
        let run = self.run(&all);
        run.assert_code(0);
        run.queued_run_id()
    }
}

pub struct Run {
    pub command: String,
    pub output: Output,
    pub listing: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Everything a failing assertion should show.
    pub fn explain(&self) -> String {
        format!(
            "command: {}\nexit: {:?}\n--- dir ---\n{}--- stdout ---\n{}--- stderr ---\n{}",
            self.command,
            self.code(),
            self.listing,
            self.stdout(),
            self.stderr()
        )
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "\n{}", self.explain());
        self
    }

    /// Assert stdout has a line starting with `prefix` and containing `text`.
    #[track_caller]
    pub fn assert_line(&self, prefix: &str, text: &str) -> &Self {
        let out = self.stdout();
        assert!(
            out.lines()
                .any(|l| l.starts_with(prefix) && l.contains(text)),
            "expected a line starting with {prefix:?} containing {text:?}\n{}",
            self.explain()
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr().contains(text),
            "expected {text:?} in stderr\n{}",
            self.explain()
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_lacks(&self, text: &str) -> &Self {
        assert!(
            !self.stdout().contains(text) && !self.stderr().contains(text),
            "output must not contain {text:?}\n{}",
            self.explain()
        );
        self
    }

    /// The run id a successful `trigger` printed (`queued run ID of ...`).
    #[track_caller]
    pub fn queued_run_id(&self) -> String {
        self.stdout()
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no run id\n{}", self.explain()))
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.explain()))
    }
}

pub fn run(args: &[String], dir: Option<&Path>) -> Run {
    let output = Command::new(bin())
        .args(args)
        .env_remove("MULTIJOB_DIR")
        .output()
        .expect("spawn multijob");
    Run {
        command: format!("multijob {}", args.join(" ")),
        output,
        listing: dir.map(listing).unwrap_or_default(),
    }
}

fn listing(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        out.push_str(&format!("{}\n", rel.display()));
    }
    out
}

/// A running `multijob run` on a free port, killed on drop (its stderr is
/// kept in a file and shown when an assertion fails).
pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
    pub log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Self::start_env(dir, extra, &[])
    }

    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::start_on("127.0.0.1:0", dir, extra, env)
    }

    /// Listening on `listen`: a fixed port stays the same when the
    /// process starts over (exec), as a replica that lost its term does.
    pub fn start_on(listen: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::launch(Command::new(bin()), listen, dir, extra, env)
    }

    /// Under an open-files limit of `nofile` (soft and hard), as on a host
    /// where the service runs after `ulimit -n`.
    pub fn start_with_nofile(
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        nofile: u64,
    ) -> Daemon {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(bin());
        Self::launch(sh, "127.0.0.1:0", dir, extra, env)
    }

    fn launch(
        mut cmd: Command,
        listen: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        use std::io::BufRead;
        let log_dir = tempfile::tempdir().expect("log dir");
        let log = log_dir.path().join("daemon.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        cmd.args(["run", "--listen", listen, "--dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("MULTIJOB_API_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn daemon");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read first line");
        let url = match line.trim().strip_prefix("listening on ") {
            Some(u) => u.to_string(),
            None => {
                let _ = child.kill();
                panic!(
                    "daemon did not start: first line {line:?}\n--- log ---\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Daemon {
            child,
            url,
            log,
            _log_dir: log_dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path; (status, JSON body or Null).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http(&self.url, "GET", path, &[])
    }

    /// Poll `f` on a path's JSON until it holds, or fail with the log.
    #[track_caller]
    pub fn wait_until(
        &self,
        path: &str,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = std::time::Instant::now();
        let mut last = serde_json::Value::Null;
        while start.elapsed() < std::time::Duration::from_secs(20) {
            let (code, body) = self.get(path);
            if code == 200 && f(&body) {
                return body;
            }
            last = body;
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!(
            "timed out waiting for {what} on {path}\nlast: {last:#}\n--- daemon log ---\n{}",
            self.log()
        );
    }

    /// The run `id` once it has ended (succeeded, failed or timed out).
    #[track_caller]
    pub fn run_ended(&self, id: &str) -> serde_json::Value {
        self.wait_until(&format!("/api/v1/runs/{id}"), "the run to end", |v| {
            matches!(
                v["status"].as_str(),
                Some("succeeded" | "failed" | "timed_out")
            )
        })
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client (std only): (status, JSON body or Null).
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let (code, body) = http_raw(base, method, path, headers);
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

pub fn http_raw(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, _, body) = http_full(base, method, path, headers);
    (code, body)
}

/// (status, response headers with lowercased names, body).
pub fn http_full(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = match std::net::TcpStream::connect(host) {
        Ok(s) => s,
        Err(_) => return (0, Vec::new(), String::new()),
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, Vec::new(), String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, Vec::new(), text);
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let response_headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, response_headers, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Run git in `dir` with a fixed identity.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One Server-Sent Events message (or a comment, like `: keep-alive`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl SseMessage {
    /// The `data:` field as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {self:?}"))
    }

    pub fn id(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("SSE message without a numeric id: {self:?}"))
    }
}

/// How reading the next SSE message ended without one.
#[derive(Debug, PartialEq)]
pub enum SseEnd {
    Timeout,
    Closed,
}

/// A raw HTTP/1.1 connection reading an SSE response as it streams
/// (chunked transfer encoding decoded incrementally), one message at a time.
pub struct SseStream {
    stream: std::net::TcpStream,
    pub status: u16,
    pub head: String,
    /// Bytes received, not yet decoded.
    raw: Vec<u8>,
    /// Decoded body, not yet split into messages.
    text: String,
    closed: bool,
}

impl SseStream {
    /// GET `path` with `Accept: text/event-stream` and `headers`; returns
    /// once the response head has arrived.
    pub fn open(base: &str, path: &str, headers: &[(&str, &str)]) -> SseStream {
        use std::io::Write;
        let host = base.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = std::net::TcpStream::connect(host).expect("connect");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).expect("send request");
        let mut s = SseStream {
            stream,
            status: 0,
            head: String::new(),
            raw: Vec::new(),
            text: String::new(),
            closed: false,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(end) = find(&s.raw, b"\r\n\r\n") {
                s.head = String::from_utf8_lossy(&s.raw[..end]).into_owned();
                s.raw.drain(..end + 4);
                break;
            }
            assert!(
                s.fill(deadline),
                "no response head for {path}: {:?}",
                String::from_utf8_lossy(&s.raw)
            );
        }
        s.status = s
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        s
    }

    /// Read more bytes until `deadline`; false on EOF or timeout.
    fn fill(&mut self, deadline: std::time::Instant) -> bool {
        use std::io::Read;
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            return false;
        };
        let _ = self
            .stream
            .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))));
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// Move complete chunks from `raw` to `text`.
    fn decode(&mut self) {
        while let Some(line_end) = find(&self.raw, b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            if size == 0 {
                self.closed = true;
                self.raw.clear();
                return;
            }
            let need = line_end + 2 + size + 2;
            if self.raw.len() < need {
                return;
            }
            let chunk = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.text
                .push_str(&String::from_utf8(chunk).expect("utf-8 body"));
            self.raw.drain(..need);
        }
    }

    /// The next message within `timeout`.
    pub fn next(&mut self, timeout: std::time::Duration) -> Result<SseMessage, SseEnd> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.decode();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Ok(parse_sse(&block));
            }
            if self.closed {
                return Err(SseEnd::Closed);
            }
            if !self.fill(deadline) {
                if self.closed {
                    continue;
                }
                return Err(SseEnd::Timeout);
            }
        }
    }

    /// The next message that is an event (comments skipped), or panic.
    #[track_caller]
    pub fn next_event(&mut self, timeout: std::time::Duration) -> SseMessage {
        loop {
            match self.next(timeout) {
                Ok(m) if m.comment.is_some() && m.event.is_none() => continue,
                Ok(m) => return m,
                Err(end) => panic!("no SSE event within {timeout:?}: {end:?}"),
            }
        }
    }
}

fn parse_sse(block: &str) -> SseMessage {
    let mut m = SseMessage::default();
    let mut data = Vec::new();
    for line in block.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => m.comment = Some(value.to_string()),
            "id" => m.id = Some(value.to_string()),
            "event" => m.event = Some(value.to_string()),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    }
    m.data = data.join("\n");
    m
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serve `app` on 127.0.0.1:0 on a thread of its own (a test's HTTP peer);
/// returns its base URL.
pub fn serve(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test peer");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the test peer");
            tx.send(listener.local_addr().expect("its address"))
                .expect("send the address");
            axum::serve(listener, app)
                .await
                .expect("serve the test peer");
        });
    });
    format!("http://{}", rx.recv().expect("the peer's address"))
}
