//! The runtime: one dispatcher loop, one tracked task per running key chain or update.
//!
//! ```text
//!   ┌──────────── dispatcher (one task) ─────────────┐
//!   │ wait until policy.fetch_limit > 0              │
//!   │ ack(offset / receipts) → fetch(limit)          │   handler tasks (TaskTracker)
//!   │ for each update: drop if seen, else            │   ┌───────────────────────┐
//!   │   key busy? → park with a byte reservation ────┼──▶│ run handler (caught)  │
//!   │   else acquire a permit (FIFO) → spawn ────────┼──▶│ finish permit, ack    │
//!   └────────────────────────────────────────────────┘   │ next of the same key? │
//!                                                        └───────────────────────┘
//! ```
//! The dispatcher holds at most one fetched batch that is not yet admitted, and fetches
//! the next one as soon as that batch is admitted and the policy has room, so the long
//! poll overlaps running handlers (pipelining) without ever fetching more than can be
//! admitted. No channel, queue or task set grows without bound: tasks are bounded by the
//! policy, parked updates by `max_queued` and the byte budget, ack state by the
//! transport's window.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Gate};
use pollgate_core::{HandlerFailure, Revocations, Transport, Update};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{debug, error, warn};

use crate::acks::AckTracker;
use crate::acks::ack_loop;
use crate::config::{Config, RuntimeBuilder};
use crate::dispatch::dispatch_loop;
use crate::handler::Handler;
use crate::ordering::KeyQueues;
use crate::shutdown;
use crate::stats::{Counters, Stats, StatsHandle};

/// Composes a [`Transport`], an admission policy and a [`Handler`]; see the crate docs.
///
/// # Examples
///
/// Drain what an in-memory transport holds, then stop and read the [`Summary`]:
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_admission::Fixed;
/// use pollgate_core::{InMemoryTransport, Update};
/// use pollgate_runtime::Runtime;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let updates = (1..=10).map(|id| Update::from_json(&format!(r#"{{"update_id":{id}}}"#)).unwrap());
/// let runtime = Runtime::builder(InMemoryTransport::with_updates(updates), |_u: Update| async {
///     Ok::<(), std::io::Error>(())
/// })
/// .policy(Fixed::new(4))
/// .build();
/// let shutdown = runtime.shutdown_token();
/// let run = tokio::spawn(runtime.run());
/// tokio::time::sleep(Duration::from_secs(1)).await;
/// shutdown.cancel(); // stop fetching, drain, confirm
/// let summary = run.await??;
/// assert_eq!(summary.stats.finished(), 10);
/// assert_eq!(summary.confirmed_offset, Some(11), "the next id to fetch");
/// assert!(summary.drained && summary.unfinished.is_empty());
/// # Ok(()) }
/// ```
pub struct Runtime<T, H> {
    transport: T,
    ctx: Arc<Ctx<H>>,
    shutdown: CancellationToken,
}

impl<T: fmt::Debug, H> fmt::Debug for Runtime<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("transport", &self.transport)
            .field("gate", &self.ctx.gate)
            .field("config", &self.ctx.config)
            .finish_non_exhaustive()
    }
}

