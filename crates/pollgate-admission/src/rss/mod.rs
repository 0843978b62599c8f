//! [`RssAdaptive`]: keep the process's resident memory under a target.
//!
//! # When to choose it
//!
//! When the thing you must not exceed is the machine's (or the container's) memory, and
//! declared costs are only estimates: handlers allocate more than they said, allocators keep
//! freed memory, other parts of the process grow. It is the policy for "drain any backlog
//! as fast as memory allows, never OOM".
//!
//! # How it works, and why this way
//!
//! RSS alone fails both ways, as measured for this design:
//!
//! * **Retention.** After a 1 GiB burst, 20–100% of the peak stays resident with glibc,
//!   jemalloc and mimalloc alike. A policy that admits only while RSS is low would stop for
//!   good after the first burst, although that memory is free for reuse.
//! * **Lag.** RSS rises *after* admission, while handlers fill their buffers. A policy that
//!   admits while RSS is low admits a whole backlog before the first byte shows.
//!
//! So it works on top of a byte budget ([`ByteBudget`](crate::ByteBudget)'s rules): the sum
//! of declared in-flight costs is the immediate gate — it reacts at once, before RSS does —
//! and RSS feedback moves that budget: shrink multiplicatively while RSS is above a high mark
//! *and still rising*, hold while it is high but flat (retained memory being reused), grow
//! below a low mark, never grow while the budget is under-used, and probe slowly upwards —
//! one small step per hold period, for as long as RSS stays flat and the budget is used —
//! when RSS stays flat for long (sticky retained memory). The arithmetic lives in the pure
//! [`BudgetController`], whose docs give the exact rules.
//!
//! The hot path (`admits`, `fetch_limit`) reads the budget from an atomic: it costs what
//! [`Fixed`](crate::Fixed)'s does. RSS is read by a [`MemoryProbe`] (default
//! [`SysinfoProbe`], about 34 µs a read, see `docs/benchmarks.md`) on a dedicated OS thread
//! `pollgate-rss`, every 5 ms by
//! default — 5 to 10 ms is the useful range: faster burns CPU for no information (RSS
//! moves by page faults), slower lets a burst overshoot. A tokio task would not do: it runs
//! 5–19 ms late when handlers are CPU-bound. The thread stops when the policy is dropped.
//! [`RssAdaptiveBuilder::build_manual`] starts no thread; samples then arrive through
//! [`AdmissionPolicy::on_memory`].
//!
//! # Failure modes
//!
//! * Memory outside the gate (caches, other tasks) counts in RSS; the budget shrinks to make
//!   room, down to `min_budget`, below which it cannot help.
//! * An update larger than the budget still runs, alone (the byte-budget progress rule).
//! * The in-use bytes the controller sees are summed over every attached gate at each
//!   sample; memory held outside any gate is only visible through RSS.
//!
//! # Knobs
//!
//! The target, `min_budget` / `max_budget`, the high and low marks, the sampling interval,
//! the probe, and a rate-limited *release hook* called when memory looks retained rather
//! than used (RSS above the low mark and well above the baseline plus the bytes in use) —
//! the moment to hand retained memory back to the OS. On glibc it is
//! [`glibc_malloc_trim`] by default (see [below](#the-release-hook)); for jemalloc
//! `mallctl("arena.<i>.purge")`, for mimalloc `mi_collect(true)`.
//!
//! # The release hook
//!
//! Allocators keep freed memory resident, and the probe cannot tell it from memory in use:
//! without a release the controller cuts the budget for it. With glibc's default arenas
//! that cost a quarter of the throughput in a 256 MiB cgroup (0.63–0.68 of the limit's
//! ideal drain); calling the hook *before* the controller reads the sample, and reading the
//! probe again after it, brought it to 0.71–0.73 (`docs/deployment.md`).
//!
//! # Without a number: `auto`
//!
//! [`RssAdaptive::auto`] derives the target from what the process runs under: 90%
//! ([`AUTO_LIMIT_FRACTION`]) of its cgroup's memory ceiling (the hard limit, or `memory.high`
//! where lower), compared with the cgroup's working set ([`WorkingSetProbe`]) — the number
//! the kernel enforces the limit on, page cache and sibling processes included; without a
//! cgroup limit, 50% ([`AUTO_MACHINE_FRACTION`]) of the machine's memory, compared with RSS.
//! [`AutoTarget`] says what it found, in one line for the start-up log. The cgroup is found
//! the way the JVM and Go's automemlimit find it, on cgroup v1, v2 and hybrid hosts, taking
//! the most restrictive limit of its parents (see [`CgroupMemory`]).
//!
//! # Examples
//!
//! ## With the sampler thread
//!
//! ```
//! use pollgate_admission::{Gate, RssAdaptive};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let policy = RssAdaptive::builder(8 << 30) // stay under 8 GiB resident
//!     .expected_cost(256 << 10)
//!     .build();
//! let gate = Gate::new(policy);
//! let permit = gate.acquire(1 << 20).await.unwrap();
//! assert!(gate.stats().limit.bytes.is_some());
//! # drop(permit);
//! # }
//! ```
//!
//! ## Feeding samples yourself
//!
//! Runtimes that already sample memory (and tests) use manual mode and `on_memory`.
//!
//! ```
//! use pollgate_admission::{AdmissionPolicy, Gate, MemorySample, RssAdaptive};
//! use std::sync::Arc;
//!
//! const MIB: u64 = 1 << 20;
//! let policy = Arc::new(
//!     RssAdaptive::builder(1000 * MIB)
//!         .min_budget(10 * MIB)
//!         .max_budget(800 * MIB)
//!         .probe(|| Some(100 * MIB)) // RSS at start
//!         .build_manual(),
//! );
//! let gate = Gate::with_shared(policy.clone());
//! assert_eq!(policy.budget(), 800 * MIB);
//!
//! let busy = gate.try_acquire(790 * MIB).unwrap();
//! policy.on_memory(MemorySample { rss_bytes: 880 * MIB, at_ms: 0 });
//! policy.on_memory(MemorySample { rss_bytes: 950 * MIB, at_ms: 5 }); // above high, rising
//! assert!(policy.budget() < 800 * MIB);
//! # drop(busy);
//! ```

