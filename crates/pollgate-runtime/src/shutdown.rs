//! The end of a run, and what ends it early.
//!
//! A run ends in three steps, and one deadline bounds them all, so that a supervisor's
//! grace period can be set once and a dead server cannot keep a process from exiting:
//! fetching stops when the shutdown token is cancelled; admitted handlers run until the
//! drain deadline, counted from then (the watchdog aborts them after it); the last
//! acknowledgements and the flush get what remains of that deadline, but at least
//! [`CONFIRM_GRACE`], and only `CONFIRM_GRACE` from the abort once the run was aborted. So
//! a stop takes at most the drain deadline plus `CONFIRM_GRACE`, whichever step waits.
//! What was fetched and did not finish is reported in [`Summary::unfinished`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pollgate_admission::Gate;
use pollgate_core::{Ack, ErrorChain, Transport};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::runtime::{Ctx, FlushError, RunError, Summary};

/// The final confirmation's share of a stop: all it gets once the run was aborted (a second
/// signal, or the drain deadline itself), and the least it gets when the handlers took
/// nearly the whole deadline (or the deadline is 0).
pub(crate) const CONFIRM_GRACE: Duration = Duration::from_secs(2);

/// Aborts the run's handlers when `Runtime::run`'s future is dropped before its end:
/// the drain-deadline token is cancelled (running handlers are dropped at their next
/// wake-up) and the gate closed (waiting acquires give up).
pub(crate) struct AbortOnDrop(pub(crate) Option<(CancellationToken, Gate)>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some((abort, gate)) = self.0.take() {
            abort.cancel();
            gate.close();
        }
    }
}

/// Once `stop` is cancelled, notes when (`stopped_at`), waits out the drain deadline, then
/// aborts the handlers still running and closes the gate; ends at `done` (every handler
/// ended). A task of its own, so the deadline counts from the cancellation even while the
/// run's future is not polled (its caller busy with its own clean-up); aborted when the
/// handle is dropped.
pub(crate) fn drain_watchdog<H>(
    ctx: &Ctx<H>,
    stop: CancellationToken,
    done: CancellationToken,
    stopped_at: Arc<OnceLock<Instant>>,
) -> AbortOnDropHandle<()> {
    let (abort, gate, deadline) = (ctx.abort.clone(), ctx.gate.clone(), ctx.config.drain_deadline);
    AbortOnDropHandle::new(tokio::spawn(async move {
        tokio::select! {
            biased;
            () = done.cancelled() => return,
            () = stop.cancelled() => {}
        }
        let at = *stopped_at.get_or_init(Instant::now);
        // `done` first: a run whose last handler ended at the deadline's very tick is
        // drained, not aborted.
        tokio::select! {
            biased;
            () = done.cancelled() => {}
            () = sleep_until_after(at, deadline) => {
                abort.cancel();
                gate.close();
            }
        }
    }))
}

/// Sleeps until `after` past `at`; a deadline beyond the clock's range never comes.
async fn sleep_until_after(at: Instant, after: Duration) {
    match at.checked_add(after) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// When the final confirmation (the acknowledgement still in flight and the last
/// acknowledgement and flush) must be over, computed once every handler ended: what remains
/// of the drain deadline counted from `stopped_at`, but at least [`CONFIRM_GRACE`]; only
/// that grace once the run was aborted, since whoever aborted wants the process gone.
pub(crate) fn confirm_by<H>(ctx: &Ctx<H>, stopped_at: Instant) -> Instant {
    let now = Instant::now();
    let grace = now + CONFIRM_GRACE;
    if ctx.abort.is_cancelled() {
        return grace;
    }
    match stopped_at.checked_add(ctx.config.drain_deadline) {
        Some(end) => end.max(grace),
        // A deadline past the clock's range: the confirmation may take as long as it takes
        // (one year stands for that, as tokio's own far future does).
        None => now + Duration::from_secs(365 * 24 * 3600),
    }
}

/// Why a confirmation step was cut short.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CutShort {
    /// `confirm_by` came.
    TimedOut,
    /// The run was aborted, and [`CONFIRM_GRACE`] passed since.
    Aborted,
}

impl CutShort {
    /// The error of a final confirmation cut short, which had `limit` when it began.
    fn into_error(self, limit: Duration) -> FlushError {
        match self {
            CutShort::TimedOut => FlushError::TimedOut(limit),
            CutShort::Aborted => FlushError::Aborted(CONFIRM_GRACE),
        }
    }
}

