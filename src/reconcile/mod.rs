//! Desired state from disk against running state.
pub mod git;
pub mod source;
pub mod watch;
