//! Configuration of an [`RssAdaptive`]: what is set, and what is derived from the machine
//! (the target, the budgets) when it is built.

use super::*;

/// Configures an [`RssAdaptive`]. Made by [`RssAdaptive::builder`].
///
/// Unset budgets are derived from one probe reading at build time (the baseline RSS):
/// `max_budget = target − baseline` (at least 1 MiB and at least `min_budget`),
/// `min_budget = max_budget / 16`, at least 1 MiB (at most `max_budget`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::{Gate, RssAdaptive};
///
/// const MIB: u64 = 1 << 20;
/// let policy = RssAdaptive::builder(2048 * MIB) // stay under 2 GiB resident
///     .min_budget(64 * MIB)
///     .max_budget(1024 * MIB)
///     .high_mark(0.90)
///     .low_mark(0.75)
///     .sample_every(Duration::from_millis(10))
///     .expected_cost(512 << 10)
///     .build(); // starts the `pollgate-rss` sampler thread
/// assert!(policy.has_sampler());
/// assert!((64 * MIB..=1024 * MIB).contains(&policy.budget()));
/// let gate = Gate::new(policy);
/// assert!(gate.fetch_limit() > 0);
/// ```
#[must_use = "a builder does nothing until built"]
pub struct RssAdaptiveBuilder {
    target: u64,
    min_budget: Option<u64>,
    max_budget: Option<u64>,
    high_mark: f64,
    low_mark: f64,
    settle: Duration,
    hold: Duration,
    sample_every: Duration,
    expected_cost: Option<u64>,
    probe: Option<Box<dyn MemoryProbe>>,
    release: Option<(Duration, Hook)>,
    pub(super) auto: Option<AutoTarget>,
}

impl RssAdaptiveBuilder {
    pub(super) fn new(target: u64) -> Self {
        Self {
            target,
            min_budget: None,
            max_budget: None,
            high_mark: 0.95,
            low_mark: 0.80,
            settle: Duration::from_millis(50),
            hold: Duration::from_millis(500),
            sample_every: Duration::from_millis(5),
            expected_cost: None,
            probe: None,
            release: release::default_hook(),
            auto: None,
        }
    }

    /// What [`RssAdaptive::auto`] detected and chose; `None` for other builders.
    pub fn auto_target(&self) -> Option<&AutoTarget> {
        self.auto.as_ref()
    }

    /// The smallest budget, in bytes.
    pub fn min_budget(mut self, bytes: u64) -> Self {
        self.min_budget = Some(bytes);
        self
    }

    /// The largest budget, in bytes.
    pub fn max_budget(mut self, bytes: u64) -> Self {
        self.max_budget = Some(bytes);
        self
    }

    /// The high mark as a fraction of the target (default 0.95).
    pub fn high_mark(mut self, fraction: f64) -> Self {
        self.high_mark = fraction;
        self
    }

    /// The low mark as a fraction of the target (default 0.80).
    pub fn low_mark(mut self, fraction: f64) -> Self {
        self.low_mark = fraction;
        self
    }

    /// Minimum time between two shrinks (or two grows), so RSS can react (default 50 ms).
    pub fn settle(mut self, interval: Duration) -> Self {
        self.settle = interval;
        self
    }

    /// How long RSS must stay flat before the budget probes upwards, and the spacing of
    /// further probes while it stays flat (default 500 ms).
    pub fn hold(mut self, period: Duration) -> Self {
        self.hold = period;
        self
    }

    /// How often the sampler thread reads RSS (default 5 ms; 5–10 ms is the useful range).
    pub fn sample_every(mut self, interval: Duration) -> Self {
        self.sample_every = interval;
        self
    }

    /// Seeds the per-update cost estimate used by `fetch_limit`.
    pub fn expected_cost(mut self, bytes: u64) -> Self {
        self.expected_cost = Some(bytes);
        self
    }

    /// Where RSS is read from (default [`SysinfoProbe`]; [`RssAdaptive::auto`] sets a
    /// [`WorkingSetProbe`] in a limited cgroup).
    pub fn probe(mut self, probe: impl MemoryProbe) -> Self {
        self.probe = Some(Box::new(probe));
        self
    }

    /// A hook that returns retained memory to the OS (on glibc the default is
    /// [`glibc_malloc_trim`] every [`DEFAULT_RELEASE_INTERVAL`] at most), called on
    /// the sampler thread (or the caller of [`AdmissionPolicy::on_memory`] for a policy built
    /// with [`build_manual`](Self::build_manual)) when memory looks retained rather than used: RSS above the low
    /// mark and more than 5% of the target above the baseline plus the bytes in use, or
    /// above the high mark with less than half of the budget in use
    /// ([`BudgetController::wants_release`]).
    ///
    /// The sampler then reads the probe again and the controller sees that second reading,
    /// so the budget is not cut for memory the hook has just returned. At most one call
    /// per `min_interval` (at least 1 ms); a call after which RSS fell by less than 1% of
    /// the target doubles the interval (up to 64 ×), one that helped resets it, and so does
    /// a sample that no longer looks retained. Replaces any hook set before, the default
    /// included.
    pub fn release_hook(mut self, min_interval: Duration, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.release = Some((min_interval, Box::new(hook)));
        self
    }

