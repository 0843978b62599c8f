//! [`RedisStreamTransport`]: a consumer-group reader that fits pollgate's [`Transport`]
//! trait with per-entry acknowledgements.
//!
//! How it works is on [`RedisStreamTransport`]; the pieces are split by idea: the builder,
//! the consumer group kept in existence, the heartbeat, re-delivery, and the scripts.

mod builder;
mod group;
mod heartbeat;
mod redeliver;
mod scripts;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_core::{Ack, AckModel, Backoff, Batch, FetchRequest, Transport, Update};
use redis::aio::ConnectionManager;
use redis::{RedisResult, Value};
use tracing::{debug, error, info, warn};

use crate::commands::eval;
use crate::connect::{connection, default_consumer, open_client, redact_url};
use crate::error::{RedisTransportError, no_group};
use crate::reply::{self, Entry, decode};
use crate::retry::{DEFAULT_MAX_OUTAGE, outage_backoff, with_retries};
use scripts::{DEAD_LETTER, HEARTBEAT, LEAVE_GROUP};

pub use builder::{DEFAULT_FIELD, RedisStreamTransportBuilder, StartFrom};

#[derive(Debug)]
struct Settings {
    url: String,
    stream: String,
    group: String,
    consumer: String,
    field: String,
    dead_letter: String,
    claim_idle: Duration,
    max_deliveries: u32,
    max_block: Duration,
    window: usize,
    start: StartFrom,
    backoff: Backoff,
}

/// Whether this consumer's own pending list must be read before new entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum History {
    /// Nothing to re-read.
    Done,
    /// The first fetch of this transport: entries pending on this consumer name were
    /// delivered to a previous process that is gone; each counts as a delivery.
    AtStart,
    /// A fetch did not complete: entries may have been delivered into a lost reply.
    Recover,
}

#[derive(Debug)]
struct State {
    history: History,
    /// Where the re-read of the own pending list continues (exclusive).
    history_cursor: Option<String>,
    /// Where the next `XAUTOCLAIM` scan continues (`0-0`: from the start).
    claim_cursor: String,
    next_claim: Instant,
    /// Entries handed to the runtime and not yet acknowledged.
    in_flight: HashSet<Arc<str>>,
    /// Until when a cancelled blocking read may still be waiting on the server (and could
    /// still deliver entries to this consumer).
    blocked_until: Option<Instant>,
}

impl State {
    fn recover(&mut self) {
        if self.history == History::Done {
            self.history = History::Recover;
            self.history_cursor = None;
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    read: AtomicU64,
    recovered: AtomicU64,
    claimed: AtomicU64,
    dead_lettered: AtomicU64,
    deleted: AtomicU64,
    acked: AtomicU64,
    heartbeats: AtomicU64,
    retries: AtomicU64,
}

/// Counters of a [`RedisStreamTransport`], for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// New entries read (`XREADGROUP … >`).
    pub read: u64,
    /// Entries of this consumer's own pending list delivered again (after a restart with
    /// the same name, or a read whose reply was lost).
    pub recovered: u64,
    /// Entries claimed from other consumers (`XAUTOCLAIM`) and delivered.
    pub claimed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Pending entries acknowledged because they were deleted from the stream.
    pub deleted: u64,
    /// Entries acknowledged (`XACK`).
    pub acked: u64,
    /// In-flight entries whose idle time a heartbeat reset.
    pub heartbeats: u64,
    /// Commands retried after a transient failure.
    pub retries: u64,
}

struct Inner {
    settings: Settings,
    reader: ConnectionManager,
    writer: ConnectionManager,
    state: Mutex<State>,
    group_ready: AtomicBool,
    stats: Counters,
}

/// Reads a Redis stream through a consumer group, one consumer per worker process.
///
/// # How it works
///
/// Why each piece exists:
/// - **`XREADGROUP … COUNT limit`**: the runtime's fetch limit becomes `COUNT`, so a worker
///   takes from the stream only what its admission policy can admit; the rest stays in
///   Redis for the other workers.
/// - **`XACK` after the handler**: the runtime hands over receipts (entry ids) only once a
///   handler finished, so a worker that dies leaves its unfinished entries pending.
/// - **`XAUTOCLAIM`**: entries pending longer than `claim_idle` belong to a consumer that
///   died (or hangs); a worker with room claims them, so nothing waits for a restart.
/// - **Heartbeat**: a handler slower than `claim_idle` is not a dead consumer. Every
///   `claim_idle / 4` a background task re-claims this worker's in-flight entries that it
///   still owns (`XCLAIM … JUSTID` in a script that checks the owner first: it resets
///   their idle time without counting a delivery, and never takes an entry back from a
///   worker that claimed it), so only a consumer that stopped heart-beating (dead, or cut
///   off from Redis) loses its entries to the others.
/// - **Dead-letter stream**: an entry delivered more than `max_deliveries` times (its
///   handler keeps killing workers) or one that is not an update at all is moved to the
///   dead-letter stream with the reason, by a script that adds it there before
///   acknowledging it (if the add fails, the entry stays pending): never dropped, never
///   retried forever.
/// - **Own pending entries first**: on start, and after any fetch that did not complete
///   (an error, a lost reply, a cancelled fetch), the worker re-reads its own pending list
///   (`XPENDING … consumer`), so an entry delivered into a lost reply is not stuck until
///   another worker claims it. At start (a restart with a stable consumer name) each such
///   entry counts as a delivery; after a lost reply it does not.
/// - **One delivery per entry at a time**: an entry is handed to the runtime only if it is
///   still pending on this consumer and not in flight here, checked after the in-flight
///   set (so an acknowledgement racing a re-read or a claim cannot deliver it twice).
///
/// Two connections: the blocking read has its own, so acknowledgements never wait behind
/// a `BLOCK` (the runtime acknowledges while a fetch is in flight).
///
/// One runtime at a time: the runtime calls [`Transport::flush`] when it ends, which
/// releases whatever was still in flight. After a run that ended in an error (no flush),
/// call `flush` yourself, or drop the transport, before running it again: otherwise the
/// heartbeat keeps the entries that run had in flight.
///
/// ```no_run
/// use pollgate_redis::RedisStreamTransport;
/// # fn demo() -> Result<(), pollgate_redis::RedisTransportError> {
/// let transport = RedisStreamTransport::builder("redis://127.0.0.1:6379", "updates", "workers")
///     .claim_idle(std::time::Duration::from_secs(30))
///     .max_deliveries(5)
///     .build()?;
/// # Ok(()) }
/// ```
pub struct RedisStreamTransport {
    inner: Arc<Inner>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for RedisStreamTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("RedisStreamTransport")
            .field("url", &s.url)
            .field("stream", &s.stream)
            .field("group", &s.group)
            .field("consumer", &s.consumer)
            .field("dead_letter", &s.dead_letter)
            .field("claim_idle", &s.claim_idle)
            .field("max_deliveries", &s.max_deliveries)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStreamTransport {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.lock().take() {
            h.abort();
        }
    }
}

/// Where delivered entries came from (only re-deliveries need their count checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    New,
    Own,
    Claimed,
}

