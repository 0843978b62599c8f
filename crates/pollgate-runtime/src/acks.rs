//! Which updates are finished, and what may therefore be acknowledged.
//!
//! Telegram's `offset` confirms everything below it, and a fetch returns at most 100
//! updates from the confirmed offset on. So:
//! - in **eager** mode the offset is the last fetched id + 1 (a crash loses what was in
//!   flight);
//! - in **at-least-once** mode it is the lowest update not yet finished. Updates above it
//!   come back in every fetch until the offset passes them; this tracker remembers every
//!   id seen above the offset, so redelivered ones are dropped (each update is handled
//!   once per process lifetime), and it tells the loop how many ids the server will send
//!   again, so a fetch asks for exactly that many plus the new ones it can admit, and the
//!   loop waits for a completion instead of re-polling a window it has fully seen.
//!
//! Every set here is bounded: ids are remembered only from the offset on, and the loop
//! never fetches past the transport's window above the offset.

use pollgate_core::{Ack, ErrorChain, Transport};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

use crate::runtime::Ctx;
use std::collections::BTreeSet;
use std::sync::Arc;

use pollgate_core::HandlerFailure;

use crate::Delivery;

#[derive(Debug)]
pub(crate) struct AckTracker {
    delivery: Delivery,
    /// Whether the transport's acks are cumulative offsets (Telegram).
    cumulative: bool,
    /// Ids fetched and not yet finished (or given up); at-least-once only (eager acks
    /// do not depend on completions).
    unfinished: BTreeSet<i64>,
    /// Every id seen at or above the current offset (cumulative, at-least-once only).
    seen_above: BTreeSet<i64>,
    /// The highest id ever seen.
    seen_max: Option<i64>,
    /// Receipts of finished updates not yet acknowledged (individual acks).
    receipts: Vec<Arc<str>>,
    /// Those of them whose every attempt failed (bounded like `receipts`).
    failed: Vec<HandlerFailure>,
}

/// What the next acknowledgement carries for a transport with individual acks.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) receipts: Vec<Arc<str>>,
    pub(crate) failed: Vec<HandlerFailure>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.receipts.is_empty() && self.failed.is_empty()
    }
}

/// What to do with a fetched update id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New: handle it.
    New,
    /// Already handled or in progress in this process: drop it.
    Again,
}

