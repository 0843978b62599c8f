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
use pollgate_admission::{AdmissionPolicy, Gate, TryAcquireError};
use pollgate_core::{Ack, FetchRequest, HandlerFailure, Revocations, Transport, Update};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::acks::{AckTracker, Seen};
use crate::config::{Config, RuntimeBuilder};
use crate::handler::Handler;
use crate::ordering::{KeyQueues, Queued};
use crate::stats::{Counters, Stats, StatsHandle};
use crate::task;

/// Composes a [`Transport`], an admission policy and a [`Handler`]; see the crate docs.
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
    pub(crate) tracker: TaskTracker,
    /// Whether completions must be reported to the ack tracker (at-least-once, or
    /// per-update receipts); eager cumulative acks need nothing per completion.
    pub(crate) track_completions: bool,
    /// Whether the policy wants handler latencies (else the clock is read only when
    /// tracing wants it).
    pub(crate) policy_times: bool,
    /// Ids of updates given up: aborted at the deadline or never admitted. Bounded by
    /// what was in flight or queued when the run was aborted.
    pub(crate) given_up: Mutex<Vec<i64>>,
    /// The transport's revocations, if it ever takes back what it delivered.
    pub(crate) revocations: Option<Arc<dyn Revocations>>,
}

impl<H> Ctx<H> {
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

/// What a run did, returned by [`Runtime::run`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Summary {
    /// The final counters.
    pub stats: Stats,
    /// Whether every admitted handler finished before the drain deadline.
    pub drained: bool,
    /// Updates fetched but not finished when the run ended (aborted at the deadline, or
    /// never admitted). In at-least-once mode they are delivered again after a restart;
    /// in eager mode they are lost.
    pub unfinished: Vec<i64>,
    /// The offset confirmed to the server on the way out (`None` when nothing was
    /// fetched or the final confirmation failed).
    pub confirmed_offset: Option<i64>,
    /// Why the final confirmation failed, if it did.
    pub flush_error: Option<String>,
}

