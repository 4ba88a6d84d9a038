//! `notify:` entries (on a job, or its flow's default list): which state
//! changes of a job go to which messaging connector, and how they read.

use serde::{Deserialize, Serialize};

/// The state changes a notice can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Failure,
    Recovery,
    Missed,
    Cooldown,
    Deadline,
    /// Raised by the expectations check (`expect:`), not by run outcomes.
    Expect,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Failure => "failure",
            NoticeKind::Recovery => "recovery",
            NoticeKind::Missed => "missed",
            NoticeKind::Cooldown => "cooldown",
            NoticeKind::Deadline => "deadline",
            NoticeKind::Expect => "expect",
        }
    }
}

/// One `notify:` entry: which state changes go to which messaging
/// connector, how they read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeRule {
    pub connector: String,
    pub on: Vec<NoticeKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}