impl AckTracker {
    pub(crate) fn new(delivery: Delivery, cumulative: bool) -> AckTracker {
        AckTracker {
            delivery,
            cumulative,
            unfinished: BTreeSet::new(),
            seen_above: BTreeSet::new(),
            seen_max: None,
            receipts: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn tracks_window(&self) -> bool {
        self.cumulative && self.delivery == Delivery::AtLeastOnce
    }

    /// Records a fetched id (decodable or not) and says whether it is new.
    pub(crate) fn fetched(&mut self, id: i64, receipt: Option<&Arc<str>>) -> Seen {
        if self.cumulative && self.seen_max.is_some_and(|max| id <= max) {
            return Seen::Again;
        }
        self.seen_max = Some(self.seen_max.map_or(id, |m| m.max(id)));
        if self.delivery == Delivery::AtLeastOnce {
            self.unfinished.insert(id);
        }
        if self.tracks_window() {
            self.seen_above.insert(id);
        }
        if self.delivery == Delivery::Eager
            && let Some(r) = receipt
        {
            self.receipts.push(Arc::clone(r));
        }
        Seen::New
    }

    /// Records that `id` is finished (handled, failed or undecodable); `failure` when its
    /// every attempt failed (kept only with a receipt: only a transport with individual
    /// acks can keep it). Returns whether the fetch window moved, i.e. whether a
    /// dispatcher waiting for room should look again (only at-least-once with cumulative
    /// acks ever waits for that).
    pub(crate) fn finished(&mut self, id: i64, receipt: Option<&Arc<str>>, failure: Option<HandlerFailure>) -> bool {
        let before = self.unfinished.first().copied();
        self.unfinished.remove(&id);
        if self.delivery == Delivery::AtLeastOnce
            && let Some(r) = receipt
        {
            self.receipts.push(Arc::clone(r));
        }
        if receipt.is_some()
            && let Some(f) = failure
        {
            self.failed.push(f);
        }
        if !self.tracks_window() || before == self.unfinished.first().copied() {
            return false;
        }
        if let Some(below) = self.below() {
            self.seen_above = self.seen_above.split_off(&below);
        }
        true
    }

    /// The cumulative offset that may be acknowledged now.
    pub(crate) fn below(&self) -> Option<i64> {
        let next = self.seen_max.map(|m| m + 1);
        match self.delivery {
            Delivery::Eager => next,
            Delivery::AtLeastOnce => self.unfinished.first().copied().or(next),
        }
    }

    /// How many already-seen ids the next fetch will get again (the server still holds
    /// them because the offset has not passed them).
    pub(crate) fn redelivered_next(&self) -> usize {
        if self.tracks_window() { self.seen_above.len() } else { 0 }
    }

    /// Takes the receipts (and failures) to acknowledge.
    pub(crate) fn take_receipts(&mut self) -> Pending {
        Pending {
            receipts: std::mem::take(&mut self.receipts),
            failed: std::mem::take(&mut self.failed),
        }
    }

    /// Puts back receipts whose acknowledgement was interrupted, to be sent later.
    pub(crate) fn restore_receipts(&mut self, mut pending: Pending) {
        pending.receipts.append(&mut self.receipts);
        self.receipts = pending.receipts;
        pending.failed.append(&mut self.failed);
        self.failed = pending.failed;
    }

    /// Ids fetched and not finished.
    pub(crate) fn unfinished(&self) -> impl Iterator<Item = i64> + '_ {
        self.unfinished.iter().copied()
    }
}

/// Sends receipts as handlers finish, while a fetch may be in flight, until `done`
/// (every handler finished). Only for transports with individual acks: an entry finished
/// but not acknowledged would be delivered again if the worker died, or claimed by
/// another worker once idle. On a failed ack the run stops (`stop`) and the error is
/// returned; the receipts not acknowledged stay pending in the queue and are delivered
/// again (at-least-once).
pub(crate) async fn ack_loop<T: Transport, H>(
    transport: &T,
    ctx: &Ctx<H>,
    done: &CancellationToken,
    stop: &CancellationToken,
    confirm_by: &std::sync::OnceLock<tokio::time::Instant>,
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
        // unreachable) gets until the stop's confirmation deadline, then is given up: its
        // entries stay pending and are delivered again.
        let gave_up = async {
            done.cancelled().await;
            let by = confirm_by.get().copied().unwrap_or_else(tokio::time::Instant::now);
            crate::shutdown::confirmation_over(ctx, by).await
        };
        // The acknowledgement first: one that answers as the budget runs out still counts.
        let acked = tokio::select! {
            biased;
            r = ack => Some(r),
            cut = gave_up => {
                warn!(?cut, receipts = receipts.receipts.len(), "acknowledgement still failing at shutdown; given up (the entries will be delivered again)");
                None
            }
        };
        let Some(acked) = acked else {
            // Back to the tracker: the final confirmation sends them once more (it gets
            // one try when the budget is spent) and reports its outcome in the summary.
            ctx.acks.lock().restore_receipts(receipts);
            return None;
        };
        if let Err(e) = acked {
            error!(error = %ErrorChain(&e), receipts = receipts.receipts.len(), "acknowledgement failed; stopping (unacknowledged entries will be delivered again)");
            stop.cancel();
            return Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_once_offset_never_passes_an_unfinished_update() {
        let mut t = AckTracker::new(Delivery::AtLeastOnce, true);
        for id in 10..15 {
            assert_eq!(t.fetched(id, None), Seen::New);
        }
        assert_eq!(t.below(), Some(10));
        assert!(!t.finished(12, None, None), "the window did not move");
        assert_eq!(t.below(), Some(10));
        assert_eq!(t.redelivered_next(), 5);
        assert!(t.finished(10, None, None));
        assert_eq!(t.below(), Some(11));
        assert_eq!(t.redelivered_next(), 4);
        // A redelivered id is dropped, finished or not.
        assert_eq!(t.fetched(12, None), Seen::Again);
        assert_eq!(t.fetched(11, None), Seen::Again);
        assert_eq!(t.fetched(15, None), Seen::New);
        for id in [11, 13, 14, 15] {
            t.finished(id, None, None);
        }
        assert_eq!(t.below(), Some(16));
        assert_eq!(t.redelivered_next(), 0);
    }

    #[test]
    fn eager_offset_follows_the_last_fetched_id() {
        let mut t = AckTracker::new(Delivery::Eager, true);
        t.fetched(5, None);
        t.fetched(6, None);
        assert_eq!(t.below(), Some(7));
        assert_eq!(t.redelivered_next(), 0);
        assert_eq!(t.unfinished().count(), 0, "eager keeps no per-update state");
    }

    #[test]
    fn receipts_are_acked_when_finished_or_when_fetched() {
        let r: Arc<str> = Arc::from("1-0");
        let mut alo = AckTracker::new(Delivery::AtLeastOnce, false);
        alo.fetched(1, Some(&r));
        assert!(alo.take_receipts().is_empty());
        alo.finished(1, Some(&r), None);
        assert_eq!(alo.take_receipts().receipts.len(), 1);
        let mut eager = AckTracker::new(Delivery::Eager, false);
        eager.fetched(1, Some(&r));
        assert_eq!(eager.take_receipts().receipts.len(), 1);
        // Queues redeliver by design (a claimed entry): not filtered.
        assert_eq!(alo.fetched(1, Some(&r)), Seen::New);
    }
}
