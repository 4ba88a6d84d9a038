//! The process's log: lines go to stderr from a writer thread, buffered,
//! so a log call on a hot path (the queue's "run finished" line, written
//! under its lock ten thousand times a second) costs a channel send, not
//! a `write(2)`. The thread writes what is queued in one go and flushes
//! whenever the queue runs dry. Nothing is dropped: past
//! [`QUEUED_LINES`] waiting lines a log call waits, as a direct write
//! would. (tracing-appender does the same, with eight more crates.)

use std::io::{BufWriter, IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// Lines that may wait for the writer thread before a log call blocks.
const QUEUED_LINES: usize = 65_536;

enum Message {
    Line(Vec<u8>),
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

/// The sending side, once [`init`] ran.
static SENDER: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Logs to stderr; `RUST_LOG` filters (default `info`), `MULTIJOB_LOG=json`
/// switches to JSON lines. Colours only on a terminal: a piped or
/// journald log gets no escape codes. Call [`flush`] before the process
/// ends or replaces itself.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (tx, rx) = sync_channel(QUEUED_LINES);
    let spawned = std::thread::Builder::new()
        .name("multijob-log".into())
        .spawn(move || write_lines(rx, std::io::stderr()));
    if spawned.is_err() || SENDER.set(tx).is_err() {
        // No thread (or a second init): log directly, as before.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        let _ = builder.try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| QueuedLine(Vec::new()));
    let _ = if std::env::var("MULTIJOB_LOG").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Write out every queued line; waits for the writer thread, at most a
/// second. Call it before `exit` or `exec`.
pub fn flush() {
    let Some(sender) = SENDER.get() else { return };
    let (ack, done) = sync_channel(1);
    if sender.send(Message::Flush(ack)).is_ok() {
        let _ = done.recv_timeout(Duration::from_secs(1));
    }
}

/// One event's bytes (the formatter writes a line in pieces), queued as
/// one message when the formatter drops it.
struct QueuedLine(Vec<u8>);

impl Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.0);
        let unsent = match SENDER.get() {
            Some(sender) => match sender.send(Message::Line(line)) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(Message::Line(line))) => line,
                Err(_) => return,
            },
            None => line,
        };
        // The writer thread is gone: write it here rather than lose it.
        let _ = std::io::stderr().write_all(&unsent);
    }
}

/// While lines keep coming the writer thread looks for more this often,
/// instead of waiting in the channel: a thread waiting there must be woken
/// (a futex call) by every line sent, which cost the leader more than the
/// write it replaced.
const BUSY_PAUSE: Duration = Duration::from_millis(5);

/// After this long without a line the thread waits in the channel again
/// (an idle daemon does not wake every few milliseconds).
const QUIET_AFTER: Duration = Duration::from_secs(1);

/// The writer thread: what is queued goes out through one buffer, flushed
/// whenever the queue is empty (so a quiet daemon's last line is not held).
fn write_lines(rx: Receiver<Message>, out: impl Write) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut last_line = std::time::Instant::now();
    let write = |out: &mut BufWriter<_>, message: Message| match message {
        Message::Line(line) => {
            let _ = out.write_all(&line);
        }
        Message::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(message) => {
                    write(&mut out, message);
                    wrote = true;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        if wrote {
            last_line = std::time::Instant::now();
        }
        if last_line.elapsed() < QUIET_AFTER {
            std::thread::sleep(BUSY_PAUSE);
            continue;
        }
        // Quiet: wait in the channel; the next line wakes this thread.
        match rx.recv() {
            Ok(message) => {
                write(&mut out, message);
                last_line = std::time::Instant::now();
            }
            Err(_) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test can read back, counting flushes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).1 += 1;
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_a_flush_waits_for_them() {
        let sink = Sink::default();
        let (tx, rx) = sync_channel(4);
        let out = sink.clone();
        let writer = std::thread::spawn(move || write_lines(rx, out));
        // More lines than the channel holds: the sender waits, none is lost.
        for i in 0..1000 {
            tx.send(Message::Line(format!("line {i}\n").into_bytes()))
                .expect("writer alive");
        }
        let (ack, done) = sync_channel(1);
        tx.send(Message::Flush(ack)).expect("writer alive");
        done.recv_timeout(Duration::from_secs(5)).expect("flushed");
        let text = String::from_utf8(sink.0.lock().expect("sink").0.clone()).expect("utf-8");
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        drop(tx);
        writer
            .join()
            .expect("writer ends when the senders are gone");
        assert!(sink.0.lock().expect("sink").1 >= 1);
    }
}
