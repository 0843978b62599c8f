//! Counters of a running runtime and their snapshot, [`Stats`].
//!
//! Counters are relaxed atomics bumped on the update path; a snapshot adds the gate's
//! view (in flight, bytes, limit, memory) and costs one short lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tracing::info;

use pollgate_admission::{Gate, Limit, MemorySample};

/// A snapshot of a runtime's state, readable while it runs ([`StatsHandle::snapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Handlers running now.
    pub in_flight: usize,
    /// Most handlers that ran at once so far.
    pub max_in_flight: usize,
    /// Updates in memory that hold a reservation and no slot: parked behind their
    /// ordering key, held by the pacer, or waiting for a retry.
    pub reserved: usize,
    /// Updates waiting in the gate's queue for a permit.
    pub waiting: usize,
    /// What the policy enforces now.
    pub limit: Limit,
    /// Declared bytes in use: running and reserved updates.
    pub bytes: u64,
    /// Updates admitted to run.
    pub admitted: u64,
    /// Handlers that returned `Ok`.
    pub completed: u64,
    /// Handler runs that returned an error (each attempt counts).
    pub failed: u64,
    /// Handler runs that panicked (each attempt counts).
    pub panicked: u64,
    /// Handler runs cancelled at the handler timeout (`RuntimeBuilder::handler_timeout`):
    /// reported to the policy as overload (each attempt counts).
    pub timed_out: u64,
    /// Failed runs (error, panic or timeout) that were followed by another attempt
    /// (`RuntimeBuilder::retry`).
    pub retried: u64,
    /// Updates whose every attempt failed: acknowledged past and reported to the
    /// transport as failures (a spool keeps them as dead letters).
    pub exhausted: u64,
    /// Handlers aborted at the drain deadline, or updates given up before they ran.
    pub aborted: u64,
    /// Updates the transport took back before they started (a lease lost): not run, and
    /// not acknowledged, for the lease's next holder to run.
    pub revoked: u64,
    /// Updates the [pacer](crate::Pacer) held back before they started (not those whose
    /// time had passed when they came to start).
    pub paced: u64,
    /// Updates that could not be decoded (reported and acknowledged past).
    pub undecodable: u64,
    /// Updates delivered again and dropped because this process had already seen them.
    pub redelivered: u64,
    /// Fetch calls made.
    pub fetches: u64,
    /// Updates received (new ones only).
    pub fetched: u64,
    /// The offset last passed to the transport's ack (`None` before the first).
    pub acked_offset: Option<i64>,
    /// The latest memory sample known to the policy.
    pub memory: Option<MemorySample>,
    /// The resident memory the policy steers toward, if it steers memory.
    pub memory_target: Option<u64>,
}

impl Stats {
    /// Updates finished one way or another: completed, or failed (error, panic or
    /// timeout) on their last attempt.
    pub fn finished(&self) -> u64 {
        (self.completed + self.failed + self.panicked + self.timed_out).saturating_sub(self.retried)
    }
}

const NO_OFFSET: i64 = i64::MIN;

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    /// Handlers cancelled at the handler timeout (their permits were released).
    pub(crate) timed_out: AtomicU64,
    /// Failed runs followed by another attempt.
    pub(crate) retried: AtomicU64,
    /// Updates whose last attempt failed.
    pub(crate) exhausted: AtomicU64,
    /// Updates given up before they ran.
    pub(crate) aborted: AtomicU64,
    /// Handlers dropped at the drain deadline (their permits were released).
    pub(crate) aborted_running: AtomicU64,
    /// Attempts held back by the pacer.
    pub(crate) paced: AtomicU64,
    /// Updates revoked by the transport (their permits were released).
    pub(crate) revoked: AtomicU64,
    pub(crate) undecodable: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) fetches: AtomicU64,
    pub(crate) fetched: AtomicU64,
    acked_offset: AtomicI64,
    /// The highest `completed` a snapshot returned: snapshots never go backwards.
    completed_seen: AtomicU64,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            aborted_running: AtomicU64::new(0),
            paced: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            acked_offset: AtomicI64::new(NO_OFFSET),
            completed_seen: AtomicU64::new(0),
        }
    }
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_acked(&self, offset: i64) {
        self.acked_offset.store(offset, Ordering::Relaxed);
    }
}

/// A cheap, cloneable handle to read a runtime's [`Stats`] while it runs and after.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_admission::Fixed;
/// use pollgate_core::{InMemoryTransport, Update};
/// use pollgate_runtime::Runtime;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let updates = (1..=3).map(|id| Update::from_json(&format!(r#"{{"update_id":{id}}}"#)).unwrap());
/// let runtime = Runtime::builder(InMemoryTransport::with_updates(updates), |_u: Update| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<(), std::io::Error>(())
/// })
/// .policy(Fixed::new(2))
/// .build();
/// let (stats, shutdown) = (runtime.stats(), runtime.shutdown_token());
/// let run = tokio::spawn(runtime.run());
/// tokio::time::sleep(Duration::from_millis(500)).await;
/// assert_eq!(stats.snapshot().in_flight, 2, "two slots, both taken");
/// tokio::time::sleep(Duration::from_secs(2)).await;
/// shutdown.cancel();
/// run.await.unwrap().unwrap();
/// assert_eq!(stats.snapshot().completed, 3);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StatsHandle {
    pub(crate) counters: Arc<Counters>,
    pub(crate) gate: Gate,
}

impl StatsHandle {
    /// Takes a snapshot.
    pub fn snapshot(&self) -> Stats {
        let g = self.gate.stats();
        let c = &self.counters;
        let r = |x: &AtomicU64| x.load(Ordering::Relaxed);
        Stats {
            in_flight: g.in_flight,
            max_in_flight: g.max_in_flight,
            reserved: g.reserved,
            waiting: g.waiting,
            memory_target: g.memory_target,
            limit: g.limit,
            bytes: g.bytes,
            admitted: g.admitted,
            // Successes are not counted on the update path: they are the permits released,
            // less the other outcomes. Those are bumped before their permits are released
            // and read after the gate, so this never counts too many; it can count one too
            // few for a moment (an outcome bumped, its permit not yet released), and the
            // highest value returned so far is kept, so it never goes backwards.
            completed: {
                let now = g.completed.saturating_sub(
                    r(&c.failed) + r(&c.panicked) + r(&c.timed_out) + r(&c.aborted_running) + r(&c.revoked),
                );
                c.completed_seen.fetch_max(now, Ordering::Relaxed).max(now)
            },
            failed: r(&c.failed),
            panicked: r(&c.panicked),
            timed_out: r(&c.timed_out),
            retried: r(&c.retried),
            exhausted: r(&c.exhausted),
            aborted: r(&c.aborted) + r(&c.aborted_running),
            paced: r(&c.paced),
            revoked: r(&c.revoked),
            undecodable: r(&c.undecodable),
            redelivered: r(&c.redelivered),
            fetches: r(&c.fetches),
            fetched: r(&c.fetched),
            acked_offset: match c.acked_offset.load(Ordering::Relaxed) {
                NO_OFFSET => None,
                o => Some(o),
            },
            memory: g.memory,
        }
    }
}

/// Logs a summary line (target `pollgate::summary`) every `every`.
pub(crate) async fn report_every(every: Duration, stats: StatsHandle) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = stats.snapshot();
        info!(
            target: "pollgate::summary",
            in_flight = s.in_flight,
            reserved = s.reserved,
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
