//! The [`Gate`]: who may run now, in arrival order.
//!
//! The gate is the *mechanism* half of admission control (the policy is the algorithm). It
//! owns the in-flight accounting and a FIFO queue of waiters, and asks its
//! [`AdmissionPolicy`] whether the head of the queue may start. Everything lives behind one
//! `parking_lot` mutex: the uncontended path of `acquire` + release is one lock each, the
//! policy's `admits` call, and no allocation.
//!
//! Releases hand capacity over under the lock: a release grants permits to waiters in FIFO
//! order while the policy admits the head, and wakes exactly those. So there is no
//! thundering herd, and no waiter is left asleep while capacity it could use is free. While
//! anyone waits, newcomers queue behind, so a large update at the head is not starved by a
//! stream of small ones.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Waker;

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Closed, TryAcquireError};
use crate::permit::{Permit, Reservation};
use crate::policy::{AdmissionPolicy, Limit, LimitSignal, Load, MemorySample};
use crate::wait::{Acquire, Watch, WatchMode};

/// A waiter's fate, written under the gate's lock and read by its future.
pub(crate) const WAITING: u8 = 0;
pub(crate) const GRANTED: u8 = 1;
pub(crate) const CLOSED: u8 = 2;

/// Admission control for one stream of work: hands out [`Permit`]s when its policy admits.
///
/// A `Gate` is cheap to clone (an `Arc` inside); clones share the same accounting. Several
/// gates may share one policy ([`Gate::with_shared`]).
///
/// # Examples
///
/// ## Bound concurrency
///
/// Four handlers at most; the fifth waits for a release.
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::{Fixed, Gate, Outcome};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let gate = Gate::new(Fixed::new(4));
/// let mut handlers = Vec::new();
/// for id in 0..10u64 {
///     let permit = gate.acquire(1).await.expect("gate open");
///     handlers.push(tokio::spawn(async move {
///         tokio::time::sleep(Duration::from_millis(10 * id)).await;
///         permit.finish(Outcome::Success, Duration::from_millis(10 * id));
///     }));
///     assert!(gate.load().in_flight <= 4);
/// }
/// for handler in handlers {
///     handler.await.unwrap();
/// }
/// assert_eq!(gate.load().in_flight, 0);
/// # }
/// ```
///
/// ## Fetch only what can be admitted
///
/// The runtime's loop: wait until the policy allows a fetch, fetch at most that many, then
/// admit each update.
///
/// ```
/// use pollgate_admission::{Fixed, Gate};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let gate = Gate::new(Fixed::new(8));
/// let held = gate.acquire(1).await.unwrap();
/// let n = gate.fetch_ready().await.unwrap();
/// assert_eq!(n, 7); // never fetch more than can start
/// # drop(held);
/// # }
/// ```
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

/// Counters and limits of a gate at one instant.
///
/// # Examples
///
/// A policy that steers memory reports its target (and its latest sample) here too:
///
/// ```
/// use pollgate_admission::{Gate, RssAdaptive};
///
/// let policy = RssAdaptive::builder(1 << 30).probe(|| Some(100 << 20)).build_manual();
/// let gate = Gate::new(policy);
/// let stats = gate.stats();
/// assert_eq!((stats.memory_target, stats.memory), (Some(1 << 30), None));
/// assert_eq!(stats.limit.slots, None, "it limits bytes, not slots");
/// ```
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct GateStats {
    /// What the policy enforces now.
    pub limit: Limit,
    /// Running permits.
    pub in_flight: usize,
    /// Bytes held by running permits and reservations.
    pub bytes: u64,
    /// Outstanding reservations.
    pub reserved: usize,
    /// `acquire` calls waiting in the queue.
    pub waiting: usize,
    /// Permits granted since the gate was built.
    pub admitted: u64,
    /// Permits released since the gate was built.
    pub completed: u64,
    /// The most permits that were out at once since the gate was built.
    pub max_in_flight: usize,
    /// The policy's latest memory sample, if it takes any.
    pub memory: Option<MemorySample>,
    /// The resident memory the policy steers toward, if it steers memory.
    pub memory_target: Option<u64>,
}

