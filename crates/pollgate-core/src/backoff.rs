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
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Backoff, TelegramTransport};
///
/// let backoff = Backoff {
///     initial: Duration::from_millis(100),
///     max: Duration::from_secs(5),
///     max_retries: Some(8), // then the fetch fails with `RetriesExhausted`
///     ..Backoff::default()
/// };
/// assert_eq!(backoff.nominal(1), Duration::from_millis(100));
/// assert_eq!(backoff.nominal(4), Duration::from_millis(800));
/// assert_eq!(backoff.nominal(20), Duration::from_secs(5), "capped");
/// let delay = backoff.delay(4); // jittered into the upper half
/// assert!(delay >= Duration::from_millis(400) && delay <= Duration::from_millis(800));
/// let transport = TelegramTransport::builder("123456:ABC-your-token").backoff(backoff).build()?;
/// # Ok::<(), pollgate_core::TelegramError>(())
/// ```
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
///
/// # Examples
///
/// A test records the delays instead of spending them, here against a port nothing
/// listens on:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// use pollgate_core::{Backoff, FetchRequest, Sleep, SleepFuture, TelegramError, TelegramTransport, Transport};
///
/// #[derive(Debug, Default)]
/// struct Recorder(Arc<Mutex<Vec<Duration>>>);
///
/// impl Sleep for Recorder {
///     fn sleep(&self, duration: Duration) -> SleepFuture {
///         self.0.lock().unwrap().push(duration);
///         Box::pin(std::future::ready(()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let delays = Arc::new(Mutex::new(Vec::new()));
/// let transport = TelegramTransport::builder("123456:ABC-your-token")
///     .api_url(format!("http://{closed}"))
///     .backoff(Backoff { max_retries: Some(2), ..Backoff::default() })
///     .sleep(Recorder(delays.clone()))
///     .build()
///     .unwrap();
/// let request = FetchRequest { limit: 100, timeout: Duration::ZERO };
/// let error = transport.fetch(request).await.unwrap_err();
/// assert!(matches!(error, TelegramError::RetriesExhausted { attempts: 3, .. }), "{error:?}");
/// assert_eq!(delays.lock().unwrap().len(), 2, "one wait before each retry");
/// # }
/// ```
pub trait Sleep: Send + Sync + fmt::Debug + 'static {
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> SleepFuture;
}

/// Sleeps on the tokio timer (honours `tokio::time::pause`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Sleep, TokioSleep};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = tokio::time::Instant::now();
/// TokioSleep.sleep(Duration::from_secs(30)).await; // instant: the clock is paused
/// assert_eq!(start.elapsed(), Duration::from_secs(30));
/// # }
/// ```
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