/// Why [`Runtime::run`] stopped without being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E: std::error::Error + 'static> {
    /// The transport returned a final error (bad token, retries exhausted, ...).
    #[error("transport failed: {source}")]
    Transport {
        /// The transport's error.
        #[source]
        source: E,
        /// What was done before (handlers already admitted were drained).
        summary: Box<Summary>,
    },
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
            tracker: TaskTracker::new(),
            track_completions,
            policy_times,
            given_up: Mutex::new(Vec::new()),
            revocations: transport.revocations(),
        };
        Runtime {
            transport,
            ctx: Arc::new(ctx),
            shutdown,
        }
    }

    /// A handle to read the runtime's [`Stats`] while it runs.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle {
            counters: Arc::clone(&self.ctx.counters),
            gate: self.ctx.gate.clone(),
        }
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
        let mut on_drop = AbortOnDrop(Some((ctx.abort.clone(), ctx.gate.clone())));
        let stop = shutdown.child_token();
        let watchdog = AbortOnDropHandle::new(tokio::spawn({
            let (stop, abort, gate, deadline) = (
                stop.clone(),
                ctx.abort.clone(),
                ctx.gate.clone(),
                ctx.config.drain_deadline,
            );
            async move {
                stop.cancelled().await;
                tokio::time::sleep(deadline).await;
                abort.cancel();
                gate.close();
            }
        }));
        let reporter = ctx
            .config
            .summary_every
            .map(|every| AbortOnDropHandle::new(tokio::spawn(report_every(every, stats_of(&ctx)))));
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
        let work = async {
            let failure = dispatch_loop(&transport, &ctx, &stop).await.err();
            stop.cancel();
            ctx.tracker.close();
            ctx.tracker.wait().await;
            done.cancel();
            failure
        };
        let (failure, ack_failure) = tokio::join!(work, ack_loop(&transport, &ctx, &done, &stop));
        let failure = failure.or(ack_failure);
        drop(watchdog);
        drop(reporter);
        // Every handler task has ended: nothing left to abort on drop.
        on_drop.0 = None;
        let drained = !ctx.abort.is_cancelled();
        let (below, receipts, mut unfinished) = {
            let mut acks = ctx.acks.lock();
            (
                acks.below(),
                acks.take_receipts(),
                acks.unfinished().collect::<Vec<_>>(),
            )
        };
        if ctx.config.delivery == crate::Delivery::Eager {
            // Eager acks keep no per-update state: what did not finish was given up.
            unfinished = std::mem::take(&mut *ctx.given_up.lock());
            unfinished.sort_unstable();
        }
        if !unfinished.is_empty() {
            let first: Vec<_> = unfinished.iter().take(20).collect();
            match ctx.config.delivery {
                crate::Delivery::Eager => error!(
                    count = unfinished.len(),
                    ?first,
                    "updates lost: fetched but not finished (eager delivery)"
                ),
                crate::Delivery::AtLeastOnce => warn!(
                    count = unfinished.len(),
                    ?first,
                    "updates not finished; they will be delivered again"
                ),
            }
        }
        let mut summary = Summary {
            stats: stats_of(&ctx).snapshot(),
            drained,
            unfinished,
            confirmed_offset: None,
            flush_error: None,
        };
        // The last acknowledgement and the flush get the drain deadline: a server that is
        // down must not keep a shutdown from finishing. After an abort (a second signal,
        // or the deadline itself) they get at most ABORTED_FLUSH_LIMIT: whoever aborted
        // wants the process gone.
        let limit = if ctx.abort.is_cancelled() {
            ctx.config.drain_deadline.min(ABORTED_FLUSH_LIMIT)
        } else {
            ctx.config.drain_deadline
        };
        if let Some(source) = failure {
            // Still acknowledge what finished (per-update receipts) if the server answers:
            // otherwise it is delivered again.
            if !receipts.is_empty() {
                let ack = transport.ack(Ack {
                    below: None,
                    receipts: &receipts.receipts,
                    failed: &receipts.failed,
                });
                if let Ok(Err(e)) | Err(e) = tokio::time::timeout(limit, ack)
                    .await
                    .map_err(|_| "timed out".to_string())
                    .map(|r| r.map_err(|e| e.to_string()))
                {
                    warn!(error = %e, receipts = receipts.receipts.len(), "could not acknowledge finished updates after the failure");
                }
            }
            return Err(RunError::Transport {
                source,
                summary: Box::new(summary),
            });
        }
        let flushed = async {
            transport
                .ack(Ack {
                    below,
                    receipts: &receipts.receipts,
                    failed: &receipts.failed,
                })
                .await
                .map_err(|e| e.to_string())?;
            transport.flush().await.map_err(|e| e.to_string())
        }
        .instrument(info_span!("flush", offset = below));
        // An abort that comes while the flush waits (a second signal) cuts it short too.
        let aborted = async {
            ctx.abort.cancelled().await;
            tokio::time::sleep(ABORTED_FLUSH_LIMIT).await;
        };
        let flushed = tokio::select! {
            flushed = tokio::time::timeout(limit, flushed) => {
                flushed.unwrap_or_else(|_| Err(format!("timed out after {limit:?} (drain deadline)")))
            }
            () = aborted => Err(format!("given up {ABORTED_FLUSH_LIMIT:?} after the run was aborted")),
        };
        match flushed {
            Ok(()) => {
                if let Some(b) = below {
                    ctx.counters.set_acked(b);
                }
                summary.confirmed_offset = below;
            }
            Err(e) => {
                error!(error = %e, "could not confirm the final offset; finished updates may be delivered again");
                summary.flush_error = Some(e);
            }
        }
        summary.stats = stats_of(&ctx).snapshot();
        info!(handled = summary.stats.finished(), drained, offset = ?summary.confirmed_offset, "runtime stopped");
        Ok(summary)
    }
}

/// The most bytes of a failed handler's error text handed to the transport.
const MAX_ERROR_BYTES: usize = 4096;

/// How long the final acknowledgement may take once the run was aborted.
const ABORTED_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Aborts the run's handlers when `Runtime::run`'s future is dropped before its end:
/// the drain-deadline token is cancelled (running handlers are dropped at their next
/// wake-up) and the gate closed (waiting acquires give up).
struct AbortOnDrop(Option<(CancellationToken, Gate)>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some((abort, gate)) = self.0.take() {
            abort.cancel();
            gate.close();
        }
    }
}

