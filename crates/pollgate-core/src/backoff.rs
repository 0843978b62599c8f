//! Retry delays: exponential backoff with jitter, capped, and an injectable sleep.
//!
//! Network errors and 5xx answers are retried after `initial × factor^(n−1)`, capped at
//! `max`, with "equal jitter" (a uniformly random point in the upper half of that delay)
//! so that many clients restarting together spread out and no delay collapses to zero.
//! 429 answers are not backed off: the server's `retry_after` is waited exactly.
//!
//! Waiting goes through the [`Sleep`] trait so that tests can record the delays instead of
//! spending them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Exponential backoff settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Growth factor per consecutive failure.
    pub factor: f64,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Give up after this many consecutive failed attempts (`None`: retry forever).
    pub max_retries: Option<u32>,
}

impl Default for Backoff {
    /// 250 ms, ×2, capped at 30 s, retrying forever.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(250),
            factor: 2.0,
            max: Duration::from_secs(30),
            max_retries: None,
        }
    }
}

impl Backoff {
    /// The nominal (un-jittered) delay before retry number `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The jittered delay before retry number `attempt`: uniform in
    /// `[nominal/2, nominal]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        let half = nominal / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// A boxed future returned by [`Sleep::sleep`].
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a transport waits between retries. The default is [`TokioSleep`].
pub trait Sleep: Send + Sync + fmt::Debug + 'static {
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> SleepFuture;
}

/// Sleeps on the tokio timer (honours `tokio::time::pause`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(1),
            max_retries: None,
        };
        assert_eq!(b.nominal(1), Duration::from_millis(100));
        assert_eq!(b.nominal(3), Duration::from_millis(400));
        assert_eq!(b.nominal(10), Duration::from_secs(1));
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(1));
        for attempt in 1..20 {
            let d = b.delay(attempt);
            assert!(d >= b.nominal(attempt) / 2 && d <= b.nominal(attempt), "{d:?}");
        }
    }
}
