//! A run as a person reads it (`multijob logs`, `trigger --wait`): a
//! header, a line per workflow step, a `command` run's stdout and stderr
//! line by line, and how it ended. Pure formatting: the records in,
//! lines out; `follow` decides when to print them.

use serde_json::Value;

use crate::store::output::{OutputChunk, OutputStream};
use crate::store::runs::{Run, RunStatus, StepRecord};

/// Widest output excerpt or error shown on a step line.
const EXCERPT: usize = 160;

/// `850ms`, `1.2s`, `3m04s`, `2h05m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The first line of `text`, at most `max` characters (cut with `…`).
pub fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim_end();
    match line.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if line.chars().count() > max => format!("{}…", &line[..cut]),
        _ => line.to_string(),
    }
}

/// How long the run took, or has been going (from its start to `now`).
pub fn run_duration(run: &Run, now: jiff::Timestamp) -> Option<u64> {
    if let Some(ms) = run.duration_ms {
        return Some(ms);
    }
    let started: jiff::Timestamp = run.started_at.as_deref()?.parse().ok()?;
    u64::try_from(now.duration_since(started).as_millis()).ok()
}

/// The lines above everything else.
pub fn header(run: &Run) -> Vec<String> {
    let now = jiff::Timestamp::now();
    let mut lines = vec![format!(
        "run {}  job {}  trigger {}  status {}",
        run.id,
        run.job_id,
        serde_json::to_value(run.trigger)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        run.status.as_str()
    )];
    let mut when = format!("attempt {}", run.attempt);
    when.push_str(&format!("  queued {}", run.queued_at));
    if let Some(started) = &run.started_at {
        when.push_str(&format!("  started {started}"));
    }
    if let Some(ms) = run_duration(run, now) {
        let verb = if run.status.is_terminal() {
            "took"
        } else {
            "running for"
        };
        when.push_str(&format!("  {verb} {}", duration(ms)));
    }
    lines.push(when);
    lines
}

/// A step's line, and its error and output excerpt under it.
pub fn step_lines(step: &StepRecord) -> Vec<String> {
    let mut lines = vec![format!(
        "  step {:<20} {:<17} {}",
        step.id,
        step.status.as_str(),
        duration(step.duration_ms)
    )];
    if let Some(error) = &step.error {
        lines.push(format!("      error: {}", first_line(error, EXCERPT)));
    }
    if !step.output.is_null() {
        let text = match &step.output {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        lines.push(format!("      output: {}", first_line(&text, EXCERPT)));
    }
    lines
}

/// The status line that ends a finished run's view.
pub fn trailer(run: &Run) -> Vec<String> {
    let took = run
        .duration_ms
        .map(|ms| format!(" in {}", duration(ms)))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "run {} {}{took} (attempt {})",
        run.id,
        run.status.as_str(),
        run.attempt
    )];
    if let Some(error) = &run.error
        && run.status != RunStatus::Succeeded
    {
        lines.push(format!("error: {error}"));
    }
    lines
}

/// Output chunks to lines: stdout as `out| line`, stderr as `err| line`,
/// a line split across chunks joined again, a new attempt announced.
#[derive(Default)]
pub struct OutputLines {
    open: [String; 2],
    attempt: u32,
    /// Chunks seen: when none, the run's final output is shown instead.
    pub seen: usize,
}

impl OutputLines {
    pub fn chunk(&mut self, chunk: &OutputChunk) -> Vec<String> {
        let mut out = Vec::new();
        if chunk.attempt != self.attempt {
            out.extend(self.finish());
            out.push(format!("-- attempt {} output --", chunk.attempt));
            self.attempt = chunk.attempt;
        }
        self.seen += 1;
        let open = &mut self.open[chunk.stream as usize];
        open.push_str(&chunk.text);
        while let Some(end) = open.find('\n') {
            let line: String = open.drain(..=end).collect();
            out.push(prefixed(chunk.stream, line.trim_end_matches('\n')));
        }
        out
    }

    /// Lines still open (the process printed no newline at the end).
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let open = std::mem::take(&mut self.open[stream as usize]);
            if !open.is_empty() {
                out.push(prefixed(stream, &open));
            }
        }
        out
    }
}

fn prefixed(stream: OutputStream, line: &str) -> String {
    match stream {
        OutputStream::Stdout => format!("out| {line}"),
        OutputStream::Stderr => format!("err| {line}"),
    }
}

/// A finished run's kept `stdout`/`stderr`, for runs with no recorded
/// chunks (written before chunks were recorded, or by another job type).
pub fn final_output_lines(run: &Run) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(output) = run.output.as_ref() else {
        return lines;
    };
    for (key, stream) in [
        ("stdout", OutputStream::Stdout),
        ("stderr", OutputStream::Stderr),
    ] {
        if let Some(text) = output.get(key).and_then(Value::as_str) {
            lines.extend(text.lines().map(|l| prefixed(stream, l)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(attempt: u32, stream: OutputStream, text: &str) -> OutputChunk {
        OutputChunk {
            pos: 0,
            run_id: "r".into(),
            attempt,
            seq: 0,
            stream,
            text: text.into(),
            at: String::new(),
        }
    }

    #[test]
    fn lines_split_across_chunks_are_joined_and_attempts_announced() {
        let mut view = OutputLines::default();
        assert_eq!(
            view.chunk(&chunk(1, OutputStream::Stdout, "a\nb")),
            ["-- attempt 1 output --", "out| a"]
        );
        assert_eq!(
            view.chunk(&chunk(1, OutputStream::Stderr, "e\n")),
            ["err| e"]
        );
        assert_eq!(
            view.chunk(&chunk(1, OutputStream::Stdout, "c\n")),
            ["out| bc"]
        );
        assert_eq!(
            view.chunk(&chunk(2, OutputStream::Stdout, "open")),
            ["-- attempt 2 output --"]
        );
        assert_eq!(view.finish(), ["out| open"]);
    }

    #[test]
    fn durations_and_first_lines_read_short() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(1_240), "1.2s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(first_line("one\ntwo", 10), "one");
        assert_eq!(first_line("abcdefghij", 5), "abcd…");
        assert_eq!(first_line("abcde", 5), "abcde");
    }
}
