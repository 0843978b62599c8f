//! [`ByteBudget`]: the sum of declared costs of running updates stays within `B` bytes.
//!
//! # When to choose it
//!
//! When update sizes vary (a text message next to a 20 MB document) and you can estimate
//! each handler's working set — by default the payload size times a factor. The runtime
//! fetches about as many updates as the remaining budget holds, so a backlog of large
//! updates never sits in memory all at once.
//!
//! # Progress guarantee
//!
//! An update is admitted when `bytes + cost ≤ budget`, **or when nothing is running**
//! (`in_flight == 0`), whatever its cost. So an update larger than the whole budget runs —
//! alone: nothing else starts until it finishes, because every other candidate then sees
//! `bytes + cost > budget` and a running permit. (Kafka's consumer does the same with
//! `fetch.max.bytes`.) The condition ignores reserved bytes on purpose: reservations are
//! updates already in memory that are themselves waiting to run; refusing the only
//! candidate while nothing runs would free nothing and stall forever.
//!
//! # Failure modes
//!
//! Costs are declarations. If handlers allocate far more than they declare, the budget
//! bounds nothing; [`RssAdaptive`](crate::RssAdaptive) corrects the budget from measured
//! resident memory.
//!
//! # Knobs
//!
//! The budget ([`ByteBudget::set_budget`] at run time; raising it wakes waiters) and
//! [`ByteBudget::expected_cost`], a seed for the per-update cost estimate.
//!
//! # Fetch limit
//!
//! `(budget − bytes) / estimated cost − waiting`, where the estimate is an exponentially
//! weighted moving average (weight 1/8) of completed updates' costs, seeded by
//! `expected_cost` or else by the first cost seen. With no estimate yet the answer is
//! `usize::MAX` (the runtime clamps it to the transport's maximum). It is 0 when the budget
//! is full and at least 1 when nothing is held at all.
//!
//! # Examples
//!
//! ```
//! use pollgate_admission::{ByteBudget, Gate};
//!
//! let gate = Gate::new(ByteBudget::new(1000).expected_cost(100));
//! assert_eq!(gate.fetch_limit(), 10);
//! let a = gate.try_acquire(600).unwrap();
//! assert!(gate.try_acquire(500).is_err()); // 1100 > 1000
//! let b = gate.try_acquire(400).unwrap();
//! assert_eq!(gate.fetch_limit(), 0);
//! drop((a, b));
//!
//! // Larger than the budget: runs, but only alone.
//! let huge = gate.try_acquire(5000).unwrap();
//! assert!(gate.try_acquire(1).is_err());
//! # drop(huge);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::{AdmissionPolicy, Completion, Limit, LimitSignal, LimitSignals, Load};

/// Admits while declared costs fit in a byte budget. See the [module docs](self).
///
/// # Examples
///
/// The fetch limit follows the costs seen: with no seed, the first admitted cost is the
/// estimate, and each completion moves it.
///
/// ```
/// use std::sync::Arc;
/// use pollgate_admission::{ByteBudget, Gate};
///
/// let policy = Arc::new(ByteBudget::new(10_000));
/// let gate = Gate::with_shared(policy.clone());
/// assert_eq!(policy.estimated_cost(), None);
/// let permit = gate.try_acquire(1_000).unwrap();
/// assert_eq!(policy.estimated_cost(), Some(1_000));
/// assert_eq!(gate.fetch_limit(), 9, "9 000 bytes free, 1 000 each");
/// policy.set_budget(20_000);
/// assert_eq!(gate.fetch_limit(), 19);
/// # drop(permit);
/// ```
#[derive(Debug)]
pub struct ByteBudget {
    budget: AtomicU64,
    estimate: CostEstimate,
    listeners: LimitSignals,
}

impl ByteBudget {
    /// A budget of `bytes`.
    ///
    /// # Panics
    ///
    /// When `bytes` is 0.
    pub fn new(bytes: u64) -> Self {
        assert!(bytes > 0, "ByteBudget::new: the budget must be at least 1 byte");
        Self {
            budget: AtomicU64::new(bytes),
            estimate: CostEstimate::default(),
            listeners: LimitSignals::default(),
        }
    }

    /// Seeds the per-update cost estimate that `fetch_limit` divides the free budget by.
    #[must_use]
    pub fn expected_cost(self, bytes: u64) -> Self {
        self.estimate.set(bytes);
        self
    }

    /// Changes the budget; raising it wakes waiters of every attached gate.
    ///
    /// # Panics
    ///
    /// When `bytes` is 0.
    pub fn set_budget(&self, bytes: u64) {
        assert!(bytes > 0, "ByteBudget::set_budget: the budget must be at least 1 byte");
        let old = self.budget.swap(bytes, Ordering::AcqRel);
        if bytes > old {
            self.listeners.notify_all();
        }
    }

    /// The current budget.
    pub fn budget(&self) -> u64 {
        self.budget.load(Ordering::Acquire)
    }

    /// The current per-update cost estimate, if any.
    pub fn estimated_cost(&self) -> Option<u64> {
        self.estimate.get()
    }
}

impl AdmissionPolicy for ByteBudget {
    fn measures_latency(&self) -> bool {
        false
    }

