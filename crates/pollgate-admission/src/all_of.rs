//! [`all_of`]: admit only when every member policy admits.
//!
//! # When to choose it
//!
//! To combine limits on different axes — typically "at most 32 handlers **and** at most
//! 512 MiB of declared cost": `all_of(Fixed::new(32), ByteBudget::new(512 << 20))`.
//! Nest it for more than two members.
//!
//! # Semantics
//!
//! `admits` is true iff both admit (the second is not asked when the first refuses);
//! `fetch_limit` is the smaller of the two; `limit` is the tightest on each axis; every hook
//! (`on_complete`, `on_batch`, `on_memory`, `attach`) goes to both; `memory_sample` is the
//! first member's, else the second's.
//!
//! # Failure modes
//!
//! None of its own; it inherits each member's. A member's progress guarantee (such as
//! `ByteBudget`'s run-alone rule) holds only as far as the other member admits too.
//!
//! # Examples
//!
//! ```
//! use pollgate_admission::{all_of, ByteBudget, Fixed, Gate};
//!
//! let gate = Gate::new(all_of(Fixed::new(2), ByteBudget::new(1000)));
//! let a = gate.try_acquire(900).unwrap();
//! assert!(gate.try_acquire(200).is_err(), "bytes refuse");
//! let b = gate.try_acquire(50).unwrap();
//! assert!(gate.try_acquire(10).is_err(), "slots refuse");
//! # drop((a, b));
//! ```

use crate::policy::{AdmissionPolicy, Completion, Limit, LimitSignal, Load, MemorySample};

/// Both policies must admit. See the [module docs](self).
///
/// # Examples
///
/// The members stay reachable, to tune one at run time:
///
/// ```
/// use std::sync::Arc;
/// use pollgate_admission::{AdmissionPolicy, AllOf, ByteBudget, Fixed, Gate};
///
/// let policy = Arc::new(AllOf::new(Fixed::new(8), ByteBudget::new(1 << 20)));
/// let gate = Gate::with_shared(policy.clone());
/// policy.second().set_budget(2 << 20);
/// assert_eq!(policy.limit().bytes, Some(2 << 20));
/// assert_eq!(policy.first().slots(), 8);
/// # drop(gate);
/// ```
#[derive(Debug, Clone)]
pub struct AllOf<A, B> {
    first: A,
    second: B,
}

/// Combines two policies: admits only when both do.
///
/// # Examples
///
/// Three axes at once, by nesting: the [`Limit`] reported is the tightest on each.
///
/// ```
/// use pollgate_admission::{AdmissionPolicy, ByteBudget, Fixed, Limit, all_of};
///
/// let policy = all_of(Fixed::new(32), all_of(Fixed::new(16), ByteBudget::new(64 << 20)));
/// assert_eq!(policy.limit(), Limit::new(Some(16), Some(64 << 20)));
/// ```
pub fn all_of<A: AdmissionPolicy, B: AdmissionPolicy>(first: A, second: B) -> AllOf<A, B> {
    AllOf::new(first, second)
}

impl<A, B> AllOf<A, B> {
    /// Same as [`all_of`].
    pub fn new(first: A, second: B) -> Self {
        Self { first, second }
    }

    /// The first member.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The second member.
    pub fn second(&self) -> &B {
        &self.second
    }

    /// The two members.
    pub fn into_inner(self) -> (A, B) {
        (self.first, self.second)
    }
}

fn tightest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<A: AdmissionPolicy, B: AdmissionPolicy> AdmissionPolicy for AllOf<A, B> {
    fn fetch_limit(&self, load: &Load) -> usize {
        self.first.fetch_limit(load).min(self.second.fetch_limit(load))
    }

    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.first.admits(load, cost) && self.second.admits(load, cost)
    }

    fn limit(&self) -> Limit {
        let (a, b) = (self.first.limit(), self.second.limit());
        Limit {
            slots: tightest(a.slots, b.slots),
            bytes: tightest(a.bytes, b.bytes),
        }
    }

    fn on_complete(&self, completion: &Completion) {
        self.first.on_complete(completion);
        self.second.on_complete(completion);
    }

    fn on_batch(&self, fetched: usize) {
        self.first.on_batch(fetched);
        self.second.on_batch(fetched);
    }

    fn on_memory(&self, sample: MemorySample) {
        self.first.on_memory(sample);
        self.second.on_memory(sample);
    }

    fn memory_sample(&self) -> Option<MemorySample> {
        self.first.memory_sample().or_else(|| self.second.memory_sample())
    }

    fn memory_target(&self) -> Option<u64> {
        self.first.memory_target().or_else(|| self.second.memory_target())
    }

    fn measures_latency(&self) -> bool {
        self.first.measures_latency() || self.second.measures_latency()
    }

    fn measures_in_flight(&self) -> bool {
        self.first.measures_in_flight() || self.second.measures_in_flight()
    }

    fn attach(&self, signal: LimitSignal) {
        self.first.attach(signal.clone());
        self.second.attach(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteBudget, Fixed};

    #[test]
    fn limit_is_the_tightest_and_fetch_the_smallest() {
        let policy = all_of(Fixed::new(4), all_of(Fixed::new(3), ByteBudget::new(10)));
        assert_eq!(
            policy.limit(),
            Limit {
                slots: Some(3),
                bytes: Some(10)
            }
        );
        let load = Load {
            in_flight: 1,
            ..Load::default()
        };
        assert_eq!(policy.fetch_limit(&load), 2);
    }
}
