//! One retry loop for every command: transient failures wait out a jittered backoff,
//! anything else is final at once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

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
