//! One tracked task: runs an update's handler, reports its outcome, and goes on with the
//! next update of the same key when ordering is on.
//!
//! The task of an unordered update is a hand-written future ([`RunOne`]) rather than an
//! `async fn`: the update moves straight into the handler's future when the task is
//! created, and nothing else is kept but the permit, the id and the receipt. An `async fn`
//! taking the update would keep a copy of it (and of the permit) in its state beside the
//! handler's future, and every spawn and completion copies the whole state: with a cheap
//! handler that copying was a measurable part of the per-update cost. The waits for the
//! drain deadline and the handler timeout are only set up (and boxed, together) once a
//! handler actually has to wait; without a handler timeout no timer is ever created.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use pollgate_admission::{Completion, Outcome, Permit, Reservation};
use pollgate_core::Update;
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{Span, debug, debug_span, error, warn};

use crate::handler::{BoxError, Handler, overload};
use crate::runtime::Ctx;
use crate::stats::Counters;

type Panic = Box<dyn Any + Send>;

pin_project_lite::pin_project! {
    /// Runs one handler to its end, to the handler timeout or to the drain deadline, and
    /// reports the outcome to the permit, the counters and the log, then says how the
    /// attempt ended ([`Verdict`]).
    pub(crate) struct Execute<H: Handler> {
        ctx: Arc<Ctx<H>>,
        #[pin]
        handler: Started<H::Future>,
        // Boxed, once the handler first waits: most handlers of a busy bot never do
        // (or the task state would carry both waits, idle, through every spawn).
        waits: Option<Pin<Box<Waits>>>,
        permit: Option<Permit>,
        // Boxed, and only when tracing wants it: a disabled span is 40 bytes of task
        // state that every spawn and completion would copy.
        span: Option<Box<Span>>,
        // When the handler started: set when the policy or tracing wants latencies, or
        // a handler timeout is configured (its timer counts from here).
        started: Option<Instant>,
        // A copy of the update for its next attempt, when one is allowed (boxed: without
        // retries it costs a pointer).
        retry: Option<Box<Update>>,
        id: i64,
        // The update's ordering key, for the policy's feedback.
        key: Option<i64>,
    }
}

pin_project_lite::pin_project! {
    /// The handler's future, the panic that creating it raised, or nothing any more (it
    /// was dropped at the timeout or the deadline, before its permit was released).
    #[project = StartedProj]
    enum Started<F> {
        Running { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        Panicked { panic: Option<Panic> },
        Dropped,
    }
}

pin_project_lite::pin_project! {
    /// What may end a waiting handler early: the drain deadline (the run's abort token)
    /// and, if configured, the handler timeout.
    struct Waits {
        #[pin]
        abort: WaitForCancellationFutureOwned,
        // Boxed again: without a handler timeout it costs a pointer, not a timer.
        timeout: Option<Pin<Box<Sleep>>>,
    }
}

/// Why a waiting handler was stopped.
enum Stopped {
    /// The drain deadline passed.
    Aborted,
    /// The handler timeout passed.
    TimedOut,
}

impl Future for Waits {
    type Output = Stopped;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stopped> {
        let this = self.project();
        // The deadline first: once the run aborts, nothing counts as finished any more.
        if this.abort.poll(cx).is_ready() {
            return Poll::Ready(Stopped::Aborted);
        }
        match this.timeout {
            Some(timeout) => timeout.as_mut().poll(cx).map(|()| Stopped::TimedOut),
            None => Poll::Pending,
        }
    }
}

/// How one attempt at an update ended, for its acknowledgement and its retries.
pub(crate) enum Verdict {
    /// The handler returned `Ok`.
    Handled,
    /// The handler failed (an error, a panic or the handler timeout): why, as text, and
    /// the update for its next attempt if one is allowed.
    Failed { error: String, retry: Option<Retrying> },
    /// The handler was dropped at the drain deadline: the update is not finished.
    Aborted,
}

/// An update between two attempts: in memory, not running.
pub(crate) struct Retrying {
    update: Update,
    /// Its JSON size, counted as waiting (like an update parked behind its key). Taken
    /// before the failed attempt's permit was released, so that the gate never sees the
    /// update gone in between (a `Barrier` would open its next batch).
    waiting: Reservation,
    /// How long the downstream asked to be left alone (`Overloaded::retry_after`): the
    /// backoff is at least that.
    asked: Option<Duration>,
}

/// How a handler ended.
enum Ended<E> {
    /// It returned.
    Returned(Result<(), E>),
    /// It panicked (creating its future, or polling it).
    Panicked(Panic),
    /// It ran past the handler timeout and was dropped.
    TimedOut,
    /// It was dropped at the drain deadline.
    Aborted,
}

impl<H: Handler> Execute<H> {
    /// Starts attempt number `attempt` (1-based) at the update: it moves into its
    /// handler's future now (a copy is kept when another attempt is allowed).
    pub(crate) fn new(ctx: Arc<Ctx<H>>, update: Update, permit: Permit, attempt: u32) -> Execute<H> {
        let (id, key) = (update.id(), update.ordering_key());
        let retry = (attempt < ctx.config.retry.max_attempts()).then(|| Box::new(update.clone()));
        let span = debug_span!(target: "pollgate::update", "update", update_id = id, key = ?update.ordering_key(), cost = permit.cost());
        let span = (!span.is_disabled()).then(|| Box::new(span));
        let started = (ctx.policy_times
            || ctx.histograms.is_some()
            || ctx.config.handler_timeout.is_some()
            || tracing::enabled!(tracing::Level::DEBUG))
        .then(Instant::now);
        let created = {
            let _entered = span.as_deref().map(Span::enter);
            std::panic::catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(update)))
        };
        let handler = match created {
            Ok(f) => Started::Running {
                future: AssertUnwindSafe(f).catch_unwind(),
            },
            Err(p) => Started::Panicked { panic: Some(p) },
        };
        Execute {
            ctx,
            handler,
            waits: None,
            permit: Some(permit),
            span,
            started,
            retry,
            id,
            key,
        }
    }
}

