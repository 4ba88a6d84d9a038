//! One run per delivery: the step every inbound surface ends in. A
//! delivery id (a webhook's `X-Multijob-Delivery`, Slack's `event_id`,
//! Telegram's `update_id`) is claimed in the store's kv first, atomically
//! on both stores, so a replay, a retry or the same request at two Redis
//! replicas gets the first run's id and queues nothing new.
//!
//! The run is durable before [`Intake::submit`] returns: with the embedded
//! store it is queued here and the store flushed; with Redis it is left in
//! the store's inbox, which the leader works off (any replica may receive).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::queue::RunQueue;
use crate::run::{NewRun, NotQueued, new_run_id};
use crate::store::runs::{InboxCommand, Trigger};
use crate::store::{KvOp, Store, StoreError};

/// How long a delivery id is remembered: senders retry for hours (GitHub
/// and Slack for less), and an operator may redeliver by hand the next day.
pub const DELIVERY_TTL_SEC: u64 = 24 * 3600;

/// The longest delivery id kept; a longer one is refused (it is the
/// sender's, and it becomes part of a store key).
pub const MAX_DELIVERY_ID_BYTES: usize = 200;

/// Where inbound runs go: this process's run queue (embedded store), or
/// the store's inbox for the Redis leader.
#[derive(Clone)]
pub struct Intake {
    store: Store,
    queue: Option<Arc<RunQueue>>,
}

/// One inbound request or command, ready to become a run.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job_id: String,
    pub trigger: Trigger,
    /// The run's inputs (the job's own are overlaid by these).
    pub inputs: Value,
    /// Who it came from, e.g. `hook:shop-order-paid` or
    /// `telegram:ops-bot`: with the delivery id, the dedup key and the run
    /// key.
    pub origin: String,
    /// The sender's delivery id; `None` when it sends none (every request
    /// is then a new run).
    pub delivery_id: Option<String>,
    /// The run waits for an approval (the trigger's or skill's setting).
    pub requires_approval: bool,
    /// The request's W3C `traceparent`, checked: the run continues it.
    pub traceparent: Option<String>,
}

/// A delivery's run: queued now, or the one an earlier copy queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Queued(String),
    Duplicate(String),
}

