//! The dispatcher: one loop that waits for room, fetches what fits, and admits each update
//! (parked behind its key, held for its pacer, or given a permit and spawned).
//!
//! It holds at most one fetched batch that is not yet admitted, so the long poll overlaps
//! running handlers without ever fetching more than can be admitted; every wait in it has
//! a wake-up that ends it (a release, a completion, a limit signal), never a timer that is
//! already due.

use std::sync::Arc;

use pollgate_core::{Ack, FetchRequest, Transport, Update};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span};

use crate::acks::Seen;
use crate::handler::Handler;
use crate::ordering::Queued;
use crate::runtime::Ctx;
use crate::stats::Counters;
use crate::task;

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

pub(crate) async fn dispatch_loop<T: Transport, H: Handler>(
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
        error!(update_id = f.update_id, id_inferred = f.id_inferred, error = %pollgate_core::ErrorChain(&f.error), raw = %f.raw, "undecodable update skipped");
    }
    fresh
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
            ctx.config.max_queued.saturating_sub(ctx.gate.load().reserved)
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
    if let (Some(keys), Some(key)) = (&ctx.keys, update.ordering_key()) {
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
            ctx.acquire_reserved(reservation).await
        } else {
            drop(reservation);
            None
        };
        // The reservation has left the gate's queued count: a dispatcher paused at
        // `max_queued` may go on.
        ctx.progress.notify_one();
        match acquired {
            Some(permit) if ctx.keys.is_some() && update.ordering_key().is_some() => {
                task::run(ctx, update, permit).await
            }
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
                ctx.abandon_key(update.ordering_key());
            }
        }
    });
}

async fn acquire_and_spawn<H: Handler>(ctx: &Arc<Ctx<H>>, update: Update, cost: u64) {
    // The common case needs no waiting: take the synchronous path first. At the drain
    // deadline the gate is closed, and a waiting acquire then fails.
    let permit = ctx.acquire(cost).await;
    match permit {
        Some(permit) => {
            if ctx.keys.is_some() && update.ordering_key().is_some() {
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
            ctx.abandon_key(update.ordering_key());
        }
    }
}
