//! Following a run from the store (`logs --follow`, `trigger --wait`):
//! poll its record and its recorded output (every [`POLL`] once past the
//! first looks), print what is
//! new (status changes, steps, output lines) and stop when the run ends.
//! Only reads: it works beside a running daemon and on Redis alike.

use std::time::{Duration, Instant};

use serde_json::json;

use super::OutputFormat;
use super::progress::Progress;
use super::run_view::{OutputLines, final_output_lines, header, step_lines, trailer};
use super::store_access::StoreAccess;
use crate::store::output::{OUTPUT_PAGE, OutputChunk};
use crate::store::runs::{Run, RunStatus};

/// How often the store is read while following, once past the first
/// looks (see [`Pause`]).
pub const POLL: Duration = Duration::from_millis(200);

/// The first pause between two looks.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The pause before the next look: short at first, doubling up to
/// [`POLL`]. A run of a few milliseconds (a no-op on Redis starts within
/// milliseconds of its trigger) is seen ended at once, not at the next
/// 200 ms tick; a long one costs five more reads.
pub struct Pause(Duration);

impl Pause {
    pub fn new() -> Pause {
        Pause(FIRST_PAUSE)
    }

    pub fn sleep(&mut self) {
        std::thread::sleep(self.next());
    }

    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(POLL);
        pause
    }
}

/// How following ended.
pub enum Followed {
    /// The run finished (any terminal status).
    Ended(Box<Run>),
    /// The timeout came first; the run's last status seen, if it had a
    /// record by then.
    StillGoing(Option<RunStatus>),
}

/// Every recorded output chunk of `run_id` after `after`.
fn output_after(
    store: &StoreAccess,
    run_id: &str,
    mut after: i64,
) -> anyhow::Result<Vec<OutputChunk>> {
    let mut out = Vec::new();
    loop {
        let page = store.output(run_id, after)?;
        let full = page.len() >= OUTPUT_PAGE;
        if let Some(last) = page.last() {
            after = last.pos;
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Prints what is recorded of `run` once (`logs` without `--follow`).
pub fn show(store: &StoreAccess, run: &Run, format: OutputFormat) -> anyhow::Result<()> {
    let chunks = output_after(store, &run.id, 0)?;
    if format == OutputFormat::Json {
        let doc = json!({"run": run, "output": chunks});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut lines = header(run);
    lines.extend(run.steps.iter().flat_map(step_lines));
    let mut view = OutputLines::default();
    for chunk in &chunks {
        lines.extend(view.chunk(chunk));
    }
    lines.extend(view.finish());
    if view.seen == 0 {
        lines.extend(final_output_lines(run));
    }
    if run.status.is_terminal() {
        lines.extend(trailer(run));
    } else {
        lines.push(format!(
            "still {}: `multijob logs {} --follow` streams the rest",
            run.status.as_str(),
            run.id
        ));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Follows one run, printing as it goes.
pub struct Follower<'a> {
    store: &'a StoreAccess,
    run_id: String,
    json: bool,
    view: OutputLines,
    pos: i64,
    steps: usize,
    status: Option<RunStatus>,
    attempt: u32,
    spinner: Option<Progress>,
}

impl<'a> Follower<'a> {
    pub fn new(store: &'a StoreAccess, run_id: &str, format: OutputFormat) -> Follower<'a> {
        Follower {
            store,
            run_id: run_id.to_string(),
            json: format == OutputFormat::Json,
            view: OutputLines::default(),
            pos: 0,
            steps: 0,
            status: None,
            attempt: 0,
            spinner: None,
        }
    }

    /// Polls until the run ends or `timeout` passes.
    pub fn follow(mut self, timeout: Option<Duration>) -> anyhow::Result<Followed> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pause = Pause::new();
        loop {
            if let Some(run) = self.poll()? {
                return Ok(Followed::Ended(Box::new(run)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Followed::StillGoing(self.status));
            }
            pause.sleep();
        }
    }

    /// One look at the store: prints what is new; the run once it ended.
    fn poll(&mut self) -> anyhow::Result<Option<Run>> {
        let Some(run) = self.store.run(&self.run_id)? else {
            self.spin(&format!("run {} is not queued yet", self.run_id));
            return Ok(None);
        };
        self.status_change(&run);
        self.new_steps(&run);
        // Read after the record: output written before the run ended is
        // all there once the record says it ended.
        for chunk in output_after(self.store, &self.run_id, self.pos)? {
            self.pos = chunk.pos;
            if self.json {
                self.emit(vec![json!({"event": "output", "chunk": chunk}).to_string()]);
            } else {
                let lines = self.view.chunk(&chunk);
                self.emit(lines);
            }
        }
        if !run.status.is_terminal() {
            return Ok(None);
        }
        self.spinner = None;
        if self.json {
            self.emit(vec![json!({"event": "ended", "run": run}).to_string()]);
        } else {
            let mut lines = self.view.finish();
            if self.view.seen == 0 {
                lines.extend(final_output_lines(&run));
            }
            lines.extend(trailer(&run));
            self.emit(lines);
        }
        Ok(Some(run))
    }

    fn status_change(&mut self, run: &Run) {
        let first = self.status.is_none();
        if self.status == Some(run.status) && self.attempt == run.attempt {
            return;
        }
        self.status = Some(run.status);
        self.attempt = run.attempt;
        if matches!(
            run.status,
            RunStatus::Queued | RunStatus::Retrying | RunStatus::AwaitingApproval
        ) {
            self.spin(&format!("run {} {}", run.id, run.status.as_str()));
        } else {
            self.spinner = None;
        }
        if self.json {
            let line = json!({"event": "status", "status": run.status, "attempt": run.attempt});
            self.emit(vec![line.to_string()]);
        } else if first {
            self.emit(header(run));
        } else if !run.status.is_terminal() {
            self.emit(vec![format!(
                "status {} (attempt {})",
                run.status.as_str(),
                run.attempt
            )]);
        }
    }

    fn new_steps(&mut self, run: &Run) {
        // A retry starts the step list over.
        if run.steps.len() < self.steps {
            self.steps = 0;
        }
        for step in &run.steps[self.steps..] {
            let lines = if self.json {
                vec![json!({"event": "step", "step": step}).to_string()]
            } else {
                step_lines(step)
            };
            self.emit(lines);
        }
        self.steps = run.steps.len();
    }

    fn spin(&mut self, message: &str) {
        match &self.spinner {
            Some(s) => s.set_message(message),
            None => self.spinner = Some(Progress::spinner(message)),
        }
    }

    fn emit(&self, lines: Vec<String>) {
        for line in lines {
            match &self.spinner {
                Some(s) => s.println(&line),
                None => println!("{line}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_starts_short_and_doubles_up_to_the_poll() {
        let mut pause = Pause::new();
        let ms: Vec<u128> = (0..7).map(|_| pause.next().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 200, 200]);
    }
}
