//! [`Permit`] and [`Reservation`]: RAII guards that give capacity back when dropped.
//!
//! A permit travels with the work it admits and is released by being dropped — on success,
//! on error, on panic (unwinding drops it) and on cancellation. [`Permit::finish`] is the
//! polite way: it reports the outcome and latency to the policy first. A plain drop reports
//! [`Outcome::Cancelled`] so that a policy can tell aborted work from finished work.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gate::Shared;
use crate::policy::{Completion, Outcome};

/// The right to run one update; returns its capacity to the gate when dropped.
///
/// Dropping a permit without [`finish`](Self::finish) reports [`Outcome::Cancelled`] with
/// the time since it was granted (zero when the policy does not
/// [measure latency](crate::AdmissionPolicy::measures_latency)).
///
/// # Examples
///
/// The permit travels into the task that does the work, and its capacity comes back
/// however that task ends:
///
/// ```
/// use std::time::{Duration, Instant};
/// use pollgate_admission::{Fixed, Gate, Outcome};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let gate = Gate::new(Fixed::new(2));
/// let permit = gate.acquire(1).await.unwrap();
/// let done = tokio::spawn(async move {
///     let started = Instant::now();
///     // ... handle the update ...
///     permit.finish(Outcome::Success, started.elapsed());
/// });
/// let aborted = tokio::spawn({
///     let permit = gate.acquire(1).await.unwrap();
///     async move {
///         let _permit = permit;
///         tokio::time::sleep(Duration::from_secs(3600)).await;
///     }
/// });
/// assert_eq!(gate.load().in_flight, 2);
/// done.await.unwrap();
/// aborted.abort(); // the dropped permit reports `Outcome::Cancelled`
/// assert!(aborted.await.unwrap_err().is_cancelled());
/// assert_eq!(gate.load().in_flight, 0);
/// # }
/// ```
#[must_use = "the update is admitted only while the permit is held"]
pub struct Permit {
    shared: Option<Arc<Shared>>,
    cost: u64,
    /// When it was granted, if the policy measures latency.
    granted_at: Option<Instant>,
}

impl Permit {
    pub(crate) fn new(shared: Arc<Shared>, cost: u64) -> Self {
        let granted_at = shared.measures_latency.then(Instant::now);
        Self {
            shared: Some(shared),
            cost,
            granted_at,
        }
    }

    /// The cost this permit was acquired with.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Reports the outcome to the policy ([`on_complete`]), then releases the capacity.
    ///
    /// [`on_complete`]: crate::AdmissionPolicy::on_complete
    ///
    /// # Examples
    ///
    /// The outcome is what an adaptive policy learns from: an overload shrinks its limit,
    /// an error unrelated to load does not.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Adaptive, Aimd, Gate, Outcome};
    ///
    /// let gate = Gate::new(Adaptive::new(Aimd::new(10)));
    /// let ms = Duration::from_millis(8);
    /// gate.try_acquire(0).unwrap().finish(Outcome::Error, ms);
    /// assert_eq!(gate.stats().limit.slots, Some(10));
    /// gate.try_acquire(0).unwrap().finish(Outcome::Overload, ms);
    /// assert_eq!(gate.stats().limit.slots, Some(9));
    /// ```
    pub fn finish(self, outcome: Outcome, latency: Duration) {
        let cost = self.cost;
        self.report(Completion::new(cost, outcome, latency));
    }

    /// Like [`finish`](Self::finish), with everything `completion` says (the ordering
    /// key, a downstream's `retry_after`). Its `cost` and `in_flight` are the gate's,
    /// whatever `completion` holds.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use pollgate_admission::{Completion, Fixed, Gate, Outcome};
    ///
    /// let gate = Gate::new(Fixed::new(2));
    /// let permit = gate.try_acquire(1).unwrap();
    /// let done = Completion::new(0, Outcome::Overload, Duration::from_millis(40))
    ///     .with_key(Some(42))
    ///     .with_retry_after(Some(Duration::from_secs(3)));
    /// permit.report(done);
    /// assert_eq!(gate.load().in_flight, 0);
    /// ```
    pub fn report(mut self, completion: Completion) {
        if let Some(shared) = self.shared.take() {
            complete(&shared, self.cost, completion);
        }
    }
}

fn complete(shared: &Shared, cost: u64, completion: Completion) {
    // One more look under the gate's lock, only for policies that asked for it.
    let in_flight = if shared.measures_in_flight {
        shared.state.lock().in_flight
    } else {
        0
    };
    shared.policy.on_complete(&Completion {
        cost,
        in_flight,
        ..completion
    });
    shared.release(cost);
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let latency = self.granted_at.map_or(Duration::ZERO, |at| at.elapsed());
            complete(
                &shared,
                self.cost,
                Completion::new(self.cost, Outcome::Cancelled, latency),
            );
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("cost", &self.cost)
            .field("granted_at", &self.granted_at)
            .finish()
    }
}

/// Bytes counted for an update that is in memory but not running (for example waiting
/// behind its ordering key). Holds no slot; dropping it returns the bytes.
///
/// Made by [`Gate::reserve`](crate::Gate::reserve), consumed by
/// [`Gate::acquire_reserved`](crate::Gate::acquire_reserved).
///
/// # Examples
///
/// A runtime with per-chat ordering reserves an update's bytes as soon as it is fetched,
/// and turns the reservation into a permit when the chat's previous update is done:
///
/// ```
/// use pollgate_admission::{ByteBudget, Gate};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let gate = Gate::new(ByteBudget::new(1000));
/// let first = gate.acquire(400).await.unwrap(); // running: chat 7's first update
/// let second = gate.reserve(400); // chat 7's next update, in memory, waiting its turn
/// assert_eq!(second.cost(), 400);
/// assert!(gate.try_acquire(400).is_err(), "the reserved bytes count against the budget");
/// drop(first);
/// let second = gate.acquire_reserved(second).await.unwrap();
/// assert_eq!((gate.load().bytes, gate.load().reserved), (400, 0));
/// # drop(second);
/// # }
/// ```
#[must_use = "the bytes are counted only while the reservation is held"]
pub struct Reservation {
    shared: Option<Arc<Shared>>,
    cost: u64,
}

impl Reservation {
    pub(crate) fn new(shared: Arc<Shared>, cost: u64) -> Self {
        Self {
            shared: Some(shared),
            cost,
        }
    }

    /// The bytes this reservation holds.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        self.shared.as_ref().expect("reservation is live")
    }

    /// Hands the reservation's bytes over to a permit (the gate already moved the
    /// reservation to `in_flight` under its lock).
    pub(crate) fn into_permit(mut self) -> Permit {
        let shared = self.shared.take().expect("reservation is live");
        Permit::new(shared, self.cost)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.unreserve(self.cost);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").field("cost", &self.cost).finish()
    }
}
