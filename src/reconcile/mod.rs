//! Desired state from disk against running state.
pub mod source;
