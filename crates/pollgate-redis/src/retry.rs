//! One retry loop for every command: transient failures wait out a jittered backoff,
//! anything else is final at once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pollgate_core::Backoff;
use redis::RedisResult;
use tracing::warn;

use crate::error::{RedisTransportError, transient};

/// Runs `attempt` until it succeeds, fails for good, or transient failures exceed the
/// backoff's `max_retries`; counts each retry in `retries`.
pub(crate) async fn with_retries<T, F, Fut>(
    backoff: &Backoff,
    retries: &AtomicU64,
    command: &'static str,
    mut attempt: F,
) -> Result<T, RedisTransportError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                failures += 1;
                if backoff.max_retries.is_some_and(|max| failures > max) {
                    return Err(RedisTransportError::Unavailable {
                        command,
                        attempts: failures,
                        source: e,
                    });
                }
                retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.delay(failures);
                warn!(command, error = %e, attempt = failures, ?delay, "redis command failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(RedisTransportError::Refused { command, source: e }),
        }
    }
}

/// The longest Redis outage (a restart, a failover) the transports and producers ride out
/// by default before a command fails with [`RedisTransportError::Unavailable`].
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(300);

/// Retry delays that ride out an outage of at least `max_outage`: 100 ms doubling to 1 s
/// (so that work resumes within about a second of Redis coming back), for as many
/// attempts as `max_outage` takes even when every jittered delay is at its shortest (half
/// the nominal one).
pub(crate) fn outage_backoff(max_outage: Duration) -> Backoff {
    let max = Duration::from_secs(1);
    // The ramp (100, 200, 400, 800 ms) is 4 attempts; then 1 s each, at least 500 ms.
    let steady = max_outage.as_millis().div_ceil(500) as u32;
    Backoff {
        initial: Duration::from_millis(100),
        factor: 2.0,
        max,
        max_retries: Some(steady + 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_backoff_lasts_at_least_its_outage_even_at_its_shortest_jitter() {
        for outage in [Duration::from_secs(3), Duration::from_secs(60), DEFAULT_MAX_OUTAGE] {
            let b = outage_backoff(outage);
            let shortest: Duration = (1..=b.max_retries.unwrap()).map(|n| b.nominal(n) / 2).sum();
            assert!(shortest >= outage, "{outage:?}: {shortest:?}");
            assert!(
                shortest < outage * 2 + Duration::from_secs(2),
                "{outage:?}: {shortest:?}"
            );
        }
    }
}
