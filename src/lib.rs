//! multijob: a declarative, GitOps-style job runner.
pub mod schedule;
pub mod spec {
    pub mod model;
}
