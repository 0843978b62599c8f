//! The [`AdmissionPolicy`] trait: the *algorithm* half of admission control.
//!
//! A policy only answers two questions — "how many updates may the runtime fetch now?" and
//! "may this update start now?" — from a [`Load`] snapshot that the [`Gate`](crate::Gate)
//! hands it. The gate owns the accounting, the waiters and the permits; the policy owns the
//! number. Keeping the two apart (as Netflix's concurrency-limits does) means a new policy is
//! a few lines of arithmetic, tested with made-up loads, with no futures or locks of its own.
//!
//! Feedback flows back through the `on_*` hooks: the outcome and latency of every finished
//! update ([`Completion`]), batch boundaries, and memory samples. A policy whose limit can
//! grow at run time keeps the [`LimitSignal`] it receives in [`AdmissionPolicy::attach`] and
//! calls [`LimitSignal::notify`] after raising its limit, so that waiters are re-checked;
//! [`LimitSignals`] does the bookkeeping for policies attached to several gates.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::gate::Shared;

/// What a gate currently holds, as seen by a policy.
///
/// When a policy is asked whether a candidate may start ([`AdmissionPolicy::admits`]), the
/// load excludes the candidate itself: its own reserved bytes, its reservation and its place
/// in the queue are not counted.
///
/// `#[non_exhaustive]`: build one (in a policy's tests) with [`Load::new`] and the `with_`
/// methods.
///
/// # Examples
///
/// ```
/// use pollgate_admission::{AdmissionPolicy, ByteBudget, Load};
///
/// let budget = ByteBudget::new(1 << 20);
/// let full = Load::new(4, 1 << 20); // 4 running, the whole MiB declared
/// assert_eq!(budget.fetch_limit(&full), 0);
/// assert!(budget.fetch_limit(&Load::new(0, 0)) > 0);
/// assert_eq!(Load::new(1, 10).with_reserved(2).reserved, 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Load {
    /// Running permits (updates whose handler holds a slot).
    pub in_flight: usize,
    /// Declared costs of running permits plus outstanding reservations, in bytes.
    pub bytes: u64,
    /// Reservations: updates already in memory that wait (for example behind their ordering
    /// key). They hold bytes but no slot.
    pub reserved: usize,
    /// `acquire` calls waiting in the gate's FIFO queue.
    pub waiting: usize,
}

impl Load {
    /// `in_flight` running permits holding `bytes`, nothing reserved or waiting.
    pub fn new(in_flight: usize, bytes: u64) -> Load {
        Load {
            in_flight,
            bytes,
            reserved: 0,
            waiting: 0,
        }
    }

    /// With `reserved` reservations (their bytes are part of [`bytes`](Self::bytes)).
    #[must_use]
    pub fn with_reserved(mut self, reserved: usize) -> Load {
        self.reserved = reserved;
        self
    }

    /// With `waiting` acquires in the queue.
    #[must_use]
    pub fn with_waiting(mut self, waiting: usize) -> Load {
        self.waiting = waiting;
        self
    }
}

/// How a handler ended, reported to the policy through [`Completion`].
///
/// # Examples
///
/// Report overload when a downstream sheds load, an error when the update itself was at
/// fault:
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::{Adaptive, Aimd, Gate, Outcome};
///
/// fn outcome(status: u16) -> Outcome {
///     match status {
///         200..=299 => Outcome::Success,
///         429 | 503 => Outcome::Overload, // the downstream pushed back
///         _ => Outcome::Error,            // a bad request: says nothing about load
///     }
/// }
///
/// let gate = Gate::new(Adaptive::new(Aimd::new(20)));
/// for status in [400, 404, 500] {
///     gate.try_acquire(0).unwrap().finish(outcome(status), Duration::from_millis(3));
/// }
/// assert_eq!(gate.stats().limit.slots, Some(20), "errors do not shrink the limit");
/// gate.try_acquire(0).unwrap().finish(outcome(503), Duration::from_millis(3));
/// assert_eq!(gate.stats().limit.slots, Some(18));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler finished normally.
    Success,
    /// The handler failed for a reason unrelated to load. Must not shrink limits.
    Error,
    /// The handler reported overload (it dropped work, hit a timeout, was shed).
    Overload,
    /// The handler panicked.
    Panic,
    /// The permit was dropped without [`Permit::finish`](crate::Permit::finish): the task was
    /// aborted or its future dropped.
    Cancelled,
}