mod auto;
mod builder;
mod bytes;
mod cgroup;
pub mod controller;
mod probe;
mod release;
mod sampler;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use auto::{AUTO_FALLBACK_TARGET, AUTO_LIMIT_FRACTION, AUTO_MACHINE_FRACTION, AutoTarget, TargetSource};
pub use builder::RssAdaptiveBuilder;
pub use cgroup::{CgroupMemory, CgroupVersion, MemoryLimit, WorkingSetProbe, cgroup_memory_limit};
pub use controller::{BudgetController, ControllerConfig};
pub use probe::{MemoryProbe, ProcStatusProbe, SysinfoProbe};
pub use release::{DEFAULT_RELEASE_INTERVAL, GLIBC_MALLOC, glibc_malloc_trim};
use release::{Hook, ReleaseHook};

use self::sampler::Sampler;
use crate::byte_budget::{CostEstimate, admits_within, fetch_within};
use crate::policy::{AdmissionPolicy, Completion, Limit, LimitSignal, LimitSignals, Load, MemorySample};

const MIB: u64 = 1 << 20;

/// A byte budget moved by resident-memory feedback. See the [module docs](self).
///
/// # Examples
///
/// What a built policy reports, for a start-up log or a dashboard:
///
/// ```
/// use pollgate_admission::RssAdaptive;
///
/// const MIB: u64 = 1 << 20;
/// let policy = RssAdaptive::builder(1000 * MIB).probe(|| Some(200 * MIB)).build_manual();
/// assert_eq!(policy.target(), 1000 * MIB);
/// assert_eq!(policy.budget(), 750 * MIB, "the high mark (950 MiB) minus the baseline");
/// assert!(!policy.has_sampler(), "build_manual: samples come through on_memory");
/// assert_eq!(policy.last_sample(), None);
/// ```
#[derive(Debug)]
pub struct RssAdaptive {
    core: Arc<Core>,
    sampler: Option<Sampler>,
    auto: Option<AutoTarget>,
}

impl RssAdaptive {
    /// Starts a builder for a resident-memory target in bytes.
    pub fn builder(target_rss_bytes: u64) -> RssAdaptiveBuilder {
        RssAdaptiveBuilder::new(target_rss_bytes)
    }

    /// A builder whose target is 80% of this process's cgroup hard memory limit, read as
    /// RSS; `None` when no limit is visible (see [`cgroup_memory_limit`]).
    ///
    /// [`auto`](Self::auto) is usually the better choice: it also honours `memory.high`,
    /// compares with the cgroup's working set (what the kernel enforces the limit on), and
    /// has a target when there is no cgroup limit.
    pub fn from_cgroup() -> Option<RssAdaptiveBuilder> {
        cgroup_memory_limit().map(|limit| Self::builder(target_from_limit(limit)))
    }