fn stats_of<H>(ctx: &Ctx<H>) -> StatsHandle {
    StatsHandle {
        counters: Arc::clone(&ctx.counters),
        gate: ctx.gate.clone(),
    }
}

async fn report_every(every: Duration, stats: StatsHandle) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = stats.snapshot();
        info!(
            target: "pollgate::summary",
            in_flight = s.in_flight,
            queued = s.queued,
            bytes = s.bytes,
            limit_slots = ?s.limit.slots,
            limit_bytes = ?s.limit.bytes,
            completed = s.completed,
            failed = s.failed,
            panicked = s.panicked,
            timed_out = s.timed_out,
            fetches = s.fetches,
            offset = ?s.acked_offset,
            rss = ?s.memory.map(|m| m.rss_bytes),
            "pollgate summary"
        );
    }
}

/// An item of a batch, in id order: an update to run, or an undecodable one to skip.
enum Item {
    Run(Update),
    Skip(pollgate_core::DecodeFailure),
}

impl Item {
    fn id(&self) -> i64 {
        match self {
            Item::Run(u) => u.id(),
            Item::Skip(f) => f.update_id,
        }
    }
}

async fn dispatch_loop<T: Transport, H: Handler>(
    transport: &T,
    ctx: &Arc<Ctx<H>>,
    stop: &CancellationToken,
) -> Result<(), T::Error> {
    let window = transport.ack_model().window().max(1);
    let mut repoll_at = None;
    loop {
        if let Some((until, fewer_than)) = repoll_at.take() {
            wait_for_news(ctx, until, fewer_than, stop).await;
        }
        let new = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            new = fetch_room(ctx, window) => match new {
                Some(n) => n,
                None => return Ok(()),
            },
        };
        // One snapshot: the offset sent and the repeats it brings back must agree, or a
        // completion in between (another thread) would let the server hand out more new
        // updates than the policy admitted. The repeats only shrink between `fetch_room`
        // and here, so `again + new` stays within the window.
        let (below, receipts, again) = {
            let mut acks = ctx.acks.lock();
            (acks.below(), acks.take_receipts(), acks.redelivered_next())
        };
        // A transport that cannot reach its server retries inside `ack`: a shutdown must
        // not wait for it. The receipts go back for the final acknowledgement.
        let acked = tokio::select! {
            biased;
            r = transport.ack(Ack { below, receipts: &receipts.receipts, failed: &receipts.failed }) => r,
            _ = stop.cancelled() => {
                ctx.acks.lock().restore_receipts(receipts);
                return Ok(());
            }
        };
        acked?;
        if let Some(b) = below {
            ctx.counters.set_acked(b);
        }
        let limit = again + new;
        let request = FetchRequest {
            limit,
            timeout: ctx.config.poll_timeout,
        };
        let span = info_span!("fetch", limit, offset = below, received = tracing::field::Empty);
        // A closed gate would give up everything this fetch brings (and eager mode would
        // confirm it): stop polling. The fetch is cancel safe; nothing is lost.
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = ctx.gate.closed() => return Ok(()),
            batch = transport.fetch(request).instrument(span.clone()) => batch?,
        };
        let returned = batch.len();
        span.record("received", returned);
        Counters::bump(&ctx.counters.fetches);
        // Repeats were due, so the server answered at once (see `wait_for_news`). Either
        // it had nothing more than we asked for (caught up: only time brings news), or the
        // transport cut its own request short (Telegram halves `limit` after a body over
        // its cap) and the repeats alone filled it: only a window move makes room then.
        if again > 0 {
            let until = tokio::time::Instant::now() + ctx.config.repoll_interval;
            if batch.truncated {
                if returned <= again {
                    repoll_at = Some((until, Some(again)));
                }
            } else if returned < limit {
                repoll_at = Some((until, None));
            }
        }
        let fresh = if batch.failures.is_empty() {
            // The common case: every update decoded. Filter in place, under one lock.
            let mut updates = batch.updates;
            {
                let mut acks = ctx.acks.lock();
                updates.retain(|u| acks.fetched(u.id(), u.receipt()) == Seen::New);
            }
            record_fetched(ctx, updates.len(), returned - updates.len());
            updates
        } else {
            register_mixed(ctx, batch, returned)
        };
        // Eager receipts are due now, not before the next fetch (which may wait for room):
        // a webhook's request is answered when its update is taken, a queue's entry
        // leaves its pending list.
        if ctx.individual && ctx.config.delivery == crate::Delivery::Eager && !fresh.is_empty() {
            ctx.receipts_ready.notify_one();
        }
        // Only new updates fill a batch (`Barrier`): repeats are already counted.
        ctx.gate.on_batch(fresh.len());
        for update in fresh {
            admit(ctx, update).await;
        }
    }
}

