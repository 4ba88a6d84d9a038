//! Desired state from disk against running state.
pub mod diff;
pub mod git;
pub mod render;
pub mod source;
pub mod watch;
