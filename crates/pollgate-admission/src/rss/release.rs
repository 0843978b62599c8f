//! Built-in release hooks: hand the memory an allocator keeps after `free` back to the OS.
//!
//! # Why
//!
//! An allocator keeps freed memory resident for reuse, and the kernel charges it to the
//! process (and its cgroup) as if it were in use. glibc's malloc is the worst case for
//! this workload: its mmap threshold rises after the first large block is freed (128 KiB
//! up to 32 MiB), so from then on a handler's 256 KiB buffer comes from an arena heap, and
//! with one arena per thread (up to 8 × cores) every thread's heap keeps its own free
//! space. `RssAdaptive` sees that retained memory as used and shrinks the budget for it.
//! `malloc_trim(0)` walks every arena and returns the free pages inside its heaps
//! (`madvise(MADV_DONTNEED)`), not only the top of the main heap.
//!
//! Every [`RssAdaptive`](super::RssAdaptive) built on glibc calls [`glibc_malloc_trim`]
//! when memory looks retained (at most every [`DEFAULT_RELEASE_INTERVAL`]); the builder's
//! [`release_hook`](super::RssAdaptiveBuilder::release_hook) replaces it with a hook for
//! the allocator the program uses (jemalloc's `arena.<i>.purge`, mimalloc's `mi_collect`),
//! [`without_release_hook`](super::RssAdaptiveBuilder::without_release_hook) removes it.
//!
//! This file holds the workspace's only `unsafe` block (the FFI call): this crate denies
//! `unsafe_code` and allows it here alone; every other crate forbids it.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Whether this build links glibc's malloc, where [`glibc_malloc_trim`] does something.
pub const GLIBC_MALLOC: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// The minimum time between two calls of the default release hook
/// ([`glibc_malloc_trim`], on glibc): 100 ms.
///
/// Measured in a 256 MiB cgroup with 16 glibc arenas (`scripts/cgroup-oom.sh`, see
/// `docs/deployment.md`): one `malloc_trim(0)` over about 200 MiB of heaps takes 2–8 ms
/// (up to 30 ms when most of the heap is free), on the sampler thread. At this interval a
/// drain at the limit called it about 8 times a second (when memory looked retained, not
/// every interval): 130–145 ms of trimming in a 5.5 s drain, 2.5% of one core; 10 calls a
/// second at most, 30% of a core in the worst case of 30 ms each. A hook that frees
/// nothing backs off (see
/// [`RssAdaptiveBuilder::release_hook`](super::RssAdaptiveBuilder::release_hook)).
pub const DEFAULT_RELEASE_INTERVAL: Duration = Duration::from_millis(100);

/// A release that frees nothing doubles the interval, up to this many times the base.
const MAX_BACKOFF: u64 = 64;

/// Calls glibc's `malloc_trim(0)`: returns the free memory of every malloc arena to the
/// OS. Returns whether any memory was released. On other platforms (musl, macOS, Windows)
/// it does nothing and returns `false`.
///
/// A program that replaced the global allocator (jemalloc, mimalloc) gains nothing from it:
/// glibc's arenas then hold almost nothing.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::RssAdaptive;
/// use pollgate_admission::rss::glibc_malloc_trim;
///
/// let policy = RssAdaptive::builder(512 << 20)
///     .release_hook(Duration::from_millis(250), || {
///         glibc_malloc_trim();
///     })
///     .build_manual();
/// # drop(policy);
/// ```
pub fn glibc_malloc_trim() -> bool {
    trim()
}

/// A policy's release hook: the call, its rate limit and its back-off.
pub(crate) struct ReleaseHook {
    base_ms: u64,
    /// A release that frees less than this (bytes) did not help.
    worthwhile: u64,
    state: Mutex<State>,
    hook: Hook,
}

struct State {
    last_ms: Option<u64>,
    interval_ms: u64,
    /// The reading that asked for a release whose effect is not measured yet (no second
    /// reading after it): judged by the next sample.
    judge_on_next: Option<u64>,
}

