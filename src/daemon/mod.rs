//! The daemon: it assembles the layers below into a running process and
//! owns its startup and graceful shutdown. [`options`] are what `run`
//! parsed; `embedded` is the single process over SQLite; `replica` is a
//! process of a Redis deployment (campaigning, leading, following) and
//! `redis_worker` its worker-only sibling; `inbox` handles the commands
//! the CLI leaves in the store (trigger bursts, approval decisions,
//! follow-ups), `bridges` keeps the chat bridges of the applied revision
//! polling (where this process owns the run queue), `cancel` an operator's cancel of a run and `operator` the
//! operator's commands on jobs (pause, resume, reset, backfill). It may use every module below it (`cluster`, `status`,
//! `reconcile`, `worker`, `schedule`, `queue`, `store`, …); only `cli`
//! uses it.

mod bridges;
mod cancel;
mod embedded;
mod expectations;
mod follower;
pub mod inbound;
mod inbox;
mod loops;
mod operator;
pub mod options;
mod parts;
pub mod presence;
mod redis_worker;
mod replica;
pub mod store_lock;

pub use options::DaemonOptions;
pub use redis_worker::run_worker;

/// Run until SIGINT or SIGTERM: a replica of the Redis deployment at
/// `opts.redis`, or the embedded single process.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    match opts.redis.clone() {
        Some(url) => replica::run(opts, url).await,
        None => embedded::run(opts).await,
    }
}
