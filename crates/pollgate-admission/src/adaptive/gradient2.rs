//! [`Gradient2`]: the limit follows the ratio of long-term to current latency (Netflix
//! concurrency-limits' `Gradient2Limit`).

use super::{LimitAlgorithm, Sample};

/// Grows while the latest latency matches the long-term average, shrinks as it rises.
///
/// The check for under-use comes before everything else, overloads included: a window in
/// which less than half of the limit ran says nothing about capacity, and moves nothing.
///
/// Samples are taken in windows of one round: as many samples as the limit (at least 10),
/// the latency averaged, the most in flight and any overload kept. Per window, with
/// `short` the window's mean latency and `long` an exponential average of the windows
/// over `long_window` samples' worth (a plain average for the first 10 windows):
///
/// ```text
/// if long / short > 2:          long ×= 0.9        (latency fell back: forget the slow past faster)
/// if in_flight < limit / 2:     no change          (under-used: nothing to learn)
/// gradient  = clamp(long / short, 0.5, 1.0)        (an overload counts as 0.5)
/// estimate  = limit × gradient + queue_size
/// limit     = clamp(limit × (1 − smoothing) + estimate × smoothing, min, max)
/// ```
///
/// Defaults: initial 20, bounds 4..=1000, queue allowance 4, smoothing 0.2, long window
/// 600. Two differences from Netflix's version, both measured in the simulation
/// (`crates/pollgate-admission/tests/adaptive_sim.rs`): it windows by sample count (Netflix wraps
/// it in a time window, which needs a clock), because applied per sample a burst of
/// completions applies the same gradient dozens of times and the limit swung between 8
/// and 65 around a knee at 32; and an overload outcome (the handler returned `Overloaded`
/// or timed out) counts as the steepest gradient, so a downstream that refuses quickly is
/// not mistaken for a fast one (Netflix's ignores drops).
///
/// # Examples
///
/// ```
/// use pollgate_admission::{Adaptive, ByteBudget, Gradient2, all_of};
///
/// let g = Gradient2::new(20).bounds(4, 500).smoothing(0.2);
/// let policy = all_of(Adaptive::new(g), ByteBudget::new(128 << 20));
/// assert_eq!(policy.first().current(), 20);
/// ```
///
/// An overload in a window cuts the limit by the steepest gradient, whatever the latency:
///
/// ```
/// use std::time::Duration;
/// use pollgate_admission::{Gradient2, LimitAlgorithm, Sample};
///
/// let mut g = Gradient2::new(40).smoothing(1.0);
/// let pushed_back = Sample::new(Duration::from_millis(10), 40, true);
/// let limit = (0..40).map(|_| g.update(pushed_back)).last().unwrap();
/// assert_eq!(limit, 24, "40 × 0.5 + the queue allowance of 4");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient2 {
    initial: usize,
    estimate: f64,
    min: usize,
    max: usize,
    queue_size: f64,
    smoothing: f64,
    long: ExpAverage,
    window: Window,
}

/// The samples of the current window.
#[derive(Clone, Debug, Default, PartialEq)]
struct Window {
    count: usize,
    latency_sum: f64,
    in_flight: usize,
    overloaded: bool,
}

impl Default for Gradient2 {
    fn default() -> Gradient2 {
        Gradient2::new(20)
    }
}

impl Gradient2 {
    /// Starts at `initial`, clamped into the bounds (4..=1000 unless
    /// [`bounds`](Self::bounds) says otherwise).
    pub fn new(initial: usize) -> Gradient2 {
        Gradient2 {
            initial,
            estimate: initial.clamp(4, 1000) as f64,
            min: 4,
            max: 1000,
            queue_size: 4.0,
            smoothing: 0.2,
            long: ExpAverage::new(600, 10),
            window: Window::default(),
        }
    }

    /// The limit stays within `min..=max`.
    ///
    /// # Panics
    /// When `min` is 0 or above `max`.
    #[track_caller]
    pub fn bounds(mut self, min: usize, max: usize) -> Gradient2 {
        assert!(min >= 1 && min <= max, "Gradient2::bounds: need 1 <= min <= max");
        (self.min, self.max) = (min, max);
        self.estimate = self.initial.clamp(min, max) as f64;
        self
    }

    /// The queue allowance (default 4): while latency stays flat each window's estimate is
    /// the limit plus this, so the limit grows by `queue × smoothing` (0.8) per window.
    pub fn queue_size(mut self, queue: usize) -> Gradient2 {
        self.queue_size = queue as f64;
        self
    }

    /// How much of each new estimate is taken (default 0.2; 1 takes it whole).
    ///
    /// # Panics
    /// Unless `0 < smoothing <= 1`.
    #[track_caller]
    pub fn smoothing(mut self, smoothing: f64) -> Gradient2 {
        assert!(
            smoothing > 0.0 && smoothing <= 1.0,
            "Gradient2::smoothing must be within (0, 1]"
        );
        self.smoothing = smoothing;
        self
    }

