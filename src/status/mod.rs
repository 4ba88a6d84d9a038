//! The read-only status surface: the JSON API, the SSE event stream,
//! Prometheus metrics, the OpenAPI document and the live dashboard, and
//! the state the daemon's tasks share ([`state::Shared`], which is the
//! reconciler's [`crate::reconcile::Applier`]). It may use `reconcile`,
//! `worker`, `schedule`, `queue`, `store` and the layers below; it only
//! reads, except for what the reconciler applies through `Shared`.
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod openapi;
pub mod sse;
pub mod state;