/// State shared by the dispatcher and the handler tasks.
pub(crate) struct Ctx<H> {
    pub(crate) handler: H,
    pub(crate) gate: Gate,
    pub(crate) config: Config,
    pub(crate) counters: Arc<Counters>,
    pub(crate) acks: Mutex<AckTracker>,
    /// Wakes the dispatcher when the ack window or the key queues moved.
    pub(crate) progress: Notify,
    /// Whether the transport acknowledges each update by receipt (a queue): receipts are
    /// then sent as soon as handlers finish, by the ack loop, not only before a fetch.
    pub(crate) individual: bool,
    /// Wakes the ack loop when a receipt is ready (individual acks only).
    pub(crate) receipts_ready: Notify,
    pub(crate) keys: Option<Mutex<KeyQueues>>,
    /// Fires at the drain deadline: running handlers are dropped; the gate is closed at
    /// the same moment, so updates waiting for a permit give up.
    pub(crate) abort: CancellationToken,
    /// When the first confirmation step saw the abort: the grace after an abort counts
    /// from here once, for every step (see `shutdown::confirmation_over`).
    pub(crate) aborted_at: std::sync::OnceLock<Instant>,
    pub(crate) tracker: TaskTracker,
    /// Whether completions must be reported to the ack tracker (at-least-once, or
    /// per-update receipts); eager cumulative acks need nothing per completion.
    pub(crate) track_completions: bool,
    /// Whether the policy wants handler latencies (else the clock is read only when
    /// tracing wants it).
    pub(crate) policy_times: bool,
    /// The histograms, when metrics are exported.
    pub(crate) histograms: Option<crate::metrics::Histograms>,
    /// Ids of updates given up: aborted at the deadline or never admitted. Bounded by
    /// what was in flight or queued when the run was aborted.
    pub(crate) given_up: Mutex<Vec<i64>>,
    /// The transport's revocations, if it ever takes back what it delivered.
    pub(crate) revocations: Option<Arc<dyn Revocations>>,
}

impl<H> Ctx<H> {
    /// A permit for `cost` (`None`: the gate closed): at once when the policy admits it
    /// and nobody waits, else in FIFO order. The wait is recorded in the admission-wait
    /// histogram when metrics are exported.
    pub(crate) async fn acquire(&self, cost: u64) -> Option<pollgate_admission::Permit> {
        match self.gate.try_acquire(cost) {
            Ok(permit) => {
                if let Some(h) = &self.histograms {
                    h.admission_wait.record(Duration::ZERO);
                }
                Some(permit)
            }
            Err(pollgate_admission::TryAcquireError::Closed) => None,
            Err(_) => {
                let asked = self.histograms.as_ref().map(|_| Instant::now());
                let permit = self.gate.acquire(cost).await.ok();
                if let (Some(h), Some(asked), Some(_)) = (&self.histograms, asked, &permit) {
                    h.admission_wait.record(asked.elapsed());
                }
                permit
            }
        }
    }

    /// Turns a reservation into a permit (`None`: the gate closed), recording the wait in
    /// the admission-wait histogram when metrics are exported.
    pub(crate) async fn acquire_reserved(
        &self,
        reservation: pollgate_admission::Reservation,
    ) -> Option<pollgate_admission::Permit> {
        let asked = self.histograms.as_ref().map(|_| Instant::now());
        let permit = self.gate.acquire_reserved(reservation).await.ok();
        if let (Some(h), Some(asked), Some(_)) = (&self.histograms, asked, &permit) {
            h.admission_wait.record(asked.elapsed());
        }
        permit
    }

