//! [`Adaptive`]: a concurrency limit that follows the handlers' latency and overload.
//!
//! # When to choose it
//!
//! When handlers call something downstream whose capacity you do not know or that changes:
//! a database that slows down under load, an API that answers 429 or times out. A fixed
//! limit is then either too low (the downstream has room) or too high (handlers queue in
//! front of it, each holding its memory while it waits). An adaptive limit finds the
//! concurrency at which latency starts to rise, and backs off when the downstream says it
//! is overloaded, as TCP's congestion window does for a network path.
//!
//! # How it works, and why this way
//!
//! The *algorithm* (what the limit should be) is apart from the *policy* (who may run now),
//! as in Netflix's concurrency-limits: a [`LimitAlgorithm`] only turns [`Sample`]s into a
//! number, with no clock, no locks and no gate of its own, so its arithmetic is tested with
//! made-up samples. [`Adaptive`] owns the current limit (an atomic, read on every admit),
//! feeds it each [`Completion`], and tells the gate when the limit grew so waiters are
//! re-checked. Two algorithms are built in:
//!
//! - [`Aimd`]: additive increase, multiplicative decrease. +1 while the limit is used;
//!   × 0.9 on an overload (the handler returned [`Overloaded`], or timed out) or a latency
//!   above its timeout. Reacts to explicit overload signals; latency below the timeout does
//!   not move it.
//! - [`Gradient2`]: compares the latest latency with a long-term average; while they agree
//!   the limit grows by a small queue allowance, when latency rises it shrinks in proportion
//!   (never below half per sample), smoothed. Finds the knee of the latency curve without
//!   any overload signal.
//!
//! Only load-related feedback counts: a handler [`Error`](Outcome::Error) (a bug, a bad
//! update), a panic or a cancellation says nothing about the downstream's capacity and is
//! ignored, and the limit never grows while less than half of it is in use (the gate
//! counts the permits running when each is released: [`Completion::in_flight`], which
//! this policy asks for through [`AdmissionPolicy::measures_in_flight`]).
//!
//! # Composition
//!
//! It limits slots, not bytes: combine it with a memory budget through
//! [`all_of`](crate::all_of()): `all_of(Adaptive::new(Gradient2::default()),
//! ByteBudget::new(128 << 20))` runs as many as the downstream takes *and* memory allows.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//!
//! use pollgate_admission::{Adaptive, AdmissionPolicy, Aimd, Gate, Outcome};
//!
//! let policy = Adaptive::new(Aimd::new(10).bounds(2, 100));
//! let gate = Gate::new(policy);
//! let permits: Vec<_> = (0..10).map(|_| gate.try_acquire(0).unwrap()).collect();
//! assert!(gate.try_acquire(0).is_err(), "the limit is 10");
//! // The downstream pushes back: the limit drops to 9.
//! let mut permits = permits.into_iter();
//! permits.next().unwrap().finish(Outcome::Overload, Duration::from_millis(20));
//! assert_eq!(gate.policy().limit().slots, Some(9));
//! ```
//!
//! [`Overloaded`]: https://docs.rs/pollgate-runtime/latest/pollgate_runtime/struct.Overloaded.html

mod aimd;
mod gradient2;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

pub use aimd::Aimd;
pub use gradient2::Gradient2;

use crate::policy::{AdmissionPolicy, Completion, Limit, LimitSignal, LimitSignals, Load, Outcome};

/// One finished update, as a limit algorithm sees it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::{Gradient2, LimitAlgorithm, Sample};
///
/// let mut g = Gradient2::new(20);
/// let used = Sample::new(Duration::from_millis(10), 20, false);
/// assert!(!used.overloaded);
/// // One window (20 samples, the limit) of flat latency grows the limit a little.
/// let limit = (0..20).map(|_| g.update(used)).last().unwrap();
/// assert_eq!(limit, 20, "20.8, reported as a whole number");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// How long its handler held its permit.
    pub latency: Duration,
    /// Handlers running in its gate when it finished, itself included
    /// ([`Completion::in_flight`]).
    pub in_flight: usize,
    /// Whether the handler reported overload (or timed out): the downstream pushed back.
    pub overloaded: bool,
}

impl Sample {
    /// A sample, for driving an algorithm by hand (tests, simulations).
    pub fn new(latency: Duration, in_flight: usize, overloaded: bool) -> Sample {
        Sample {
            latency,
            in_flight,
            overloaded,
        }
    }
}

