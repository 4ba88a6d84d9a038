//! The stdio transport: the server is a child process in its own process
//! group, started from an argv (no shell) with an empty environment plus
//! PATH and the connector's declared `env`, in a directory inside the data
//! dir. Messages are one JSON object per line on its stdin and stdout; its
//! stderr is kept (capped) to explain a failure. A line longer than the
//! connector's cap is refused without being held in memory. Killing the
//! server kills the whole group (SIGKILL: an MCP server keeps no state of
//! ours worth a graceful stop), on close, on a timeout, on cancel and when
//! the server is dropped.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::jsonrpc::{self, Incoming};
use super::{Events, McpFailure};

/// How much of the server's stderr is kept for error messages.
const STDERR_KEEP: usize = 4096;

pub struct StdioServer {
    child: Child,
    /// The group's id (the child's pid, as it leads its own group).
    pgid: Option<i32>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl StdioServer {
    /// Starts `argv` in `cwd` with exactly `env` (plus the daemon's PATH).
    pub fn spawn(
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        cap: usize,
    ) -> Result<StdioServer, McpFailure> {
        let Some((program, args)) = argv.split_first() else {
            return Err(McpFailure::Config("`command` is empty".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().map_err(|e| {
            McpFailure::Config(format!(
                "cannot start `{program}` in {} ({e}); check `command` and `cwd`",
                cwd.display()
            ))
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(pgid);
            return Err(McpFailure::Config(
                "the server's pipes were not set up".into(),
            ));
        };
        let kept = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(keep_stderr(stderr, kept.clone()));
        Ok(StdioServer {
            child,
            pgid,
            stdin,
            stdout: BufReader::new(stdout),
            stderr: kept,
            cap,
        })
    }

    pub fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    pub async fn notify(&mut self, message: &Value) -> Result<(), McpFailure> {
        self.send(message).await
    }

    /// Sends request `id` and reads until its response, answering the
    /// server's own requests and noting its notifications on the way.
    pub async fn request(
        &mut self,
        id: u64,
        message: &Value,
        events: &mut Events,
    ) -> Result<Value, McpFailure> {
        self.send(message).await?;
        loop {
            let Some(line) = read_line_capped(&mut self.stdout, self.cap)
                .await
                .map_err(|e| self.broken(e))?
            else {
                return Err(self.exited().await);
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            for incoming in jsonrpc::parse(&text).map_err(McpFailure::Protocol)? {
                match incoming {
                    Incoming::Response { id: got, outcome } if jsonrpc::is_id(&got, id) => {
                        return outcome.map_err(McpFailure::Protocol);
                    }
                    Incoming::Response { .. } => {}
                    Incoming::Request { id, method } => {
                        self.send(&jsonrpc::answer(&id, &method)).await?;
                    }
                    Incoming::Notification { method } => events.note(&method),
                }
            }
        }
    }

    async fn send(&mut self, message: &Value) -> Result<(), McpFailure> {
        let mut line = message.to_string();
        line.push('\n');
        let written = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        }
        .await;
        match written {
            Ok(()) => Ok(()),
            Err(_) => Err(self.exited().await),
        }
    }

    fn broken(&self, e: LineError) -> McpFailure {
        match e {
            LineError::TooLong => McpFailure::TooLarge(self.cap),
            LineError::Io(e) => McpFailure::Transport(format!("reading its stdout failed: {e}")),
        }
    }

    /// The server closed its stdout or stdin: how it ended, and its stderr.
    async fn exited(&mut self) -> McpFailure {
        let status = tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await;
        let how = match status {
            Ok(Ok(s)) => format!("exited ({s})"),
            _ => "closed its pipes".to_string(),
        };
        let stderr = self.stderr_excerpt();
        McpFailure::Transport(match stderr.is_empty() {
            true => format!("the server {how}"),
            false => format!("the server {how}; its stderr: {stderr}"),
        })
    }

    pub fn stderr_excerpt(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&kept).trim().to_string()
    }

    /// Kills the whole group and reaps the leader.
    pub async fn kill(&mut self) {
        kill_group(self.pgid.take());
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        // `kill_on_drop` reaches the leader only; its children share the group.
        kill_group(self.pgid.take());
    }
}

fn kill_group(pgid: Option<i32>) {
    // Never 0 or 1: kill(0) is our own group, kill(-1) everyone we may signal.
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

async fn keep_stderr(mut stderr: tokio::process::ChildStderr, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        let room = STDERR_KEEP.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

#[derive(Debug)]
enum LineError {
    TooLong,
    Io(std::io::Error),
}

/// One line (without its newline), `None` at end of stream; a line over
/// `cap` bytes is an error as soon as the cap is passed.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    cap: usize,
) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(LineError::Io)?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(pos) => (pos, true),
            None => (buf.len(), false),
        };
        if line.len() + take > cap {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped() {
        let mut r = BufReader::new(&b"{\"a\":1}\n0123456789abcdef\nx"[..]);
        assert_eq!(
            read_line_capped(&mut r, 10).await.unwrap().unwrap(),
            b"{\"a\":1}"
        );
        assert!(matches!(
            read_line_capped(&mut r, 10).await,
            Err(LineError::TooLong)
        ));
        let mut r = BufReader::new(&b"x"[..]);
        assert_eq!(read_line_capped(&mut r, 10).await.unwrap().unwrap(), b"x");
        assert!(read_line_capped(&mut r, 10).await.unwrap().is_none());
    }
}
