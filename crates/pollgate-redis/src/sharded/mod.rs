//! Sharded streams with leases: several workers, and still one update per chat at a time,
//! in order.
//!
//! How it works is on [`ShardedStreamTransport`]; the pieces are split by idea: the
//! builder, the layout (which shard a chat goes to), leases, delivery, the producer and the
//! scripts.

mod builder;
mod deliver;
mod layout;
mod leases;
mod producer;
mod scripts;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_core::{Ack, AckModel, Backoff, Batch, FetchRequest, Revocations, Transport, Update};
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::commands::{self, eval};
use crate::connect::{connection, default_consumer, open_client, redact_url};
use crate::durable::{Appender, DEFAULT_WINDOW};
use crate::error::{RedisTransportError, no_group, transient};
use crate::producer::update_fields;
use crate::reply::decode;
use crate::reply::{self, Entry};
use crate::retry::{DEFAULT_MAX_OUTAGE, outage_backoff};
use crate::transport::DEFAULT_FIELD;

use layout::{Layout, check_shards, splitmix64};
use leases::lease_task;
use scripts::{ACQUIRE, FENCED_ACK, FENCED_CLAIM, FENCED_DEAD, RELEASE, RENEW, TRIM, WORKERS};

pub use builder::ShardedStreamTransportBuilder;
pub use layout::shard_of;
pub use producer::{ShardedProducer, ShardedProducerBuilder};

/// Shards when none are configured.
pub const DEFAULT_SHARDS: u32 = 16;

/// How long a starting worker waits (at most a third of the lease TTL) for workers started
/// with it to register, before taking its share.
const SETTLE: Duration = Duration::from_secs(1);

/// The consumer name every owner of a shard reads it as, so that pending entries pass
/// from one owner to the next.
const OWNER: &str = "owner";

#[derive(Debug)]
struct Settings {
    url: String,
    layout: Layout,
    group: String,
    worker: String,
    /// This process's lease token prefix (a lease holds `{token}:{tenure}`).
    token: String,
    field: String,
    lease_ttl: Duration,
    max_deliveries: u32,
    max_block: Duration,
    window: usize,
    backoff: Backoff,
}

/// What a worker does with a shard it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Delivering the previous owners' pending entries, from after `cursor`.
    Recovering { cursor: Option<String> },
    /// Reading new entries.
    Reading,
    /// Over its share: reads nothing, releases the lease once nothing is in flight.
    Draining,
}

#[derive(Debug)]
struct Held {
    /// This tenure's number (in the receipts of what it delivers).
    tenure: u64,
    /// The lease's value for this tenure.
    token: String,
    /// When the last renewal (or the acquisition) was sent; the lease is used only until
    /// half its TTL after that.
    confirmed: Instant,
    phase: Phase,
    group_ready: bool,
    /// Entry ids handed to the runtime and not yet acknowledged.
    in_flight: HashSet<Arc<str>>,
    /// Whether entries were acknowledged since the stream was last trimmed.
    trim_due: bool,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeMap<u32, Held>,
    tenures: u64,
    /// Shards read last: the next fetch starts after them, so none starves.
    rotation: u32,
    /// Until when a read sent (and not answered) may still be served, and its shards.
    blocked: Option<(Instant, Vec<u32>)>,
    /// Reads that failed in a row.
    read_failures: u32,
}

#[derive(Debug, Default)]
struct Counters {
    read: AtomicU64,
    recovered: AtomicU64,
    dead_lettered: AtomicU64,
    deleted: AtomicU64,
    acked: AtomicU64,
    fenced: AtomicU64,
    acquired: AtomicU64,
    lost: AtomicU64,
    released: AtomicU64,
    retries: AtomicU64,
}

/// Counters of a [`ShardedStreamTransport`], for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardedStats {
    /// New entries read.
    pub read: u64,
    /// Entries a previous owner of a shard left pending, delivered here.
    pub recovered: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Pending entries deleted from their stream before being handled (acknowledged).
    pub deleted: u64,
    /// Entries acknowledged.
    pub acked: u64,
    /// Acknowledgements refused because the shard's lease was lost meanwhile (its next
    /// owner delivers those entries again).
    pub fenced: u64,
    /// Leases taken.
    pub acquired: u64,
    /// Leases found taken by another worker or expired at a renewal.
    pub lost: u64,
    /// Leases given back (over the share, or at the end).
    pub released: u64,
    /// Commands retried after a transient failure.
    pub retries: u64,
    /// Shards held now.
    pub shards_held: usize,
}

