//! The scheduler: the task that finds due slots (with `calendar`'s slot
//! math), asks the run's admission guards (`run::guards`) whether each
//! dispatches, and queues the runs. It uses `calendar`, `spec`, `store`,
//! `run` and `queue`; the daemon starts it.
pub mod backfill;
pub mod budgets;
pub mod peak;
pub mod scheduler;
pub mod simulate;
