//! [`Appender`]: `XADD` that survives a Redis restart which lost the latest writes.
//!
//! # Why
//!
//! The bridge confirms Telegram's offset once Redis acknowledged an append. Redis with
//! AOF `appendfsync everysec` (the default) acknowledges writes it has not written to disk
//! yet: killed, it comes back without up to a second or two of them, and those updates are
//! gone from both sides — Telegram was told they were delivered. (`appendfsync always`
//! loses nothing, at the cost of an fsync per write; Redis 7.0 has no per-write wait for
//! the disk.)
//!
//! So the appender keeps what it appended during the last `window` of successful appends
//! (default 5 s), and after any connection failure, before appending anything new, asks
//! the server's `run_id`. A new one means a restart: each remembered entry the stream no
//! longer has is appended again, in the order of the first appends, so a chat's updates
//! stay in order. A restart the bridge did not see (it was idle all along) surfaces as a
//! failure of its next command, which triggers the same check.
//!
//! Appends run concurrently (pipelined on one connection); the check runs alone (a write
//! lock that new appends wait behind).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_core::Backoff;
use redis::aio::ConnectionManager;
use tokio::sync::RwLock;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{RedisTransportError, transient};
use crate::retry::with_retries;

/// What an appender remembers how long, by default.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(5);

/// One acknowledged append.
#[derive(Debug, Clone)]
struct Appended {
    at: Instant,
    stream: String,
    id: String,
    fields: Vec<(String, Vec<u8>)>,
}

/// Appends to streams on one connection; see the module docs.
pub(crate) struct Appender {
    conn: ConnectionManager,
    backoff: Backoff,
    window: Duration,
    max_len: Option<usize>,
    recent: Mutex<VecDeque<Appended>>,
    /// The server's `run_id` when last checked.
    run_id: Mutex<Option<String>>,
    /// A command failed since the last check (or none was made yet).
    suspect: AtomicBool,
    /// Appends hold it shared; the check holds it alone.
    gate: RwLock<()>,
    pub(crate) retries: AtomicU64,
    pub(crate) added: AtomicU64,
    pub(crate) reappended: AtomicU64,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("window", &self.window)
            .field("added", &self.added)
            .field("reappended", &self.reappended)
            .finish_non_exhaustive()
    }
}

impl Appender {
    pub(crate) fn new(conn: ConnectionManager, backoff: Backoff, window: Duration, max_len: Option<usize>) -> Appender {
        Appender {
            conn,
            backoff,
            window,
            max_len,
            recent: Mutex::new(VecDeque::new()),
            run_id: Mutex::new(None),
            suspect: AtomicBool::new(true),
            gate: RwLock::new(()),
            retries: AtomicU64::new(0),
            added: AtomicU64::new(0),
            reappended: AtomicU64::new(0),
        }
    }

    fn xadd(&self, stream: &str, fields: &[(String, Vec<u8>)]) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream);
        if let Some(n) = self.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v.as_slice());
        }
        cmd
    }

    /// Appends `fields` to `stream`; returns the entry id once Redis acknowledged it.
    pub(crate) async fn append(
        &self,
        stream: &str,
        fields: Vec<(String, Vec<u8>)>,
    ) -> Result<String, RedisTransportError> {
        let cmd = self.xadd(stream, &fields);
        let mut failures = 0u32;
        loop {
            if self.suspect.load(Ordering::Acquire) {
                self.check().await?;
            }
            let shared = self.gate.read().await;
            if self.suspect.load(Ordering::Acquire) {
                continue;
            }
            let mut conn = self.conn.clone();
            match cmd.query_async::<String>(&mut conn).await {
                Ok(id) => {
                    self.remember(stream, &id, fields);
                    self.added.fetch_add(1, Ordering::Relaxed);
                    return Ok(id);
                }
                Err(e) if transient(&e) => {
                    self.suspect.store(true, Ordering::Release);
                    drop(shared);
                    failures += 1;
                    if self.backoff.max_retries.is_some_and(|max| failures > max) {
                        return Err(RedisTransportError::Unavailable {
                            command: "XADD",
                            attempts: failures,
                            source: e,
                        });
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = self.backoff.delay(failures);
                    warn!(error = %e, attempt = failures, ?delay, "XADD failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(RedisTransportError::Refused {
                        command: "XADD",
                        source: e,
                    });
                }
            }
        }
    }

    fn remember(&self, stream: &str, id: &str, fields: Vec<(String, Vec<u8>)>) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock();
        while recent.front().is_some_and(|a| now - a.at > self.window) {
            recent.pop_front();
        }
        recent.push_back(Appended {
            at: now,
            stream: stream.to_owned(),
            id: id.to_owned(),
            fields,
        });
    }

    /// After a failure: has the server restarted, and lost remembered appends? Appends
    /// them again, in order, before any new one.
    async fn check(&self) -> Result<(), RedisTransportError> {
        let _alone = self.gate.write().await;
        if !self.suspect.load(Ordering::Acquire) {
            return Ok(());
        }
        let info: String = with_retries(&self.backoff, &self.retries, "INFO server", || {
            let mut conn = self.conn.clone();
            async move { redis::cmd("INFO").arg("server").query_async(&mut conn).await }
        })
        .await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|r| r.trim().to_owned())
            .unwrap_or_default();
        let known = self.run_id.lock().clone();
        if known.as_ref().is_some_and(|k| *k != run_id) {
            self.reappend_lost().await?;
        }
        *self.run_id.lock() = Some(run_id);
        self.suspect.store(false, Ordering::Release);
        Ok(())
    }

    /// Appends again, in their order, the remembered entries the restarted server lost.
    async fn reappend_lost(&self) -> Result<(), RedisTransportError> {
        let remembered: Vec<Appended> = self.recent.lock().iter().cloned().collect();
        if remembered.is_empty() {
            info!("Redis restarted; nothing appended recently to check");
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for a in &remembered {
            pipe.cmd("XRANGE").arg(&a.stream).arg(&a.id).arg(&a.id);
        }
        let found: Vec<redis::Value> = with_retries(&self.backoff, &self.retries, "XRANGE", || {
            let mut conn = self.conn.clone();
            let pipe = pipe.clone();
            async move { pipe.query_async(&mut conn).await }
        })
        .await?;
        let mut lost = 0;
        let mut again = Vec::with_capacity(remembered.len());
        for (mut a, there) in remembered.into_iter().zip(found) {
            let missing = matches!(&there, redis::Value::Array(v) if v.is_empty());
            if missing {
                let cmd = self.xadd(&a.stream, &a.fields);
                a.id = with_retries(&self.backoff, &self.retries, "XADD", || {
                    let mut conn = self.conn.clone();
                    let cmd = cmd.clone();
                    async move { cmd.query_async::<String>(&mut conn).await }
                })
                .await?;
                lost += 1;
            }
            again.push(a);
        }
        *self.recent.lock() = again.into();
        self.reappended.fetch_add(lost, Ordering::Relaxed);
        if lost > 0 {
            warn!(
                lost,
                "Redis restarted without the latest appends (AOF everysec); appended them again, in order"
            );
        } else {
            info!("Redis restarted; every recent append survived");
        }
        Ok(())
    }
}