struct Inner {
    settings: Settings,
    reader: ConnectionManager,
    writer: ConnectionManager,
    state: Mutex<State>,
    /// Wakes a fetch waiting for shards when the lease task took one.
    changed: Notify,
    started: AtomicBool,
    stats: Counters,
}

/// Reads the shard streams this worker holds leases on (`docs/scale-out.md`, "Per-chat
/// order across workers", has the measurements).
///
/// # How it works, and why
///
/// A consumer group hands the next entry to whichever worker asks, so two updates of one
/// chat can run at once on two workers, and the second can finish first. A conversation
/// (dialogue state, "reply to the previous message") needs each chat's updates one at a
/// time and in order. Kafka's answer is partitions with one owner each; this is the same
/// on Redis Streams:
///
/// ```text
///                          ┌─ {prefix}:shard:0 ──▶ owner: worker A (lease {prefix}:lease:0)
///  bridge ─XADD by hash ───┼─ {prefix}:shard:1 ──▶ owner: worker B
///  of the chat id          ├─ …                      each worker: ~S / workers shards,
///                          └─ {prefix}:shard:S-1 ─▶   its own admission policy,
///                                                     `ordered(true)` within them
/// ```
///
/// - [`ShardedProducer`] appends each update to shard `hash(chat) mod S` ([`shard_of`]),
///   so a chat's updates are in one stream, in order.
/// - [`ShardedStreamTransport`] reads only the shards it holds a lease on: a key set with
///   `SET NX PX` to a token of this worker's tenure, renewed every quarter of its TTL, and
///   checked by every acknowledgement (a script that `XACK`s only while the lease still
///   holds the token). A worker that lost a lease acknowledges nothing more on that
///   shard and reads nothing new from it: it reads a shard only while its last renewal
///   is younger than half the TTL, and a blocking read never outlasts that.
/// - Workers register in a sorted set with a heartbeat; each takes about S / live workers
///   shards. One that holds more than its share (a worker joined) stops reading the
///   extra shards, finishes what it has in flight of them, and releases their leases; a
///   dead worker's leases expire after their TTL and the others take them.
/// - Every owner of a shard reads it as the same consumer (`owner`) of one group, so a
///   new owner inherits the previous owner's pending entries: it delivers them first, in
///   stream order, then reads new ones. Within its shards the runtime's `ordered(true)`
///   runs one update per chat at a time.
/// - The number of shards is recorded in Redis (`{prefix}:shards`) by the first bridge or
///   worker; one configured differently refuses to start ([`RedisTransportError::ShardCount`]):
///   changing S moves chats between shards, which would break their order.
///
/// Needs Redis 7.0 or newer, one server or a primary (the scripts touch several keys).
///
/// One runtime at a time; the runtime's final [`flush`](Transport::flush) releases the
/// leases (after which another worker takes them at once rather than after their TTL).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// use pollgate_redis::ShardedStreamTransport;
/// # fn demo() -> Result<(), pollgate_redis::RedisTransportError> {
/// let transport = ShardedStreamTransport::builder("redis://127.0.0.1:6379", "bot:updates", "workers")
///     .shards(16)
///     .lease_ttl(Duration::from_secs(10))
///     .build()?;
/// // Runtime::builder(transport, handler).ordered(true) … : one update per chat at a time
/// // across every worker.
/// # Ok(()) }
/// ```
pub struct ShardedStreamTransport {
    inner: Arc<Inner>,
    leases: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for ShardedStreamTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("ShardedStreamTransport")
            .field("url", &s.url)
            .field("prefix", &s.layout.prefix)
            .field("shards", &s.layout.shards)
            .field("group", &s.group)
            .field("worker", &s.worker)
            .field("lease_ttl", &s.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl Drop for ShardedStreamTransport {
    fn drop(&mut self) {
        if let Some(h) = self.leases.lock().take() {
            h.abort();
        }
    }
}

impl ShardedStreamTransport {
    /// This worker's name.
    pub fn worker(&self) -> &str {
        &self.inner.settings.worker
    }

    /// The shards this worker holds now, in order.
    pub fn shards_held(&self) -> Vec<u32> {
        self.inner.state.lock().held.keys().copied().collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ShardedStats {
        let c = &self.inner.stats;
        let r = |x: &AtomicU64| x.load(Ordering::Relaxed);
        ShardedStats {
            read: r(&c.read),
            recovered: r(&c.recovered),
            dead_lettered: r(&c.dead_lettered),
            deleted: r(&c.deleted),
            acked: r(&c.acked),
            fenced: r(&c.fenced),
            acquired: r(&c.acquired),
            lost: r(&c.lost),
            released: r(&c.released),
            retries: r(&c.retries),
            shards_held: self.inner.state.lock().held.len(),
        }
    }

    /// Checks the shard count, takes a first share of leases, and starts the lease task.
    async fn start(&self) -> Result<(), RedisTransportError> {
        if self.inner.started.load(Ordering::Acquire) {
            return Ok(());
        }
        let inner = &self.inner;
        check_shards(
            &inner.writer,
            &inner.settings.layout,
            &inner.settings.backoff,
            &inner.stats.retries,
        )
        .await?;
        // Register, then give workers started at about the same time a moment to register
        // too: the first round then splits the shards among them, rather than the first
        // taking them all and draining most of them again.
        inner.register().await?;
        tokio::time::sleep((inner.settings.lease_ttl / 3).min(SETTLE)).await;
        inner.lease_round().await?;
        inner.started.store(true, Ordering::Release);
        let mut slot = self.leases.lock();
        if slot.is_none() {
            let weak = Arc::downgrade(&self.inner);
            *slot = Some(tokio::spawn(lease_task(weak, inner.settings.lease_ttl / 4)));
        }
        Ok(())
    }
}

/// How long after its `BLOCK` a read may still be served (a round trip and a margin).
const READ_SLACK: Duration = Duration::from_millis(500);

/// Whether a command failed because the consumer group (or the stream) is gone.
fn group_missing(e: &RedisTransportError) -> bool {
    matches!(e, RedisTransportError::Refused { source, .. } if no_group(source))
}

/// FNV-1a of a string (a fixed starting point per worker name).
fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard, tenure and entry id of a receipt `{shard}/{tenure}/{id}`.
fn split_receipt(receipt: &str) -> Option<(u32, u64, &str)> {
    let (shard, rest) = receipt.split_once('/')?;
    let (tenure, id) = rest.split_once('/')?;
    Some((shard.parse().ok()?, tenure.parse().ok()?, id))
}

/// What a [`ShardedStreamTransport`] revokes: whatever it delivered under a lease it no
/// longer holds (lost, or given up and taken again: another tenure).
struct Revoked(Weak<Inner>);

impl Revocations for Revoked {
    fn is_revoked(&self, update: &Update) -> bool {
        let Some((shard, tenure, _)) = update.receipt().and_then(|r| split_receipt(r)) else {
            return false;
        };
        let Some(inner) = self.0.upgrade() else { return true };
        let mut st = inner.state.lock();
        inner.give_up_unconfirmed(&mut st, Instant::now());
        st.held.get(&shard).is_none_or(|h| h.tenure != tenure)
    }
}

impl Transport for ShardedStreamTransport {
    type Error = RedisTransportError;

    fn retries(&self) -> Vec<(&'static str, u64)> {
        vec![("redis", self.stats().retries)]
    }

    /// The `lag` of the group on the shards this worker holds (`XINFO GROUPS`, one
    /// pipeline): entries not yet delivered. Summed over the workers, it is the whole
    /// backlog. One round trip, no retries; `None` when it fails, when no shard is held,
    /// or when Redis cannot tell for a shard.
    async fn backlog(&self) -> Option<u64> {
        let inner = &*self.inner;
        let shards: Vec<u32> = inner.state.lock().held.keys().copied().collect();
        if shards.is_empty() {
            return None;
        }
        let mut pipe = redis::pipe();
        for &shard in &shards {
            pipe.cmd("XINFO").arg("GROUPS").arg(inner.settings.layout.stream(shard));
        }
        let mut conn = inner.writer.clone();
        let replies: Vec<Value> = pipe.query_async(&mut conn).await.ok()?;
        replies
            .into_iter()
            .map(|r| reply::group_lag(r, &inner.settings.group))
            .sum()
    }

    fn ack_model(&self) -> AckModel {
        AckModel::Individual {
            window: self.inner.settings.window,
        }
    }

    /// The previous owners' pending entries of newly held shards first (in stream order),
    /// then new entries of the held shards, blocking up to `min(timeout, max_block)` only
    /// when nothing else was found. Holding no shard, it waits for the lease task to take
    /// one (or the timeout).
    ///
    /// # Cancel safety
    ///
    /// Nothing is lost, but a drop can delay entries. Dropped while a read is waiting
    /// for Redis, its shards recover their pending entries before reading again, so what
    /// the read delivered comes first in the next fetch; dropped while recovering, the
    /// recovery starts over from where it was (each re-claim counts a delivery). Dropped
    /// after Redis answered a read, while the fetch moves an entry of the reply that is
    /// not an update to the dead-letter stream, the shards of the read recover too: the
    /// reply's other entries come first in the next fetch.
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, RedisTransportError> {
        self.start().await?;
        let inner = &*self.inner;
        let limit = request.limit.clamp(1, inner.settings.window);
        let changed = inner.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = Instant::now();
        let (recovering, reading) = {
            let mut st = inner.state.lock();
            inner.give_up_unconfirmed(&mut st, now);
            st.rotation = st.rotation.wrapping_add(1);
            let rot = st.rotation as usize;
            let mut usable: Vec<(u32, &Held)> = st
                .held
                .iter()
                .filter(|(_, h)| inner.usable(h, now))
                .map(|(&k, h)| (k, h))
                .collect();
            if !usable.is_empty() {
                let len = usable.len();
                usable.rotate_left(rot % len);
            }
            let recovering: Vec<u32> = usable
                .iter()
                .filter(|(_, h)| matches!(h.phase, Phase::Recovering { .. }))
                .map(|(k, _)| *k)
                .collect();
            let reading: Vec<(u32, Instant)> = usable
                .iter()
                .filter(|(_, h)| h.phase == Phase::Reading)
                .map(|(k, h)| (*k, h.confirmed + inner.settings.lease_ttl / 2))
                .collect();
            (recovering, reading)
        };
        let mut out = Vec::new();
        for shard in &recovering {
            if out.len() >= limit {
                break;
            }
            inner.ensure_group(*shard).await?;
            match inner.recover(*shard, limit - out.len(), &mut out).await {
                Err(e) if group_missing(&e) => inner.groups_lost([*shard]),
                other => other?,
            }
        }
        // Shards whose recovery just finished are read too.
        let mut reading = reading;
        if !recovering.is_empty() {
            let st = inner.state.lock();
            for shard in &recovering {
                if let Some(h) = st.held.get(shard).filter(|h| h.phase == Phase::Reading) {
                    reading.push((*shard, h.confirmed + inner.settings.lease_ttl / 2));
                }
            }
        }
        if out.len() < limit && !reading.is_empty() {
            for (shard, _) in &reading {
                inner.ensure_group(*shard).await?;
            }
            let block = if out.is_empty() {
                request.timeout.min(inner.settings.max_block)
            } else {
                Duration::ZERO
            };
            match inner.read_new(&reading, limit - out.len(), block, &mut out).await {
                Err(e) if group_missing(&e) => inner.groups_lost(reading.iter().map(|(k, _)| *k)),
                other => other?,
            }
        } else if out.is_empty() && recovering.is_empty() {
            // Nothing held (or nothing usable): wait for the lease task, not in a loop.
            let wait = request.timeout.min(inner.settings.max_block);
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        {
            let mut st = inner.state.lock();
            for u in &out {
                if let Some((shard, tenure, id)) = u.receipt().and_then(|r| split_receipt(r))
                    && let Some(h) = st.held.get_mut(&shard).filter(|h| h.tenure == tenure)
                {
                    h.in_flight.insert(Arc::from(id));
                }
            }
        }
        Ok(Batch {
            updates: out,
            ..Batch::default()
        })
    }

    /// Acknowledges finished entries, shard by shard, through the lease check; a
    /// draining shard with nothing left in flight is released at once.
    ///
    /// # Cancel safety
    ///
    /// Dropped, it may have acknowledged the entries of some shards and not others; what
    /// it did not stays in flight here. Acknowledging it again is harmless, and a
    /// draining shard it did not get to release is released by the next lease round.
    async fn ack(&self, ack: Ack<'_>) -> Result<(), RedisTransportError> {
        if ack.receipts.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let mut by_shard: BTreeMap<(u32, u64), Vec<&str>> = BTreeMap::new();
        for r in ack.receipts {
            if let Some((shard, tenure, id)) = split_receipt(r) {
                by_shard.entry((shard, tenure)).or_default().push(id);
            }
        }
        for ((shard, tenure), ids) in by_shard {
            // Only this tenure's deliveries: an entry delivered under a lease since lost
            // is the next holder's to acknowledge, even if this worker holds it again.
            let token = {
                let mut st = inner.state.lock();
                inner.give_up_unconfirmed(&mut st, Instant::now());
                st.held
                    .get(&shard)
                    .filter(|h| h.tenure == tenure)
                    .map(|h| h.token.clone())
            };
            match token {
                Some(token) => {
                    let acked = inner.fenced_ack(shard, &token, &ids).await?;
                    inner.stats.acked.fetch_add(acked, Ordering::Relaxed);
                }
                None => {
                    inner.stats.fenced.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    warn!(
                        shard,
                        entries = ids.len(),
                        "not acknowledged: this worker no longer holds the shard"
                    );
                }
            }
            let mut st = inner.state.lock();
            if let Some(h) = st.held.get_mut(&shard).filter(|h| h.tenure == tenure) {
                for id in &ids {
                    h.in_flight.remove(*id);
                }
                h.trim_due = true;
            }
        }
        let release = {
            let mut st = inner.state.lock();
            inner.drained(&mut st)
        };
        inner.release(release).await
    }

    /// Whatever this worker delivered under a lease it no longer holds: the runtime
    /// starts none of it (the lease's next holder runs it).
    fn revocations(&self) -> Option<Arc<dyn Revocations>> {
        Some(Arc::new(Revoked(Arc::downgrade(&self.inner))))
    }

    /// Releases every lease held (the runtime calls this once every handler finished or
    /// was given up; what is still in flight is delivered again by the next owner), and
    /// leaves the workers set, so the others take the shards at once.
    ///
    /// # Cancel safety
    ///
    /// The lease task stops at the first poll, whatever follows. Dropped before it
    /// completes, the leases it had not released yet expire after their TTL, and the
    /// other workers take those shards then rather than at once. Dropped while it waits
    /// out a read that may still be served (the first await), the transport keeps its
    /// leases, unrenewed until the next fetch starts the lease task again (a later flush
    /// waits the read out again).
    async fn flush(&self) -> Result<(), RedisTransportError> {
        if let Some(h) = self.leases.lock().take() {
            h.abort();
        }
        let inner = &*self.inner;
        // From here the lease task is gone: a fetch after a flush that was dropped midway
        // must start it again.
        inner.started.store(false, Ordering::Release);
        // A read that may still be served delivers to the owner: wait it out, or the next
        // owner could recover before it lands. Cleared only once waited out, so that a
        // flush dropped meanwhile leaves it for the next one.
        let blocked = inner.state.lock().blocked.as_ref().map(|(until, _)| *until);
        if let Some(until) = blocked {
            tokio::time::sleep_until(until).await;
            inner.state.lock().blocked = None;
        }
        let leases: Vec<(u32, String)> = {
            let mut st = inner.state.lock();
            let in_flight: usize = st.held.values().map(|h| h.in_flight.len()).sum();
            if in_flight > 0 {
                warn!(
                    entries = in_flight,
                    "releasing shards with entries not acknowledged; they will be delivered again"
                );
            }
            std::mem::take(&mut st.held)
                .into_iter()
                .map(|(k, h)| (k, h.token))
                .collect()
        };
        inner.release(leases).await?;
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(inner.settings.layout.workers()).arg(&inner.settings.worker);
        let _: Value = inner.query("ZREM", &cmd, &inner.writer).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: i64, chat: Option<i64>) -> Update {
        let json = match chat {
            Some(c) => format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":{c}}}}}}}"#),
            None => format!(r#"{{"update_id":{id},"poll":{{"id":"p"}}}}"#),
        };
        Update::from_json(&json).unwrap()
    }

    #[test]
    fn a_chat_has_one_shard_and_chats_and_keyless_updates_spread_evenly() {
        let mut counts = [0u32; 16];
        for chat in 0..16_000i64 {
            let s = shard_of(&update(1, Some(100_000_000 + chat * 7919)), 16);
            assert_eq!(s, shard_of(&update(2, Some(100_000_000 + chat * 7919)), 16));
            counts[s as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        let mut counts = [0u32; 16];
        for id in 0..16_000 {
            counts[shard_of(&update(id, None), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        // Fixed for ever: a bridge and a worker built from different versions agree.
        assert_eq!(shard_of(&update(1, Some(42)), 16), shard_of(&update(9, Some(42)), 16));
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn receipts_carry_their_shard() {
        assert_eq!(split_receipt("3/7/1700000000000-0"), Some((3, 7, "1700000000000-0")));
        assert_eq!(split_receipt("x/1/1-0"), None);
        assert_eq!(split_receipt("3/1-0"), None);
        assert_eq!(split_receipt("1-0"), None);
    }
}
