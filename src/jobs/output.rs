//! Recording a run's output while it runs: a handler pushes what its
//! process prints ([`OutputSink::push`], cheap and never blocking on the
//! store) and a task beside it writes what gathered to the store every
//! [`FLUSH_EVERY`], in chunks of whole lines where it can (a line still
//! open when the tick comes is written as far as it got). This is what
//! `multijob logs --follow` streams; the run's final `output` is kept as
//! before, whatever happens here.
//!
//! Bounded: an attempt records at most [`OUTPUT_LIMIT`] bytes, then one
//! line saying how much was dropped; a line longer than [`LINE_LIMIT`] is
//! cut, with a note of how much. A store that fails a write loses those
//! chunks (logged), never the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::output::{OutputChunk, OutputStream};
use crate::store::{Store, now_rfc3339};

/// Bytes of output one attempt records; the rest is counted and dropped.
pub const OUTPUT_LIMIT: usize = 1024 * 1024;
/// Longest line recorded; the rest of a longer one is cut.
pub const LINE_LIMIT: usize = 8 * 1024;
/// Most text in one chunk (whole lines are not split below this).
const CHUNK_LIMIT: usize = 8 * 1024;
/// How often gathered output goes to the store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where a running attempt's output goes. Dropping it stops the flusher
/// after a last write; [`OutputSink::finish`] does the same and waits.
pub struct OutputSink {
    recorder: Arc<Mutex<Recorder>>,
    stop: CancellationToken,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl OutputSink {
    /// Starts the flusher for attempt `attempt` of run `run_id`.
    pub fn start(store: Store, run_id: &str, attempt: u32) -> OutputSink {
        let recorder = Arc::new(Mutex::new(Recorder::new(run_id, attempt)));
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(flush_loop(store, recorder.clone(), stop.clone()));
        OutputSink {
            recorder,
            stop,
            flusher: Some(flusher),
        }
    }

    /// What the process printed on `stream` just now.
    pub fn push(&self, stream: OutputStream, bytes: &[u8]) {
        lock(&self.recorder).push(stream, bytes);
    }

    /// Writes the rest (an open last line, the dropped-bytes note) and
    /// waits for it to be handed to the store.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(flusher) = self.flusher.take()
            && let Err(e) = flusher.await
        {
            tracing::warn!(error = %e, "output flusher ended badly; the run's last output may be missing");
        }
    }
}

impl Drop for OutputSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(recorder: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

async fn flush_loop(store: Store, recorder: Arc<Mutex<Recorder>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let chunks = lock(&recorder).take(last);
        if !chunks.is_empty() {
            let run_id = chunks[0].run_id.clone();
            if let Err(e) = store.record_output(chunks).await {
                tracing::warn!(run_id, error = %e, "store: output chunks not recorded (the run's final output is kept)");
            }
        }
        if last {
            return;
        }
    }
}

/// One stream's open line.
#[derive(Default)]
struct OpenLine {
    /// Bytes of it not taken yet.
    pending: Vec<u8>,
    /// Bytes of it seen so far (taken or not).
    len: usize,
    /// Bytes of it cut past [`LINE_LIMIT`].
    cut: u64,
}

/// Output gathered between two flushes, and the attempt's budget.
struct Recorder {
    run_id: String,
    attempt: u32,
    open: [OpenLine; 2],
    ready: Vec<(OutputStream, String)>,
    seq: u32,
    recorded: usize,
    dropped: u64,
}

