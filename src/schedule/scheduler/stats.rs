//! What the scheduler has done since start (dispatches, skips by reason,
//! lateness) and each job's next fire time, shared with the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// What the scheduler has done since start, for status and benchmarks.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SchedulerStats {
    pub dispatched: u64,
    pub skipped: HashMap<&'static str, u64>,
    pub lateness: LatenessSummary,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LatenessSummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Dispatch lateness (enqueue time − fire time), log-linear buckets of
/// 1/16 of a power of two: ~6% precision, fixed memory.
#[derive(Debug, Clone)]
pub struct Lateness {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            buckets: vec![0; 64 * 16],
            count: 0,
            max_us: 0,
        }
    }
}

impl Lateness {
    pub(super) fn index(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let power = 63 - us.leading_zeros() as usize; // >= 4
        let sub = ((us >> (power - 4)) & 15) as usize;
        (power - 3) * 16 + sub
    }

    pub(super) fn upper(index: usize) -> u64 {
        if index < 16 {
            return index as u64;
        }
        let power = index / 16 + 3;
        let sub = (index % 16) as u64;
        ((16 + sub + 1) << (power - 4)).saturating_sub(1)
    }

    pub fn record(&mut self, us: u64) {
        let i = Self::index(us).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    pub fn summary(&self) -> LatenessSummary {
        LatenessSummary {
            count: self.count,
            p50_ms: self.quantile_us(0.5) as f64 / 1000.0,
            p99_ms: self.quantile_us(0.99) as f64 / 1000.0,
            max_ms: self.max_us as f64 / 1000.0,
        }
    }
}

/// Shared, read by the API.
#[derive(Default)]
pub struct StatsCell {
    inner: Mutex<(u64, HashMap<&'static str, u64>, Lateness)>,
    /// Also told of lateness measured when a slot decided ahead becomes
    /// ready (the daemon's Prometheus histogram).
    observer: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Each scheduled job's next fire time, as the heap holds it.
    next_fire: Mutex<HashMap<String, Timestamp>>,
}

impl StatsCell {
    /// Record the lateness (µs) of a slot decided ahead, once it is ready.
    pub fn record_lateness(&self, us: u64) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .record(us);
        if let Some(observe) = self.observer.get() {
            observe(us);
        }
    }

    /// Also report ahead-decided slots' lateness here; set once.
    pub fn set_observer(&self, observe: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.observer.set(observe);
    }

    /// The next fire time of a job the scheduler holds a slot for.
    pub fn next_fire(&self, job: &str) -> Option<Timestamp> {
        self.next_fire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job)
            .copied()
    }

    pub(super) fn set_next_fire(&self, job: &str, at: Option<Timestamp>) {
        let mut m = self.next_fire.lock().unwrap_or_else(|p| p.into_inner());
        put_next_fire(&mut m, job, at);
    }

    /// Several jobs' next fire times under one lock.
    pub(super) fn set_next_fires(&self, updates: Vec<(Arc<str>, Option<Timestamp>)>) {
        if updates.is_empty() {
            return;
        }
        let mut m = self.next_fire.lock().unwrap_or_else(|p| p.into_inner());
        for (job, at) in updates {
            put_next_fire(&mut m, &job, at);
        }
    }

    pub(super) fn retain_next_fire(&self, keep: impl Fn(&str) -> bool) {
        self.next_fire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// Count `n` slots skipped for `reason`.
    pub(super) fn count_skips(&self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.1.entry(reason).or_default() += n;
    }

    /// Count `queued` runs dispatched, and the lateness (µs) of those the
    /// scheduler measures.
    pub(super) fn count_dispatched(&self, queued: u64, lateness_us: impl Iterator<Item = u64>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += queued;
        for us in lateness_us {
            g.2.record(us);
        }
    }

    pub fn snapshot(&self) -> SchedulerStats {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        SchedulerStats {
            dispatched: g.0,
            skipped: g.1.clone(),
            lateness: g.2.summary(),
        }
    }
}

/// Sets (or, for `None`, removes) a job's next fire time; an existing
/// entry is updated without copying the job id again.
fn put_next_fire(m: &mut HashMap<String, Timestamp>, job: &str, at: Option<Timestamp>) {
    match at {
        Some(t) => {
            if let Some(v) = m.get_mut(job) {
                *v = t;
            } else {
                m.insert(job.to_string(), t);
            }
        }
        None => {
            m.remove(job);
        }
    }
}