    /// The current byte budget.
    pub fn budget(&self) -> u64 {
        self.core.budget.load(Ordering::Relaxed)
    }

    /// The latest RSS sample, if any arrived.
    pub fn last_sample(&self) -> Option<MemorySample> {
        *self.core.last_sample.lock()
    }

    /// The resident-memory target in bytes.
    pub fn target(&self) -> u64 {
        self.core.controller.lock().config().target
    }

    /// Whether a sampler thread runs (built with [`RssAdaptiveBuilder::build`]).
    pub fn has_sampler(&self) -> bool {
        self.sampler.is_some()
    }

    /// What [`RssAdaptive::auto`] detected and chose; `None` for other builders.
    pub fn auto_target(&self) -> Option<&AutoTarget> {
        self.auto.as_ref()
    }
}

fn target_from_limit(limit: u64) -> u64 {
    limit / 10 * 8
}

impl AdmissionPolicy for RssAdaptive {
    fn measures_latency(&self) -> bool {
        false
    }

    fn fetch_limit(&self, load: &Load) -> usize {
        fetch_within(self.budget(), &self.core.estimate, load)
    }

    #[inline]
    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.core.estimate.seed(cost);
        admits_within(self.budget(), load, cost)
    }

    fn limit(&self) -> Limit {
        Limit {
            slots: None,
            bytes: Some(self.budget()),
        }
    }

    fn on_complete(&self, completion: &Completion) {
        self.core.estimate.record(completion.cost);
    }

    fn on_memory(&self, sample: MemorySample) {
        self.core.apply(sample, None);
    }

    fn memory_sample(&self) -> Option<MemorySample> {
        self.last_sample()
    }

    fn memory_target(&self) -> Option<u64> {
        Some(self.target())
    }

    fn attach(&self, signal: LimitSignal) {
        self.core.listeners.add(signal);
    }
}

/// What the policy and its sampler thread share.
pub(crate) struct Core {
    budget: AtomicU64,
    /// Bytes the attached gates held at the last sample (permits plus reservations).
    in_use: AtomicU64,
    estimate: CostEstimate,
    controller: Mutex<BudgetController>,
    last_sample: Mutex<Option<MemorySample>>,
    listeners: LimitSignals,
    release: Option<ReleaseHook>,
}

