//! The `multijob` binary: parse the command line, run one command, map its
//! outcome to an exit code. Business logic lives in the library.

use std::process::ExitCode;

use multijob::cli::{Command, Outcome};

// glibc's malloc spent ~30% of the daemon's CPU at high run rates
// (fastbin consolidation across worker threads); mimalloc's thread-local
// free lists make a run's many small allocations cheap. Built without
// transparent huge pages (`no_thp`): with them every 2 MB region it
// touched counted in full, and an idle daemon took 29 MB, not 19 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h);
/// the sys crate's named constants follow v2's numbering.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Give freed memory back after 1 ms instead of 10: mimalloc purges
/// only when the freeing thread allocates again, so after a burst (loading
/// 10,000 jobs) an idle daemon kept 145 MB resident instead of 111 MB.
/// Purging at once (0) made every workflow step 2.5× slower (madvise on
/// each free). A process of a Redis deployment waits 100 ms: the leader's
/// batches run to megabytes, and giving them back each millisecond only
/// to fault them in again took ~15% of its CPU. `MIMALLOC_PURGE_DELAY`
/// still overrides it.
fn tune_allocator(in_cluster: bool) {
    let delay = if in_cluster { 100 } else { 1 };
    // SAFETY: sets one entry of mimalloc's option table; no memory is
    // touched and no other thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, delay) };
}

/// Whether this process runs in a Redis deployment (`worker`, or `run`
/// with `--redis`, or `MULTIJOB_REDIS_URL` and no `--state`), read before parsing: the
/// allocator is tuned before anything allocates.
fn in_cluster() -> bool {
    // (args_os: a non-UTF-8 argument is clap's to report, not a panic here)
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = args.iter().find(|a| !a.starts_with('-'));
    match command.map(String::as_str) {
        Some("worker") => true,
        Some("run") => {
            let flag = |name: &str| {
                args.iter()
                    .any(|a| a == name || a.starts_with(&format!("{name}=")))
            };
            flag("--redis")
                || (!flag("--state")
                    && std::env::var_os("MULTIJOB_REDIS_URL").is_some_and(|v| !v.is_empty()))
        }
        _ => false,
    }
}

fn main() -> ExitCode {
    tune_allocator(in_cluster());
    // clap exits 2 on a usage error, and 2 means "plan found changes":
    // `plan --detailed-exitcode || test $? -eq 2` would pass on a typo.
    // Usage errors exit 1, like every other error; help and version 0.
    let cli = match multijob::cli::parse::parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !matches!(cli.command, Command::Run(_) | Command::Worker(_)) {
        // A one-shot command piped into `head` ends quietly, as Unix
        // tools do, instead of panicking on the closed pipe (Rust ignores
        // SIGPIPE). The daemons keep ignoring it: a closed stdout must
        // not kill one.
        // SAFETY: restores the default action of one signal, before any
        // other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match multijob::cli::run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Ok(Outcome::Changes | Outcome::Broken) => ExitCode::from(2),
        Err(e) => {
            eprintln!("multijob: {e:#}");
            ExitCode::from(1)
        }
    }
}