    /// How many windows the long-term latency averages over (default 600).
    ///
    /// # Panics
    /// When `windows` is 0.
    #[track_caller]
    pub fn long_window(mut self, windows: usize) -> Gradient2 {
        assert!(windows > 0, "Gradient2::long_window must be at least 1");
        self.long = ExpAverage::new(windows, 10);
        self
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial_limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, sample: Sample) -> usize {
        let w = &mut self.window;
        w.count += 1;
        w.latency_sum += sample.latency.as_secs_f64();
        w.in_flight = w.in_flight.max(sample.in_flight);
        w.overloaded |= sample.overloaded;
        if w.count < (self.estimate as usize).max(10) {
            return self.estimate as usize;
        }
        let w = std::mem::take(&mut self.window);
        let short = (w.latency_sum / w.count as f64).max(1e-9);
        let long = self.long.add(short);
        if long / short > 2.0 {
            self.long.scale(0.9);
        }
        if (w.in_flight as f64) < self.estimate / 2.0 {
            return self.estimate as usize;
        }
        let gradient = if w.overloaded {
            0.5
        } else {
            (long / short).clamp(0.5, 1.0)
        };
        let estimate = self.estimate * gradient + self.queue_size;
        let next = self.estimate * (1.0 - self.smoothing) + estimate * self.smoothing;
        self.estimate = next.clamp(self.min as f64, self.max as f64);
        self.estimate as usize
    }
}

/// An exponential moving average that starts as a plain average (its first `warmup`
/// samples), so that the first sample does not dominate.
#[derive(Clone, Debug, PartialEq)]
struct ExpAverage {
    value: f64,
    count: usize,
    warmup: usize,
    factor: f64,
}

impl ExpAverage {
    fn new(window: usize, warmup: usize) -> ExpAverage {
        ExpAverage {
            value: 0.0,
            count: 0,
            warmup,
            factor: 2.0 / (window as f64 + 1.0),
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / self.count as f64;
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }

    fn scale(&mut self, by: f64) {
        self.value *= by;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds one whole window of identical samples; returns the limit after it.
    fn window(g: &mut Gradient2, latency: Duration, in_flight: usize, overloaded: bool) -> usize {
        let n = (g.estimate as usize).max(10);
        let mut limit = 0;
        for _ in 0..n {
            limit = g.update(Sample::new(latency, in_flight, overloaded));
        }
        limit
    }

    #[test]
    fn nothing_moves_before_a_window_is_full() {
        let mut g = Gradient2::new(20);
        for _ in 0..19 {
            assert_eq!(g.update(Sample::new(ms(1), 20, true)), 20);
        }
        assert_eq!(
            g.update(Sample::new(ms(1), 20, true)),
            18,
            "20 × 0.8 + (20 × 0.5 + 4) × 0.2 = 18.8"
        );
    }

    #[test]
    fn flat_latency_grows_the_limit_by_the_queue_allowance_smoothed() {
        let mut g = Gradient2::new(20);
        // gradient 1: estimate 20 + 4 = 24, smoothed: 20 × 0.8 + 24 × 0.2 = 20.8
        assert_eq!(window(&mut g, ms(10), 20, false), 20);
        assert!((g.estimate - 20.8).abs() < 1e-9, "{}", g.estimate);
        for _ in 0..50 {
            window(&mut g, ms(10), 1000, false);
        }
        assert!(g.estimate > 50.0, "keeps growing while latency is flat: {}", g.estimate);
    }

    #[test]
    fn rising_latency_shrinks_it_and_never_by_more_than_half_per_window() {
        let mut g = Gradient2::new(100).bounds(4, 1000).smoothing(1.0);
        for _ in 0..20 {
            window(&mut g, ms(10), 100, false);
        }
        let before = g.estimate;
        // Latency ×10: the gradient is clamped at 0.5.
        window(&mut g, ms(100), 1000, false);
        assert!(
            (g.estimate - (before * 0.5 + 4.0)).abs() < 1e-6,
            "{before} -> {}",
            g.estimate
        );
    }

    #[test]
    fn an_under_used_limit_does_not_move_and_an_overload_is_the_steepest_gradient() {
        let mut g = Gradient2::new(40).smoothing(1.0);
        assert_eq!(window(&mut g, ms(10), 10, false), 40, "10 of 40 in use");
        assert_eq!(window(&mut g, ms(10), 40, true), 24, "40 × 0.5 + 4");
    }

    #[test]
    fn the_long_average_forgets_a_slow_past_faster_once_latency_falls() {
        let mut g = Gradient2::new(20);
        for _ in 0..20 {
            window(&mut g, ms(100), 20, false);
        }
        let long = g.long.value;
        window(&mut g, ms(10), 20, false);
        assert!(g.long.value < long * 0.95, "{long} -> {}", g.long.value);
    }
}