    /// A handle on the counters and the gate.
    pub(crate) fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            counters: Arc::clone(&self.counters),
            gate: self.gate.clone(),
        }
    }

    /// Records that `id` is finished for acknowledgement; `failed` (attempts, error) when
    /// its every attempt failed.
    pub(crate) fn finished(&self, id: i64, receipt: Option<&Arc<str>>, failed: Option<(u32, String)>) {
        if failed.is_some() {
            Counters::bump(&self.counters.exhausted);
        }
        if !self.track_completions {
            return;
        }
        let failure = match (receipt, failed) {
            (Some(r), Some((attempts, mut error))) => {
                // A dead-letter store keeps the text: bound it.
                if error.len() > MAX_ERROR_BYTES {
                    let mut end = MAX_ERROR_BYTES;
                    while !error.is_char_boundary(end) {
                        end -= 1;
                    }
                    error.truncate(end);
                    error.push('…');
                }
                Some(HandlerFailure::new(id, Arc::clone(r), attempts, error))
            }
            _ => None,
        };
        if self.acks.lock().finished(id, receipt, failure) {
            self.progress.notify_one();
        }
        if self.individual && receipt.is_some() {
            self.receipts_ready.notify_one();
        }
    }

    /// Gives up on an update that will not run (abort or closed gate).
    pub(crate) fn give_up(&self, update: &Update) {
        Counters::bump(&self.counters.aborted);
        self.given_up.lock().push(update.id());
        warn!(
            update_id = update.id(),
            "update not handled: the runtime is shutting down"
        );
    }

    /// When the [pacer](crate::Pacer) lets `update` start, if there is a pacer and it
    /// says. A pacer that panics is logged and lets the update start now: like a
    /// handler's panic, it must not stop the runtime or strand the update.
    pub(crate) fn start_at(&self, update: &Update) -> Option<Instant> {
        let pacer = &self.config.pacer.as_ref()?.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pacer.start_at(update))) {
            Ok(at) => at,
            Err(_) => {
                error!(update_id = update.id(), "the pacer panicked: the update starts now");
                None
            }
        }
    }

    /// Holds `update` back until `start_at` if that is later than now (counted as
    /// paced); `false` when the drain deadline came first or the gate closed.
    pub(crate) async fn hold_until(&self, update: &Update, start_at: Option<Instant>) -> bool {
        match start_at.filter(|&at| at > Instant::now()) {
            Some(at) => {
                Counters::bump(&self.counters.paced);
                debug!(update_id = update.id(), wait = ?at - Instant::now(), "paced");
                self.sleep_until(at).await
            }
            None => true,
        }
    }

    /// Sleeps until `at`; `false` when the drain deadline came first or the gate closed
    /// (nothing can be admitted any more).
    pub(crate) async fn sleep_until(&self, at: Instant) -> bool {
        tokio::select! {
            biased;
            _ = self.abort.cancelled() => false,
            _ = self.gate.closed() => false,
            _ = tokio::time::sleep_until(at) => true,
        }
    }

    /// Whether the transport took `update` back: then its permit is released and it
    /// counts as revoked; the caller reports it finished without running its handler (the
    /// transport acknowledges nothing for it).
    pub(crate) fn revoke(&self, update: &Update, permit: &mut Option<pollgate_admission::Permit>) -> bool {
        let Some(revocations) = &self.revocations else {
            return false;
        };
        if !revocations.is_revoked(update) {
            return false;
        }
        if let Some(p) = permit.take() {
            // Counted before the release: `Stats::completed` is derived from releases.
            Counters::bump(&self.counters.revoked);
            p.finish(pollgate_admission::Outcome::Cancelled, Duration::ZERO);
        }
        debug!(update_id = update.id(), "revoked by the transport: not started");
        true
    }

    /// Gives up on everything parked behind `key`.
    pub(crate) fn abandon_key(&self, key: Option<i64>) {
        if let (Some(keys), Some(key)) = (&self.keys, key) {
            let parked = keys.lock().abandon(key);
            for q in &parked {
                self.give_up(&q.update);
            }
            self.progress.notify_one();
        }
    }
}

/// What a run did, returned by [`Runtime::run`]; the example on [`Runtime`] reads one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Summary {
    /// The final counters.
    pub stats: Stats,
    /// Whether every fetched update was handled: none was dropped at the drain deadline or
    /// by a second signal, none given up ([`unfinished`](Self::unfinished) is empty).
    pub drained: bool,
    /// Updates fetched but not finished when the run ended (aborted at the deadline, or
    /// never admitted). In at-least-once mode they are delivered again after a restart;
    /// in eager mode they are lost.
    pub unfinished: Vec<i64>,
    /// The offset confirmed to the server on the way out (`None` when nothing was
    /// fetched or the final confirmation failed).
    pub confirmed_offset: Option<i64>,
    /// Why the final confirmation failed, if it did.
    pub flush_error: Option<FlushError>,
}