impl Core {
    /// Runs the controller on one sample and publishes the result.
    ///
    /// When the sample shows retained memory and the release hook is due, the hook runs
    /// first and `resample` (the sampler's probe) reads again, so the controller sees what
    /// is left after the release instead of shrinking the budget for memory the allocator
    /// has just handed back (see [`BudgetController::on_released_sample`]). Without a second
    /// reading (samples through `on_memory`, or a failed read) the release is judged by the
    /// next sample.
    pub(crate) fn apply(&self, sample: MemorySample, resample: Option<&mut dyn FnMut() -> Option<MemorySample>>) {
        // Read from the attached gates here, off the hot path.
        let in_use = self.listeners.bytes_in_use();
        self.in_use.store(in_use, Ordering::Relaxed);
        let wants = self.controller.lock().wants_release(sample.rss_bytes, in_use);
        let mut released = None;
        if let Some(release) = &self.release {
            release.observe(sample.rss_bytes);
            if !wants {
                release.calm();
            } else if release.maybe_run(sample.at_ms) {
                match resample.and_then(|read| read()) {
                    Some(after) => {
                        release.record(sample.rss_bytes.saturating_sub(after.rss_bytes));
                        released = Some(after);
                    }
                    None => release.judge_on_next(sample.rss_bytes),
                }
            }
        }
        let (old, new) = {
            let mut controller = self.controller.lock();
            let old = controller.budget();
            let new = match released {
                Some(after) => controller.on_released_sample(sample.rss_bytes, after.rss_bytes, in_use, after.at_ms),
                None => controller.on_sample(sample.rss_bytes, in_use, sample.at_ms),
            };
            (old, new)
        };
        let sample = released.unwrap_or(sample);
        self.budget.store(new, Ordering::Relaxed);
        *self.last_sample.lock() = Some(sample);
        if new != old {
            tracing::debug!(
                rss = sample.rss_bytes,
                in_use,
                old_budget = old,
                new_budget = new,
                "rss-adaptive budget changed"
            );
        }
        if new > old {
            self.listeners.notify_all();
        }
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RssAdaptive")
            .field("budget", &self.budget.load(Ordering::Relaxed))
            .field("in_use", &self.in_use.load(Ordering::Relaxed))
            .field("estimate", &self.estimate.get())
            .field("last_sample", &*self.last_sample.lock())
            .field("release_hook", &self.release.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn manual(rss_at_start: u64) -> RssAdaptive {
        RssAdaptive::builder(1000 * MIB)
            .min_budget(10 * MIB)
            .max_budget(800 * MIB)
            .probe(move || Some(rss_at_start))
            .build_manual()
    }

    #[test]
    fn defaults_derive_from_the_baseline() {
        let policy = RssAdaptive::builder(1000 * MIB)
            .probe(|| Some(200 * MIB))
            .build_manual();
        let controller = policy.core.controller.lock();
        assert_eq!(controller.config().max_budget, 800 * MIB);
        assert_eq!(controller.config().min_budget, 50 * MIB);
        assert_eq!(controller.budget(), 750 * MIB, "the headroom under the high mark");
    }

    #[test]
    fn tiny_targets_still_get_a_usable_range() {
        let policy = RssAdaptive::builder(MIB).probe(|| Some(10 * MIB)).build_manual();
        let controller = policy.core.controller.lock();
        assert_eq!(controller.config().max_budget, MIB);
        assert_eq!(controller.config().min_budget, MIB);
    }

    #[test]
    #[should_panic(expected = "low_mark")]
    fn marks_are_validated() {
        let _ = RssAdaptive::builder(MIB).high_mark(0.5).low_mark(0.6).build_manual();
    }

    #[test]
    #[should_panic(expected = "min_budget")]
    fn budgets_are_validated() {
        let _ = RssAdaptive::builder(MIB)
            .min_budget(10)
            .max_budget(5)
            .probe(|| None)
            .build_manual();
    }

    #[test]
    fn admits_like_a_byte_budget_reading_the_moving_budget() {
        let policy = Arc::new(manual(100 * MIB));
        let gate = crate::Gate::with_shared(policy.clone());
        let _held = gate.try_acquire(800 * MIB).unwrap(); // the controller sees 800 in use
        let busy = Load {
            in_flight: 1,
            bytes: 700 * MIB,
            ..Load::default()
        };
        assert!(policy.admits(&busy, 100 * MIB));
        policy.on_memory(MemorySample {
            rss_bytes: 980 * MIB,
            at_ms: 0,
        });
        policy.on_memory(MemorySample {
            rss_bytes: 1050 * MIB,
            at_ms: 10,
        });
        assert_eq!(policy.budget(), 560 * MIB, "over the target: 800 in use × 0.7");
        assert!(!policy.admits(&busy, 100 * MIB));
        assert!(policy.admits(&Load::default(), 5_000 * MIB), "runs alone");
        assert_eq!(policy.last_sample().unwrap().rss_bytes, 1050 * MIB);
    }

    #[test]
    fn release_hook_is_rate_limited() {
        let (policy, calls) = with_counting_hook();
        // RSS retained at 950 MiB while nothing is in use; every release frees 50 MiB (it
        // helps, so no back-off), and the heaps fill again by the next sample.
        for at_ms in (0..1000).step_by(5) {
            let released = MemorySample {
                rss_bytes: 900 * MIB,
                at_ms,
            };
            policy.core.apply(
                MemorySample {
                    rss_bytes: 950 * MIB,
                    at_ms,
                },
                Some(&mut || Some(released)),
            );
        }
        assert_eq!(calls.load(Ordering::Relaxed), 10);
    }

    /// A policy with a counting release hook, target 1000 MiB, baseline 100 MiB.
    fn with_counting_hook() -> (RssAdaptive, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let policy = RssAdaptive::builder(1000 * MIB)
            .min_budget(10 * MIB)
            .max_budget(800 * MIB)
            .probe(|| Some(100 * MIB))
            .release_hook(Duration::from_millis(100), {
                let calls = calls.clone();
                move || {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_manual();
        (policy, calls)
    }

    #[test]
    fn the_release_runs_before_the_controller_reads_the_sample() {
        let (policy, calls) = with_counting_hook();
        let sample = |rss_bytes, at_ms| MemorySample { rss_bytes, at_ms };
        policy.core.apply(sample(500 * MIB, 0), None);
        let budget = policy.budget();
        // Past the target and rising, nothing in use: without a release this is a cut to
        // the floor. The hook runs first, the probe reads again (400 MiB): no cut.
        let mut reads = 0;
        policy.core.apply(
            sample(1050 * MIB, 10),
            Some(&mut || {
                reads += 1;
                Some(sample(400 * MIB, 12))
            }),
        );
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(reads, 1);
        assert_eq!(policy.last_sample().unwrap().rss_bytes, 400 * MIB);
        assert_eq!(policy.budget(), budget, "no shrink for memory the hook returned");
        // Without a second reading (samples through `on_memory`) the sample stands.
        let (manual, _) = with_counting_hook();
        manual.on_memory(sample(500 * MIB, 0));
        manual.on_memory(sample(1050 * MIB, 10));
        assert!(manual.budget() < budget);
    }

    #[test]
    fn glibc_builds_get_the_trim_hook_by_default() {
        let debug = |policy: &RssAdaptive| format!("{policy:?}");
        let policy = RssAdaptive::builder(1000 * MIB).build_manual();
        assert_eq!(
            debug(&policy).contains("release_hook: true"),
            GLIBC_MALLOC,
            "{policy:?}"
        );
        let without = RssAdaptive::builder(1000 * MIB).without_release_hook().build_manual();
        assert!(debug(&without).contains("release_hook: false"), "{without:?}");
    }

    fn at(rss_bytes: u64, at_ms: u64) -> MemorySample {
        MemorySample { rss_bytes, at_ms }
    }

    #[test]
    fn a_hook_that_frees_nothing_backs_off_without_a_second_reading() {
        // Samples through `on_memory` (build_manual, AllOf): no resample, so `record` is
        // never called and a useless hook runs every base interval for ever.
        let (policy, calls) = with_counting_hook();
        for at_ms in (0..10_000).step_by(5) {
            policy.on_memory(at(950 * MIB, at_ms)); // RSS never falls: nothing was freed
        }
        // The documented back-off (100 → 200, 400, … 6400 ms) allows about 7 calls in 10 s.
        let calls = calls.load(Ordering::Relaxed);
        assert!(
            calls <= 10,
            "a hook that never frees anything ran {calls} times in 10 s"
        );
    }

    #[test]
    fn a_failed_second_reading_does_not_disable_the_back_off() {
        // The sampler's re-read fails (probe returns None): same as above.
        let (policy, calls) = with_counting_hook();
        for at_ms in (0..10_000).step_by(5) {
            policy.core.apply(at(950 * MIB, at_ms), Some(&mut || None));
        }
        let calls = calls.load(Ordering::Relaxed);
        assert!(calls <= 10, "with a failing re-read the hook ran {calls} times in 10 s");
    }

    /// Target 1000 MiB (low 800, high 950), baseline 100 MiB, budget 800 MiB at start, a
    /// counting hook every 100 ms; `settle` as given.
    fn with_hook_and_settle(settle_ms: u64) -> (Arc<RssAdaptive>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let policy = RssAdaptive::builder(1000 * MIB)
            .min_budget(10 * MIB)
            .max_budget(800 * MIB)
            .settle(Duration::from_millis(settle_ms))
            .probe(|| Some(100 * MIB))
            .release_hook(DEFAULT_RELEASE_INTERVAL, {
                let calls = calls.clone();
                move || {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_manual();
        (Arc::new(policy), calls)
    }

    #[test]
    fn a_hook_that_runs_every_settle_does_not_pin_the_budget() {
        // settle 100 ms with the default 100 ms release interval: every release blocks
        // growth until the next release.
        let (policy, calls) = with_hook_and_settle(100);
        let gate = crate::Gate::with_shared(policy.clone());
        let _held = gate.try_acquire(300 * MIB).unwrap();
        policy.core.apply(at(500 * MIB, 0), None);
        // Past the target: cut to 300 in use × 0.7 = 210 (the hook runs too, frees 10 MiB).
        policy
            .core
            .apply(at(1050 * MIB, 10), Some(&mut || Some(at(1040 * MIB, 10))));
        let floor = policy.budget();
        assert_eq!(floor, 210 * MIB);
        // Then RSS sits between the marks (889 MiB) with the budget fully used (300 in use
        // ≥ 90% of 210): the table says grow by (950 − 889) / 2. Each release frees 10 MiB
        // (≥ 1% of the target, so no back-off).
        for t in (15..10_000).step_by(5) {
            policy
                .core
                .apply(at(889 * MIB, t), Some(&mut || Some(at(879 * MIB, t))));
        }
        assert!(calls.load(Ordering::Relaxed) >= 90, "the hook ran every 100 ms");
        assert!(
            policy.budget() > floor,
            "fully used between the marks for 10 s and never grew: budget {} MiB",
            policy.budget() / MIB
        );
    }

    #[test]
    fn the_refill_after_a_release_is_not_a_rise() {
        // RSS flat at 960 MiB (above the high mark, 950): retained memory being reused, which
        // the controller's table holds. Each release returns 20 MiB that the heaps take back
        // by the next sample (5 ms later). The released reading moves the anchor down, the
        // refill then reads as "rising above the high mark", and every refill cuts the budget.
        let (policy, calls) = with_hook_and_settle(50);
        let gate = crate::Gate::with_shared(policy.clone());
        let _held = gate.try_acquire(300 * MIB).unwrap();
        let start = policy.budget();
        for t in (0..10_000).step_by(5) {
            policy
                .core
                .apply(at(960 * MIB, t), Some(&mut || Some(at(940 * MIB, t))));
        }
        assert!(calls.load(Ordering::Relaxed) >= 90, "the hook ran every 100 ms");
        // The same samples without a hook: the budget holds.
        let without = Arc::new(
            RssAdaptive::builder(1000 * MIB)
                .min_budget(10 * MIB)
                .max_budget(800 * MIB)
                .probe(|| Some(100 * MIB))
                .without_release_hook()
                .build_manual(),
        );
        let other_gate = crate::Gate::with_shared(without.clone());
        let _also_held = other_gate.try_acquire(300 * MIB).unwrap();
        for t in (0..10_000).step_by(5) {
            without.on_memory(at(960 * MIB, t));
        }
        assert_eq!(without.budget(), start, "without the hook: hold");
        assert!(
            policy.budget() >= start,
            "flat RSS and a release that comes back cut the budget from {} to {} MiB",
            start / MIB,
            policy.budget() / MIB
        );
    }

    #[test]
    fn the_second_reading_is_stamped_when_it_was_read() {
        // The re-read after the hook carries the time of the first read; so does
        // `on_release`, so a hook as long as `settle` spends the whole no-growth window.
        let reads = Arc::new(AtomicUsize::new(0));
        let policy = RssAdaptive::builder(1000 * MIB)
            .min_budget(10 * MIB)
            .max_budget(800 * MIB)
            .sample_every(Duration::from_secs(60)) // one iteration only
            .probe({
                let reads = reads.clone();
                move || {
                    Some(match reads.fetch_add(1, Ordering::SeqCst) {
                        0 => 100 * MIB,  // baseline, at build
                        1 => 1050 * MIB, // first sample: retained, the hook runs
                        _ => 400 * MIB,  // the re-read after the hook
                    })
                }
            })
            .release_hook(Duration::from_millis(100), || {
                std::thread::sleep(Duration::from_millis(80))
            })
            .build();
        let deadline = Instant::now() + Duration::from_secs(5);
        while policy.last_sample().is_none() {
            assert!(Instant::now() < deadline, "sampler never sampled");
            std::thread::sleep(Duration::from_millis(1));
        }
        let sample = policy.last_sample().unwrap();
        assert_eq!(sample.rss_bytes, 400 * MIB, "the re-read");
        assert!(
            sample.at_ms >= 80,
            "read after an 80 ms hook but stamped at {} ms",
            sample.at_ms
        );
    }

    #[test]
    fn sampler_thread_samples_and_stops_on_drop() {
        let reads = Arc::new(AtomicUsize::new(0));
        let policy = RssAdaptive::builder(1000 * MIB)
            .max_budget(800 * MIB)
            .sample_every(Duration::from_millis(1))
            .probe({
                let reads = reads.clone();
                move || {
                    reads.fetch_add(1, Ordering::Relaxed);
                    Some(100 * MIB)
                }
            })
            .build();
        assert!(policy.has_sampler());
        let deadline = Instant::now() + Duration::from_secs(5);
        while policy.last_sample().is_none() {
            assert!(Instant::now() < deadline, "sampler never sampled");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(policy);
        let after_drop = reads.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reads.load(Ordering::Relaxed), after_drop, "thread stopped");
    }

    #[test]
    fn cgroup_target_is_eighty_percent() {
        assert_eq!(target_from_limit(1000), 800);
    }
}