/// Counts a fetch's new runnable updates and its repeats.
fn record_fetched<H>(ctx: &Ctx<H>, fresh: usize, repeats: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    ctx.counters.fetched.fetch_add(fresh as u64, Relaxed);
    ctx.counters.redelivered.fetch_add(repeats as u64, Relaxed);
}

/// Registers a batch with undecodable updates under one lock, in id order: which ids are
/// new, and the broken ones are finished at once (reported, acknowledged past). Returns
/// the new updates to run.
fn register_mixed<H>(ctx: &Ctx<H>, batch: pollgate_core::Batch, returned: usize) -> Vec<Update> {
    let mut items: Vec<Item> = batch.updates.into_iter().map(Item::Run).collect();
    items.extend(batch.failures.into_iter().map(Item::Skip));
    items.sort_by_key(Item::id);
    let mut fresh = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    {
        let mut acks = ctx.acks.lock();
        for item in items {
            match item {
                Item::Skip(f) => {
                    if acks.fetched(f.update_id, None) == Seen::New {
                        acks.finished(f.update_id, None, None);
                        skipped.push(f);
                    }
                }
                Item::Run(u) => {
                    if acks.fetched(u.id(), u.receipt()) == Seen::New {
                        fresh.push(u);
                    }
                }
            }
        }
    }
    record_fetched(ctx, fresh.len(), returned - fresh.len() - skipped.len());
    for f in skipped {
        Counters::bump(&ctx.counters.undecodable);
        error!(update_id = f.update_id, id_inferred = f.id_inferred, error = %f.error, raw = %f.raw, "undecodable update skipped");
    }
    fresh
}

/// Sends receipts as handlers finish, while a fetch may be in flight, until `done`
/// (every handler finished). Only for transports with individual acks: an entry finished
/// but not acknowledged would be delivered again if the worker died, or claimed by
/// another worker once idle. On a failed ack the run stops (`stop`) and the error is
/// returned; the receipts not acknowledged stay pending in the queue and are delivered
/// again (at-least-once).
async fn ack_loop<T: Transport, H>(
    transport: &T,
    ctx: &Ctx<H>,
    done: &CancellationToken,
    stop: &CancellationToken,
) -> Option<T::Error> {
    if !ctx.individual {
        return None;
    }
    loop {
        let ready = ctx.receipts_ready.notified();
        let receipts = ctx.acks.lock().take_receipts();
        if receipts.is_empty() {
            tokio::select! {
                _ = ready => continue,
                _ = done.cancelled() => return None,
            }
        }
        let ack = transport
            .ack(Ack {
                below: None,
                receipts: &receipts.receipts,
                failed: &receipts.failed,
            })
            .instrument(info_span!("ack", receipts = receipts.receipts.len()));
        // Once every handler finished, an acknowledgement still retrying (the server is
        // unreachable) gets the drain deadline, then is given up: its entries stay
        // pending and are delivered again.
        let gave_up = async {
            done.cancelled().await;
            tokio::time::sleep(ctx.config.drain_deadline).await;
        };
        let acked = tokio::select! {
            r = ack => r,
            _ = gave_up => {
                warn!(receipts = receipts.receipts.len(), "acknowledgement still failing at shutdown; given up (the entries will be delivered again)");
                return None;
            }
        };
        if let Err(e) = acked {
            error!(error = %e, receipts = receipts.receipts.len(), "acknowledgement failed; stopping (unacknowledged entries will be delivered again)");
            stop.cancel();
            return Some(e);
        }
    }
}