/// Turns samples into a concurrency limit: the algorithm half of [`Adaptive`].
///
/// Implementations are plain arithmetic: no clock (the latency comes in the sample), no
/// threads. `update` is called once per load-related completion, under a short lock.
///
/// # Examples
///
/// Driving an algorithm with made-up samples, as its tests do:
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_admission::{Aimd, LimitAlgorithm, Sample};
///
/// let mut aimd = Aimd::new(10);
/// let ms = Duration::from_millis(5);
/// assert_eq!(aimd.update(Sample::new(ms, 10, false)), 11, "used: grows by one");
/// assert_eq!(aimd.update(Sample::new(ms, 2, false)), 11, "under-used: holds");
/// assert_eq!(aimd.update(Sample::new(ms, 11, true)), 9, "overload: × 0.9");
/// ```
pub trait LimitAlgorithm: Send + fmt::Debug + 'static {
    /// The limit before any sample.
    fn initial_limit(&self) -> usize;

    /// Takes one sample and returns the new limit (at least 1).
    fn update(&mut self, sample: Sample) -> usize;
}

/// A concurrency limit driven by a [`LimitAlgorithm`]. See the [module docs](self).
///
/// # Examples
///
/// Any [`LimitAlgorithm`] drives it; here one that halves on overload and otherwise holds:
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::{Adaptive, Gate, LimitAlgorithm, Outcome, Sample};
///
/// #[derive(Debug)]
/// struct Halve(usize);
///
/// impl LimitAlgorithm for Halve {
///     fn initial_limit(&self) -> usize { self.0 }
///     fn update(&mut self, sample: Sample) -> usize {
///         if sample.overloaded {
///             self.0 = (self.0 / 2).max(1);
///         }
///         self.0
///     }
/// }
///
/// let gate = Gate::new(Adaptive::new(Halve(8)));
/// let permit = gate.try_acquire(0).unwrap();
/// permit.finish(Outcome::Overload, Duration::from_millis(30));
/// assert_eq!(gate.stats().limit.slots, Some(4));
/// assert_eq!(gate.fetch_limit(), 4);
/// ```
pub struct Adaptive<A> {
    algorithm: Mutex<A>,
    limit: AtomicUsize,
    listeners: LimitSignals,
}

impl<A: LimitAlgorithm> Adaptive<A> {
    /// A policy that starts at the algorithm's initial limit.
    pub fn new(algorithm: A) -> Adaptive<A> {
        let initial = algorithm.initial_limit().max(1);
        Adaptive {
            algorithm: Mutex::new(algorithm),
            limit: AtomicUsize::new(initial),
            listeners: LimitSignals::default(),
        }
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }
}

impl<A: LimitAlgorithm> AdmissionPolicy for Adaptive<A> {
    fn fetch_limit(&self, load: &Load) -> usize {
        self.current()
            .saturating_sub(load.in_flight.saturating_add(load.waiting))
    }

    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < self.current()
    }

    fn measures_in_flight(&self) -> bool {
        true
    }

    fn limit(&self) -> Limit {
        Limit {
            slots: Some(self.current()),
            bytes: None,
        }
    }

    fn on_complete(&self, completion: &Completion) {
        let overloaded = match completion.outcome {
            Outcome::Success => false,
            Outcome::Overload => true,
            // Not about the downstream's capacity: a bug, a bad update, an abort.
            _ => return,
        };
        // The gate counts this update until after this call: at least 1.
        let sample = Sample::new(completion.latency, completion.in_flight.max(1), overloaded);
        let (before, after) = {
            let mut algorithm = self.algorithm.lock();
            let before = self.current();
            let after = algorithm.update(sample).max(1);
            self.limit.store(after, Ordering::Release);
            (before, after)
        };
        if after > before {
            self.listeners.notify_all();
        }
    }

    fn attach(&self, signal: LimitSignal) {
        self.listeners.add(signal);
    }
}

impl<A: fmt::Debug> fmt::Debug for Adaptive<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adaptive")
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("algorithm", &*self.algorithm.lock())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gate;

    #[test]
    fn errors_panics_and_cancellations_do_not_move_the_limit() {
        let gate = Gate::new(Adaptive::new(Aimd::new(4)));
        for outcome in [Outcome::Error, Outcome::Panic] {
            gate.try_acquire(0).unwrap().finish(outcome, Duration::from_secs(60));
        }
        drop(gate.try_acquire(0).unwrap()); // cancelled
        assert_eq!(gate.policy().limit().slots, Some(4));
    }

    #[test]
    fn a_raised_limit_admits_a_waiter() {
        let gate = Gate::new(Adaptive::new(Aimd::new(1).bounds(1, 10)));
        let first = gate.try_acquire(0).unwrap();
        assert!(gate.try_acquire(0).is_err());
        // Used (1 of 1): a success grows the limit to 2.
        first.finish(Outcome::Success, Duration::from_millis(1));
        let a = gate.try_acquire(0).unwrap();
        let b = gate.try_acquire(0).expect("the limit grew to 2");
        drop((a, b));
    }
}
