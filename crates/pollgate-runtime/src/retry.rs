//! [`Retry`]: how often a failed handler runs again, and how long it waits in between.
//!
//! # Why in the runtime
//!
//! A retry must keep the update's place: with [ordering](crate::RuntimeBuilder::ordered)
//! the next update of the same chat must not overtake one that is waiting to be tried
//! again, while every other chat goes on. Only the runtime knows which key an update
//! holds, so the retry happens inside the update's own task: the key stays busy through
//! the backoff, later updates of that key park behind it as usual, other keys are not
//! touched.
//!
//! # What a waiting retry holds
//!
//! During the backoff the handler's working set is gone (its permit was released, so the
//! policy can admit others); the update itself is still in memory. It is counted as
//! waiting: a reservation of its JSON size, taken before the permit is released, which
//! shows in [`Stats::queued`](crate::Stats::queued), keeps [`Barrier`]'s batch open, and
//! counts against [`max_queued`](crate::RuntimeBuilder::max_queued): fetching pauses while
//! that many updates wait, so at most `max_queued` plus the handlers running at once ever
//! wait for a retry (each running one may fail). After the backoff the update waits for
//! its permit exactly as an update parked behind its key does: its declared cost reserved,
//! then turned into the permit, in FIFO order with everybody else.
//!
//! # What ends the retries
//!
//! A success; the last attempt failing (the update is then acknowledged past and handed
//! to the transport as a [`HandlerFailure`], which a spool under at-least-once delivery
//! keeps as a dead letter); or the
//! drain deadline, which abandons a waiting retry like any update not yet running (in
//! at-least-once mode it is delivered again after a restart). The attempt count lives in
//! this process only: after a crash, an update delivered again starts from its first
//! attempt.
//!
//! [`Barrier`]: pollgate_admission::Barrier
//! [`HandlerFailure`]: pollgate_core::HandlerFailure

use std::time::Duration;

use pollgate_core::Backoff;

/// How many times an update's handler may run, and the backoff between attempts.
///
/// The default, [`Retry::none`], runs each handler once. Errors, panics and
/// [timeouts](crate::RuntimeBuilder::handler_timeout) are all retried; an update aborted
/// at the drain deadline is not (it was not refused by its handler).
///
/// # Examples
///
/// Three attempts, 200 ms and then about 400 ms apart (each delay jittered into its upper
/// half), for a handler whose database sometimes times out:
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_core::{InMemoryTransport, Update};
/// use pollgate_runtime::{Delivery, Retry, Runtime};
///
/// let retry = Retry::attempts(3).initial_backoff(Duration::from_millis(200));
/// assert_eq!(retry.max_attempts(), 3);
/// let runtime = Runtime::builder(InMemoryTransport::new(), |_u: Update| async { Ok::<(), std::io::Error>(()) })
///     .delivery(Delivery::AtLeastOnce)
///     .retry(retry)
///     .build();
/// # drop(runtime);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Retry {
    attempts: u32,
    backoff: Backoff,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry::none()
    }
}

impl Retry {
    /// One attempt: a failed handler is not run again.
    pub fn none() -> Retry {
        Retry {
            attempts: 1,
            backoff: Backoff {
                initial: Duration::from_millis(500),
                factor: 2.0,
                max: Duration::from_secs(30),
                max_retries: None,
            },
        }
    }

    /// Up to `attempts` runs of the handler (the first included), with a backoff of
    /// 500 ms × 2ⁿ⁻¹ (capped at 30 s, jittered into its upper half) between them.
    ///
    /// # Panics
    /// If `attempts` is 0.
    #[track_caller]
    pub fn attempts(attempts: u32) -> Retry {
        assert!(attempts > 0, "Retry::attempts: at least one attempt");
        Retry {
            attempts,
            ..Retry::none()
        }
    }

    /// The delay before the first retry (before jitter; default 500 ms).
    pub fn initial_backoff(mut self, initial: Duration) -> Retry {
        self.backoff.initial = initial;
        self
    }

    /// The most any delay grows to (default 30 s).
    pub fn max_backoff(mut self, max: Duration) -> Retry {
        self.backoff.max = max;
        self
    }

    /// The growth factor from one delay to the next (default 2).
    ///
    /// # Panics
    /// If `factor` is below 1 or not finite.
    #[track_caller]
    pub fn backoff_factor(mut self, factor: f64) -> Retry {
        assert!(
            factor.is_finite() && factor >= 1.0,
            "Retry::backoff_factor must be finite and at least 1"
        );
        self.backoff.factor = factor;
        self
    }

    /// The most runs of the handler for one update, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a failed handler may run again.
    pub(crate) fn retries(&self) -> bool {
        self.attempts > 1
    }

    /// The jittered delay after the failed attempt number `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_stay_in_their_upper_half() {
        let retry = Retry::attempts(5)
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(300));
        for (attempt, nominal) in [(1, 100), (2, 200), (3, 300), (4, 300)] {
            let nominal = Duration::from_millis(nominal);
            for _ in 0..50 {
                let d = retry.delay(attempt);
                assert!(
                    d >= nominal / 2 && d <= nominal,
                    "attempt {attempt}: {d:?} vs {nominal:?}"
                );
            }
        }
        assert!(retry.retries());
        assert!(!Retry::none().retries());
    }

    #[test]
    #[should_panic(expected = "at least one attempt")]
    fn zero_attempts_is_a_configuration_error() {
        let _ = Retry::attempts(0);
    }
}
