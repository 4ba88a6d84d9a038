//! The read-only status surface: the JSON API and the SSE event stream
//! (later: metrics, dashboard).
pub mod api;
pub mod listener;
pub mod sse;