/// Why [`Runtime::run`] stopped without being asked to.
///
/// # Examples
///
/// ```no_run
/// use pollgate_core::{ErrorChain, TelegramTransport, Update};
/// use pollgate_runtime::{RunError, Runtime};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?;
/// let runtime = Runtime::builder(transport, |_u: Update| async { Ok::<(), std::io::Error>(()) }).build();
/// match runtime.run().await {
///     Ok(summary) => println!("handled {}", summary.stats.finished()),
///     Err(RunError::Transport { source, summary }) => {
///         // A rejected token, or retries exhausted: what was admitted was still drained.
///         eprintln!("stopped: {} ({} handled)", ErrorChain(&source), summary.stats.finished());
///     }
///     Err(e) => eprintln!("stopped: {}", ErrorChain(&e)),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E> {
    /// The transport returned a final error (bad token, retries exhausted, ...).
    #[error("the transport failed")]
    Transport {
        /// The transport's error.
        #[source]
        source: E,
        /// What was done before (handlers already admitted were drained).
        summary: Box<Summary>,
    },
}

/// Why the final confirmation of a run ([`Summary::flush_error`]) failed. Updates it did
/// not confirm are delivered again after a restart (at-least-once).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_runtime::FlushError;
///
/// let e = FlushError::TimedOut(Duration::from_secs(20));
/// assert_eq!(e.to_string(), "the final acknowledgement did not finish within the 20s left of the drain deadline");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The transport's final acknowledgement or flush returned an error.
    #[error("the final acknowledgement failed")]
    Failed(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// It did not finish within what remained of the drain deadline once the handlers
    /// ended (at least 2 s; the server is down or hangs).
    #[error("the final acknowledgement did not finish within the {0:?} left of the drain deadline")]
    TimedOut(Duration),
    /// It was given up this long after the run was aborted (a second signal, or the
    /// drain deadline passed).
    #[error("the final acknowledgement was given up {0:?} after the run was aborted")]
    Aborted(Duration),
}

impl<T: Transport, H: Handler> Runtime<T, H> {
    /// Starts building a runtime that fetches from `transport` and runs `handler` for each
    /// update.
    pub fn builder(transport: T, handler: H) -> RuntimeBuilder<T, H> {
        RuntimeBuilder::new(transport, handler)
    }

    pub(crate) fn new(
        transport: T,
        handler: H,
        policy: Arc<dyn AdmissionPolicy>,
        shutdown: CancellationToken,
        config: Config,
    ) -> Self {
        let cumulative = matches!(transport.ack_model(), pollgate_core::AckModel::Cumulative { .. });
        let track_completions = config.delivery == crate::Delivery::AtLeastOnce || !cumulative;
        let policy_times = policy.measures_latency();
        let histograms = config.metrics_every.map(|_| crate::metrics::Histograms::register());
        let ctx = Ctx {
            handler,
            gate: Gate::with_shared(policy),
            acks: Mutex::new(AckTracker::new(config.delivery, cumulative)),
            keys: config.ordered.then(|| Mutex::new(KeyQueues::default())),
            config,
            counters: Arc::new(Counters::default()),
            progress: Notify::new(),
            individual: !cumulative,
            receipts_ready: Notify::new(),
            abort: CancellationToken::new(),
            aborted_at: std::sync::OnceLock::new(),
            tracker: TaskTracker::new(),
            track_completions,
            policy_times,
            given_up: Mutex::new(Vec::new()),
            revocations: transport.revocations(),
            histograms,
        };
        Runtime {
            transport,
            ctx: Arc::new(ctx),
            shutdown,
        }
    }

    /// A handle to read the runtime's [`Stats`] while it runs.
    pub fn stats(&self) -> StatsHandle {
        self.ctx.stats_handle()
    }

    /// The token that starts a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The gate updates are admitted through (to read its load, or close it).
    pub fn gate(&self) -> &Gate {
        &self.ctx.gate
    }