impl Accepted {
    pub fn run_id(&self) -> &str {
        match self {
            Accepted::Queued(id) | Accepted::Duplicate(id) => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("delivery id is {0} bytes, more than {MAX_DELIVERY_ID_BYTES}")]
    DeliveryIdTooLong(usize),
    #[error("job {0} is not in the applied revision")]
    NoSuchJob(String),
    #[error("job {0} is disabled: it gets no new runs")]
    Disabled(String),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

impl Intake {
    /// Queue into `queue` (this process owns it: the embedded store).
    pub fn local(store: Store, queue: Arc<RunQueue>) -> Intake {
        Intake {
            store,
            queue: Some(queue),
        }
    }

    /// Leave runs in the store's inbox for whoever owns the queue (Redis).
    pub fn via_inbox(store: Store) -> Intake {
        Intake { store, queue: None }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queue `d`'s run once per delivery id, durably; the run's id.
    pub async fn submit(&self, d: Delivery) -> Result<Accepted, SubmitError> {
        let mut run_id = new_run_id();
        let mut duplicate = false;
        if let Some(delivery) = d.delivery_id.as_deref() {
            if delivery.len() > MAX_DELIVERY_ID_BYTES {
                return Err(SubmitError::DeliveryIdTooLong(delivery.len()));
            }
            let claim = KvOp::SetIfAbsent {
                value: Value::String(run_id.clone()),
                ttl_sec: DELIVERY_TTL_SEC,
            };
            let key = delivery_key(&d.origin, delivery);
            if let Some(Value::String(standing)) = self.store.kv(&key, claim).await?
                && standing != run_id
            {
                run_id = standing;
                duplicate = true;
            }
        }
        if duplicate && self.recorded(&run_id).await? {
            return Ok(Accepted::Duplicate(run_id));
        }
        // A duplicate with no record yet: the first copy may be in flight,
        // or its process died between the claim and the queue. Queued
        // again under the same id, it runs once either way (the queue and
        // the leader drop an id they hold or the store has).
        let run = new_run(&d, run_id.clone());
        match &self.queue {
            Some(queue) => match queue.enqueue_one(run) {
                Ok(_) | Err(NotQueued::Duplicate) => self.store.flush().await?,
                Err(NotQueued::Disabled) => return Err(SubmitError::Disabled(d.job_id)),
                Err(_) => return Err(SubmitError::NoSuchJob(d.job_id)),
            },
            None => {
                self.store.post_to_inbox(&inbox_command(run)).await?;
            }
        }
        Ok(if duplicate {
            Accepted::Duplicate(run_id)
        } else {
            Accepted::Queued(run_id)
        })
    }

    async fn recorded(&self, run_id: &str) -> Result<bool, StoreError> {
        if let Some(queue) = &self.queue
            && queue.run_status(run_id).is_some()
        {
            return Ok(true);
        }
        let found = self.store.recorded_runs(vec![run_id.to_string()]).await?;
        Ok(!found.is_empty())
    }
}

/// The kv key remembering a delivery's run.
pub fn delivery_key(origin: &str, delivery_id: &str) -> String {
    format!("__multijob/delivery/{origin}/{delivery_id}")
}

fn new_run(d: &Delivery, id: String) -> NewRun {
    let run_key = match d.delivery_id.as_deref() {
        Some(delivery) => format!("{}#{delivery}", d.origin),
        None => format!("{}#{id}", d.origin),
    };
    NewRun {
        id,
        job_id: d.job_id.clone(),
        trigger: d.trigger,
        inputs: d.inputs.clone(),
        run_key,
        scheduled_at: None,
        chain_depth: 0,
        due_at: None,
        extra: json!({"origin": d.origin, "delivery_id": d.delivery_id}),
        requires_approval: d.requires_approval,
        traceparent: d.traceparent.clone(),
    }
}

/// The inbox form of an inbound run, for the Redis leader.
pub fn inbox_command(run: NewRun) -> InboxCommand {
    InboxCommand::Inbound {
        run_id: run.id,
        job_id: run.job_id,
        trigger: run.trigger,
        inputs: run.inputs,
        run_key: run.run_key,
        requires_approval: run.requires_approval,
        extra: run.extra,
        traceparent: run.traceparent,
    }
}

/// The run an inbox `Inbound` command stands for (the leader's side).
pub fn run_of_command(command: InboxCommand) -> Option<NewRun> {
    let InboxCommand::Inbound {
        run_id,
        job_id,
        trigger,
        inputs,
        run_key,
        requires_approval,
        extra,
        traceparent,
    } = command
    else {
        return None;
    };
    Some(NewRun {
        id: run_id,
        job_id,
        trigger,
        inputs,
        run_key,
        scheduled_at: None,
        chain_depth: 0,
        due_at: None,
        extra,
        requires_approval,
        traceparent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueConfig;
    use crate::store::runs::RunStatus;

    const JOBS: &str = "id: fulfil\ntype: noop\n---\nid: gated\ntype: noop\nenabled: false\n";

    fn delivery(id: Option<&str>) -> Delivery {
        Delivery {
            job_id: "fulfil".into(),
            trigger: Trigger::Webhook,
            inputs: json!({"order": "A-1"}),
            origin: "hook:shop".into(),
            delivery_id: id.map(str::to_string),
            requires_approval: false,
            traceparent: None,
        }
    }

    /// A queue over a temp store holding [`JOBS`].
    fn queue() -> (tempfile::TempDir, Store, Arc<RunQueue>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, queue) = crate::testkit::queue_over(
            tmp.path(),
            JOBS,
            QueueConfig::default(),
            "2026-12-07T10:00:00Z",
        );
        (tmp, store, queue)
    }

    #[tokio::test]
    async fn a_delivery_id_gets_one_run_and_its_replays_that_run_s_id() {
        let (_tmp, store, queue) = queue();
        let intake = Intake::local(store.clone(), queue.clone());
        let first = intake.submit(delivery(Some("d-1"))).await.expect("queued");
        let Accepted::Queued(id) = first.clone() else {
            panic!("{first:?}")
        };
        // Durable when it returns: the record is in the store.
        let (_, run) = store.run(&id).await.expect("read").expect("recorded");
        assert_eq!(run.inputs["order"], "A-1");
        assert_eq!(run.trigger, Trigger::Webhook);
        assert_eq!(run.run_key, "hook:shop#d-1");
        for _ in 0..3 {
            let again = intake
                .submit(delivery(Some("d-1")))
                .await
                .expect("answered");
            assert_eq!(again, Accepted::Duplicate(id.clone()));
        }
        let other = intake.submit(delivery(Some("d-2"))).await.expect("queued");
        assert!(
            matches!(other, Accepted::Queued(ref o) if *o != id),
            "{other:?}"
        );
        // No delivery id: every request is a run of its own.
        let a = intake.submit(delivery(None)).await.expect("queued");
        let b = intake.submit(delivery(None)).await.expect("queued");
        assert_ne!(a.run_id(), b.run_id());
        assert_eq!(queue.view().waiting(), 4);
    }

    /// A claim whose process died before queueing: the next copy of the
    /// delivery queues the run under the claimed id.
    #[tokio::test]
    async fn a_claimed_delivery_with_no_run_is_queued_under_the_claimed_id() {
        let (_tmp, store, queue) = queue();
        let claim = KvOp::SetIfAbsent {
            value: json!("0190c0de-0000-7000-8000-000000000001"),
            ttl_sec: 60,
        };
        store
            .kv(&delivery_key("hook:shop", "d-9"), claim)
            .await
            .expect("claim");
        let intake = Intake::local(store.clone(), queue);
        let got = intake.submit(delivery(Some("d-9"))).await.expect("queued");
        assert_eq!(got.run_id(), "0190c0de-0000-7000-8000-000000000001");
        let (_, run) = store
            .run(got.run_id())
            .await
            .expect("read")
            .expect("recorded");
        assert_eq!(run.status, RunStatus::Queued);
    }

    #[tokio::test]
    async fn refusals_name_the_job_and_an_oversized_delivery_id() {
        let (_tmp, store, queue) = queue();
        let intake = Intake::local(store, queue);
        let mut d = delivery(None);
        d.job_id = "gated".into();
        let err = intake.submit(d).await.expect_err("disabled");
        assert_eq!(
            err.to_string(),
            "job gated is disabled: it gets no new runs"
        );
        let mut d = delivery(None);
        d.job_id = "gone".into();
        assert!(matches!(
            intake.submit(d).await,
            Err(SubmitError::NoSuchJob(_))
        ));
        let long = "x".repeat(MAX_DELIVERY_ID_BYTES + 1);
        let err = intake
            .submit(delivery(Some(&long)))
            .await
            .expect_err("too long");
        assert!(matches!(err, SubmitError::DeliveryIdTooLong(201)), "{err}");
    }

    #[tokio::test]
    async fn requires_approval_parks_the_run_with_a_pending_approval() {
        let (_tmp, store, queue) = queue();
        let intake = Intake::local(store.clone(), queue);
        let mut d = delivery(Some("d-ap"));
        d.requires_approval = true;
        let id = intake.submit(d).await.expect("queued").run_id().to_string();
        let (_, run) = store.run(&id).await.expect("read").expect("recorded");
        assert_eq!(run.status, RunStatus::AwaitingApproval);
        let pending = store.approvals(true).await.expect("approvals");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].run_id, id);
        assert_eq!(
            pending[0].reason.as_deref(),
            Some("its webhook trigger requires approval for every run")
        );
    }
}
