//! The command shapes both stream transports use: a script call, a command with the
//! shared retry loop, and a consumer group created if missing.

use std::sync::atomic::AtomicU64;

use pollgate_core::Backoff;
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, ToRedisArgs, Value};

use crate::error::RedisTransportError;
use crate::retry::with_retries;

/// `EVAL script #keys keys…`; the caller adds the arguments.
pub(crate) fn eval<K: ToRedisArgs>(script: &str, keys: &[K]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    cmd
}

/// Sends `cmd` on `conn`, retrying transient failures with `backoff` (each retry counted
/// in `retries`).
pub(crate) async fn query<T: FromRedisValue>(
    backoff: &Backoff,
    retries: &AtomicU64,
    command: &'static str,
    cmd: &redis::Cmd,
    conn: &ConnectionManager,
) -> Result<T, RedisTransportError> {
    with_retries(backoff, retries, command, || {
        let mut conn = conn.clone();
        let cmd = cmd.clone();
        async move { cmd.query_async::<T>(&mut conn).await }
    })
    .await
}

/// `XGROUP CREATE stream group start MKSTREAM`, with retries; `false` when the group
/// already existed (`BUSYGROUP`).
pub(crate) async fn create_group(
    backoff: &Backoff,
    retries: &AtomicU64,
    conn: &ConnectionManager,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<bool, RedisTransportError> {
    with_retries(backoff, retries, "XGROUP CREATE", || {
        let mut conn = conn.clone();
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(stream).arg(group).arg(start).arg("MKSTREAM");
        async move {
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(_) => Ok(true),
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
                Err(e) => Err(e),
            }
        }
    })
    .await
}
