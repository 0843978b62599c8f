//! Admission control for pollgate: fetch only what you can admit.
//!
//! A long-polling consumer (Telegram `getUpdates`, a queue's `receive`) decides how much work
//! enters the process. Fetching a backlog faster than it can be handled just moves the
//! backlog from the server, where it costs nothing, into memory, where it ends in an OOM
//! kill. This crate makes that decision explicit:
//!
//! 1. The runtime asks the gate how many updates it may fetch ([`Gate::fetch_ready`]); it
//!    never fetches more, so the backlog stays on the server.
//! 2. Each fetched update takes a [`Permit`] from the [`Gate`], with a cost in bytes. The
//!    permit is an RAII guard: dropped = capacity returned, whether the handler succeeded,
//!    failed, panicked or was cancelled.
//! 3. Outcomes and latencies flow back to the policy ([`Permit::finish`]).
//!
//! The split follows Netflix's concurrency-limits: an [`AdmissionPolicy`] is the *algorithm*
//! (what the limit is), the [`Gate`] is the *mechanism* (who may run now, in FIFO order,
//! with async waiting). Built-in policies:
//!
//! | policy            | bounds                                         | choose it when                      |
//! |-------------------|------------------------------------------------|-------------------------------------|
//! | [`Fixed`]         | running handlers                               | handlers are alike and small        |
//! | [`Barrier`]       | one batch at a time                            | simplicity, at-least-once batches   |
//! | [`ByteBudget`]    | sum of declared costs                          | sizes vary and you can estimate them|
//! | [`RssAdaptive`]   | resident memory, through a moving byte budget  | memory is the hard limit            |
//! | [`all_of()`]      | every member's limit                           | several axes at once                |
//!
//! Each policy's module page says when to choose it, its failure modes and knobs.
//! The crate needs no async runtime: the gate's waiting is built on `std::task::Waker`.
//!
//! # Examples
//!
//! A fetch loop in miniature: at most 16 handlers and 64 MiB of declared cost.
//!
//! ```
//! use std::time::Duration;
//! use pollgate_admission::{all_of, ByteBudget, Fixed, Gate, Outcome};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let gate = Gate::new(all_of(Fixed::new(16), ByteBudget::new(64 << 20)));
//! let mut backlog: Vec<u64> = vec![1 << 20; 100]; // 100 updates of 1 MiB each
//! let mut tasks = Vec::new();
//! while !backlog.is_empty() {
//!     let n = gate.fetch_ready().await.unwrap().min(100);
//!     let batch: Vec<u64> = backlog.drain(..n.min(backlog.len())).collect();
//!     for cost in batch {
//!         let permit = gate.acquire(cost).await.unwrap();
//!         tasks.push(tokio::spawn(async move {
//!             tokio::time::sleep(Duration::from_millis(20)).await;
//!             permit.finish(Outcome::Success, Duration::from_millis(20));
//!         }));
//!     }
//!     assert!(gate.load().in_flight <= 16);
//! }
//! for task in tasks {
//!     task.await.unwrap();
//! }
//! assert_eq!(gate.stats().completed, 100);
//! # }
//! ```

pub mod adaptive;
pub mod all_of;
pub mod barrier;
pub mod byte_budget;
mod error;
pub mod fixed;
mod gate;
mod permit;
mod policy;
pub mod rss;
mod wait;

pub use adaptive::{Adaptive, Aimd, Gradient2, LimitAlgorithm, Sample};
pub use all_of::{AllOf, all_of};
pub use barrier::Barrier;
pub use byte_budget::ByteBudget;
pub use error::{Closed, TryAcquireError};
pub use fixed::Fixed;
pub use gate::{Gate, GateStats};
pub use permit::{Permit, Reservation};
pub use policy::{AdmissionPolicy, Completion, Limit, LimitSignal, LimitSignals, Load, MemorySample, Outcome};
pub use rss::{MemoryProbe, ProcStatusProbe, RssAdaptive, RssAdaptiveBuilder, SysinfoProbe, WorkingSetProbe};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Gate>();
        send_sync::<Permit>();
        send_sync::<Reservation>();
        send_sync::<GateStats>();
        send_sync::<LimitSignal>();
        send_sync::<LimitSignals>();
        send_sync::<Fixed>();
        send_sync::<Adaptive<Aimd>>();
        send_sync::<Adaptive<Gradient2>>();
        send_sync::<Barrier>();
        send_sync::<ByteBudget>();
        send_sync::<RssAdaptive>();
        send_sync::<AllOf<Fixed, ByteBudget>>();
        send_sync::<std::sync::Arc<dyn AdmissionPolicy>>();
        send::<RssAdaptiveBuilder>();
        send::<SysinfoProbe>();
        send::<ProcStatusProbe>();
        send::<WorkingSetProbe>();
        send_sync::<rss::CgroupMemory>();
        send_sync::<rss::MemoryLimit>();
        send_sync::<rss::AutoTarget>();
        send_sync::<Closed>();
        send_sync::<TryAcquireError>();
    }

    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let gate = Gate::new(Fixed::new(1));
        send(&gate.acquire(1));
        send(&gate.acquire_reserved(gate.reserve(1)));
        send(&gate.fetch_ready());
        send(&gate.changed());
    }
}