impl ReleaseHook {
    pub(crate) fn new(interval: Duration, worthwhile: u64, hook: Hook) -> Self {
        // At least 1 ms, so the back-off has something to double.
        let base_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            base_ms,
            worthwhile,
            state: Mutex::new(State {
                last_ms: None,
                interval_ms: base_ms,
                judge_on_next: None,
            }),
            hook,
        }
    }

    /// Runs the hook unless it ran less than the current interval ago; whether it ran.
    pub(crate) fn maybe_run(&self, now_ms: u64) -> bool {
        {
            let mut state = self.state.lock();
            if state
                .last_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < state.interval_ms)
            {
                return false;
            }
            state.last_ms = Some(now_ms);
        }
        let started = Instant::now();
        (self.hook)();
        tracing::debug!(
            took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "rss-adaptive: called the release hook"
        );
        true
    }

    /// Notes that the last run's effect shows only in the next reading (no second reading
    /// was taken): [`observe`](Self::observe) judges it.
    pub(crate) fn judge_on_next(&self, before: u64) {
        self.state.lock().judge_on_next = Some(before);
    }

    /// A new reading: judges a release still waiting for its effect.
    pub(crate) fn observe(&self, rss: u64) {
        let before = self.state.lock().judge_on_next.take();
        if let Some(before) = before {
            self.record(before.saturating_sub(rss));
        }
    }

    /// Memory no longer looks retained: the next release starts from the base interval.
    pub(crate) fn calm(&self) {
        let mut state = self.state.lock();
        state.interval_ms = self.base_ms;
        state.judge_on_next = None;
    }

    /// What the last run freed (RSS before minus after): a release that helped resets the
    /// interval to its base; one that did not doubles it (up to [`MAX_BACKOFF`] × base), so
    /// memory that no release can return (fragmentation, another process in the cgroup)
    /// does not cost a trim every interval for ever.
    pub(crate) fn record(&self, freed: u64) {
        let mut state = self.state.lock();
        state.interval_ms = if freed >= self.worthwhile {
            self.base_ms
        } else {
            state
                .interval_ms
                .saturating_mul(2)
                .min(self.base_ms.saturating_mul(MAX_BACKOFF))
                .max(self.base_ms)
        };
    }

    /// The current interval between two runs, in milliseconds.
    #[cfg(test)]
    pub(crate) fn interval_ms(&self) -> u64 {
        self.state.lock().interval_ms
    }
}

/// A release hook.
pub(crate) type Hook = Box<dyn Fn() + Send + Sync>;

/// The release hook a new [`RssAdaptiveBuilder`](super::RssAdaptiveBuilder) starts with.
pub(crate) fn default_hook() -> Option<(Duration, Hook)> {
    GLIBC_MALLOC.then(|| {
        let hook: Hook = Box::new(|| {
            glibc_malloc_trim();
        });
        (DEFAULT_RELEASE_INTERVAL, hook)
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only the allocator's own state,
    // under each arena's lock; glibc documents it as MT-Safe, callable from any thread at
    // any time (malloc_trim(3)).
    unsafe { libc::malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(interval_ms: u64) -> (ReleaseHook, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let hook = ReleaseHook::new(Duration::from_millis(interval_ms), 1000, {
            let calls = calls.clone();
            Box::new(move || {
                calls.fetch_add(1, Ordering::Relaxed);
            })
        });
        (hook, calls)
    }

    #[test]
    fn a_release_that_frees_nothing_backs_off_and_one_that_helps_resets() {
        let (hook, calls) = counting(100);
        let mut runs = Vec::new();
        for now in 0..20_000 {
            if hook.maybe_run(now) {
                runs.push(now);
                hook.record(0);
            }
        }
        // Intervals 200, 400, … up to 6400 (64 × 100), then every 6400.
        assert_eq!(runs, [0, 200, 600, 1400, 3000, 6200, 12_600, 19_000]);
        assert_eq!(calls.load(Ordering::Relaxed), runs.len());
        hook.record(1000);
        assert_eq!(hook.interval_ms(), 100, "a release that helped: back to the base");
    }

    #[test]
    fn a_release_that_helps_keeps_the_base_interval() {
        let (hook, _) = counting(100);
        let runs = (0..1000)
            .filter(|&now| {
                hook.maybe_run(now) && {
                    hook.record(5000);
                    true
                }
            })
            .count();
        assert_eq!(runs, 10);
    }

    #[test]
    fn a_sub_millisecond_min_interval_still_backs_off() {
        // `release_hook(Duration::ZERO, …)` (or anything under 1 ms): the base interval is
        // 0 ms, and doubling 0 stays 0, so a useless hook runs on every sample for ever.
        for interval in [Duration::ZERO, Duration::from_micros(500)] {
            let hook = ReleaseHook::new(interval, 1000, Box::new(|| {}));
            // One sample every 5 ms for 10 s; every release frees nothing.
            let runs = (0..10_000u64)
                .step_by(5)
                .filter(|&now| {
                    hook.maybe_run(now) && {
                        hook.record(0);
                        true
                    }
                })
                .count();
            assert!(
                hook.interval_ms() > 0 && runs < 1000,
                "{interval:?}: interval {} ms after useless releases; ran on {runs} of 2000 samples",
                hook.interval_ms()
            );
        }
    }

    #[test]
    fn trim_runs_and_reports_on_glibc() {
        // Free a large, fragmented heap, then trim: on glibc something comes back.
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 256 << 10]).collect();
        let keep: Vec<Vec<u8>> = blocks.iter().step_by(8).cloned().collect();
        drop(blocks);
        let released = glibc_malloc_trim();
        assert!(!keep.is_empty());
        if !GLIBC_MALLOC {
            assert!(!released);
        }
    }
}
