//! Progress for long commands (`trigger --count N --wait`, `logs --follow`
//! of a run still queued, an operator command waiting for the daemon's
//! answer): a bar or spinner on stderr when stderr is a
//! terminal, nothing at all when it is piped or redirected, so scripts
//! and logs never see cursor escapes. Built on `indicatif`, which draws,
//! rate-limits redraws and clears its line on finish.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar or a spinner, or nothing when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// `done of total` with a bar, e.g. runs finished of a burst.
    pub fn bar(total: u64, message: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), target());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }

    /// A spinner with a message, e.g. while a run waits in the queue.
    pub fn spinner(message: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(None, target());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }

    pub fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }

    /// Prints `line` on stdout without tearing the bar.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.suspend(|| println!("{line}"));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Stderr when it is a terminal; otherwise a target that draws nothing.
fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
