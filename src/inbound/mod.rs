//! What comes from outside the daemon's clock and CLI: signed requests on
//! the inbound listener (`kind: Trigger`, `POST /hooks/{id}`) and chat
//! bridges (Telegram `getUpdates`). Each becomes at most one run per
//! delivery ([`intake`]), whichever replica receives it.

pub mod hooks;
pub mod intake;
pub mod telegram;

pub use intake::{Accepted, Delivery, Intake, SubmitError};