/// Feedback about one finished update, passed to [`AdmissionPolicy::on_complete`].
///
/// `#[non_exhaustive]`: feedback will grow; build one with [`Completion::new`] and the
/// `with_` methods.
///
/// # Examples
///
/// A policy reads what it needs of each completion; here, which chats pushed back:
///
/// ```
/// use std::time::Duration;
///
/// use parking_lot::Mutex;
/// use pollgate_admission::{AdmissionPolicy, Completion, Gate, Load, Outcome};
///
/// #[derive(Debug, Default)]
/// struct Hot(Mutex<Vec<(Option<i64>, Option<Duration>)>>);
///
/// impl AdmissionPolicy for Hot {
///     fn fetch_limit(&self, _: &Load) -> usize { usize::MAX }
///     fn admits(&self, _: &Load, _: u64) -> bool { true }
///     fn on_complete(&self, done: &Completion) {
///         if done.outcome == Outcome::Overload {
///             self.0.lock().push((done.key, done.retry_after));
///         }
///     }
/// }
///
/// let policy = std::sync::Arc::new(Hot::default());
/// let gate = Gate::with_shared(policy.clone());
/// let pushed_back = Completion::new(0, Outcome::Overload, Duration::from_millis(40))
///     .with_key(Some(7))
///     .with_retry_after(Some(Duration::from_secs(2)));
/// gate.try_acquire(1).unwrap().report(pushed_back);
/// assert_eq!(*policy.0.lock(), [(Some(7), Some(Duration::from_secs(2)))]);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// The cost the permit was acquired with.
    pub cost: u64,
    /// How the handler ended.
    pub outcome: Outcome,
    /// How long the handler held its permit.
    pub latency: Duration,
    /// Permits running in this gate when it was released, itself included; 0 unless the
    /// policy [measures in-flight](AdmissionPolicy::measures_in_flight).
    pub in_flight: usize,
    /// The update's ordering key (its chat), when the runtime knows it: a policy may keep
    /// per-chat state, or tell one hot chat from a slow downstream.
    pub key: Option<i64>,
    /// How long an overloaded downstream asked to be left alone (Telegram's 429
    /// `retry_after`), when the handler said so: a policy may pause admission that long
    /// rather than guess.
    pub retry_after: Option<Duration>,
}

impl Completion {
    /// A completion, for driving a policy by hand (tests, simulations).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use pollgate_admission::{Adaptive, AdmissionPolicy, Aimd, Completion, Outcome};
    ///
    /// let policy = Adaptive::new(Aimd::new(10));
    /// policy.on_complete(&Completion::new(0, Outcome::Overload, Duration::from_millis(3)));
    /// assert_eq!(policy.current(), 9);
    /// ```
    pub fn new(cost: u64, outcome: Outcome, latency: Duration) -> Completion {
        Completion {
            cost,
            outcome,
            latency,
            in_flight: 0,
            key: None,
            retry_after: None,
        }
    }

    /// The same completion with [`in_flight`](Self::in_flight) set.
    pub fn with_in_flight(mut self, in_flight: usize) -> Completion {
        self.in_flight = in_flight;
        self
    }

    /// The same completion with [`key`](Self::key) set.
    pub fn with_key(mut self, key: Option<i64>) -> Completion {
        self.key = key;
        self
    }

    /// The same completion with [`retry_after`](Self::retry_after) set.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Completion {
        self.retry_after = retry_after;
        self
    }
}

/// One reading of the process's resident memory.
///
/// # Examples
///
/// A runtime that samples memory itself hands the readings to the policy:
///
/// ```
/// use pollgate_admission::{AdmissionPolicy, MemorySample, RssAdaptive};
///
/// let policy = RssAdaptive::builder(1 << 30).probe(|| Some(100 << 20)).build_manual();
/// let sample = MemorySample { rss_bytes: 200 << 20, at_ms: 5 };
/// policy.on_memory(sample);
/// assert_eq!(policy.memory_sample(), Some(sample));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySample {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Milliseconds since the probe or sampler started (monotonic).
    pub at_ms: u64,
}

