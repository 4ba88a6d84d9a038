//! multijob: a declarative, GitOps-style job runner.
//!
//! Start here, in pipeline order:
//! - [`spec`]: config text → validated [`spec::snapshot::Snapshot`] with
//!   `file:line:column` findings (pure).
//! - [`reconcile`]: reads the config directory from disk.
//! - [`schedule`]: slot math (pure).
//! - [`jobs`]: what a run of each job type does.
//! - [`cli`]: one file per command; each calls into the modules above.
pub mod cli;
pub mod jobs;
pub mod reconcile;
pub mod schedule;
pub mod spec;