/// Waits until something may be fetched; returns how many *new* updates to ask for (the
/// policy admits them, the ordering queues and the ack window have room for them), or
/// `None` when the gate closed. The caller adds the ids the server will send again.
///
/// While handlers are running, a fetch waits (up to `fetch_coalesce`) until a batch worth
/// a request fits: a quarter of what the policy currently lets run at once (in flight plus
/// admissible now), at most `min_fetch`. With fast handlers every completion would
/// otherwise cost a fetch of one update; relative to the capacity, a small policy
/// (`Fixed::new(8)`) is not made to wait for a batch it can never hold.
///
/// Every wait here has something that ends it: room in the window or the queues comes
/// back with a `progress` notification (a completion that moves the window, a parked
/// update that got its permit or was given up); the policy's room with the gate's
/// watchers (a release, a reservation returned, a limit signal). Once the coalescing
/// deadline has passed, the loop waits for the policy to admit anything at all, never on
/// a timer that is already due.
async fn fetch_room<H>(ctx: &Ctx<H>, window: usize) -> Option<usize> {
    let max_batch = ctx.config.min_fetch.clamp(1, window);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut want = 1;
    loop {
        let progressed = ctx.progress.notified();
        tokio::pin!(progressed);
        progressed.as_mut().enable();
        let again = ctx.acks.lock().redelivered_next();
        let room_window = window.saturating_sub(again);
        // Updates parked behind their keys, waiting for a retry or held back by the pacer
        // hold reservations.
        let room_queue = if ctx.keys.is_some() || ctx.config.retry.retries() || ctx.config.pacer.is_some() {
            ctx.config.max_queued.saturating_sub(ctx.gate.load().queued)
        } else {
            usize::MAX
        };
        if room_window == 0 || room_queue == 0 {
            // Room comes back with a completion or an admitted parked update; a closed gate
            // (the drain deadline, or `Runtime::gate().close()`) admits nothing any more,
            // and given-up updates never free the window.
            tokio::select! {
                _ = progressed => continue,
                _ = ctx.gate.closed() => return None,
            }
        }
        let room = room_window.min(room_queue);
        let coalescing = deadline.filter(|until| tokio::time::Instant::now() < *until);
        let admits = match coalescing {
            // Coalescing: sleep until a batch fits (the gate wakes us only then), or until
            // the deadline, whichever comes first.
            Some(until) => tokio::select! {
                ready = ctx.gate.fetch_ready_at_least(want.min(room)) => ready.ok()?,
                _ = tokio::time::sleep_until(until) => ctx.gate.fetch_limit(),
            },
            None => ctx.gate.fetch_ready().await.ok()?,
        };
        // The wait may have been long: re-read what the server will send again (it only
        // shrinks while we wait: this task is the only one that fetches).
        let again = ctx.acks.lock().redelivered_next();
        let new = admits.min(room_queue).min(window.saturating_sub(again));
        if new == 0 {
            // Only after the coalescing deadline fired with nothing admissible (the limit
            // dropped meanwhile): the next turn waits in `fetch_ready`.
            continue;
        }
        let in_flight = ctx.gate.load().in_flight;
        // A policy may answer `usize::MAX` ("as many as you like"): saturate.
        want = (in_flight.saturating_add(admits) / 4).clamp(1, max_batch);
        let late = deadline.is_some_and(|until| tokio::time::Instant::now() >= until);
        if new >= want.min(room) || late || in_flight == 0 {
            return Some(new);
        }
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + ctx.config.fetch_coalesce);
    }
}

/// After a fetch that found the server caught up while updates above the offset are
/// unfinished (at-least-once with cumulative acks), waits before the next fetch.
///
/// Telegram answers a long poll at once while any update at or above the offset exists,
/// and in at-least-once mode the unfinished ones are exactly that: the next `getUpdates`
/// would return the same repeats immediately, again and again (a busy poll). New updates
/// cannot arrive faster by polling harder, so the loop re-polls after `repoll_interval`
/// (new arrivals are still seen while a handler is slow), or as soon as nothing above the
/// offset is unfinished any more, when a real long poll can wait on the server again.
/// A completion that merely moves the window brings nothing new to fetch, so it does not
/// end the wait by itself (its offset is confirmed by the next fetch or the final flush),
/// unless `fewer_than` is set: the transport shortened its request and the repeats alone
/// filled it, so the wait ends as soon as fewer than that many repeats are due.
async fn wait_for_news<H>(
    ctx: &Ctx<H>,
    until: tokio::time::Instant,
    fewer_than: Option<usize>,
    stop: &CancellationToken,
) {
    loop {
        let progressed = ctx.progress.notified();
        tokio::pin!(progressed);
        progressed.as_mut().enable();
        let again = ctx.acks.lock().redelivered_next();
        if again == 0 || fewer_than.is_some_and(|n| again < n) {
            return;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = ctx.gate.closed() => return,
            _ = tokio::time::sleep_until(until) => return,
            _ = progressed => {}
        }
    }
}