impl Recorder {
    fn new(run_id: &str, attempt: u32) -> Recorder {
        Recorder {
            run_id: run_id.to_string(),
            attempt,
            open: Default::default(),
            ready: Vec::new(),
            seq: 0,
            recorded: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, stream: OutputStream, mut bytes: &[u8]) {
        let i = stream as usize;
        while !bytes.is_empty() {
            let (piece, ends_line) = match bytes.iter().position(|&b| b == b'\n') {
                Some(n) => (&bytes[..=n], true),
                None => (bytes, false),
            };
            bytes = &bytes[piece.len()..];
            let line = &mut self.open[i];
            let body = if ends_line {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            let room = LINE_LIMIT.saturating_sub(line.len);
            let kept = room.min(body.len());
            line.pending.extend_from_slice(&body[..kept]);
            line.cut += (body.len() - kept) as u64;
            line.len += kept;
            if ends_line {
                let mut text = take_text(&mut line.pending, true);
                if line.cut > 0 {
                    text.push_str(&format!(" … [{} bytes of this line cut]", line.cut));
                }
                text.push('\n');
                *line = OpenLine::default();
                self.accept(stream, text);
            }
        }
    }

    /// Counts `text` against the budget and queues it for the next flush.
    fn accept(&mut self, stream: OutputStream, text: String) {
        if text.is_empty() {
            return;
        }
        if self.recorded + text.len() > OUTPUT_LIMIT {
            self.dropped += text.len() as u64;
            return;
        }
        self.recorded += text.len();
        match self.ready.last_mut() {
            Some((s, last)) if *s == stream && last.len() + text.len() <= CHUNK_LIMIT => {
                last.push_str(&text)
            }
            _ => self.ready.push((stream, text)),
        }
    }

    /// What gathered, as chunks: open lines as far as they got; at the
    /// end (`last`) all of them and the note of what was dropped.
    fn take(&mut self, last: bool) -> Vec<OutputChunk> {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let text = take_text(&mut self.open[stream as usize].pending, last);
            self.accept(stream, text);
        }
        if last && self.dropped > 0 {
            let note = format!(
                "[multijob: {} more bytes of output not recorded: a run records at most {} KiB; the run's final output keeps its first and last lines]\n",
                self.dropped,
                OUTPUT_LIMIT / 1024
            );
            self.ready.push((OutputStream::Stderr, note));
            self.dropped = 0;
        }
        let at = now_rfc3339();
        std::mem::take(&mut self.ready)
            .into_iter()
            .map(|(stream, text)| {
                let seq = self.seq;
                self.seq += 1;
                OutputChunk {
                    pos: 0,
                    run_id: self.run_id.clone(),
                    attempt: self.attempt,
                    seq,
                    stream,
                    text,
                    at: at.clone(),
                }
            })
            .collect()
    }
}

/// The text of `pending`, taken out of it: all of it when `all`, else up
/// to the last whole UTF-8 character (the rest waits for its bytes).
fn take_text(pending: &mut Vec<u8>, all: bool) -> String {
    let upto = match std::str::from_utf8(pending) {
        Ok(_) => pending.len(),
        Err(e) if !all && e.error_len().is_none() => e.valid_up_to(),
        Err(_) => pending.len(),
    };
    let rest = pending.split_off(upto);
    let text = String::from_utf8_lossy(pending).into_owned();
    *pending = rest;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(chunks: &[OutputChunk]) -> Vec<(OutputStream, &str)> {
        chunks.iter().map(|c| (c.stream, c.text.as_str())).collect()
    }

    #[test]
    fn whole_lines_wait_for_their_end_and_streams_stay_apart() {
        let mut r = Recorder::new("r1", 1);
        r.push(OutputStream::Stdout, b"one\ntw");
        r.push(OutputStream::Stderr, b"err\n");
        let first = r.take(false);
        assert_eq!(
            texts(&first),
            [
                (OutputStream::Stdout, "one\n"),
                (OutputStream::Stderr, "err\n"),
                (OutputStream::Stdout, "tw"),
            ]
        );
        r.push(OutputStream::Stdout, b"o\n");
        let second = r.take(true);
        assert_eq!(texts(&second), [(OutputStream::Stdout, "o\n")]);
        let seqs: Vec<u32> = first.iter().chain(&second).map(|c| c.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
    }

    #[test]
    fn a_long_line_is_cut_with_a_note() {
        let mut r = Recorder::new("r1", 1);
        let mut line = vec![b'x'; LINE_LIMIT + 100];
        line.push(b'\n');
        r.push(OutputStream::Stdout, &line);
        let chunks = r.take(true);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].text.starts_with(&"x".repeat(LINE_LIMIT)));
        assert!(
            chunks[0]
                .text
                .ends_with(" … [100 bytes of this line cut]\n")
        );
    }

    #[test]
    fn output_past_the_limit_is_dropped_and_said() {
        let mut r = Recorder::new("r1", 2);
        let line = format!("{}\n", "y".repeat(1023));
        for _ in 0..(OUTPUT_LIMIT / 1024 + 10) {
            r.push(OutputStream::Stdout, line.as_bytes());
        }
        let chunks = r.take(true);
        let recorded: usize = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| c.text.len())
            .sum();
        assert_eq!(recorded, OUTPUT_LIMIT);
        assert!(chunks.iter().all(|c| c.text.len() <= CHUNK_LIMIT + 200));
        let note = &chunks[chunks.len() - 1];
        assert_eq!(note.stream, OutputStream::Stderr);
        assert!(
            note.text
                .contains("10240 more bytes of output not recorded"),
            "{}",
            note.text
        );
        assert!(chunks.iter().all(|c| c.attempt == 2));
    }

    #[test]
    fn a_character_split_across_reads_is_not_broken() {
        let mut r = Recorder::new("r1", 1);
        let snow = "☃".as_bytes();
        r.push(OutputStream::Stdout, &snow[..1]);
        assert!(r.take(false).is_empty());
        r.push(OutputStream::Stdout, &snow[1..]);
        assert_eq!(texts(&r.take(false)), [(OutputStream::Stdout, "☃")]);
    }
}