impl Gate {
    /// Creates a gate that owns its policy.
    pub fn new(policy: impl AdmissionPolicy) -> Gate {
        Self::with_shared(Arc::new(policy))
    }

    /// Creates a gate around a policy that other gates may share.
    ///
    /// The policy's [`attach`](AdmissionPolicy::attach) is called with this gate's signal.
    ///
    /// # Examples
    ///
    /// Two streams of work with their own accounting under one limit, which one call
    /// changes for both:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pollgate_admission::{Fixed, Gate};
    ///
    /// let policy = Arc::new(Fixed::new(1));
    /// let (a, b) = (Gate::with_shared(policy.clone()), Gate::with_shared(policy.clone()));
    /// let held = a.try_acquire(1).unwrap();
    /// assert!(b.try_acquire(1).is_ok(), "each gate counts its own permits");
    /// assert!(a.try_acquire(1).is_err());
    /// policy.set_limit(2);
    /// assert!(a.try_acquire(1).is_ok());
    /// # drop(held);
    /// ```
    pub fn with_shared(policy: Arc<dyn AdmissionPolicy>) -> Gate {
        let shared = Arc::new(Shared {
            measures_latency: policy.measures_latency(),
            measures_in_flight: policy.measures_in_flight(),
            policy,
            state: Padded(Mutex::new(State::default())),
        });
        shared.policy.attach(LimitSignal::new(Arc::downgrade(&shared)));
        Gate { shared }
    }

    /// The policy this gate asks.
    pub fn policy(&self) -> &Arc<dyn AdmissionPolicy> {
        &self.shared.policy
    }

