//! The end of a run, and what ends it early.
//!
//! A run ends in three steps, each bounded so that a dead server cannot keep a process
//! from exiting: fetching stops when the shutdown token is cancelled; admitted handlers get
//! the drain deadline (the watchdog aborts them after it); the final acknowledgement and
//! flush get the drain deadline too, or [`ABORTED_FLUSH_LIMIT`] once the run was aborted.
//! What was fetched and did not finish is reported in [`Summary::unfinished`].

use std::time::Duration;

use pollgate_admission::Gate;
use std::sync::Arc;

use pollgate_core::{Ack, ErrorChain, Transport};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::runtime::{Ctx, FlushError, RunError, Summary};

/// How long the final acknowledgement may take once the run was aborted.
pub(crate) const ABORTED_FLUSH_LIMIT: Duration = Duration::from_secs(2);

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

/// Once `stop` is cancelled, waits out the drain deadline, then aborts the handlers still
/// running and closes the gate. Aborted when the handle is dropped (the run ended).
pub(crate) fn drain_watchdog<H>(stop: CancellationToken, ctx: &Ctx<H>) -> AbortOnDropHandle<()> {
    let (abort, gate, deadline) = (ctx.abort.clone(), ctx.gate.clone(), ctx.config.drain_deadline);
    AbortOnDropHandle::new(tokio::spawn(async move {
        stop.cancelled().await;
        tokio::time::sleep(deadline).await;
        abort.cancel();
        gate.close();
    }))
}

/// After every handler ended: reports what did not finish, then confirms what did (the
/// final acknowledgement and flush), within the drain deadline.
pub(crate) async fn finish<T: Transport, H>(
    transport: &T,
    ctx: &Ctx<H>,
    failure: Option<T::Error>,
) -> Result<Summary, RunError<T::Error>> {
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
        stats: ctx.stats_handle().snapshot(),
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
            match tokio::time::timeout(limit, ack).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %ErrorChain(&e), receipts = receipts.receipts.len(), "could not acknowledge finished updates after the failure");
                }
                Err(_) => {
                    warn!(
                        ?limit,
                        receipts = receipts.receipts.len(),
                        "acknowledging finished updates after the failure timed out"
                    );
                }
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
    let aborted = async {
        ctx.abort.cancelled().await;
        tokio::time::sleep(ABORTED_FLUSH_LIMIT).await;
    };
    let flushed = tokio::select! {
        flushed = tokio::time::timeout(limit, flushed) => {
            flushed.unwrap_or(Err(FlushError::TimedOut(limit)))
        }
        () = aborted => Err(FlushError::Aborted(ABORTED_FLUSH_LIMIT)),
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