impl<H: Handler> Future for Execute<H> {
    type Output = Verdict;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        let mut this = self.project();
        let ended = match this.handler.as_mut().project() {
            StartedProj::Panicked { panic } => Ended::Panicked(panic.take().expect("polled after completion")),
            StartedProj::Dropped => panic!("polled after completion"),
            StartedProj::Running { future } => {
                let polled = {
                    let _entered = this.span.as_deref().map(Span::enter);
                    future.poll(cx)
                };
                match polled {
                    Poll::Ready(Ok(returned)) => Ended::Returned(returned),
                    Poll::Ready(Err(panic)) => Ended::Panicked(panic),
                    Poll::Pending => {
                        // The handler waits: from now on the drain deadline, and the
                        // handler timeout if any, may end it.
                        let (ctx, started) = (&*this.ctx, *this.started);
                        let waits = this.waits.get_or_insert_with(|| Box::pin(Waits::new(ctx, started)));
                        let stopped = ready!(waits.as_mut().poll(cx));
                        // Cancelled: its memory goes before its permit does. Dropping runs
                        // the handler's own clean-up, which may panic: that is reported as
                        // the handler's panic, and the update still counts as finished
                        // (its key and the offset move on).
                        let mut handler = this.handler.as_mut();
                        let dropped = std::panic::catch_unwind(AssertUnwindSafe(move || handler.set(Started::Dropped)));
                        match (stopped, dropped) {
                            (Stopped::Aborted, _) => Ended::Aborted,
                            (Stopped::TimedOut, Ok(())) => Ended::TimedOut,
                            (Stopped::TimedOut, Err(panic)) => Ended::Panicked(panic),
                        }
                    }
                }
            }
        };
        let permit = this.permit.take().expect("polled after completion");
        Poll::Ready(report(
            this.ctx,
            (*this.id, *this.key),
            permit,
            *this.started,
            ended,
            this.retry.take(),
        ))
    }
}

impl Waits {
    /// The waits of a handler that started at `started` (set whenever a handler timeout
    /// is configured).
    fn new<H>(ctx: &Ctx<H>, started: Option<Instant>) -> Waits {
        let timeout = ctx.config.handler_timeout.map(|timeout| {
            let started = started.expect("`started` is set when a handler timeout is configured");
            Box::pin(tokio::time::sleep_until(started + timeout))
        });
        Waits {
            abort: ctx.abort.clone().cancelled_owned(),
            timeout,
        }
    }
}

