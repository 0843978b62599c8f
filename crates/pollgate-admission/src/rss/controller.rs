//! [`BudgetController`]: the pure arithmetic that moves `RssAdaptive`'s byte budget.
//!
//! No clock, no threads, no probe: it turns `(rss, in-use bytes, time)` samples into a
//! budget, so every rule is tested with made-up samples.
//!
//! # The rules
//!
//! RSS is compared with an *anchor*: the last sample that moved by more than the noise
//! tolerance (1% of the target by default). A sample above the anchor by more than the
//! tolerance is **rising**, below it **falling**, else **flat**; "flat for" is the time
//! since the anchor last moved. With `high = high_mark × target` (0.95 by default) and
//! `low = low_mark × target` (0.80), at most one change per `settle` interval (50 ms):
//!
//! | RSS                | condition                                   | budget |
//! |--------------------|---------------------------------------------|--------|
//! | ≥ target           | rising                                      | `min(budget, in use) × shrink_factor` (0.7): fast |
//! | ≥ high             | rising                                      | `min(budget, in use) − (rss − high)`: take back the overshoot |
//! | ≥ high             | not rising, used, flat for `hold`, no probe or shrink within `hold` | + probe step (5% of max) |
//! | ≥ high             | otherwise (high but flat: retained memory is reused) | hold |
//! | < low              | not rising, used (`in use ≥ budget / 2`)    | + max(`(grow_factor − 1) × budget`, `(high − rss) / 2`) |
//! | between the marks  | not rising, fully used (`≥ 90%`)            | + `(high − rss) / 2` |
//! | between the marks  | otherwise                                   | hold |
//!
//! A reading taken right after the release hook ran goes through
//! [`on_released_sample`](BudgetController::on_released_sample): below the high mark it
//! holds the budget and leaves the anchor where it was, so the heaps filling again is not
//! read as a rise.
//!
//! "Used" is the no-growth-while-under-used rule: a budget that is not being used says
//! nothing about whether more would fit, so it never grows. Growth between the marks is
//! proportional to the headroom left under the high mark, so the budget settles where RSS
//! meets the high mark instead of oscillating around it. The result is clamped to
//! `[min_budget, max_budget]`.
//!
//! Why the escapes: allocators keep freed memory resident (measured after a 1 GiB burst:
//! 20–100% of the peak stays resident with glibc, jemalloc and mimalloc alike), so after a
//! burst RSS can sit above the high mark, or between the marks, for ever while the memory
//! is actually free for reuse. Without a probe the budget would stay where the last shrink
//! left it (often the floor) indefinitely; with one, a used budget grows by one probe step
//! per `hold` for as long as RSS stays flat — from any budget, not only the floor — up to
//! `max_budget`, and shrinks again as soon as RSS rises past the high mark.

/// Knobs of the [`BudgetController`]. Fractions are of the target RSS unless noted.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    /// The resident memory to stay under, in bytes.
    pub target: u64,
    /// The smallest budget (bytes).
    pub min_budget: u64,
    /// The largest budget (bytes).
    pub max_budget: u64,
    /// Above `high_mark × target`, rising RSS shrinks the budget (default 0.95).
    pub high_mark: f64,
    /// Below `low_mark × target`, a used budget grows (default 0.80).
    pub low_mark: f64,
    /// Multiplier applied when shrinking (default 0.7).
    pub shrink_factor: f64,
    /// Multiplier applied when growing below the low mark (default 1.1).
    pub grow_factor: f64,
    /// Additive probe, as a fraction of `max_budget` (default 0.05).
    pub probe_step: f64,
    /// Noise tolerance, as a fraction of the target (default 0.01).
    pub noise: f64,
    /// Minimum time between two shrinks or two multiplicative grows, so RSS can react
    /// (default 50 ms).
    pub settle_ms: u64,
    /// How long RSS must stay flat before a probe, and the spacing of probes
    /// (default 500 ms).
    pub hold_ms: u64,
    /// Above the low mark, memory retained beyond this fraction of the target (RSS minus
    /// the baseline and the bytes in use) asks for the release hook (default 0.05).
    pub release_retained: f64,
}

