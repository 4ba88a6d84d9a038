//! When jobs run: slot math (pure), dispatch guards (pure), and the
//! scheduler that drives them.
mod cron_clock;
mod cron_fields;
pub mod guards;
pub mod scheduler;
pub mod slots;
