//! PURE. Time as a schedule sees it: the `schedule:` block's types, cron
//! expressions over time zones and DST policies, and the slot math that
//! says when a job is due and which slots it missed.
//!
//! The lowest layer above the leaves (`clock`, `regular_file`, `listener`):
//! `spec` re-exports the schedule's types and validation compiles schedules
//! here; the scheduler drives the slots. It uses nothing of the crate: `now`
//! is always passed in.
mod cron_clock;
mod cron_fields;
pub mod describe;
pub mod dst_effects;
pub mod schedule;
pub mod slots;
