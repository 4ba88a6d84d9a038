//! multijob: a declarative, GitOps-style job runner.
//!
//! Start here, in pipeline order:
//! - [`spec`]: config text → validated [`spec::snapshot::Snapshot`] with
//!   `file:line:column` findings (pure).
//! - [`reconcile`]: reads the config directory, diffs it against what runs
//!   ([`reconcile::diff`], pure) and applies it; watches for changes.
//! - [`store`]: the durable state (embedded SQLite).
//! - [`schedule`]: slot math and guards (pure) and the scheduler.
//! - [`queue`]: unfinished runs in memory over the store.
//! - [`worker`]: the pool that executes [`jobs`] handlers.
//! - [`connectors`]: every outbound call of a run (HTTP, messages, LLM),
//!   with secrets by reference, egress policy and rate limits.
//! - [`listener`]: accepting HTTP connections with limits (caps, timeouts,
//!   allowed hosts), for the API and any inbound surface.
//! - [`status`]: the read-only API.
//! - [`cluster`]: the Redis deployment (leader election, stream dispatch,
//!   worker processes).
//! - [`testkit`]: a real redis-server for tests and benchmarks.
//! - [`regular_file`]: opening a file only when it is a regular one, never
//!   blocking on a FIFO or reading a device (the config loader, `files`).
//! - [`app`] assembles the daemon; [`cli`] has one file per command.
pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod connectors;
pub mod jobs;
pub mod listener;
pub mod queue;
pub mod reconcile;
pub mod regular_file;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod status;
pub mod store;
pub mod testkit;
pub mod worker;
pub mod workflow;