impl RedisStreamTransport {
    /// This worker's consumer name.
    pub fn consumer(&self) -> &str {
        &self.inner.settings.consumer
    }

    /// The dead-letter stream's name.
    pub fn dead_letter_stream(&self) -> &str {
        &self.inner.settings.dead_letter
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            read: r(&c.read),
            recovered: r(&c.recovered),
            claimed: r(&c.claimed),
            dead_lettered: r(&c.dead_lettered),
            deleted: r(&c.deleted),
            acked: r(&c.acked),
            heartbeats: r(&c.heartbeats),
            retries: r(&c.retries),
        }
    }

    /// Entries delivered to the runtime and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inner.state.lock().in_flight.len()
    }
}

/// Marks the own pending list for re-reading if a fetch does not complete (an error, or
/// the future dropped): entries it read or claimed are pending on this consumer but were
/// never handed to the runtime.
struct FetchGuard<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // `blocked_until` stays set if a blocking read was cut short: the server may
            // still serve it (`flush` waits that out).
            self.inner.state.lock().recover();
        }
    }
}

impl Inner {
    /// Reads up to `count` new entries, blocking up to `block` when there are none.
    async fn read_new(&self, count: usize, block: Duration) -> Result<Vec<Entry>, RedisTransportError> {
        let s = &self.settings;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&s.group).arg(&s.consumer).arg("COUNT").arg(count);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&s.stream).arg(">");
        let started = Instant::now();
        // Until this read completes, a dropped fetch leaves it possibly blocked on the
        // server (the fetch guard then marks the own pending list for re-reading).
        self.state.lock().blocked_until = Some(started + block);
        let value = self
            .retry("XREADGROUP", || {
                let mut conn = self.reader.clone();
                let cmd = cmd.clone();
                async move {
                    let r = cmd.query_async::<Value>(&mut conn).await;
                    if r.is_err() {
                        // The reply may have been lost after Redis delivered entries.
                        self.state.lock().recover();
                    }
                    r
                }
            })
            .await?;
        let entries = reply::read_group(value)?;
        self.state.lock().blocked_until = None;
        Ok(entries)
    }
}

impl Transport for RedisStreamTransport {
    type Error = RedisTransportError;

    fn retries(&self) -> Vec<(&'static str, u64)> {
        vec![("redis", self.stats().retries)]
    }

    /// The group's `lag` (`XINFO GROUPS`): entries not yet delivered to any worker of the
    /// group (what is delivered and not acknowledged is not counted). One command, no
    /// retries; `None` when it fails or Redis cannot tell (before 7.0, or after some
    /// deletions).
    async fn backlog(&self) -> Option<u64> {
        let s = &self.inner.settings;
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(&s.stream);
        let mut conn = self.inner.writer.clone();
        let reply = cmd.query_async::<Value>(&mut conn).await.ok()?;
        reply::group_lag(reply, &s.group)
    }

