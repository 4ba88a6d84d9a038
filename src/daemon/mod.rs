//! The daemon: it assembles the layers below into a running process and
//! owns its startup and graceful shutdown. It may use every module below
//! it (`cluster`, `status`, `reconcile`, `worker`, `schedule`, `queue`,
//! `store`, …); only `cli` uses it.

mod parts;
mod replica;

pub use parts::{DaemonOptions, run};
pub use replica::run_worker;