/// What a policy currently enforces, for statistics. `None` means "not limited on this axis".
///
/// `#[non_exhaustive]`: build one with [`Limit::new`].
///
/// # Examples
///
/// ```
/// use pollgate_admission::{AdmissionPolicy, Fixed, Limit};
///
/// assert_eq!(Fixed::new(8).limit(), Limit::new(Some(8), None));
/// assert_eq!(Limit::default(), Limit::new(None, None), "the default limits nothing");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limit {
    /// Maximum number of running permits.
    pub slots: Option<usize>,
    /// Maximum bytes of declared cost.
    pub bytes: Option<u64>,
}

impl Limit {
    /// At most `slots` running permits and `bytes` of declared cost (`None`: not limited
    /// on that axis).
    pub fn new(slots: Option<usize>, bytes: Option<u64>) -> Limit {
        Limit { slots, bytes }
    }
}

/// Decides how much work may be fetched and started.
///
/// Implementations are synchronous and cheap: the gate calls [`admits`](Self::admits) and
/// [`fetch_limit`](Self::fetch_limit) while holding its internal lock, on every acquire and
/// release. Use atomics or a short `parking_lot` lock; never block, never call back into a
/// gate from these two methods (a [`LimitSignal::notify`] from them would deadlock). The
/// feedback hooks (`on_*`) are called without the gate's lock and may notify.
///
/// The trait is object safe; gates hold their policy as `Arc<dyn AdmissionPolicy>`, and
/// `Arc<P>` / `Box<P>` are policies too.
///
/// # Examples
///
/// A user-defined policy: at most four updates at once, and nothing larger than 1 MiB
/// unless it runs alone.
///
/// ```
/// use pollgate_admission::{AdmissionPolicy, Gate, Load};
///
/// #[derive(Debug)]
/// struct SmallFour;
///
/// impl AdmissionPolicy for SmallFour {
///     fn fetch_limit(&self, load: &Load) -> usize {
///         4usize.saturating_sub(load.in_flight + load.waiting)
///     }
///     fn admits(&self, load: &Load, cost: u64) -> bool {
///         load.in_flight < 4 && (cost <= 1 << 20 || load.in_flight == 0)
///     }
/// }
///
/// let gate = Gate::new(SmallFour);
/// let big = gate.try_acquire(2 << 20).expect("nothing runs: the big one may start");
/// assert!(gate.try_acquire(2 << 20).is_err()); // a second big one must wait
/// let small = gate.try_acquire(10).expect("small ones still fit");
/// assert_eq!(gate.fetch_limit(), 2);
/// drop((big, small));
/// ```
pub trait AdmissionPolicy: Send + Sync + fmt::Debug + 'static {
    /// How many updates the runtime may fetch now; 0 means "wait for a change".
    ///
    /// The runtime clamps the answer to what its transport allows (Telegram: 100), so
    /// `usize::MAX` means "as many as you like".
    fn fetch_limit(&self, load: &Load) -> usize;

    /// Whether one more update of this cost may start now (`load` excludes the candidate).
    fn admits(&self, load: &Load, cost: u64) -> bool;

    /// What the policy currently enforces, for statistics.
    fn limit(&self) -> Limit {
        Limit::default()
    }

    /// Feedback: an update finished (or was cancelled) and released its permit.
    fn on_complete(&self, _completion: &Completion) {}

    /// Feedback: a batch boundary; the runtime fetched this many updates.
    fn on_batch(&self, _fetched: usize) {}

    /// Feedback: an externally supplied memory sample.
    fn on_memory(&self, _sample: MemorySample) {}

    /// The latest memory sample this policy knows, for statistics.
    fn memory_sample(&self) -> Option<MemorySample> {
        None
    }

    /// The resident memory this policy steers toward, in bytes, if it steers memory (for
    /// statistics and metrics: [`RssAdaptive::target`](crate::RssAdaptive::target)).
    fn memory_target(&self) -> Option<u64> {
        None
    }

    /// Whether [`on_complete`](Self::on_complete) uses [`Completion::latency`] of permits
    /// dropped without [`finish`](crate::Permit::finish) (default `true`).
    ///
    /// Measuring it costs two clock reads per permit, about half the price of an
    /// uncontended acquire + release; policies that ignore latency return `false`, and
    /// dropped permits then report `Duration::ZERO`. Asked once, when a gate is built.
    fn measures_latency(&self) -> bool {
        true
    }

    /// Whether [`on_complete`](Self::on_complete) uses [`Completion::in_flight`] (default
    /// `false`). Filling it costs one more look under the gate's lock per completion, so
    /// only policies that need it (an adaptive limit's "is it used?") ask. Asked once,
    /// when a gate is built.
    fn measures_in_flight(&self) -> bool {
        false
    }

    /// Called once by each [`Gate`](crate::Gate) the policy is attached to.
    ///
    /// A policy whose limit can grow at run time keeps the signal and calls
    /// [`LimitSignal::notify`] after raising its limit, so waiters are re-checked.
    fn attach(&self, _signal: LimitSignal) {}
}