/// Reports how a handler ended, and turns it into a [`Verdict`]. A failure with `retry`
/// (another attempt allowed) is counted as retried and reserved as waiting *before* the
/// permit is released.
fn report<H: Handler>(
    ctx: &Ctx<H>,
    (id, key): (i64, Option<i64>),
    permit: Permit,
    started: Option<Instant>,
    ended: Ended<H::Error>,
    retry: Option<Box<Update>>,
) -> Verdict {
    let latency = started.map(|t| t.elapsed()).unwrap_or_default();
    let latency_ms = latency.as_secs_f64() * 1e3;
    if let Some(h) = &ctx.histograms {
        h.handler_duration.record(latency);
    }
    let release = |permit: Permit, outcome, retry_after| {
        permit.report(
            Completion::new(0, outcome, latency)
                .with_key(key)
                .with_retry_after(retry_after),
        );
    };
    let retrying = |retry: Option<Box<Update>>, asked: Option<Duration>| {
        retry.map(|update| {
            Counters::bump(&ctx.counters.retried);
            let waiting = ctx.gate.reserve(update.size() as u64);
            Retrying {
                update: *update,
                waiting,
                asked,
            }
        })
    };
    match ended {
        Ended::Aborted => {
            Counters::bump(&ctx.counters.aborted_running);
            release(permit, Outcome::Cancelled, None);
            ctx.given_up.lock().push(id);
            warn!(update_id = id, latency_ms, "handler aborted at the drain deadline");
            Verdict::Aborted
        }
        Ended::TimedOut => {
            // Counted before the permit is released: `Stats::completed` is derived from
            // the releases.
            Counters::bump(&ctx.counters.timed_out);
            let retry = retrying(retry, None);
            release(permit, Outcome::Overload, None);
            let timeout = ctx.config.handler_timeout.unwrap_or_default();
            warn!(
                update_id = id,
                ?timeout,
                latency_ms,
                retry = retry.is_some(),
                "handler timed out: cancelled, reported as overload"
            );
            Verdict::Failed {
                error: format!("timed out after {timeout:?}"),
                retry,
            }
        }
        Ended::Returned(Ok(())) => {
            // No counter here: successes are the gate's releases minus the other outcomes,
            // so the common path writes no shared counter.
            release(permit, Outcome::Success, None);
            debug!(update_id = id, outcome = "success", latency_ms, "update handled");
            Verdict::Handled
        }
        Ended::Returned(Err(e)) => {
            let e: BoxError = e.into();
            let overloaded = overload(&*e);
            let retry_after = overloaded.and_then(|o| o.retry_after);
            let outcome = if overloaded.is_some() {
                Outcome::Overload
            } else {
                Outcome::Error
            };
            Counters::bump(&ctx.counters.failed);
            let retry = retrying(retry, retry_after);
            release(permit, outcome, retry_after);
            let error = pollgate_core::ErrorChain(&*e).to_string();
            warn!(update_id = id, outcome = ?outcome, error = %error, latency_ms, retry = retry.is_some(), "handler failed");
            Verdict::Failed { error, retry }
        }
        Ended::Panicked(panic) => {
            Counters::bump(&ctx.counters.panicked);
            let retry = retrying(retry, None);
            release(permit, Outcome::Panic, None);
            let message = panic_message(&*panic);
            error!(
                update_id = id,
                outcome = "panic",
                panic = message,
                latency_ms,
                retry = retry.is_some(),
                "handler panicked"
            );
            Verdict::Failed {
                error: format!("panicked: {message}"),
                retry,
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The task of an update that has no ordering to keep: [`Execute`], then the
    /// completion is recorded for acknowledgement.
    pub(crate) struct RunOne<H: Handler> {
        #[pin]
        execute: Execute<H>,
        receipt: Option<Arc<str>>,
    }
}

impl<H: Handler> RunOne<H> {
    pub(crate) fn new(ctx: Arc<Ctx<H>>, update: Update, permit: Permit) -> RunOne<H> {
        let receipt = update.receipt().cloned();
        RunOne {
            execute: Execute::new(ctx, update, permit, 1),
            receipt,
        }
    }
}

impl<H: Handler> Future for RunOne<H> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let verdict = ready!(this.execute.as_mut().poll(cx));
        let execute = this.execute.project();
        let (ctx, id) = (execute.ctx, *execute.id);
        let failed = match verdict {
            Verdict::Aborted => return Poll::Ready(()),
            Verdict::Handled => None,
            Verdict::Failed { error, retry: None } => Some((1, error)),
            Verdict::Failed { retry: Some(retry), .. } => {
                // The rare path: the retries go on in a task of their own, so that the
                // common one stays this small future.
                let (ctx, receipt) = (Arc::clone(ctx), this.receipt.take());
                ctx.tracker.clone().spawn(async move {
                    if let Some(failed) = retry_after(&ctx, retry, 1).await {
                        ctx.finished(id, receipt.as_ref(), failed);
                    }
                });
                return Poll::Ready(());
            }
        };
        ctx.finished(id, this.receipt.as_ref(), failed);
        Poll::Ready(())
    }
}

/// Runs an update (with its retries), then the updates queued behind its key, one at a
/// time.
pub(crate) async fn run<H: Handler>(ctx: Arc<Ctx<H>>, mut update: Update, mut permit: Permit) {
    loop {
        let (id, key, receipt) = (update.id(), update.ordering_key(), update.receipt().cloned());
        // Taken back by the transport (its lease lost): not started, and the next of the
        // key is looked at the same way.
        let mut held = Some(permit);
        if ctx.revoke(&update, &mut held) {
            ctx.finished(id, receipt.as_ref(), None);
        } else if let Some(permit) = held {
            let Some(failed) = attempts(&ctx, update, permit).await else {
                ctx.abandon_key(key);
                return;
            };
            ctx.finished(id, receipt.as_ref(), failed);
        }
        let (Some(keys), Some(key)) = (&ctx.keys, key) else {
            return;
        };
        let Some(next) = keys.lock().next(key) else {
            return;
        };
        update = next.update;
        // Its cost is reserved before its JSON-size reservation goes, so the update never
        // leaves the gate's count. Held back until the time the pacer gave it on arrival,
        // then a permit. At the drain deadline the gate is closed: a waiting acquire then
        // fails.
        let cost = ctx.gate.reserve(ctx.config.cost.of(&update));
        drop(next.reservation);
        let acquired = if ctx.hold_until(&update, next.start_at).await {
            ctx.acquire_reserved(cost).await
        } else {
            drop(cost);
            None
        };
        // Only now has the reservation left the gate's queued count (turned into a permit
        // or dropped): a dispatcher that stopped fetching because `max_queued` updates
        // were parked may go on. Notifying before the acquire, which may wait in the
        // gate, would wake it too early and then never again.
        ctx.progress.notify_one();
        match acquired {
            Some(p) => permit = p,
            None => {
                ctx.give_up(&update);
                ctx.abandon_key(Some(key));
                return;
            }
        }
    }
}

/// Runs an update's handler until it succeeds or its [attempts](crate::Retry) are used
/// up (see the [`retry`](crate::retry) module). Returns `None` when the update was not
/// finished (aborted at the drain deadline, or its next attempt never admitted), else
/// whether it failed for good: `Some(None)` handled, `Some(Some((attempts, error)))` not.
async fn attempts<H: Handler>(ctx: &Arc<Ctx<H>>, update: Update, permit: Permit) -> Option<Option<(u32, String)>> {
    match Execute::new(Arc::clone(ctx), update, permit, 1).await {
        Verdict::Handled => Some(None),
        Verdict::Aborted => None,
        Verdict::Failed { error, retry: None } => Some(Some((1, error))),
        Verdict::Failed { retry: Some(retry), .. } => retry_after(ctx, retry, 1).await,
    }
}

/// The attempts after attempt number `attempt` failed: waits out the backoff with the
/// update's JSON size reserved, then takes a permit like a parked update (its cost
/// reserved, then turned into the permit, in FIFO order), and runs the handler again.
/// Returns as [`attempts`] does.
async fn retry_after<H: Handler>(
    ctx: &Arc<Ctx<H>>,
    retry: Retrying,
    mut attempt: u32,
) -> Option<Option<(u32, String)>> {
    let Retrying {
        mut update,
        mut waiting,
        mut asked,
    } = retry;
    loop {
        // At least as long as an overloaded downstream asked (Telegram's 429).
        let delay = ctx.config.retry.delay(attempt).max(asked.unwrap_or_default());
        debug!(update_id = update.id(), attempt, ?delay, "retrying after backoff");
        let slept = ctx.sleep_until(Instant::now() + delay).await;
        // At the drain deadline the gate is closed: a waiting acquire then fails. The
        // cost is reserved before the JSON-size reservation goes, so the update never
        // leaves the gate's count.
        let acquired = if slept {
            let cost = ctx.gate.reserve(ctx.config.cost.of(&update));
            drop(waiting);
            ctx.acquire_reserved(cost).await
        } else {
            drop(waiting);
            None
        };
        // Only now has the reservation left the gate's queued count: a dispatcher that
        // paused at `max_queued` may go on (see `run` for why not earlier).
        ctx.progress.notify_one();
        let Some(permit) = acquired else {
            ctx.give_up(&update);
            return None;
        };
        let mut held = Some(permit);
        if ctx.revoke(&update, &mut held) {
            // Finished without running: the caller reports it, the transport acknowledges
            // nothing for it.
            return Some(None);
        }
        let Some(permit) = held else { return Some(None) };
        attempt += 1;
        match Execute::new(Arc::clone(ctx), update, permit, attempt).await {
            Verdict::Handled => return Some(None),
            Verdict::Aborted => return None,
            Verdict::Failed { error, retry: None } => return Some(Some((attempt, error))),
            Verdict::Failed { retry: Some(next), .. } => {
                (update, waiting, asked) = (next.update, next.waiting, next.asked);
            }
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}
