//! The RSS budget controller over minutes of simulated samples (a memory model, no real
//! time, no threads): probing upward while RSS is high but flat must never carry RSS past
//! the target, with or without an allocator that retains its peak.

use pollgate_admission::rss::{BudgetController, ControllerConfig};

const MIB: u64 = 1 << 20;

/// A process with `base` bytes resident outside the gate and a backlog that uses the
/// whole budget (declared cost = real memory). With `retain`, the allocator keeps the
/// peak resident (what the module docs measured for glibc, jemalloc and mimalloc), and
/// reuses it. Returns the highest RSS after `warmup_ms`, the final budget and RSS, and
/// how many samples were above the target after warm-up.
fn simulate(
    config: ControllerConfig,
    base: u64,
    retain: bool,
    until_ms: u64,
    warmup_ms: u64,
) -> (u64, u64, u64, usize) {
    let target = config.target;
    let mut c = BudgetController::new(config, base);
    let mut peak = 0;
    let (mut max_rss, mut rss, mut over) = (0, 0, 0);
    for t in (0..=until_ms).step_by(5) {
        let in_use = c.budget();
        let live = base + in_use;
        peak = peak.max(live);
        rss = if retain { peak } else { live };
        if t >= warmup_ms {
            max_rss = max_rss.max(rss);
            over += usize::from(rss > target);
        }
        c.on_sample(rss, in_use, t);
    }
    (max_rss, c.budget(), rss, over)
}

/// With retained memory, each probe cycle takes the budget one step past the budget
/// that last made RSS rise; the shrink that follows frees nothing (retained), RSS stays
/// flat above the high mark, so probing resumes from the shrunk budget and climbs back,
/// one step further each time. RSS ratchets upward until the budget reaches
/// `max_budget`: the controller ends up as if it had no target at all. (Before the
/// change the probe ran only from `min_budget`, and RSS stayed near the target.)
#[test]
fn probing_never_ratchets_rss_past_the_target_when_memory_is_retained() {
    let config = ControllerConfig::new(1000 * MIB, 10 * MIB, 800 * MIB);
    let (max_rss, budget, rss, _) = simulate(config, 900 * MIB, true, 120_000, 10_000);
    assert!(
        max_rss <= 1050 * MIB,
        "target 1000 MiB, 900 MiB outside the gate: after 2 minutes RSS is {} MiB (max {} MiB), budget {} MiB",
        rss / MIB,
        max_rss / MIB,
        budget / MIB
    );
}

/// Without retention (memory given back at once: RSS = outside memory + budget), with
/// the defaults (`max_budget` 800 MiB: probe step 40 MiB, shrink factor 0.7) and memory
/// outside the gate at 96% of the target (the level of the report). Above the
/// high mark and flat, the new rule probes from any budget: +40 MiB, RSS rises past the
/// target, ×0.7, RSS falls back but stays above the high mark, flat again, probe again.
/// The cycle's fixed point is B = 0.7 (B + step), B ≈ 2.33 steps ≈ 93 MiB: RSS never
/// returns under the target. (Before the change: one probe from the floor, one shrink,
/// then hold at 35 MiB with RSS at 995 MiB, under the target.)
#[test]
fn probing_settles_under_the_target_when_memory_outside_the_gate_is_high() {
    let config = ControllerConfig::new(1000 * MIB, 10 * MIB, 800 * MIB);
    let warmup = 10_000;
    let (max_rss, budget, rss, over) = simulate(config, 960 * MIB, false, 120_000, warmup);
    let samples = (120_000 - warmup) / 5 + 1;
    assert_eq!(
        over,
        0,
        "RSS above the 1000 MiB target in {over} of {samples} samples over the last 110 s; \
         max RSS {} MiB; final RSS {} MiB, budget {} MiB",
        max_rss / MIB,
        rss / MIB,
        budget / MIB
    );
}