/// Completes at `confirm_by`, or [`CONFIRM_GRACE`] after the run was aborted, whichever is
/// first. The abort's instant is noted once (by the first step that sees it), so the
/// in-flight acknowledgement and the final flush share one grace rather than get one each.
pub(crate) async fn confirmation_over<H>(ctx: &Ctx<H>, confirm_by: Instant) -> CutShort {
    let aborted = async {
        ctx.abort.cancelled().await;
        let at = *ctx.aborted_at.get_or_init(Instant::now);
        tokio::time::sleep_until(at + CONFIRM_GRACE).await;
    };
    // An abort is the better account when both come at once (the deadline's own abort
    // gives the confirmation exactly the grace).
    tokio::select! {
        biased;
        () = aborted => CutShort::Aborted,
        () = tokio::time::sleep_until(confirm_by) => CutShort::TimedOut,
    }
}

/// After every handler ended: reports what did not finish, then confirms what did (the
/// final acknowledgement and flush), by `confirm_by` (see [`confirm_by`]).
pub(crate) async fn finish<T: Transport, H>(
    transport: &T,
    ctx: &Ctx<H>,
    failure: Option<T::Error>,
    confirm_by: Instant,
) -> Result<Summary, RunError<T::Error>> {
    let (below, receipts, mut unfinished) = {
        let mut acks = ctx.acks.lock();
        (
            acks.below(),
            acks.take_receipts(),
            acks.unfinished().collect::<Vec<_>>(),
        )
    };
    // Every abort and give-up is in `given_up`; the tracker adds what at-least-once
    // fetched and never ran. Both are needed: eager acks keep no per-update state, and
    // the tracker keeps one entry per id, so a second copy of an id (a webhook request
    // Telegram sent again, a stream entry pushed twice) dropped at the deadline leaves
    // no trace there once the first copy finished.
    unfinished.append(&mut ctx.given_up.lock());
    unfinished.sort_unstable();
    unfinished.dedup();
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
    // Drained: nothing was dropped or given up (an abort may still have come at the tick
    // the last handler ended).
    let drained = unfinished.is_empty();
    let mut summary = Summary {
        stats: ctx.stats_handle().snapshot(),
        drained,
        unfinished,
        confirmed_offset: None,
        flush_error: None,
    };
    // What the confirmation was given, for the error that says it ran out.
    let limit = confirm_by.saturating_duration_since(Instant::now());
    if let Some(source) = failure {
        // Still acknowledge what finished (per-update receipts) if the server answers:
        // otherwise it is delivered again.
        if !receipts.is_empty() {
            let ack = transport.ack(Ack {
                below: None,
                receipts: &receipts.receipts,
                failed: &receipts.failed,
            });
            // The acknowledgement first: one that is ready at once is not thrown away when
            // the budget is already spent.
            // The outcome is in the summary too: these finished updates are delivered again.
            let acked = tokio::select! {
                biased;
                acked = ack => acked.map_err(|e| FlushError::Failed(Arc::new(e))),
                cut = confirmation_over(ctx, confirm_by) => Err(cut.into_error(limit)),
            };
            if let Err(e) = acked {
                warn!(error = %ErrorChain(&e), receipts = receipts.receipts.len(), "could not acknowledge finished updates after the failure");
                summary.flush_error = Some(e);
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
            .map_err(|e| FlushError::Failed(Arc::new(e)))?;
        transport.flush().await.map_err(|e| FlushError::Failed(Arc::new(e)))
    }
    .instrument(info_span!("flush", offset = below));
    // An abort that comes while the flush waits (a second signal) cuts it short too.
    // The flush first, as above: ready at once, it counts even with nothing left.
    let flushed = tokio::select! {
        biased;
        flushed = flushed => flushed,
        cut = confirmation_over(ctx, confirm_by) => Err(cut.into_error(limit)),
    };
    match flushed {
        Ok(()) => {
            if let Some(b) = below {
                ctx.counters.set_acked(b);
            }
            summary.confirmed_offset = below;
        }
        Err(e) => {
            error!(error = %ErrorChain(&e), "could not confirm the final offset; finished updates may be delivered again");
            summary.flush_error = Some(e);
        }
    }
    summary.stats = ctx.stats_handle().snapshot();
    info!(handled = summary.stats.finished(), drained, offset = ?summary.confirmed_offset, "runtime stopped");
    Ok(summary)
}
