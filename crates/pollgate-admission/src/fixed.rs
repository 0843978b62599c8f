//! [`Fixed`]: at most `C` handlers at once.
//!
//! # When to choose it
//!
//! When handlers are alike and their memory is small or bounded elsewhere, a concurrency
//! limit is the simplest policy that keeps a backlog from turning into unbounded work: the
//! runtime fetches only as many updates as there are free slots.
//!
//! # Failure modes
//!
//! It knows nothing about memory: `C` large handlers can still exhaust it. Combine with
//! [`ByteBudget`](crate::ByteBudget) or [`RssAdaptive`](crate::RssAdaptive) through
//! [`all_of`](crate::all_of()) when update sizes vary.
//!
//! # Knobs
//!
//! The limit, which [`Fixed::set_limit`] changes at run time (raising it wakes waiters of
//! every gate the policy is attached to; lowering it lets running handlers finish).
//!
//! # Fetch limit
//!
//! `C − in_flight − waiting`. Reservations (updates waiting behind their ordering key) hold
//! no slot and do not reduce it; the runtime bounds them itself.
//!
//! # Examples
//!
//! ```
//! use pollgate_admission::{Fixed, Gate};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let policy = Arc::new(Fixed::new(1));
//! let gate = Gate::with_shared(policy.clone());
//! let first = gate.acquire(0).await.unwrap();
//! assert_eq!(gate.fetch_limit(), 0);
//!
//! // Raising the limit at run time re-checks the gate's waiters.
//! let second = tokio::spawn({
//!     let gate = gate.clone();
//!     async move { gate.acquire(0).await.unwrap() }
//! });
//! tokio::task::yield_now().await;
//! policy.set_limit(2);
//! let second = second.await.unwrap();
//! assert_eq!(gate.load().in_flight, 2);
//! # drop((first, second));
//! # }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::policy::{AdmissionPolicy, Limit, LimitSignal, LimitSignals, Load};

/// Admits while fewer than a fixed number of permits run. See the [module docs](self).
///
/// # Examples
///
/// Lowering the limit revokes nothing: it applies as running permits are released.
///
/// ```
/// use std::sync::Arc;
/// use pollgate_admission::{Fixed, Gate};
///
/// let policy = Arc::new(Fixed::new(3));
/// let gate = Gate::with_shared(policy.clone());
/// let mut running: Vec<_> = (0..3).map(|_| gate.try_acquire(1).unwrap()).collect();
/// policy.set_limit(2);
/// assert_eq!((policy.slots(), gate.load().in_flight), (2, 3));
/// running.pop();
/// assert!(gate.try_acquire(1).is_err(), "2 running: at the new limit");
/// running.pop();
/// assert!(gate.try_acquire(1).is_ok());
/// ```
#[derive(Debug)]
pub struct Fixed {
    limit: AtomicUsize,
    listeners: LimitSignals,
}

impl Fixed {
    /// At most `limit` permits at once.
    ///
    /// # Panics
    ///
    /// When `limit` is 0: a gate that admits nothing would never make progress.
    pub fn new(limit: usize) -> Self {
        assert!(limit > 0, "Fixed::new: the concurrency limit must be at least 1");
        Self {
            limit: AtomicUsize::new(limit),
            listeners: LimitSignals::default(),
        }
    }

    /// Changes the limit; raising it wakes waiters of every attached gate.
    ///
    /// Lowering it takes effect as running permits are released (none is revoked).
    ///
    /// # Panics
    ///
    /// When `limit` is 0.
    pub fn set_limit(&self, limit: usize) {
        assert!(limit > 0, "Fixed::set_limit: the concurrency limit must be at least 1");
        let old = self.limit.swap(limit, Ordering::AcqRel);
        if limit > old {
            self.listeners.notify_all();
        }
    }

    /// How many permits may run at once now (the trait's [`limit`](AdmissionPolicy::limit)
    /// reports the same as a [`Limit`]).
    pub fn slots(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }
}

impl AdmissionPolicy for Fixed {
    fn measures_latency(&self) -> bool {
        false
    }

    fn fetch_limit(&self, load: &Load) -> usize {
        self.slots().saturating_sub(load.in_flight.saturating_add(load.waiting))
    }

    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < self.slots()
    }

    fn limit(&self) -> Limit {
        Limit {
            slots: Some(self.slots()),
            bytes: None,
        }
    }

    fn attach(&self, signal: LimitSignal) {
        self.listeners.add(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(in_flight: usize, waiting: usize) -> Load {
        Load {
            in_flight,
            waiting,
            ..Load::default()
        }
    }

    #[test]
    fn admits_below_limit_only() {
        let fixed = Fixed::new(2);
        assert!(fixed.admits(&load(1, 5), u64::MAX));
        assert!(!fixed.admits(&load(2, 0), 0));
    }

    #[test]
    fn fetch_limit_counts_waiters_not_reservations() {
        let fixed = Fixed::new(10);
        let mut l = load(3, 2);
        l.reserved = 50;
        l.bytes = 1 << 30;
        assert_eq!(fixed.fetch_limit(&l), 5);
        assert_eq!(fixed.fetch_limit(&load(9, 4)), 0);
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn zero_limit_panics() {
        let _ = Fixed::new(0);
    }
}