    /// Waits until the policy admits an update of this `cost`, and returns its permit.
    ///
    /// Waiters are served first come, first served: while anyone waits, a newcomer queues
    /// behind even if it would fit, so a large update is not starved by small ones.
    ///
    /// # Errors
    ///
    /// [`Closed`] when the gate is closed, before or while waiting.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up its place in the queue. If the permit had already been
    /// granted to it, the capacity is returned (and reported as [`Outcome::Cancelled`]).
    ///
    /// [`Outcome::Cancelled`]: crate::Outcome::Cancelled
    ///
    /// # Examples
    ///
    /// A second acquire waits until the first permit is released:
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Fixed, Gate, Outcome};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let gate = Gate::new(Fixed::new(1));
    /// let first = gate.acquire(1).await.unwrap();
    /// let waiting = tokio::time::timeout(Duration::from_secs(1), gate.acquire(1)).await;
    /// assert!(waiting.is_err(), "no slot: still waiting after a second");
    /// first.finish(Outcome::Success, Duration::from_millis(5));
    /// let second = gate.acquire(1).await.unwrap();
    /// assert_eq!(gate.load().in_flight, 1);
    /// # drop(second);
    /// # }
    /// ```
    pub async fn acquire(&self, cost: u64) -> Result<Permit, Closed> {
        Acquire::new(&self.shared, cost, None).await
    }

    /// Returns a permit if the policy admits `cost` right now and nobody is waiting.
    ///
    /// Never waits and never jumps the queue.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::Closed`] when the gate is closed; [`TryAcquireError::NoCapacity`]
    /// when the policy refuses or others wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_admission::{Fixed, Gate, TryAcquireError};
    ///
    /// let gate = Gate::new(Fixed::new(1));
    /// let permit = gate.try_acquire(1).unwrap();
    /// assert_eq!(gate.try_acquire(1).unwrap_err(), TryAcquireError::NoCapacity);
    /// gate.close();
    /// assert_eq!(gate.try_acquire(1).unwrap_err(), TryAcquireError::Closed);
    /// drop(permit); // still valid after the close; released as usual
    /// ```
    pub fn try_acquire(&self, cost: u64) -> Result<Permit, TryAcquireError> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(TryAcquireError::Closed);
        }
        if state.waiters.is_empty() && self.shared.policy.admits(&state.load(), cost) {
            state.grant(cost, false);
            drop(state);
            Ok(Permit::new(self.shared.clone(), cost))
        } else {
            Err(TryAcquireError::NoCapacity)
        }
    }

    /// Counts `cost` bytes as held by an update that is in memory but not running yet.
    ///
    /// The reservation shows in [`Load::reserved`] and [`Load::bytes`], holds no slot, never
    /// waits and is never refused (the update is already in memory; refusing would not free
    /// it). Turn it into a permit with [`acquire_reserved`](Self::acquire_reserved); dropping
    /// it returns the bytes.
    ///
    /// # Examples
    ///
    /// An update waiting behind another of its chat holds its bytes, not a slot:
    ///
    /// ```
    /// use pollgate_admission::{ByteBudget, Gate};
    ///
    /// let gate = Gate::new(ByteBudget::new(1000));
    /// let running = gate.try_acquire(600).unwrap();
    /// let queued = gate.reserve(300);
    /// let load = gate.load();
    /// assert_eq!((load.in_flight, load.reserved, load.bytes), (1, 1, 900));
    /// assert!(gate.try_acquire(200).is_err(), "600 + 300 + 200 is over the budget");
    /// drop(queued);
    /// assert_eq!(gate.load().bytes, 600);
    /// # drop(running);
    /// ```
    pub fn reserve(&self, cost: u64) -> Reservation {
        let mut state = self.shared.state.lock();
        state.reserved += 1;
        state.bytes += cost;
        drop(state);
        Reservation::new(self.shared.clone(), cost)
    }

    /// Turns a reservation into a running permit, waiting in FIFO order like
    /// [`acquire`](Self::acquire).
    ///
    /// The reservation's bytes stay counted throughout, exactly once; the [`Load`] the policy
    /// sees for this candidate excludes its own bytes and reservation.
    ///
    /// # Errors
    ///
    /// [`Closed`] when the gate is closed; the reservation is dropped (its bytes returned).
    ///
    /// # Cancel safety
    ///
    /// As for [`acquire`](Self::acquire); dropping the future also drops the reservation,
    /// so its bytes are returned too (whether it was still queued or already granted).
    ///
    /// # Panics
    ///
    /// If `reservation` was made by another gate (checked when called, in release builds
    /// too): its bytes are counted there, and admitting it here would count them nowhere.
    ///
    /// # Examples
    ///
    /// The reservation's bytes become the permit's, counted once throughout:
    ///
    /// ```
    /// use pollgate_admission::{Fixed, Gate};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let gate = Gate::new(Fixed::new(4));
    /// let reservation = gate.reserve(512);
    /// assert_eq!((gate.load().reserved, gate.load().bytes), (1, 512));
    /// let permit = gate.acquire_reserved(reservation).await.unwrap();
    /// let load = gate.load();
    /// assert_eq!((load.in_flight, load.reserved, load.bytes), (1, 0, 512));
    /// assert_eq!(permit.cost(), 512);
    /// # }
    /// ```
    #[track_caller]
    pub fn acquire_reserved(
        &self,
        reservation: Reservation,
    ) -> impl Future<Output = Result<Permit, Closed>> + Send + '_ {
        assert!(
            Arc::ptr_eq(reservation.shared(), &self.shared),
            "a reservation must be used with the gate that made it"
        );
        let cost = reservation.cost();
        Acquire::new(&self.shared, cost, Some(reservation))
    }

    /// What the gate holds now.
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_admission::{Fixed, Gate, Load};
    ///
    /// let gate = Gate::new(Fixed::new(4));
    /// let permit = gate.try_acquire(100).unwrap();
    /// assert_eq!(gate.load(), Load::new(1, 100));
    /// drop(permit);
    /// assert_eq!(gate.load(), Load::default());
    /// ```
    pub fn load(&self) -> Load {
        self.shared.state.lock().load()
    }

    /// How many updates may be fetched now, per the policy (`0`: wait).
    pub fn fetch_limit(&self) -> usize {
        let state = self.shared.state.lock();
        self.shared.policy.fetch_limit(&state.load())
    }

    /// Waits until [`fetch_limit`](Self::fetch_limit) is above zero and returns it.
    ///
    /// The limit is re-checked on every release, reservation drop, cancelled waiter and limit
    /// signal; a change between the check and the wait cannot be missed.
    ///
    /// # Errors
    ///
    /// [`Closed`] when the gate is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken until it returns.
    pub async fn fetch_ready(&self) -> Result<usize, Closed> {
        Watch::new(&self.shared, WatchMode::FetchAtLeast(1)).await
    }

    /// Waits until [`fetch_limit`](Self::fetch_limit) is at least `min` (at least 1) and
    /// returns it. The waiting task is woken only when the limit reaches `min`, not at
    /// every release: a dispatcher that wants to fetch in batches sleeps until a batch
    /// fits.
    ///
    /// # Errors
    ///
    /// [`Closed`] when the gate is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future just stops waiting.
    ///
    /// # Examples
    ///
    /// Wait for room for a batch of three, not for the first free slot:
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Fixed, Gate};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let gate = Gate::new(Fixed::new(4));
    /// let mut running: Vec<_> = (0..4).map(|_| gate.try_acquire(1).unwrap()).collect();
    /// running.pop(); // one slot free: not enough
    /// let early = tokio::time::timeout(Duration::from_secs(1), gate.fetch_ready_at_least(3));
    /// assert!(early.await.is_err());
    /// running.truncate(1);
    /// assert_eq!(gate.fetch_ready_at_least(3).await, Ok(3));
    /// # }
    /// ```
    pub async fn fetch_ready_at_least(&self, min: usize) -> Result<usize, Closed> {
        Watch::new(&self.shared, WatchMode::FetchAtLeast(min.max(1))).await
    }

    /// Resolves at the next capacity change: a release, a reservation drop, a cancelled
    /// waiter, a limit signal or [`close`](Self::close). Resolves at once when closed.
    ///
    /// A change counts from the first poll on: one that happened between the call and the
    /// first poll does not wake it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it takes nothing, and dropping the future just stops waiting (a change
    /// it would have seen is not kept for the next call).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Fixed, Gate};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let gate = Gate::new(Fixed::new(2));
    /// let permit = gate.try_acquire(1).unwrap();
    /// let quiet = tokio::time::timeout(Duration::from_secs(1), gate.changed());
    /// assert!(quiet.await.is_err(), "nothing changed");
    /// tokio::spawn(async move { drop(permit) });
    /// gate.changed().await; // the release
    /// assert_eq!(gate.load().in_flight, 0);
    /// # }
    /// ```
    pub async fn changed(&self) {
        let _ = Watch::new(&self.shared, WatchMode::Changed).await;
    }

    /// Resolves once the gate is closed (at once if it is already). Unlike
    /// [`changed`](Self::changed), releases and limit changes do not wake it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future just stops waiting.
    ///
    /// # Examples
    /// Stop a long wait (a long poll, say) as soon as the gate admits nothing any more:
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Fixed, Gate};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let gate = Gate::new(Fixed::new(4));
    /// let closer = gate.clone();
    /// tokio::spawn(async move { closer.close() });
    /// tokio::select! {
    ///     _ = gate.closed() => println!("closed: stop fetching"),
    ///     _ = tokio::time::sleep(Duration::from_secs(30)) => unreachable!(),
    /// }
    /// # }
    /// ```
    pub async fn closed(&self) {
        let _ = Watch::new(&self.shared, WatchMode::Closed).await;
    }

    /// Forwards a batch boundary to the policy ([`AdmissionPolicy::on_batch`]).
    pub fn on_batch(&self, fetched: usize) {
        self.shared.policy.on_batch(fetched);
    }

    /// Re-checks waiters now, after the policy's limit went up.
    ///
    /// This is what [`LimitSignal::notify`] does.
    pub fn notify_limit_changed(&self) {
        self.shared.notify_limit_changed();
    }

    /// Closes the gate: every waiter and every later `acquire` gets [`Closed`].
    ///
    /// Permits already granted stay valid and release normally; reservations still count.
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_admission::{Closed, Fixed, Gate};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let gate = Gate::new(Fixed::new(1));
    /// let held = gate.acquire(1).await.unwrap();
    /// let waiter = tokio::spawn({
    ///     let gate = gate.clone();
    ///     async move { gate.acquire(1).await.map(drop) }
    /// });
    /// tokio::task::yield_now().await; // the waiter queues
    /// gate.close();
    /// assert_eq!(waiter.await.unwrap(), Err(Closed));
    /// assert!(gate.is_closed());
    /// assert_eq!(gate.fetch_ready().await, Err(Closed));
    /// # drop(held);
    /// # }
    /// ```
    pub fn close(&self) {
        let mut state = self.shared.state.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        let mut wake = Vec::with_capacity(state.waiters.len());
        for (_, waiter) in std::mem::take(&mut state.waiters) {
            waiter.status.store(CLOSED, Ordering::Release);
            wake.extend(waiter.waker);
        }
        State::finish_change(state, &*self.shared.policy, wake);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }

    /// A snapshot of counters and limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_admission::{Fixed, Gate};
    ///
    /// let gate = Gate::new(Fixed::new(8));
    /// let (a, b) = (gate.try_acquire(10).unwrap(), gate.try_acquire(20).unwrap());
    /// drop(a);
    /// let stats = gate.stats();
    /// assert_eq!((stats.admitted, stats.completed, stats.max_in_flight), (2, 1, 2));
    /// assert_eq!((stats.in_flight, stats.bytes), (1, 20));
    /// assert_eq!(stats.limit.slots, Some(8));
    /// # drop(b);
    /// ```
    pub fn stats(&self) -> GateStats {
        let state = self.shared.state.lock();
        let mut stats = GateStats {
            limit: Limit::default(),
            in_flight: state.in_flight,
            bytes: state.bytes,
            reserved: state.reserved,
            waiting: state.waiters.len(),
            admitted: state.admitted,
            completed: state.completed,
            max_in_flight: state.max_in_flight,
            memory: None,
            memory_target: None,
        };
        drop(state);
        stats.limit = self.shared.policy.limit();
        stats.memory = self.shared.policy.memory_sample();
        stats.memory_target = self.shared.policy.memory_target();
        stats
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// Keeps the lock off the cache line of the `Arc`'s reference counts, which every permit
/// touches too (two threads taking and returning permits would otherwise fight over one
/// line for both).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a gate and its permits share.
pub(crate) struct Shared {
    pub(crate) policy: Arc<dyn AdmissionPolicy>,
    /// `policy.measures_latency()`, asked once.
    pub(crate) measures_latency: bool,
    /// `policy.measures_in_flight()`, asked once.
    pub(crate) measures_in_flight: bool,
    pub(crate) state: Padded<Mutex<State>>,
}

impl Shared {
    pub(crate) fn notify_limit_changed(&self) {
        let mut state = self.state.lock();
        let mut wake = Vec::new();
        state.grant_waiters(&*self.policy, &mut wake);
        State::finish_change(state, &*self.policy, wake);
    }

    /// Returns a permit's slot and bytes, then serves waiters.
    pub(crate) fn release(&self, cost: u64) {
        let mut state = self.state.lock();
        debug_assert!(state.in_flight > 0 && state.bytes >= cost);
        state.in_flight -= 1;
        state.bytes -= cost;
        state.completed += 1;
        let mut wake = Vec::new();
        state.grant_waiters(&*self.policy, &mut wake);
        State::finish_change(state, &*self.policy, wake);
    }

    /// Returns a reservation's bytes, then serves waiters.
    pub(crate) fn unreserve(&self, cost: u64) {
        let mut state = self.state.lock();
        debug_assert!(state.reserved > 0 && state.bytes >= cost);
        state.reserved -= 1;
        state.bytes -= cost;
        let mut wake = Vec::new();
        state.grant_waiters(&*self.policy, &mut wake);
        State::finish_change(state, &*self.policy, wake);
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Gate")
            .field("policy", &self.policy)
            .field("load", &state.load())
            .field("closed", &state.closed)
            .finish()
    }
}

/// One queued `acquire`.
pub(crate) struct Waiter {
    pub(crate) cost: u64,
    /// Whether the candidate's bytes are already counted by a reservation.
    pub(crate) reserved: bool,
    pub(crate) waker: Option<Waker>,
    pub(crate) status: Arc<AtomicU8>,
}

/// Everything behind the gate's lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) in_flight: usize,
    pub(crate) bytes: u64,
    pub(crate) reserved: usize,
    pub(crate) closed: bool,
    pub(crate) admitted: u64,
    pub(crate) completed: u64,
    pub(crate) max_in_flight: usize,
    /// Source of waiter and watcher ids; ids increase, so map order is arrival order.
    pub(crate) next_id: u64,
    /// The FIFO queue of `acquire` calls.
    pub(crate) waiters: BTreeMap<u64, Waiter>,
    /// Bumped at every capacity change; `changed()` compares against it.
    pub(crate) generation: u64,
    /// Wakers of `changed()` / `fetch_ready*()` / `closed()` futures, with what each
    /// waits for. A vector: there are one or two (the dispatcher's), and every
    /// release scans it.
    pub(crate) watchers: Vec<(u64, Waker, WatchMode)>,
}

