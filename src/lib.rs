//! multijob: a declarative, GitOps-style job runner.
pub mod spec {
    pub mod model;
}
pub mod schedule;
