//! The read-only status surface: API (and later SSE, metrics) and the live
//! dashboard.
pub mod api;
pub mod dashboard;
