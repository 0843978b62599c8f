//! [`Aimd`]: additive increase, multiplicative decrease (Netflix concurrency-limits'
//! `AIMDLimit`).

use std::time::Duration;

use super::{LimitAlgorithm, Sample};

/// +1 while the limit is used, × `backoff` on an overload or a latency above `timeout`.
///
/// Defaults: initial limit as given, bounds 1..=1000, backoff 0.9, timeout 5 s.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_admission::{Adaptive, Aimd, ByteBudget, all_of};
///
/// // Start at 20 handlers, never below 4 or above 200; a handler slower than 2 s counts
/// // as an overload; and never more than 128 MiB of declared working sets.
/// let aimd = Aimd::new(20).bounds(4, 200).timeout(Duration::from_secs(2));
/// let policy = all_of(Adaptive::new(aimd), ByteBudget::new(128 << 20));
/// assert_eq!(policy.first().current(), 20);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Aimd {
    initial: usize,
    limit: usize,
    min: usize,
    max: usize,
    backoff: f64,
    timeout: Duration,
}

impl Aimd {
    /// Starts at `initial`, clamped into the bounds (1..=1000 unless
    /// [`bounds`](Self::bounds) says otherwise).
    pub fn new(initial: usize) -> Aimd {
        Aimd {
            initial,
            limit: initial.clamp(1, 1000),
            min: 1,
            max: 1000,
            backoff: 0.9,
            timeout: Duration::from_secs(5),
        }
    }

    /// The limit stays within `min..=max` (the initial limit is clamped into it).
    ///
    /// # Panics
    /// When `min` is 0 or above `max`.
    #[track_caller]
    pub fn bounds(mut self, min: usize, max: usize) -> Aimd {
        assert!(min >= 1 && min <= max, "Aimd::bounds: need 1 <= min <= max");
        (self.min, self.max) = (min, max);
        self.limit = self.initial.clamp(min, max);
        self
    }

    /// The factor a decrease multiplies the limit by (default 0.9).
    ///
    /// # Panics
    /// Unless `0 < backoff < 1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Aimd, LimitAlgorithm, Sample};
    ///
    /// let mut aimd = Aimd::new(40).backoff(0.5);
    /// let overload = Sample::new(Duration::from_millis(5), 40, true);
    /// assert_eq!(aimd.update(overload), 20);
    /// ```
    #[track_caller]
    pub fn backoff(mut self, backoff: f64) -> Aimd {
        assert!(backoff > 0.0 && backoff < 1.0, "Aimd::backoff must be within (0, 1)");
        self.backoff = backoff;
        self
    }

    /// A handler slower than this counts as an overload (default 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_admission::{Aimd, LimitAlgorithm, Sample};
    ///
    /// let mut aimd = Aimd::new(10).timeout(Duration::from_secs(1));
    /// let slow = Sample::new(Duration::from_secs(2), 10, false); // no overload reported
    /// assert_eq!(aimd.update(slow), 9);
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Aimd {
        self.timeout = timeout;
        self
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, sample: Sample) -> usize {
        if sample.overloaded || sample.latency > self.timeout {
            let cut = (self.limit as f64 * self.backoff) as usize;
            self.limit = cut.min(self.limit.saturating_sub(1)).max(self.min);
        } else if sample.in_flight.saturating_mul(2) >= self.limit {
            self.limit = (self.limit + 1).min(self.max);
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_by_one_only_while_used() {
        let mut a = Aimd::new(10);
        assert_eq!(a.update(Sample::new(MS, 5, false)), 11, "half used counts as used");
        assert_eq!(a.update(Sample::new(MS, 5, false)), 11, "less than half: holds");
    }

    #[test]
    fn shrinks_on_overload_or_slowness_and_respects_its_bounds() {
        let mut a = Aimd::new(100).bounds(5, 120).timeout(Duration::from_secs(1));
        assert_eq!(a.update(Sample::new(MS, 100, true)), 90);
        assert_eq!(a.update(Sample::new(Duration::from_secs(2), 90, false)), 81);
        let mut small = Aimd::new(5).bounds(5, 120);
        assert_eq!(small.update(Sample::new(MS, 5, true)), 5, "never below min");
        let mut two = Aimd::new(2);
        assert_eq!(two.update(Sample::new(MS, 2, true)), 1, "always at least one less");
        let mut top = Aimd::new(120).bounds(5, 120);
        assert_eq!(top.update(Sample::new(MS, 120, false)), 120, "never above max");
    }
}