    /// Runs until the shutdown token is cancelled (or a signal arrives, with
    /// [`shutdown_on_signals`](RuntimeBuilder::shutdown_on_signals)), then drains and
    /// confirms; or until the transport fails for good.
    ///
    /// On shutdown: fetching stops at once (a long poll in progress is dropped, which
    /// loses nothing); updates already fetched are still admitted and handled; handlers
    /// get until the drain deadline, then are dropped and reported in
    /// [`Summary::unfinished`]; finally the offset is acknowledged and flushed (Telegram:
    /// `getUpdates(offset, limit=1, timeout=0)`).
    ///
    /// # Errors
    /// [`RunError::Transport`] when a fetch or an ack fails for good (after the transport's
    /// own retries). Admitted handlers are still drained, but nothing is flushed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancel the [shutdown token](Self::shutdown_token) and await the
    /// future to stop. Dropping the future instead stops at once, as the drain deadline
    /// would, but without confirming anything: running handlers are dropped at their next
    /// wake-up and updates waiting for a permit are given up (the gate is closed), the
    /// helper tasks (deadline watchdog, summary reporter, signal listener) are aborted,
    /// and the final offset is not confirmed. In at-least-once mode whatever was not
    /// confirmed is delivered again after a restart; in eager mode the updates fetched and
    /// not finished are lost.
    pub async fn run(self) -> Result<Summary, RunError<T::Error>> {
        let Runtime {
            transport,
            ctx,
            shutdown,
        } = self;
        // Dropped with this future: aborts handlers and closes the gate unless disarmed
        // (the run ended normally); the helpers below are aborted on drop too.
        let mut on_drop = shutdown::AbortOnDrop(Some((ctx.abort.clone(), ctx.gate.clone())));
        let stop = shutdown.child_token();
        let reporter = ctx
            .config
            .summary_every
            .map(|every| AbortOnDropHandle::new(tokio::spawn(crate::stats::report_every(every, ctx.stats_handle()))));
        // Listens until `run` returns or its future is dropped (see `shutdown_on_signals`).
        #[cfg(feature = "signal")]
        let _signals = ctx.config.on_signals.then(|| {
            crate::signals::drain_on_signals(
                shutdown.clone(),
                ctx.abort.clone(),
                ctx.gate.clone(),
                ctx.config.drain_deadline,
            )
        });

        let done = CancellationToken::new();
        // When the stop began (set by the watchdog), and when its confirmation must be over
        // (set once every handler ended, before `done`): one deadline for the whole stop.
        let stopped_at = Arc::new(std::sync::OnceLock::new());
        let confirm_by = std::sync::OnceLock::new();
        let confirm_by_now =
            || *confirm_by.get_or_init(|| shutdown::confirm_by(&ctx, *stopped_at.get_or_init(Instant::now)));
        let watchdog = shutdown::drain_watchdog(&ctx, stop.clone(), done.clone(), Arc::clone(&stopped_at));
        let work = async {
            let failure = dispatch_loop(&transport, &ctx, &stop).await.err();
            stop.cancel();
            ctx.tracker.close();
            ctx.tracker.wait().await;
            confirm_by_now();
            done.cancel();
            failure
        };
        let exporting = async {
            if let Some(every) = ctx.config.metrics_every {
                crate::metrics::export_loop(&transport, &ctx, every, ctx.config.backlog_every, &done).await;
            }
        };
        let (failure, ack_failure, ()) =
            tokio::join!(work, ack_loop(&transport, &ctx, &done, &stop, &confirm_by), exporting);
        let failure = failure.or(ack_failure);
        drop(watchdog);
        drop(reporter);
        // Every handler task has ended: nothing left to abort on drop.
        on_drop.0 = None;
        shutdown::finish(&transport, &ctx, failure, confirm_by_now()).await
    }
}

/// The most bytes of a failed handler's error text handed to the transport.
const MAX_ERROR_BYTES: usize = 4096;
