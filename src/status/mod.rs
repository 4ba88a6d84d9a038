//! The read-only status surface: the JSON API, the SSE event stream,
//! Prometheus metrics, the OpenAPI document and the live dashboard.
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod openapi;
pub mod sse;
pub mod state;
