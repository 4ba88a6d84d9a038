mod cron_clock;
mod cron_fields;
pub mod slots;
