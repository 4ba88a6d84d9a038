//! The read-only status surface: the JSON API, the SSE event stream,
//! Prometheus metrics and the OpenAPI document (later: the dashboard).
pub mod api;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod sse;