impl State {
    pub(crate) fn load(&self) -> Load {
        Load {
            in_flight: self.in_flight,
            bytes: self.bytes,
            reserved: self.reserved,
            waiting: self.waiters.len(),
        }
    }

    /// The load a candidate sees: without its own reservation and its place in the queue.
    pub(crate) fn load_for(&self, cost: u64, reserved: bool, queued_self: bool) -> Load {
        Load {
            in_flight: self.in_flight,
            bytes: self.bytes - if reserved { cost } else { 0 },
            reserved: self.reserved - usize::from(reserved),
            waiting: self.waiters.len() - usize::from(queued_self),
        }
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Accounts for one granted permit.
    pub(crate) fn grant(&mut self, cost: u64, reserved: bool) {
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        if reserved {
            self.reserved -= 1;
        } else {
            self.bytes += cost;
        }
        self.admitted += 1;
    }

    /// Grants permits to waiters in FIFO order while the policy admits the head.
    pub(crate) fn grant_waiters(&mut self, policy: &dyn AdmissionPolicy, wake: &mut Vec<Waker>) {
        while let Some(head) = self.waiters.first_key_value().map(|(_, w)| w) {
            let load = self.load_for(head.cost, head.reserved, true);
            if !policy.admits(&load, head.cost) {
                break;
            }
            let (_, waiter) = self.waiters.pop_first().expect("head exists");
            self.grant(waiter.cost, waiter.reserved);
            waiter.status.store(GRANTED, Ordering::Release);
            wake.extend(waiter.waker);
        }
    }

    /// Records a capacity change, releases the lock and wakes `wake` plus the watchers
    /// whose condition may now hold: every `changed()` watcher, and the fetch watchers
    /// whose threshold the policy's fetch limit now reaches (all of them once closed).
    pub(crate) fn finish_change(mut guard: MutexGuard<'_, Self>, policy: &dyn AdmissionPolicy, mut wake: Vec<Waker>) {
        guard.generation = guard.generation.wrapping_add(1);
        if !guard.watchers.is_empty() {
            let mut fetch = None;
            let closed = guard.closed;
            let load = guard.load();
            guard.watchers.retain(|(_, waker, mode)| {
                let due = closed
                    || match *mode {
                        WatchMode::Changed => true,
                        WatchMode::FetchAtLeast(min) => *fetch.get_or_insert_with(|| policy.fetch_limit(&load)) >= min,
                        WatchMode::Closed => false,
                    };
                if due {
                    wake.push(waker.clone());
                }
                !due
            });
        }
        drop(guard);
        for waker in wake {
            waker.wake();
        }
    }
}