impl ControllerConfig {
    /// Defaults for a target and a budget range.
    ///
    /// # Panics
    ///
    /// When `min_budget` is 0 or greater than `max_budget`.
    pub fn new(target: u64, min_budget: u64, max_budget: u64) -> Self {
        assert!(
            min_budget > 0 && min_budget <= max_budget,
            "ControllerConfig: need 0 < min_budget ({min_budget}) <= max_budget ({max_budget})"
        );
        Self {
            target,
            min_budget,
            max_budget,
            high_mark: 0.95,
            low_mark: 0.80,
            shrink_factor: 0.7,
            grow_factor: 1.1,
            probe_step: 0.05,
            noise: 0.01,
            settle_ms: 50,
            hold_ms: 500,
            release_retained: 0.05,
        }
    }

    /// The high mark in bytes.
    pub fn high_bytes(&self) -> u64 {
        scale(self.target, self.high_mark)
    }

    /// The low mark in bytes.
    pub fn low_bytes(&self) -> u64 {
        scale(self.target, self.low_mark)
    }
}

fn scale(bytes: u64, factor: f64) -> u64 {
    // Sizes stay far below 2^53, where f64 is exact enough; `as` saturates.
    (bytes as f64 * factor).round() as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trend {
    Rising,
    Flat,
    Falling,
}

/// Turns RSS samples into a byte budget. See the [module docs](self) for the rules.
///
/// # Examples
///
/// ```
/// use pollgate_admission::rss::{BudgetController, ControllerConfig};
///
/// const MIB: u64 = 1 << 20;
/// let config = ControllerConfig::new(1000 * MIB, 50 * MIB, 800 * MIB);
/// let mut controller = BudgetController::new(config, 200 * MIB);
/// assert_eq!(controller.budget(), 750 * MIB); // 950 (the high mark) − 200
///
/// // RSS climbs 20 MiB past the high mark (950 MiB) with 700 MiB in use: give back 20.
/// controller.on_sample(900 * MIB, 700 * MIB, 0);
/// assert_eq!(controller.on_sample(970 * MIB, 700 * MIB, 10), 680 * MIB);
/// // Past the target itself: shrink fast.
/// assert_eq!(controller.on_sample(1030 * MIB, 680 * MIB, 60), 476 * MIB); // 680 × 0.7
/// ```
#[derive(Clone, Debug)]
pub struct BudgetController {
    config: ControllerConfig,
    budget: u64,
    anchor: Option<(u64, u64)>,
    last_shrink_ms: Option<u64>,
    last_grow_ms: Option<u64>,
    last_probe_ms: Option<u64>,
    /// The budget the last probe started from.
    probe_from: Option<u64>,
    /// Probes never go above this: the budget before a probe that made RSS rise.
    probe_ceiling: Option<u64>,
    /// RSS at start: what the process holds outside the gate.
    baseline: u64,
}

impl BudgetController {
    /// Starts at `high − rss` (the headroom under the high mark), clamped to the budget
    /// range.
    pub fn new(config: ControllerConfig, rss_at_start: u64) -> Self {
        let budget = config
            .high_bytes()
            .saturating_sub(rss_at_start)
            .clamp(config.min_budget, config.max_budget);
        Self {
            config,
            budget,
            anchor: None,
            last_shrink_ms: None,
            last_grow_ms: None,
            last_probe_ms: None,
            probe_from: None,
            probe_ceiling: None,
            baseline: rss_at_start,
        }
    }

    /// The current budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Feeds one sample and returns the new budget.
    ///
    /// `rss` is the resident set size, `in_use` the bytes the gate holds (running permits
    /// plus reservations), `now_ms` a monotonic time in milliseconds.
    pub fn on_sample(&mut self, rss: u64, in_use: u64, now_ms: u64) -> u64 {
        let c = &self.config;
        let noise = scale(c.target, c.noise);
        let (trend, flat_for) = match self.anchor {
            Some((anchor, _)) if rss > anchor.saturating_add(noise) => (Trend::Rising, 0),
            Some((anchor, _)) if rss.saturating_add(noise) < anchor => (Trend::Falling, 0),
            Some((_, since)) => (Trend::Flat, now_ms.saturating_sub(since)),
            None => (Trend::Flat, 0),
        };
        if trend != Trend::Flat || self.anchor.is_none() {
            self.anchor = Some((rss, now_ms));
        }

        let since = |t: Option<u64>, gap: u64| t.is_none_or(|t| now_ms.saturating_sub(t) >= gap);
        let used = in_use >= self.budget / 2;
        let fully_used = in_use >= scale(self.budget, 0.9);
        let probe_due =
            flat_for >= c.hold_ms && since(self.last_probe_ms, c.hold_ms) && since(self.last_shrink_ms, c.hold_ms);
        let probe_step = scale(c.max_budget, c.probe_step).max(1);

        let (high, low) = (c.high_bytes(), c.low_bytes());
        let mut budget = self.budget;
        if rss >= high && trend == Trend::Rising {
            // A rise within a hold of a probe: that probe went too far. Never probe past
            // where it started again (until RSS falls below the low mark).
            if let (Some(at), Some(from)) = (self.last_probe_ms, self.probe_from)
                && now_ms.saturating_sub(at) <= c.hold_ms
            {
                self.probe_ceiling = Some(self.probe_ceiling.map_or(from, |cap| cap.min(from)));
            }
            if since(self.last_shrink_ms, c.settle_ms) {
                let base = budget.min(in_use.max(c.min_budget));
                budget = if rss >= c.target {
                    scale(base, c.shrink_factor)
                } else {
                    base.saturating_sub(rss - high)
                };
                self.last_shrink_ms = Some(now_ms);
            }
        } else if rss >= high {
            // High but not rising: retained memory is being reused. Probe one step per
            // `hold` of flatness while the budget is used, from any budget (the clamp
            // stops it at max); a rise past the high mark shrinks again above.
            if used && probe_due {
                let next = budget.saturating_add(probe_step);
                let next = self.probe_ceiling.map_or(next, |cap| next.min(cap));
                if next > budget {
                    self.probe_from = Some(budget);
                    budget = next;
                    self.last_probe_ms = Some(now_ms);
                }
            }
        } else if trend != Trend::Rising && since(self.last_grow_ms, c.settle_ms) {
            if rss < low {
                self.probe_ceiling = None;
            }
            let headroom = (high - rss) / 2;
            let step = if rss < low && used {
                Some((scale(budget, c.grow_factor) - budget.min(scale(budget, c.grow_factor))).max(headroom))
            } else if fully_used {
                Some(headroom)
            } else {
                None
            };
            if let Some(step) = step {
                budget = budget.saturating_add(step.max(1));
                self.last_grow_ms = Some(now_ms);
            }
        }
        self.budget = budget.clamp(c.min_budget, c.max_budget);
        self.budget
    }

    /// Feeds the reading taken right after the release hook ran, `before` being the
    /// reading that asked for it.
    ///
    /// Below the high mark the release resolved the pressure: the budget holds, and the
    /// trend's anchor stays at the level before the release, because the allocator's heaps
    /// fill again over the next samples — that refill is not a rise, and the low reading is
    /// not room to grow into. At or above the high mark the release was not enough: the
    /// reading counts as any other.
    pub fn on_released_sample(&mut self, before: u64, after: u64, in_use: u64, now_ms: u64) -> u64 {
        if after >= self.config.high_bytes() {
            return self.on_sample(after, in_use, now_ms);
        }
        if self.anchor.is_none() {
            self.anchor = Some((before, now_ms));
        }
        self.budget
    }

    /// Whether the "release memory" hook should run: memory is retained, not used. Either
    /// RSS is above the high mark while the gate uses well under half of the budget, or
    /// RSS is above the low mark and exceeds the baseline plus the bytes in use by more
    /// than `release_retained` of the target.
    pub fn wants_release(&self, rss: u64, in_use: u64) -> bool {
        let c = &self.config;
        let retained = rss.saturating_sub(self.baseline.saturating_add(in_use));
        (rss >= c.high_bytes() && in_use < self.budget / 2)
            || (rss >= c.low_bytes() && retained > scale(c.target, c.release_retained))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Target 1000 MiB: high 900, low 750; budget 10..=800 MiB.
    fn controller(rss_at_start: u64) -> BudgetController {
        BudgetController::new(ControllerConfig::new(1000 * MIB, 10 * MIB, 800 * MIB), rss_at_start)
    }

    #[test]
    fn initial_budget_is_the_headroom_under_the_high_mark_clamped() {
        assert_eq!(controller(200 * MIB).budget(), 750 * MIB);
        assert_eq!(controller(0).budget(), 800 * MIB, "clamped to max");
        assert_eq!(controller(2000 * MIB).budget(), 10 * MIB, "clamped to min");
    }

    #[test]
    fn overshoot_shrinks_repeatedly_until_below_the_high_mark() {
        let mut c = controller(100 * MIB);
        let mut rss = 960 * MIB;
        let mut t = 0;
        c.on_sample(rss, c.budget(), t);
        // RSS keeps rising by 20 MiB per 50 ms while the budget is fully used.
        for _ in 0..8 {
            t += 50;
            rss += 20 * MIB;
            let before = c.budget();
            let after = c.on_sample(rss, before, t);
            assert!(after < before, "rising above high must shrink at {t} ms");
        }
        assert!(c.budget() < 150 * MIB, "{}", c.budget() / MIB);
        // The shrinks bite: RSS falls below the high mark and the budget stops shrinking
        // (not fully used: no growth either).
        let settled = c.budget();
        for _ in 0..9 {
            t += 50;
            assert_eq!(c.on_sample(850 * MIB, settled / 2, t), settled);
        }
    }

    #[test]
    fn shrinking_stops_at_the_floor() {
        let mut c = controller(100 * MIB);
        let mut rss = 900 * MIB;
        for t in (0..2_000).step_by(50) {
            rss += 20 * MIB;
            c.on_sample(rss, u64::MAX, t);
        }
        assert_eq!(c.budget(), 10 * MIB);
    }

    #[test]
    fn shrinks_at_most_once_per_settle_interval() {
        let mut c = controller(100 * MIB);
        c.on_sample(990 * MIB, 700 * MIB, 0);
        let first = c.on_sample(1020 * MIB, 700 * MIB, 5);
        assert_eq!(first, 490 * MIB, "far over the target: multiplicative");
        let held = c.on_sample(1040 * MIB, 490 * MIB, 10);
        assert_eq!(held, first, "RSS lags admission: wait for it to settle");
        let second = c.on_sample(1060 * MIB, 490 * MIB, 60);
        assert_eq!(second, 343 * MIB);
    }

    #[test]
    fn a_small_overshoot_takes_back_just_the_overshoot() {
        let mut c = controller(100 * MIB);
        c.on_sample(940 * MIB, 800 * MIB, 0);
        assert_eq!(c.on_sample(962 * MIB, 800 * MIB, 50), 788 * MIB);
    }

    #[test]
    fn high_but_flat_holds() {
        let mut c = controller(100 * MIB);
        c.on_sample(950 * MIB, 700 * MIB, 0);
        for t in (5..400).step_by(5) {
            assert_eq!(c.on_sample(950 * MIB, 700 * MIB, t), 800 * MIB);
        }
    }

    #[test]
    fn recovery_grows_back_to_max_when_used() {
        let mut c = controller(950 * MIB);
        assert_eq!(c.budget(), 10 * MIB, "no headroom at start: the floor");
        let mut t = 0;
        while c.budget() < 800 * MIB {
            let budget = c.budget();
            c.on_sample(300 * MIB, budget, t);
            t += 50;
            assert!(t < 10_000, "never reached max: {}", c.budget());
        }
        assert_eq!(c.budget(), 800 * MIB, "clamped to max");
    }

    #[test]
    fn no_growth_while_under_used() {
        let mut c = controller(950 * MIB);
        let budget = c.budget();
        for t in (0..5_000).step_by(5) {
            // Low RSS, but the gate uses less than half of the budget.
            assert_eq!(c.on_sample(100 * MIB, budget / 2 - 1, t), budget);
        }
        // Between the marks, flat, but not fully used: no probe either.
        for t in (5_000..10_000).step_by(5) {
            assert_eq!(c.on_sample(800 * MIB, budget / 2, t), budget);
        }
    }

    #[test]
    fn sticky_rss_between_the_marks_is_escaped_by_probing() {
        // After a burst, RSS stays at 850 MiB (retained by the allocator) and the budget
        // sits at the floor. The gate uses all of it.
        let mut c = controller(2000 * MIB);
        assert_eq!(c.budget(), 10 * MIB);
        let mut t = 0;
        let mut probes = 0;
        while t <= 10_000 {
            let before = c.budget();
            let after = c.on_sample(850 * MIB, before, t);
            if after > before {
                probes += 1;
                assert!(after - before <= 50 * MIB, "half the headroom under the high mark");
            }
            t += 5;
        }
        assert!(probes >= 10, "budget stuck at the floor: {probes} probes");
        assert_eq!(c.budget(), 800 * MIB, "retained memory reused: grows to max");
        assert!(c.budget() > 400 * MIB);

        // Now the extra budget really makes RSS grow past the high mark: shrink again.
        c.on_sample(940 * MIB, c.budget(), t);
        let before = c.budget();
        let after = c.on_sample(980 * MIB, before, t + 60);
        assert!(after < before);
    }

    #[test]
    fn sticky_rss_above_high_at_the_floor_is_probed_too() {
        let mut c = controller(2000 * MIB);
        let floor = c.budget();
        let mut t = 0;
        while t < 499 {
            assert_eq!(c.on_sample(950 * MIB, floor, t), floor, "hold first");
            t += 5;
        }
        let mut grown = false;
        while t <= 1_000 {
            grown |= c.on_sample(950 * MIB, c.budget(), t) > floor;
            t += 5;
        }
        assert!(grown, "retained memory above high must not pin the floor for ever");
    }

    /// Feeds flat `rss` from `from_ms` until `until_ms`, a sample every 5–10 ms, with
    /// `in_use(budget)` in use, and returns each budget change as `(time, budget)`.
    fn feed_flat(
        c: &mut BudgetController,
        rss: u64,
        from_ms: u64,
        until_ms: u64,
        in_use: impl Fn(u64) -> u64,
    ) -> Vec<(u64, u64)> {
        let mut changes = Vec::new();
        let mut t = from_ms;
        for gap in [5, 7, 10, 6, 9, 8].into_iter().cycle() {
            if t > until_ms {
                break;
            }
            let before = c.budget();
            let after = c.on_sample(rss, in_use(before), t);
            if after != before {
                changes.push((t, after));
            }
            t += gap;
        }
        changes
    }

    /// The budget after the last change at or before `at_ms`.
    fn budget_at(changes: &[(u64, u64)], start: u64, at_ms: u64) -> u64 {
        changes
            .iter()
            .take_while(|&&(t, _)| t <= at_ms)
            .last()
            .map_or(start, |&(_, b)| b)
    }

    #[test]
    fn flat_rss_above_high_keeps_probing_while_used() {
        // The report: 60 s of flat RSS at 96% of the target, the gate fully used. The
        // budget must keep probing upwards, not stop after one step off the floor.
        let mut c = controller(2000 * MIB);
        assert_eq!(c.budget(), 10 * MIB);
        let changes = feed_flat(&mut c, 960 * MIB, 0, 60_000, |budget| budget);
        assert!(changes.len() >= 19, "budget pinned: changes {changes:?}");
        for pair in changes.windows(2) {
            let ((t0, b0), (t1, b1)) = (pair[0], pair[1]);
            assert!(b1 > b0, "flat and used: only growth, {changes:?}");
            assert!(b1 - b0 <= 40 * MIB, "one probe step (5% of max) at a time");
            assert!(t1 - t0 >= 500, "at most one probe per hold: {t0} ms, {t1} ms");
        }
        let at = |ms| budget_at(&changes, 10 * MIB, ms);
        assert!(at(2_000) >= 130 * MIB, "{}", at(2_000) / MIB);
        assert!(at(5_000) >= at(2_000) + 200 * MIB, "{}", at(5_000) / MIB);
        assert!(at(10_000) > at(5_000), "{}", at(10_000) / MIB);
        assert_eq!(at(60_000), 800 * MIB, "grows to max_budget, and no further");

        // With a smaller step the growth is still going at a minute.
        let mut config = ControllerConfig::new(1000 * MIB, 10 * MIB, 800 * MIB);
        config.probe_step = 0.005; // 4 MiB
        let mut c = BudgetController::new(config, 2000 * MIB);
        let changes = feed_flat(&mut c, 960 * MIB, 0, 60_000, |budget| budget);
        let at = |ms| budget_at(&changes, 10 * MIB, ms);
        assert!(
            at(60_000) >= at(10_000) + 150 * MIB,
            "{} vs {}",
            at(60_000) / MIB,
            at(10_000) / MIB
        );
        assert!(at(60_000) < 800 * MIB, "slow: {}", at(60_000) / MIB);
    }

    #[test]
    fn flat_rss_above_high_stops_probing_when_under_used() {
        let mut c = controller(2000 * MIB);
        let probed = feed_flat(&mut c, 960 * MIB, 0, 5_000, |budget| budget);
        assert!(probed.len() >= 5, "used: probes {probed:?}");
        let budget = c.budget();
        assert!(budget > 200 * MIB, "{}", budget / MIB);
        // Same flat RSS, but now the gate uses less than half of the budget: no growth.
        let idle = feed_flat(&mut c, 960 * MIB, 5_001, 60_000, |budget| budget / 2 - 1);
        assert_eq!(idle, [], "under-used: never grow");
        assert_eq!(c.budget(), budget);
        assert!(c.wants_release(960 * MIB, budget / 2 - 1));
    }

    #[test]
    fn rising_rss_after_probing_shrinks_again() {
        let mut c = controller(2000 * MIB);
        feed_flat(&mut c, 960 * MIB, 0, 5_000, |budget| budget);
        let probed = c.budget();
        assert!(probed > 200 * MIB, "{}", probed / MIB);
        // The extra budget really is used and RSS climbs: take back the overshoot, then
        // shrink fast once past the target.
        let first = c.on_sample(990 * MIB, probed, 5_010);
        assert_eq!(first, probed - 40 * MIB, "990 − 950 over the high mark");
        let second = c.on_sample(1020 * MIB, first, 5_070);
        assert_eq!(second, scale(first, 0.7));
        // RSS settles, flat, above high: no probe within a hold of the shrink or of the
        // last move, then probing resumes.
        let changes = feed_flat(&mut c, 1020 * MIB, 5_075, 5_569, |budget| budget);
        assert_eq!(changes, [], "within a hold of the shrink: hold");
        let changes = feed_flat(&mut c, 1020 * MIB, 5_570, 6_060, |budget| budget);
        assert_eq!(changes, [(5_570, second + 40 * MIB)], "one probe per hold");
    }

    #[test]
    fn sticky_rss_with_tiny_use_holds_but_wants_release() {
        let mut c = controller(100 * MIB);
        let budget = c.budget();
        for t in (0..5_000).step_by(5) {
            assert_eq!(c.on_sample(950 * MIB, MIB, t), budget);
        }
        assert!(c.wants_release(950 * MIB, MIB));
        assert!(!c.wants_release(950 * MIB, budget));
        assert!(!c.wants_release(500 * MIB, MIB));
    }

    #[test]
    fn memory_retained_beyond_the_bytes_in_use_wants_release_while_the_budget_is_used() {
        // Baseline 100 MiB, low mark 800: 850 MiB resident with 690 in use is 60 MiB (6% of
        // the target) retained, above the 5% default.
        let c = controller(100 * MIB);
        assert!(c.wants_release(850 * MIB, 690 * MIB), "retained 60 MiB");
        assert!(!c.wants_release(850 * MIB, 720 * MIB), "retained 30 MiB: under 5%");
        assert!(
            !c.wants_release(780 * MIB, 400 * MIB),
            "below the low mark: no pressure"
        );
    }

    #[test]
    fn a_released_reading_below_the_high_mark_holds_and_keeps_the_anchor() {
        let mut c = controller(100 * MIB);
        c.on_sample(900 * MIB, 400 * MIB, 0);
        let cut = c.on_sample(1000 * MIB, 400 * MIB, 10);
        assert_eq!(cut, 280 * MIB, "400 in use × 0.7");
        c.on_sample(960 * MIB, 280 * MIB, 100);
        // The release brings RSS to 700 (below the low mark): no growth on it ...
        assert_eq!(c.on_released_sample(960 * MIB, 700 * MIB, 280 * MIB, 200), cut);
        // ... and the heaps filling back to 960 is flat, not a rise: no cut.
        assert_eq!(c.on_sample(960 * MIB, 280 * MIB, 205), cut);
        // A release that leaves RSS above the high mark is an ordinary reading.
        assert!(c.on_released_sample(1100 * MIB, 1050 * MIB, 280 * MIB, 300) < cut);
    }

    #[test]
    fn noise_is_not_a_trend() {
        let mut c = controller(100 * MIB);
        c.on_sample(950 * MIB, 700 * MIB, 0);
        // ±5 MiB wobble (< 1% of 1000 MiB) above high: flat, so hold.
        for (i, t) in (5..1000).step_by(5).enumerate() {
            let rss = if i % 2 == 0 { 955 * MIB } else { 946 * MIB };
            assert_eq!(c.on_sample(rss, 700 * MIB, t), 800 * MIB);
        }
    }

    #[test]
    fn budget_is_always_clamped() {
        let mut c = controller(100 * MIB);
        let mut t = 0;
        for rss in [0, u64::MAX / 4, 0, u64::MAX / 2, 1, u64::MAX] {
            for _ in 0..50 {
                let b = c.on_sample(rss, u64::MAX, t);
                assert!((10 * MIB..=800 * MIB).contains(&b), "{b}");
                t += 50;
            }
        }
    }
}
