//! `/approve ID` and `/reject ID [note]`: the decision goes to the
//! daemon's inbox as `InboxCommand::Decide` with `by: telegram:<user>`,
//! exactly like `multijob approvals approve`, and the reply waits a few
//! seconds to say what became of it (the owner of the run queue applies
//! decisions in order; a decided approval is refused there).

use std::time::{Duration, Instant};

use super::commands::{Answer, Desk};
use super::parse;
use crate::store::runs::{Approval, ApprovalStatus, InboxCommand, MAX_APPROVAL_NOTE_BYTES};

/// Shortest id prefix taken for an approval or its run.
const MIN_PREFIX: usize = 8;
/// How long the reply waits to see the decision applied.
const APPLY_WAIT: Duration = Duration::from_secs(5);

impl Desk {
    pub(super) async fn decide(&self, words: &[String], approve: bool, by: &str) -> Answer {
        let verb = if approve { "approve" } else { "reject" };
        let Some((id, note)) = words.split_first() else {
            return Answer::says(format!(
                "usage: /{verb} ID{}",
                if approve { "" } else { " [note]" }
            ));
        };
        if approve && !note.is_empty() {
            return Answer::says("usage: /approve ID (a note goes with /reject)");
        }
        let note = Some(note.join(" ")).filter(|n| !n.is_empty());
        if note
            .as_ref()
            .is_some_and(|n| n.len() > MAX_APPROVAL_NOTE_BYTES)
        {
            return Answer::says(format!(
                "the note is over {MAX_APPROVAL_NOTE_BYTES} bytes; keep it short and link the details"
            ));
        }
        let store = &self.shared.store;
        let all = match store.approvals(false).await {
            Ok(all) => all,
            Err(e) => return Answer::says(format!("could not read the approvals: {e}")),
        };
        let a = match find(&all, id) {
            Ok(a) => a.clone(),
            Err(why) => return Answer::says(why),
        };
        if a.status != ApprovalStatus::Pending {
            return Answer::says(format!(
                "approval {} is already {}{}; this {verb} was not applied",
                a.id,
                a.status.as_str(),
                by_whom(&a)
            ));
        }
        let command = InboxCommand::Decide {
            approval_id: a.id.clone(),
            approve,
            by: by.to_string(),
            note,
        };
        if let Err(e) = store.post_to_inbox(&command).await {
            return Answer::says(format!("could not post the decision: {e}; try again"));
        }
        self.applied(&a, approve, verb).await
    }

    /// What became of a posted decision, after up to [`APPLY_WAIT`].
    async fn applied(&self, a: &Approval, approve: bool, verb: &str) -> Answer {
        let started = Instant::now();
        let what = format!("{} (run {} of {})", a.id, a.run_id, a.job_id);
        while started.elapsed() < APPLY_WAIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.shared.store.approvals(false).await.ok();
            let Some(x) = now.and_then(|all| all.into_iter().find(|x| x.id == a.id)) else {
                continue;
            };
            let wanted = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Rejected
            };
            if x.status == wanted {
                return Answer::says(format!("{} {what}", x.status.as_str()));
            }
            if x.status != ApprovalStatus::Pending {
                return Answer::says(format!(
                    "approval {} was {} first{}; this {verb} was not applied",
                    x.id,
                    x.status.as_str(),
                    by_whom(&x)
                ));
            }
        }
        Answer::says(format!(
            "{verb} of {what} posted; the daemon has not applied it yet"
        ))
    }
}

/// The approval `id` names: its whole id, or a prefix of 8 or more
/// characters of its id or its run's id, fitting one pending approval
/// (or one approval at all).
fn find<'a>(all: &'a [Approval], id: &str) -> Result<&'a Approval, String> {
    if let Some(a) = all.iter().find(|a| a.id == id) {
        return Ok(a);
    }
    let shown = parse::shorten(id);
    if id.chars().count() < MIN_PREFIX {
        return Err(format!(
            "no approval `{shown}` (give its id, or 8+ characters of it or of its run's id)"
        ));
    }
    let fits: Vec<&Approval> = all
        .iter()
        .filter(|a| a.id.starts_with(id) || a.run_id.starts_with(id))
        .collect();
    let pending: Vec<&Approval> = fits
        .iter()
        .copied()
        .filter(|a| a.status == ApprovalStatus::Pending)
        .collect();
    match (fits.as_slice(), pending.as_slice()) {
        ([], _) => Err(format!("no approval `{shown}`")),
        ([one], _) | (_, [one]) => Ok(one),
        (more, _) => Err(format!(
            "`{shown}` fits {} approvals; give more of the id",
            more.len()
        )),
    }
}

/// ` by WHO` when the record names who decided.
fn by_whom(a: &Approval) -> String {
    a.decided_by
        .as_deref()
        .map(|b| format!(" by {}", parse::shorten(b)))
        .unwrap_or_default()
}