/// Admits one new update: parks it behind its key, or waits for a permit and spawns it.
/// The pacer is asked first, in arrival order, also for an update that parks (it starts
/// when its key is free and its time has come).
async fn admit<H: Handler>(ctx: &Arc<Ctx<H>>, update: Update) {
    let cost = ctx.config.cost.of(&update);
    let start_at = ctx.start_at(&update);
    if let (Some(keys), Some(key)) = (&ctx.keys, update.key()) {
        let mut parked = Some(update);
        // A parked update holds its JSON, not yet its handler's working set: it reserves
        // its size, and its cost only when it comes up (as a waiting retry does).
        let claimed = keys.lock().claim_or_park(key, || {
            let update = parked.take().expect("parked once");
            Queued {
                reservation: ctx.gate.reserve(update.size() as u64),
                update,
                start_at,
            }
        });
        let Some(update) = parked.filter(|_| claimed) else {
            return;
        };
        return pace_or_acquire(ctx, update, cost, start_at).await;
    }
    pace_or_acquire(ctx, update, cost, start_at).await
}

/// Runs `update` now (waiting for a permit), or, when the pacer holds it back until
/// `start_at`, leaves it to a task that waits with its cost reserved and then takes a
/// permit.
async fn pace_or_acquire<H: Handler>(ctx: &Arc<Ctx<H>>, update: Update, cost: u64, start_at: Option<Instant>) {
    if start_at.is_none_or(|at| at <= Instant::now()) {
        return acquire_and_spawn(ctx, update, cost).await;
    }
    let reservation = ctx.gate.reserve(cost);
    let ctx = Arc::clone(ctx);
    ctx.tracker.clone().spawn(async move {
        let acquired = if ctx.hold_until(&update, start_at).await {
            ctx.gate.acquire_reserved(reservation).await.ok()
        } else {
            drop(reservation);
            None
        };
        // The reservation has left the gate's queued count: a dispatcher paused at
        // `max_queued` may go on.
        ctx.progress.notify_one();
        match acquired {
            Some(permit) if ctx.keys.is_some() && update.key().is_some() => task::run(ctx, update, permit).await,
            Some(permit) => {
                let mut permit = Some(permit);
                if ctx.revoke(&update, &mut permit) {
                    ctx.finished(update.id(), update.receipt(), None);
                } else if let Some(permit) = permit {
                    task::RunOne::new(ctx, update, permit).await;
                }
            }
            None => {
                ctx.give_up(&update);
                ctx.abandon_key(update.key());
            }
        }
    });
}

async fn acquire_and_spawn<H: Handler>(ctx: &Arc<Ctx<H>>, update: Update, cost: u64) {
    // The common case needs no waiting: take the synchronous path first. At the drain
    // deadline the gate is closed, and a waiting acquire then fails.
    let permit = match ctx.gate.try_acquire(cost) {
        Ok(permit) => Some(permit),
        Err(TryAcquireError::Closed) => None,
        Err(TryAcquireError::NoCapacity) => ctx.gate.acquire(cost).await.ok(),
    };
    match permit {
        Some(permit) => {
            if ctx.keys.is_some() && update.key().is_some() {
                ctx.tracker.spawn(task::run(Arc::clone(ctx), update, permit));
            } else {
                let mut permit = Some(permit);
                if ctx.revoke(&update, &mut permit) {
                    ctx.finished(update.id(), update.receipt(), None);
                } else if let Some(permit) = permit {
                    ctx.tracker.spawn(task::RunOne::new(Arc::clone(ctx), update, permit));
                }
            }
        }
        None => {
            ctx.give_up(&update);
            ctx.abandon_key(update.key());
        }
    }
}
