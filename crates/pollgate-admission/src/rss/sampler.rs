//! The sampler: a dedicated OS thread that reads RSS every few milliseconds.
//!
//! Why a thread and not a tokio task: when handlers are CPU-bound, a tokio timer runs
//! 5–19 ms late — exactly when memory is climbing fastest. A plain thread that sleeps with
//! `park_timeout` is on time, costs one probe read per tick (about 34 µs with sysinfo, 3 µs
//! with `/proc/self/statm`, measured in `docs/benchmarks.md`; about 15 µs for a cgroup's
//! working set, see `WorkingSetProbe`), and keeps the crate free of any async runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Core;
use super::probe::MemoryProbe;
use crate::policy::MemorySample;

/// Owns the sampler thread; stops and joins it when dropped.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts the thread `pollgate-rss`.
    ///
    /// # Panics
    ///
    /// When the operating system cannot start a thread.
    pub(crate) fn spawn(core: Arc<Core>, mut probe: Box<dyn MemoryProbe>, every: Duration, epoch: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("pollgate-rss".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Acquire) {
                        let now_ms = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                        if let Some(rss_bytes) = probe.sample() {
                            let sample = MemorySample {
                                rss_bytes,
                                at_ms: now_ms(),
                            };
                            // The second reading after a release is stamped when it is read.
                            let mut again = || {
                                probe.sample().map(|rss_bytes| MemorySample {
                                    rss_bytes,
                                    at_ms: now_ms(),
                                })
                            };
                            core.apply(sample, Some(&mut again));
                        }
                        thread::park_timeout(every);
                    }
                }
            })
            .expect("RssAdaptive: could not start the sampler thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The sampler thread itself can drop the policy (it briefly upgrades a gate
            // while notifying, and may hold the last reference); it must not join itself.
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("running", &self.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .finish()
    }
}