    /// Removes the release hook (for example the default `malloc_trim` on glibc, in a
    /// program whose global allocator is not glibc's and gains nothing from it).
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_admission::RssAdaptive;
    ///
    /// // With jemalloc or mimalloc as the global allocator, glibc's trim frees nothing.
    /// let policy = RssAdaptive::builder(1 << 30).without_release_hook().build_manual();
    /// assert!(format!("{policy:?}").contains("release_hook: false"));
    /// ```
    pub fn without_release_hook(mut self) -> Self {
        self.release = None;
        self
    }

    /// Builds the policy and starts the sampler thread `pollgate-rss`.
    ///
    /// # Panics
    ///
    /// On invalid configuration (see [`build_manual`](Self::build_manual)), a zero
    /// `sample_every`, or when the OS cannot start a thread.
    pub fn build(self) -> RssAdaptive {
        assert!(
            !self.sample_every.is_zero(),
            "RssAdaptive: sample_every must be greater than zero"
        );
        let every = self.sample_every;
        let auto = self.auto.clone();
        let (core, probe) = self.into_core();
        let sampler = Sampler::spawn(core.clone(), probe, every, Instant::now());
        RssAdaptive {
            core,
            sampler: Some(sampler),
            auto,
        }
    }

    /// Builds the policy without a sampler thread: samples arrive through
    /// [`AdmissionPolicy::on_memory`], which runs the same controller.
    ///
    /// The probe is still read once, for the baseline RSS.
    ///
    /// # Panics
    ///
    /// When the target is 0; unless `0 < low_mark < high_mark <= 1`; when
    /// `min_budget` is 0 or greater than `max_budget`.
    pub fn build_manual(self) -> RssAdaptive {
        let auto = self.auto.clone();
        let (core, _probe) = self.into_core();
        RssAdaptive {
            core,
            sampler: None,
            auto,
        }
    }

    fn into_core(self) -> (Arc<Core>, Box<dyn MemoryProbe>) {
        assert!(self.target > 0, "RssAdaptive: the target RSS must be above 0");
        assert!(
            0.0 < self.low_mark && self.low_mark < self.high_mark && self.high_mark <= 1.0,
            "RssAdaptive: need 0 < low_mark ({}) < high_mark ({}) <= 1",
            self.low_mark,
            self.high_mark
        );
        let mut probe = self.probe.unwrap_or_else(|| Box::new(SysinfoProbe::new()));
        let baseline = probe.sample().unwrap_or(0);
        let max_budget = self.max_budget.unwrap_or_else(|| {
            (self.target.saturating_sub(baseline))
                .max(MIB)
                .max(self.min_budget.unwrap_or(0))
        });
        let min_budget = self
            .min_budget
            .unwrap_or_else(|| (max_budget / 16).max(MIB).min(max_budget));
        assert!(
            min_budget > 0 && min_budget <= max_budget,
            "RssAdaptive: need 0 < min_budget ({min_budget}) <= max_budget ({max_budget})"
        );
        let mut config = ControllerConfig::new(self.target, min_budget, max_budget);
        config.high_mark = self.high_mark;
        config.low_mark = self.low_mark;
        config.settle_ms = duration_ms(self.settle);
        config.hold_ms = duration_ms(self.hold);
        let controller = BudgetController::new(config, baseline);
        let estimate = CostEstimate::default();
        if let Some(cost) = self.expected_cost {
            estimate.set(cost);
        }
        let core = Arc::new(Core {
            budget: AtomicU64::new(controller.budget()),
            in_use: AtomicU64::new(0),
            estimate,
            controller: Mutex::new(controller),
            last_sample: Mutex::new(None),
            listeners: LimitSignals::default(),
            release: self
                .release
                .map(|(interval, hook)| ReleaseHook::new(interval, (self.target / 100).max(1), hook)),
        });
        (core, probe)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Debug for RssAdaptiveBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RssAdaptiveBuilder")
            .field("target", &self.target)
            .field("min_budget", &self.min_budget)
            .field("max_budget", &self.max_budget)
            .field("high_mark", &self.high_mark)
            .field("low_mark", &self.low_mark)
            .field("sample_every", &self.sample_every)
            .field("custom_probe", &self.probe.is_some())
            .field("release_hook", &self.release.is_some())
            .field("auto", &self.auto)
            .finish_non_exhaustive()
    }
}