macro_rules! forward_policy {
    ($ty:ty) => {
        impl<P: AdmissionPolicy + ?Sized> AdmissionPolicy for $ty {
            fn fetch_limit(&self, load: &Load) -> usize {
                (**self).fetch_limit(load)
            }
            fn admits(&self, load: &Load, cost: u64) -> bool {
                (**self).admits(load, cost)
            }
            fn limit(&self) -> Limit {
                (**self).limit()
            }
            fn on_complete(&self, completion: &Completion) {
                (**self).on_complete(completion)
            }
            fn on_batch(&self, fetched: usize) {
                (**self).on_batch(fetched)
            }
            fn on_memory(&self, sample: MemorySample) {
                (**self).on_memory(sample)
            }
            fn memory_sample(&self) -> Option<MemorySample> {
                (**self).memory_sample()
            }
            fn memory_target(&self) -> Option<u64> {
                (**self).memory_target()
            }
            fn measures_latency(&self) -> bool {
                (**self).measures_latency()
            }
            fn measures_in_flight(&self) -> bool {
                (**self).measures_in_flight()
            }
            fn attach(&self, signal: LimitSignal) {
                (**self).attach(signal)
            }
        }
    };
}

forward_policy!(Arc<P>);
forward_policy!(Box<P>);

/// A handle a policy uses to tell one gate that its limit went up.
///
/// It holds a weak reference, so a policy keeping signals never keeps a gate alive.
///
/// # Examples
///
/// A policy whose limit an operator raises at run time keeps its gate's signal and
/// notifies it, so that a waiter admitted by the new limit starts at once:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// use parking_lot::Mutex;
/// use pollgate_admission::{AdmissionPolicy, Gate, LimitSignal, Load};
///
/// #[derive(Debug)]
/// struct Manual {
///     limit: AtomicUsize,
///     signal: Mutex<Option<LimitSignal>>,
/// }
///
/// impl Manual {
///     fn raise_to(&self, limit: usize) {
///         self.limit.store(limit, Ordering::Release);
///         if let Some(signal) = &*self.signal.lock() {
///             signal.notify();
///         }
///     }
/// }
///
/// impl AdmissionPolicy for Manual {
///     fn fetch_limit(&self, load: &Load) -> usize {
///         self.limit.load(Ordering::Acquire).saturating_sub(load.in_flight)
///     }
///     fn admits(&self, load: &Load, _: u64) -> bool {
///         load.in_flight < self.limit.load(Ordering::Acquire)
///     }
///     fn attach(&self, signal: LimitSignal) {
///         *self.signal.lock() = Some(signal);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let policy = Arc::new(Manual { limit: AtomicUsize::new(1), signal: Mutex::new(None) });
/// let gate = Gate::with_shared(policy.clone());
/// let first = gate.acquire(1).await.unwrap();
/// let second = tokio::spawn({
///     let gate = gate.clone();
///     async move { gate.acquire(1).await.unwrap() }
/// });
/// tokio::task::yield_now().await;
/// assert_eq!(gate.load().waiting, 1);
/// policy.raise_to(2); // without the notify, the waiter would sleep until a release
/// let second = second.await.unwrap();
/// assert_eq!(gate.load().in_flight, 2);
/// # drop((first, second));
/// # }
/// ```
#[derive(Clone)]
pub struct LimitSignal {
    gate: Weak<Shared>,
}

