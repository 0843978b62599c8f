//! One tracked task: runs an update's handler, reports its outcome, and goes on with the
//! next update of the same key when ordering is on.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use pollgate_admission::{Outcome, Permit};
use pollgate_core::Update;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, error, warn};

use crate::handler::{BoxError, Handler, is_overload};
use crate::runtime::Ctx;
use crate::stats::Counters;

/// Runs one update that has no ordering to keep (a smaller task than [`run`]).
pub(crate) async fn run_one<H: Handler>(ctx: Arc<Ctx<H>>, update: Update, permit: Permit) {
    let (id, receipt) = (update.id(), update.receipt().cloned());
    if execute(&ctx, update, permit).await {
        ctx.finished(id, receipt.as_ref());
    }
}

/// Runs an update, then the updates queued behind its key, one at a time.
pub(crate) async fn run<H: Handler>(ctx: Arc<Ctx<H>>, mut update: Update, mut permit: Permit) {
    loop {
        let (id, key, receipt) = (update.id(), update.key(), update.receipt().cloned());
        if !execute(&ctx, update, permit).await {
            ctx.abandon_key(key);
            return;
        }
        ctx.finished(id, receipt.as_ref());
        let (Some(keys), Some(key)) = (&ctx.keys, key) else {
            return;
        };
        let Some(next) = keys.lock().next(key) else {
            return;
        };
        ctx.progress.notify_one();
        update = next.update;
        // At the drain deadline the gate is closed: a waiting acquire then fails.
        match ctx.gate.acquire_reserved(next.reservation).await.ok() {
            Some(p) => permit = p,
            None => {
                ctx.give_up(&update);
                ctx.abandon_key(Some(key));
                return;
            }
        }
    }
}

/// Runs the handler for one update; `false` when it was aborted at the drain deadline.
async fn execute<H: Handler>(ctx: &Ctx<H>, update: Update, permit: Permit) -> bool {
    let id = update.id();
    let span = debug_span!("update", update_id = id, key = ?update.key(), cost = permit.cost());
    let started = (ctx.policy_times || tracing::enabled!(tracing::Level::DEBUG)).then(Instant::now);
    let result = async {
        let future = std::panic::catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(update)));
        let future = match future {
            Ok(f) => f,
            Err(panic) => return Some(Err(panic)),
        };
        tokio::select! {
            biased;
            r = AssertUnwindSafe(future).catch_unwind() => Some(r),
            _ = ctx.abort.cancelled() => None,
        }
    }
    .instrument(span.clone())
    .await;
    let latency = started.map(|t| t.elapsed()).unwrap_or_default();
    let _entered = span.enter();
    let latency_ms = latency.as_secs_f64() * 1e3;
    match result {
        None => {
            Counters::bump(&ctx.counters.aborted_running);
            permit.finish(Outcome::Cancelled, latency);
            ctx.given_up.lock().push(id);
            warn!(update_id = id, latency_ms, "handler aborted at the drain deadline");
            false
        }
        Some(Ok(Ok(()))) => {
            // No counter here: successes are the gate's releases minus the other outcomes,
            // so the common path writes no shared counter.
            permit.finish(Outcome::Success, latency);
            debug!(update_id = id, outcome = "success", latency_ms, "update handled");
            true
        }
        Some(Ok(Err(e))) => {
            let e: BoxError = e.into();
            let outcome = if is_overload(&*e) {
                Outcome::Overload
            } else {
                Outcome::Error
            };
            Counters::bump(&ctx.counters.failed);
            permit.finish(outcome, latency);
            warn!(update_id = id, outcome = ?outcome, error = %e, latency_ms, "handler failed");
            true
        }
        Some(Err(panic)) => {
            Counters::bump(&ctx.counters.panicked);
            permit.finish(Outcome::Panic, latency);
            error!(
                update_id = id,
                outcome = "panic",
                panic = panic_message(&*panic),
                latency_ms,
                "handler panicked"
            );
            true
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
