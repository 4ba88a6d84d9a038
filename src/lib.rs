//! multijob: a declarative, GitOps-style job runner.
//!
//! Layers, lowest first: `clock` → `logging` → `regular_file` → `listener` → `otel` → `signature` → `calendar` → `spec` → `store` → `run` → `connectors` → `queue` → `schedule` → `workflow` → `jobs` → `notify` → `worker` → `reconcile` → `status` → `inbound` → `cluster` → `daemon` → `cli` → `testkit`.
//!
//! A module uses its own layer and the ones below it, never one above
//! (`tests/layering.rs` checks every `crate::` path). In pipeline order:
//! - [`clock`], [`regular_file`], [`listener`]: leaves. Time for the
//!   runtime (real or virtual), opening only regular files, accepting
//!   HTTP connections with limits (caps, timeouts, allowed hosts).
//! - [`otel`]: one OpenTelemetry trace per run, exported over OTLP/HTTP
//!   when `MULTIJOB_OTLP_ENDPOINT` is set; `traceparent` in and out.
//! - [`signature`]: the inbound signature schemes (multijob, GitHub, Slack,
//!   Telegram, Twilio) and the multijob signer (pure).
//! - [`calendar`]: the `schedule:` block, cron and DST, slot math (pure).
//! - [`spec`]: config text → validated [`spec::snapshot::Snapshot`] with
//!   `file:line:column` findings (pure).
//! - [`store`]: the durable state (embedded SQLite, or Redis) and the
//!   run's records.
//! - [`run`]: the run's model and life cycle: outcomes, errors, retry
//!   policy, admission guards, what a run needs from its host.
//! - [`connectors`]: every outbound call of a run (HTTP, messages, LLM),
//!   with secrets by reference, egress policy and rate limits.
//! - [`queue`]: unfinished runs in memory over the store.
//! - [`schedule`]: the scheduler that queues due slots.
//! - [`workflow`]: the step engine of agent workflows.
//! - [`jobs`]: what a run of each job type does.
//! - [`notify`]: notices on state changes (failure, recovery, missed
//!   slots, cooldown), sent once each from the committed events.
//! - [`worker`]: the pool that executes runs.
//! - [`reconcile`]: reads the config directory, diffs it against what runs
//!   ([`reconcile::diff`], pure) and applies it; watches for changes.
//! - [`status`]: the read-only API, metrics, dashboard, and the state the
//!   daemon's tasks share.
//! - [`inbound`]: what comes from outside: signed requests on the inbound
//!   listener (`kind: Trigger`) and chat bridges, turned into runs once
//!   per delivery.
//! - [`cluster`]: the Redis deployment (leader election, stream dispatch).
//! - [`daemon`] assembles the process (embedded, or a Redis replica or
//!   worker) and handles the CLI's inbox; [`cli`] has one file per command.
//! - [`testkit`]: a real redis-server for tests and benchmarks (test code
//!   only).
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod connectors;
pub mod daemon;
pub mod inbound;
pub mod jobs;
pub mod listener;
pub mod logging;
pub mod notify;
pub mod otel;
pub mod queue;
pub mod reconcile;
pub mod regular_file;
pub mod run;
pub mod schedule;
pub mod signature;
pub mod spec;
pub mod status;
pub mod store;
pub mod testkit;
pub mod worker;
pub mod workflow;