    fn fetch_limit(&self, load: &Load) -> usize {
        fetch_within(self.budget(), &self.estimate, load)
    }

    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.estimate.seed(cost);
        admits_within(self.budget(), load, cost)
    }

    fn limit(&self) -> Limit {
        Limit {
            slots: None,
            bytes: Some(self.budget()),
        }
    }

    fn on_complete(&self, completion: &Completion) {
        self.estimate.record(completion.cost);
    }

    fn attach(&self, signal: LimitSignal) {
        self.listeners.add(signal);
    }
}

/// The byte-budget admission rule, shared with `RssAdaptive`.
#[inline]
pub(crate) fn admits_within(budget: u64, load: &Load, cost: u64) -> bool {
    load.in_flight == 0 || load.bytes.saturating_add(cost) <= budget
}

/// The byte-budget fetch rule, shared with `RssAdaptive`.
pub(crate) fn fetch_within(budget: u64, estimate: &CostEstimate, load: &Load) -> usize {
    let nothing_held = load.in_flight == 0 && load.bytes == 0;
    let free = budget.saturating_sub(load.bytes);
    let fits = match estimate.get() {
        _ if free == 0 => 0,
        None => usize::MAX,
        Some(cost) => usize::try_from(free / cost.max(1)).unwrap_or(usize::MAX),
    };
    let n = fits.saturating_sub(load.waiting);
    if nothing_held { n.max(1) } else { n }
}

/// A lock-free moving average of update costs; 0 means "no estimate yet".
#[derive(Debug, Default)]
pub(crate) struct CostEstimate(AtomicU64);

impl CostEstimate {
    pub(crate) fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            cost => Some(cost),
        }
    }

    pub(crate) fn set(&self, cost: u64) {
        self.0.store(cost.max(1), Ordering::Relaxed);
    }

    /// Takes the first cost seen as the estimate (cheap no-op once an estimate exists).
    #[inline]
    pub(crate) fn seed(&self, cost: u64) {
        if self.0.load(Ordering::Relaxed) == 0 {
            let _ = self
                .0
                .compare_exchange(0, cost.max(1), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Moves the average 1/8 of the way towards `cost`.
    ///
    /// Read-mostly: when the estimate already equals what the sample would make it (steady
    /// costs), nothing is written, so the hot path does not bounce a cache line between
    /// workers. A lost race skips one sample, which an estimate can afford.
    pub(crate) fn record(&self, cost: u64) {
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 { cost } else { old - old / 8 + cost / 8 }.max(1);
        if new != old {
            let _ = self.0.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(in_flight: usize, bytes: u64) -> Load {
        Load {
            in_flight,
            bytes,
            ..Load::default()
        }
    }

    #[test]
    fn larger_than_budget_runs_alone_only() {
        let budget = ByteBudget::new(100);
        assert!(budget.admits(&load(0, 0), 1_000), "nothing runs: admitted");
        assert!(!budget.admits(&load(1, 10), 1_000), "something runs: refused");
        assert!(!budget.admits(&load(1, 0), 1_000), "a zero-cost permit still runs");
        // Reserved bytes alone do not block the only candidate (they wait to run too).
        let reserved_only = Load {
            bytes: 500,
            reserved: 3,
            ..Load::default()
        };
        assert!(budget.admits(&reserved_only, 1_000));
    }

    #[test]
    fn admits_up_to_the_budget() {
        let budget = ByteBudget::new(100);
        assert!(budget.admits(&load(1, 60), 40));
        assert!(!budget.admits(&load(1, 60), 41));
    }

    #[test]
    fn fetch_limit_divides_free_bytes_by_the_estimate() {
        let budget = ByteBudget::new(1000);
        assert_eq!(budget.fetch_limit(&load(0, 0)), usize::MAX, "no estimate yet");
        let budget = budget.expected_cost(100);
        assert_eq!(budget.fetch_limit(&load(0, 0)), 10);
        assert_eq!(budget.fetch_limit(&load(2, 450)), 5);
        let mut l = load(2, 450);
        l.waiting = 2;
        assert_eq!(budget.fetch_limit(&l), 3);
        assert_eq!(budget.fetch_limit(&load(3, 1000)), 0, "full");
        assert_eq!(budget.fetch_limit(&load(1, 950)), 0, "less than one estimate free");
    }

    #[test]
    fn fetch_limit_is_at_least_one_when_nothing_is_held() {
        let budget = ByteBudget::new(10).expected_cost(1_000);
        assert_eq!(budget.fetch_limit(&load(0, 0)), 1);
    }

    #[test]
    fn estimate_follows_completions() {
        let budget = ByteBudget::new(1000);
        budget.admits(&load(0, 0), 80);
        assert_eq!(budget.estimated_cost(), Some(80));
        budget.admits(&load(0, 0), 8_000); // seeding happens once
        assert_eq!(budget.estimated_cost(), Some(80));
        for _ in 0..100 {
            budget.on_complete(&Completion::new(
                160,
                crate::Outcome::Success,
                std::time::Duration::ZERO,
            ));
        }
        let estimate = budget.estimated_cost().unwrap();
        assert!((150..=160).contains(&estimate), "{estimate}");
    }
}
