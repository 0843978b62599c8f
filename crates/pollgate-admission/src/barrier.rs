//! [`Barrier`]: the next fetch waits until every update of the current batch is done.
//!
//! # When to choose it
//!
//! When simplicity and at-least-once delivery matter more than throughput: with the
//! runtime's at-least-once mode, a batch is confirmed only when all of it has finished, so a
//! crash replays at most one batch. Memory is bounded by one batch.
//!
//! # Failure modes
//!
//! Stragglers: one slow update holds back the whole next batch, so throughput follows the
//! slowest handler of each batch. Prefer [`Fixed`](crate::Fixed) when handlers' durations
//! vary widely.
//!
//! # Knobs
//!
//! The batch size. Telegram caps one fetch at 100 updates; a larger batch is filled by
//! several fetches in a row (the runtime reports each through `on_batch`) before the
//! barrier closes. With Telegram's at-least-once mode the acknowledgement window (100 ids
//! past the oldest unfinished update) also bounds how far a batch can fill.
//!
//! # Semantics
//!
//! A batch *opens* when nothing runs, waits or is reserved
//! (`in_flight + reserved + waiting == 0`). While open, `fetch_limit` is what is left of it:
//! `batch − max(fetched into it, held now)`. It *closes* when `batch` updates were fetched
//! into it, or when a fetch returns nothing (the backlog is drained); then `fetch_limit` is
//! 0 until everything is done. `admits` allows up to `batch` running permits. The runtime
//! admits a fetched batch before it asks for the next fetch, so the empty load between a
//! fetch and the first admission is never mistaken for "done".
//!
//! # Examples
//!
//! ```
//! use pollgate_admission::{Barrier, Gate};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let gate = Gate::new(Barrier::new(3));
//! assert_eq!(gate.fetch_ready().await, Ok(3));
//! gate.on_batch(3); // the runtime reports each fetch
//! let batch: Vec<_> = (0..3).map(|_| gate.try_acquire(1).unwrap()).collect();
//! assert_eq!(gate.fetch_limit(), 0);
//! drop(batch); // the whole batch is done
//! assert_eq!(gate.fetch_limit(), 3);
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::policy::{AdmissionPolicy, Limit, Load};

/// Fetches a new batch only when the previous one is done. See the [module docs](self).
///
/// # Examples
///
/// A fetch that returns nothing closes a partly filled batch: the backlog is drained, so
/// the next fetch waits for what was fetched to finish.
///
/// ```
/// use pollgate_admission::{Barrier, Gate};
///
/// let gate = Gate::new(Barrier::new(100));
/// assert_eq!(gate.fetch_limit(), 100);
/// gate.on_batch(30);
/// let batch: Vec<_> = (0..30).map(|_| gate.try_acquire(1).unwrap()).collect();
/// assert_eq!(gate.fetch_limit(), 70, "room left in the open batch");
/// gate.on_batch(0); // nothing more on the server
/// assert_eq!(gate.fetch_limit(), 0);
/// drop(batch);
/// assert_eq!(gate.fetch_limit(), 100, "the next batch opens");
/// ```
#[derive(Debug)]
pub struct Barrier {
    batch: usize,
    /// Updates fetched into the open batch.
    filled: AtomicUsize,
    /// The batch is full or the backlog ran dry: no fetch until everything is done.
    closed: AtomicBool,
}

impl Barrier {
    /// Batches of `batch` updates.
    ///
    /// # Panics
    ///
    /// When `batch` is 0.
    pub fn new(batch: usize) -> Self {
        assert!(batch > 0, "Barrier::new: the batch size must be at least 1");
        Self {
            batch,
            filled: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

impl AdmissionPolicy for Barrier {
    fn measures_latency(&self) -> bool {
        false
    }

    fn fetch_limit(&self, load: &Load) -> usize {
        let held = load.in_flight + load.reserved + load.waiting;
        if held == 0 && (self.closed.load(Ordering::Acquire) || self.filled.load(Ordering::Acquire) >= self.batch) {
            // Everything of the last batch is done: open the next one.
            self.filled.store(0, Ordering::Release);
            self.closed.store(false, Ordering::Release);
        }
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let used = self.filled.load(Ordering::Acquire).max(held);
        self.batch.saturating_sub(used)
    }

    fn on_batch(&self, fetched: usize) {
        if fetched == 0 {
            if self.filled.load(Ordering::Acquire) > 0 {
                self.closed.store(true, Ordering::Release);
            }
            return;
        }
        let filled = self.filled.fetch_add(fetched, Ordering::AcqRel) + fetched;
        if filled >= self.batch {
            self.closed.store(true, Ordering::Release);
        }
    }

    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < self.batch
    }

    fn limit(&self) -> Limit {
        Limit {
            slots: Some(self.batch),
            bytes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_only_when_everything_is_done() {
        let barrier = Barrier::new(5);
        assert_eq!(barrier.fetch_limit(&Load::default()), 5);
        barrier.on_batch(5);
        for load in [
            Load {
                in_flight: 1,
                ..Load::default()
            },
            Load {
                reserved: 1,
                ..Load::default()
            },
            Load {
                waiting: 1,
                ..Load::default()
            },
        ] {
            assert_eq!(barrier.fetch_limit(&load), 0, "{load:?}");
        }
    }

    #[test]
    fn a_batch_larger_than_one_fetch_fills_over_several_then_closes() {
        let barrier = Barrier::new(250);
        let running = |n| Load {
            in_flight: n,
            ..Load::default()
        };
        assert_eq!(barrier.fetch_limit(&Load::default()), 250);
        barrier.on_batch(100);
        assert_eq!(barrier.fetch_limit(&running(100)), 150);
        barrier.on_batch(100);
        assert_eq!(
            barrier.fetch_limit(&running(180)),
            50,
            "finished ones do not reopen room"
        );
        barrier.on_batch(50);
        assert_eq!(barrier.fetch_limit(&running(200)), 0, "full: closed");
        assert_eq!(barrier.fetch_limit(&running(1)), 0, "closed until everything is done");
        assert_eq!(barrier.fetch_limit(&Load::default()), 250, "the next batch");
    }

    #[test]
    fn an_empty_fetch_closes_a_partly_filled_batch() {
        let barrier = Barrier::new(500);
        barrier.on_batch(0);
        assert_eq!(
            barrier.fetch_limit(&Load::default()),
            500,
            "an empty poll before any update changes nothing"
        );
        barrier.on_batch(30);
        barrier.on_batch(0);
        let running = Load {
            in_flight: 30,
            ..Load::default()
        };
        assert_eq!(barrier.fetch_limit(&running), 0);
        assert_eq!(barrier.fetch_limit(&Load::default()), 500);
    }

    #[test]
    fn admits_a_whole_batch() {
        let barrier = Barrier::new(2);
        let mut load = Load::default();
        assert!(barrier.admits(&load, 1));
        load.in_flight = 1;
        assert!(barrier.admits(&load, 1));
        load.in_flight = 2;
        assert!(!barrier.admits(&load, 1));
    }
}