    fn ack_model(&self) -> AckModel {
        AckModel::Individual {
            window: self.inner.settings.window,
        }
    }

    /// Own pending entries first (after a start or an incomplete fetch), then entries of
    /// dead consumers (when a claim pass is due), then new entries, blocking up to
    /// `min(timeout, max_block)` only when nothing else was found. The returned entries
    /// join the in-flight set (and the heartbeat) only when the fetch completes; a fetch
    /// that fails or is dropped marks the own pending list for re-reading instead.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost. Entries a dropped fetch had read or claimed stay
    /// pending on this consumer, and the next fetch delivers them first, without counting
    /// another delivery; a blocking read cut short may still be served by Redis, and what
    /// it delivers is found the same way.
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, RedisTransportError> {
        let inner = &*self.inner;
        inner.ensure_group().await?;
        self.start_heartbeat();
        let limit = request.limit.clamp(1, inner.settings.window);
        let mut guard = FetchGuard { inner, armed: true };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let history = inner.state.lock().history;
        if history != History::Done {
            let ids = inner.own_pending(limit).await?;
            let own = inner.redeliver(ids, history == History::AtStart, &seen).await?;
            if !own.is_empty() {
                debug!(entries = own.len(), "re-delivering this consumer's own pending entries");
            }
            inner.accept(own, Source::Own, &mut out, &mut seen).await?;
        }
        let claim_due = Instant::now() >= inner.state.lock().next_claim;
        if out.len() < limit && claim_due {
            let ids = inner.claim(limit - out.len()).await?;
            let claimed = inner.redeliver(ids, false, &seen).await?;
            if !claimed.is_empty() {
                info!(
                    entries = claimed.len(),
                    "claimed entries left pending by another consumer"
                );
            }
            inner.accept(claimed, Source::Claimed, &mut out, &mut seen).await?;
        }
        if out.len() < limit {
            let block = if out.is_empty() {
                request.timeout.min(inner.settings.max_block)
            } else {
                Duration::ZERO
            };
            let new = inner.read_new(limit - out.len(), block).await?;
            let new = new.into_iter().map(|e| (e, 1)).collect();
            inner.accept(new, Source::New, &mut out, &mut seen).await?;
        }
        {
            let mut st = inner.state.lock();
            st.in_flight.extend(out.iter().filter_map(|u| u.receipt().cloned()));
        }
        guard.armed = false;
        Ok(Batch {
            updates: out,
            ..Batch::default()
        })
    }

    /// `XACK`s the receipts (entry ids) of finished updates; the cumulative part of the
    /// ack means nothing to a stream and is ignored.
    ///
    /// # Cancel safety
    ///
    /// Dropped, it may have acknowledged all, some or none of the receipts (they go in
    /// chunks of 1000, each retried). What it did not stays pending and in flight here,
    /// kept alive by the heartbeat: acknowledging it again is harmless (`XACK` of an
    /// acknowledged entry does nothing), and [`flush`](Transport::flush) releases what
    /// is left, to be delivered again.
    async fn ack(&self, ack: Ack<'_>) -> Result<(), RedisTransportError> {
        if ack.receipts.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ack.receipts.iter().map(|r| &**r).collect();
        let acked = self.inner.xack(&ids).await?;
        self.inner.stats.acked.fetch_add(acked, Ordering::Relaxed);
        let mut state = self.inner.state.lock();
        for r in ack.receipts {
            state.in_flight.remove(r);
        }
        Ok(())
    }

    /// Acknowledgements are sent when made, so nothing is buffered. The runtime calls
    /// this once every handler finished (or was given up): whatever is still in flight
    /// is released (no more heartbeats, so other workers claim it after `claim_idle`;
    /// this transport re-reads it if it runs again). A worker that leaves with nothing
    /// pending removes its consumer from the group, so the group's consumer list does not
    /// grow with every restart (a default consumer name is new per process); if a
    /// cancelled blocking read may still be served, it first waits that out (at most
    /// `max_block`).
    ///
    /// # Cancel safety
    ///
    /// What is in flight is released at the first poll, whatever follows. Dropped before
    /// it completes, the consumer may stay in the group: an empty consumer, or one whose
    /// pending entries other workers claim after `claim_idle`.
    async fn flush(&self) -> Result<(), RedisTransportError> {
        let blocked_until = {
            let mut st = self.inner.state.lock();
            if !st.in_flight.is_empty() {
                warn!(
                    entries = st.in_flight.len(),
                    "releasing entries not acknowledged; they will be delivered again"
                );
                st.in_flight.clear();
            }
            st.recover();
            st.blocked_until.take()
        };
        if let Some(until) = blocked_until {
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        }
        self.inner.leave_group().await
    }
}
