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
//! The batch size (Telegram caps a fetch at 100).
//!
//! # Semantics
//!
//! `fetch_limit` is the batch size when nothing runs, waits or is reserved
//! (`in_flight + queued + waiting == 0`), else 0. `admits` allows up to `batch` running
//! permits. The runtime admits a fetched batch before it asks for the next fetch, so the
//! empty load between a fetch and the first admission is never mistaken for "done".
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
//! let batch: Vec<_> = (0..3).map(|_| gate.try_acquire(1).unwrap()).collect();
//! assert_eq!(gate.fetch_limit(), 0);
//! drop(batch); // the whole batch is done
//! assert_eq!(gate.fetch_limit(), 3);
//! # }
//! ```

use crate::policy::{AdmissionPolicy, Limit, Load};

/// Fetches a new batch only when the previous one is done. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Barrier {
    batch: usize,
}

impl Barrier {
    /// Batches of `batch` updates.
    ///
    /// # Panics
    ///
    /// When `batch` is 0.
    pub fn new(batch: usize) -> Self {
        assert!(batch > 0, "Barrier::new: the batch size must be at least 1");
        Self { batch }
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
        if load.in_flight + load.queued + load.waiting == 0 {
            self.batch
        } else {
            0
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
        for load in [
            Load {
                in_flight: 1,
                ..Load::default()
            },
            Load {
                queued: 1,
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
