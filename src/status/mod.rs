//! The read-only status surface: API (and later SSE, metrics, dashboard).
pub mod api;
