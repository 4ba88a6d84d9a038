//! The run's side of the daily budgets (`budgets:` on its job or flow):
//! each HTTP call and message takes one unit before it is made, an LLM
//! call is refused once the day's tokens are used up and counts what it
//! used after it. A call that would exceed a budget fails the run with a
//! permanent error naming the budget, the count and when it resets. What
//! the run used is recorded at its end, for the scheduler's slot rule.

use std::sync::atomic::{AtomicU64, Ordering};

use super::runtime::RuntimeActions;
use crate::connectors::send_once::store_error;
use crate::run::RunError;
use crate::store::budgets::{BudgetKind, Exhausted};

/// What one run used of each budget kind.
#[derive(Default)]
pub struct BudgetTally([AtomicU64; 3]);

impl BudgetTally {
    fn slot(&self, kind: BudgetKind) -> &AtomicU64 {
        &self.0[kind as usize]
    }

    pub fn get(&self, kind: BudgetKind) -> u64 {
        self.slot(kind).load(Ordering::SeqCst)
    }
}

fn refused(e: Exhausted) -> RunError {
    RunError::Permanent(e.to_string())
}

impl RuntimeActions {
    /// Takes one HTTP call or message from the day's budgets.
    pub(super) async fn budget_take(&self, kind: BudgetKind) -> Result<(), RunError> {
        let Some(meter) = &self.budget else {
            return Ok(());
        };
        let now = self.queue.clock().now();
        meter
            .reserve(&self.store, kind, 1, now)
            .await
            .map_err(store_error)?
            .map_err(refused)?;
        self.budget_used.slot(kind).fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Before an LLM call: refused once a token budget is used up.
    pub(super) async fn budget_tokens_left(&self) -> Result<(), RunError> {
        let Some(meter) = &self.budget else {
            return Ok(());
        };
        let now = self.queue.clock().now();
        meter
            .check(&self.store, BudgetKind::LlmTokens, now)
            .await
            .map_err(store_error)?
            .map_err(refused)
    }

    /// After an LLM call: counts its tokens against the day's budgets.
    pub(super) async fn budget_spend_tokens(&self, n: u64) -> Result<(), RunError> {
        let Some(meter) = &self.budget else {
            return Ok(());
        };
        let now = self.queue.clock().now();
        meter
            .spend(&self.store, BudgetKind::LlmTokens, n, now)
            .await
            .map_err(store_error)?;
        self.budget_used
            .slot(BudgetKind::LlmTokens)
            .fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    /// At the run's end: what it used, for the scheduler's slot rule. A
    /// failed write only leaves the rule with the run before's figures.
    pub async fn record_budget_use(&self) {
        let Some(meter) = &self.budget else {
            return;
        };
        if let Err(e) = meter
            .record_run(&self.store, |k| self.budget_used.get(k))
            .await
        {
            tracing::warn!(job = %meter.job_id, error = %e, "budgets: recording the run's use failed");
        }
    }
}