impl LimitSignal {
    pub(crate) fn new(gate: Weak<Shared>) -> Self {
        Self { gate }
    }

    /// Re-checks the gate's waiters and wakes `fetch_ready`/`changed` futures.
    ///
    /// Returns `false` when the gate is gone (the signal can be discarded).
    pub fn notify(&self) -> bool {
        match self.gate.upgrade() {
            Some(gate) => {
                gate.notify_limit_changed();
                true
            }
            None => false,
        }
    }

    /// The gate's current load, or `None` when the gate is gone.
    ///
    /// Takes the gate's lock briefly: call it from feedback paths (a sampler thread), never
    /// from [`AdmissionPolicy::admits`] or [`AdmissionPolicy::fetch_limit`].
    pub fn load(&self) -> Option<Load> {
        self.gate.upgrade().map(|gate| gate.state.lock().load())
    }

    /// Whether the gate behind this signal still exists.
    pub fn is_alive(&self) -> bool {
        self.gate.strong_count() > 0
    }
}

impl fmt::Debug for LimitSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitSignal").field("alive", &self.is_alive()).finish()
    }
}

/// The signals of every gate a policy is attached to.
///
/// A helper for policies whose limit can grow: store signals from
/// [`AdmissionPolicy::attach`] with [`add`](Self::add), and call
/// [`notify_all`](Self::notify_all) after raising the limit. Signals of dropped gates are
/// pruned as they are found.
///
/// # Examples
///
/// A policy attached to several gates reads their total load from its signals:
///
/// ```
/// use std::sync::Arc;
///
/// use pollgate_admission::{AdmissionPolicy, Gate, LimitSignal, LimitSignals, Load};
///
/// #[derive(Debug, Default)]
/// struct Watched(LimitSignals);
///
/// impl AdmissionPolicy for Watched {
///     fn fetch_limit(&self, _: &Load) -> usize { 10 }
///     fn admits(&self, _: &Load, _: u64) -> bool { true }
///     fn attach(&self, signal: LimitSignal) { self.0.add(signal) }
/// }
///
/// let policy = Arc::new(Watched::default());
/// let (a, b) = (Gate::with_shared(policy.clone()), Gate::with_shared(policy.clone()));
/// let (x, y) = (a.try_acquire(100).unwrap(), b.try_acquire(50).unwrap());
/// assert_eq!((policy.0.len(), policy.0.bytes_in_use()), (2, 150));
/// drop((x, y, b));
/// assert_eq!((policy.0.len(), policy.0.bytes_in_use()), (1, 0), "the dropped gate is gone");
/// policy.0.notify_all(); // after raising a limit: re-checks the live gates' waiters
/// # drop(a);
/// ```
#[derive(Debug, Default)]
pub struct LimitSignals {
    signals: Mutex<Vec<LimitSignal>>,
}

impl LimitSignals {
    /// Creates an empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a gate's signal (and drops signals of gates that are gone).
    pub fn add(&self, signal: LimitSignal) {
        let mut signals = self.signals.lock();
        signals.retain(LimitSignal::is_alive);
        signals.push(signal);
    }

    /// Notifies every live gate; prunes the dead ones.
    pub fn notify_all(&self) {
        // Clone out so no gate lock is taken while ours is held.
        let signals = self.signals.lock().clone();
        let mut any_dead = false;
        for signal in &signals {
            any_dead |= !signal.notify();
        }
        if any_dead {
            self.signals.lock().retain(LimitSignal::is_alive);
        }
    }

    /// The sum of [`Load::bytes`] over every live gate (see [`LimitSignal::load`]).
    pub fn bytes_in_use(&self) -> u64 {
        let signals = self.signals.lock().clone();
        signals
            .iter()
            .filter_map(LimitSignal::load)
            .map(|load| load.bytes)
            .sum()
    }

    /// How many live gates are attached.
    pub fn len(&self) -> usize {
        self.signals.lock().iter().filter(|s| s.is_alive()).count()
    }

    /// Whether no live gate is attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
