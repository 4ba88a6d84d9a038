//! The read-only status surface: the JSON API, the SSE event stream and
//! Prometheus metrics (later: the dashboard).
pub mod api;
pub mod listener;
pub mod metrics;
pub mod sse;
