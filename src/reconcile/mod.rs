//! Desired state from disk against running state.
pub mod diff;
pub mod render;
pub mod source;
