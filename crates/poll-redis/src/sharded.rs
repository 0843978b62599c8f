//! Sharded streams with leases: several workers, and still one update per chat at a time,
//! in order.
//!
//! # Why
//!
//! A consumer group hands the next entry to whichever worker asks, so two updates of one
//! chat can run at once on two workers, and the second can finish first. A conversation
//! (dialogue state, "reply to the previous message") needs each chat's updates one at a
//! time and in order. Kafka's answer is partitions with one owner each; this is the same
//! on Redis Streams:
//!
//! ```text
//!                          ┌─ {prefix}:shard:0 ──▶ owner: worker A (lease {prefix}:lease:0)
//!  bridge ─XADD by hash ───┼─ {prefix}:shard:1 ──▶ owner: worker B
//!  of the chat id          ├─ …                      each worker: ~S / workers shards,
//!                          └─ {prefix}:shard:S-1 ─▶   its own admission policy,
//!                                                     `ordered(true)` within them
//! ```
//!
//! - [`ShardedProducer`] appends each update to shard `hash(chat) mod S` ([`shard_of`]),
//!   so a chat's updates are in one stream, in order.
//! - [`ShardedStreamTransport`] reads only the shards it holds a lease on: a key set with
//!   `SET NX PX` to a token of this worker's tenure, renewed every quarter of its TTL, and
//!   checked by every acknowledgement (a script that `XACK`s only while the lease still
//!   holds the token). A worker that lost a lease acknowledges nothing more on that
//!   shard and reads nothing new from it: it reads a shard only while its last renewal
//!   is younger than half the TTL, and a blocking read never outlasts that.
//! - Workers register in a sorted set with a heartbeat; each takes about S / live workers
//!   shards. One that holds more than its share (a worker joined) stops reading the
//!   extra shards, finishes what it has in flight of them, and releases their leases; a
//!   dead worker's leases expire after their TTL and the others take them.
//! - Every owner of a shard reads it as the same consumer (`owner`) of one group, so a
//!   new owner inherits the previous owner's pending entries: it delivers them first, in
//!   stream order, then reads new ones. Within its shards the runtime's `ordered(true)`
//!   runs one update per chat at a time.
//! - The number of shards is recorded in Redis (`{prefix}:shards`) by the first bridge or
//!   worker; one configured differently refuses to start ([`RedisTransportError::ShardCount`]):
//!   changing S moves chats between shards, which would break their order.
//!
//! Needs Redis 7.0 or newer, one server or a primary (the scripts touch several keys).

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

use crate::durable::{Appender, DEFAULT_WINDOW};
use crate::error::{RedisTransportError, no_group, transient};
use crate::producer::update_fields;
use crate::reply::{self, Entry};
use crate::retry::{DEFAULT_MAX_OUTAGE, outage_backoff, with_retries};
use crate::transport::{DEFAULT_FIELD, connection, decode, default_consumer, open_client, redact_url};

/// Shards when none are configured.
pub const DEFAULT_SHARDS: u32 = 16;

/// How long a starting worker waits (at most a third of the lease TTL) for workers started
/// with it to register, before taking its share.
const SETTLE: Duration = Duration::from_secs(1);

/// The consumer name every owner of a shard reads it as, so that pending entries pass
/// from one owner to the next.
const OWNER: &str = "owner";

/// The shard of `update` among `shards`: a stable hash of its ordering key (its chat), or
/// of its id when it has none (spread evenly).
///
/// # Panics
/// If `shards` is 0.
///
/// # Examples
///
/// ```
/// use pollgate_core::Update;
/// use pollgate_redis::shard_of;
///
/// let a = Update::from_json(r#"{"update_id":1,"message":{"chat":{"id":42}}}"#).unwrap();
/// let b = Update::from_json(r#"{"update_id":2,"message":{"chat":{"id":42}}}"#).unwrap();
/// assert_eq!(shard_of(&a, 16), shard_of(&b, 16), "one chat, one shard");
/// assert!(shard_of(&a, 16) < 16);
/// ```
pub fn shard_of(update: &Update, shards: u32) -> u32 {
    assert!(shards > 0, "shard_of: at least one shard");
    let x = match update.key() {
        Some(key) => key as u64,
        None => (update.id() as u64) ^ 0x5bd1_e995_5bd1_e995,
    };
    (splitmix64(x) % u64::from(shards)) as u32
}

/// SplitMix64's finalizer: a fixed, well-mixed hash of a 64-bit value (stable across
/// versions and platforms, unlike `std`'s hasher).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The keys of a sharded layout under one prefix.
#[derive(Debug, Clone)]
struct Layout {
    prefix: String,
    shards: u32,
}

impl Layout {
    fn stream(&self, shard: u32) -> String {
        format!("{}:shard:{shard}", self.prefix)
    }
    fn lease(&self, shard: u32) -> String {
        format!("{}:lease:{shard}", self.prefix)
    }
    fn shards_key(&self) -> String {
        format!("{}:shards", self.prefix)
    }
    fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }
}

/// Records the number of shards if none is, and returns the recorded one.
const SHARDS: &str = "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])";

/// Checks that Redis records `layout.shards` shards under the prefix (recording it if it
/// is the first).
async fn check_shards(
    conn: &ConnectionManager,
    layout: &Layout,
    backoff: &Backoff,
    retries: &AtomicU64,
) -> Result<(), RedisTransportError> {
    let key = layout.shards_key();
    let recorded: String = with_retries(backoff, retries, "EVAL (shards)", || {
        let mut conn = conn.clone();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SHARDS).arg(1).arg(&key).arg(layout.shards);
        async move { cmd.query_async(&mut conn).await }
    })
    .await?;
    match recorded.parse::<u32>() {
        Ok(n) if n == layout.shards => Ok(()),
        _ => Err(RedisTransportError::ShardCount {
            key,
            recorded,
            configured: layout.shards,
        }),
    }
}

/// Appends updates to the shard streams of a prefix (`XADD {prefix}:shard:N`), each to
/// its chat's shard ([`shard_of`]), for a bridge; see the [module docs](self).
///
/// # Examples
///
/// ```no_run
/// use pollgate_core::Update;
/// use pollgate_redis::ShardedProducer;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let producer = ShardedProducer::builder("redis://127.0.0.1:6379", "bot:updates").shards(16).build()?;
/// let update = Update::from_json(r#"{"update_id": 1, "message": {"chat": {"id": 7}}}"#)?;
/// producer.add(&update).await?; // returns once Redis stored it
/// # Ok(()) }
/// ```
pub struct ShardedProducer {
    appender: Appender,
    conn: ConnectionManager,
    url: String,
    layout: Layout,
    field: String,
    backoff: Backoff,
    checked: AtomicBool,
    retries: AtomicU64,
}

impl fmt::Debug for ShardedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedProducer")
            .field("url", &self.url)
            .field("prefix", &self.layout.prefix)
            .field("shards", &self.layout.shards)
            .field("appender", &self.appender)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`ShardedProducer`]; see [`ShardedProducer::builder`].
#[derive(Clone)]
pub struct ShardedProducerBuilder {
    url: String,
    prefix: String,
    shards: u32,
    field: String,
    backoff: Backoff,
    window: Duration,
}

impl fmt::Debug for ShardedProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedProducerBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl ShardedProducerBuilder {
    /// How many shards (default [`DEFAULT_SHARDS`]); must match what Redis records.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// The entry field the update's JSON goes into (default `update`).
    pub fn field(mut self, name: impl Into<String>) -> Self {
        self.field = name.into();
        self
    }

    /// Retry delays for transient failures (default: those of
    /// [`max_outage`](Self::max_outage) with [`DEFAULT_MAX_OUTAGE`](crate::DEFAULT_MAX_OUTAGE)).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// As [`StreamProducerBuilder::max_outage`](crate::StreamProducerBuilder::max_outage).
    pub fn max_outage(mut self, outage: Duration) -> Self {
        self.backoff = outage_backoff(outage);
        self
    }

    /// As [`StreamProducerBuilder::durability_window`](crate::StreamProducerBuilder::durability_window).
    pub fn durability_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Builds the producer (connecting lazily). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisTransportError::Config`] for an empty prefix, no shards or a bad URL.
    pub fn build(self) -> Result<ShardedProducer, RedisTransportError> {
        if self.prefix.is_empty() || self.shards == 0 {
            return Err(RedisTransportError::Config(
                "the prefix must not be empty and there must be at least one shard".into(),
            ));
        }
        let client = open_client(&self.url)?;
        let conn = connection(&client, Some(Duration::from_secs(5)))?;
        Ok(ShardedProducer {
            appender: Appender::new(conn.clone(), self.backoff.clone(), self.window, None),
            conn,
            url: redact_url(&self.url),
            layout: Layout {
                prefix: self.prefix,
                shards: self.shards,
            },
            field: self.field,
            backoff: self.backoff,
            checked: AtomicBool::new(false),
            retries: AtomicU64::new(0),
        })
    }
}

impl ShardedProducer {
    /// Starts configuring a producer for the shard streams under `prefix` on the server
    /// at `url`.
    pub fn builder(url: impl Into<String>, prefix: impl Into<String>) -> ShardedProducerBuilder {
        ShardedProducerBuilder {
            url: url.into(),
            prefix: prefix.into(),
            shards: DEFAULT_SHARDS,
            field: DEFAULT_FIELD.into(),
            backoff: outage_backoff(DEFAULT_MAX_OUTAGE),
            window: DEFAULT_WINDOW,
        }
    }

    /// Appends one update to its shard and returns `(shard, entry id)` once Redis stored
    /// it. The first call checks the number of shards Redis records.
    ///
    /// # Errors
    /// [`RedisTransportError::ShardCount`] when Redis records another number of shards;
    /// otherwise as [`StreamProducer::add`](crate::StreamProducer::add).
    pub async fn add(&self, update: &Update) -> Result<(u32, String), RedisTransportError> {
        if !self.checked.load(Ordering::Acquire) {
            check_shards(&self.conn, &self.layout, &self.backoff, &self.retries).await?;
            self.checked.store(true, Ordering::Release);
        }
        let shard = shard_of(update, self.layout.shards);
        let stream = self.layout.stream(shard);
        let id = self
            .appender
            .append(&stream, update_fields(&self.field, update))
            .await?;
        Ok((shard, id))
    }

    /// Entries appended so far.
    pub fn added(&self) -> u64 {
        self.appender.added.load(Ordering::Relaxed)
    }

    /// Appends retried after a transient failure.
    pub fn retries(&self) -> u64 {
        self.appender.retries.load(Ordering::Relaxed) + self.retries.load(Ordering::Relaxed)
    }

    /// Appends a restarted Redis had lost, appended again.
    pub fn reappended(&self) -> u64 {
        self.appender.reappended.load(Ordering::Relaxed)
    }

    /// The shard streams' names, in shard order (for monitoring: `XLEN`, `XPENDING`).
    pub fn streams(&self) -> Vec<String> {
        (0..self.layout.shards).map(|s| self.layout.stream(s)).collect()
    }
}

/// Registers this worker, drops workers silent for a TTL, returns how many are alive.
const WORKERS: &str = "local t = redis.call('TIME') \
    local now = t[1] * 1000 + math.floor(t[2] / 1000) \
    redis.call('ZADD', KEYS[1], now, ARGV[1]) \
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2])) \
    return redis.call('ZCARD', KEYS[1])";

/// Renews each lease (KEYS[i]) still holding its token (ARGV[i + 1]): 1, else 0.
const RENEW: &str = "local r = {} \
    for i, k in ipairs(KEYS) do \
      if redis.call('GET', k) == ARGV[i + 1] then redis.call('PEXPIRE', k, ARGV[1]) r[i] = 1 else r[i] = 0 end \
    end \
    return r";

/// Takes up to ARGV[2] of the free leases KEYS (in order), each with its token ARGV[i + 2]:
/// 1 for each taken (or already holding that token: a retry after a lost reply), else 0.
const ACQUIRE: &str = "local want = tonumber(ARGV[2]) local r = {} \
    for i, k in ipairs(KEYS) do \
      if want > 0 and (redis.call('SET', k, ARGV[i + 2], 'NX', 'PX', ARGV[1]) or redis.call('GET', k) == ARGV[i + 2]) then r[i] = 1 want = want - 1 else r[i] = 0 end \
    end \
    return r";

/// Deletes each lease KEYS[i] that still holds its token ARGV[i].
const RELEASE: &str = "for i, k in ipairs(KEYS) do \
      if redis.call('GET', k) == ARGV[i] then redis.call('DEL', k) end \
    end \
    return 0";

/// `XACK`s ARGV[3..] while the lease KEYS[2] holds the token ARGV[2]; -1 when it does not.
const FENCED_ACK: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end \
    return redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))";

/// Claims ARGV[4..] for the owner (counting a delivery) while the lease holds the token;
/// nil when it does not.
const FENCED_CLAIM: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[3] then return false end \
    return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ARGV, 4))";

/// Adds an entry to the dead-letter stream and acknowledges it, while the lease holds the
/// token and the entry is still pending (a retry after a lost reply adds nothing); -1
/// when the lease does not hold the token, 0 when the entry is not pending.
const FENCED_DEAD: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end \
    if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1) == 0 then return 0 end \
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4)) \
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) \
    return 1";

/// Trims a shard stream (KEYS[1]) below what its group (ARGV[1]) has delivered and
/// acknowledged, while the lease (KEYS[2]) holds the token (ARGV[2]): below the oldest
/// pending entry, or the last delivered one. Returns how many entries went.
const TRIM: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end \
    local last = nil \
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do \
      local name, ld = nil, nil \
      for i = 1, #g, 2 do \
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end \
      end \
      if name == ARGV[1] then last = ld end \
    end \
    if not last then return 0 end \
    local p = redis.call('XPENDING', KEYS[1], ARGV[1]) \
    local below = last \
    if p[1] > 0 then below = p[2] end \
    return redis.call('XTRIM', KEYS[1], 'MINID', below)";

/// Configuration of a [`ShardedStreamTransport`]; see [`ShardedStreamTransport::builder`].
#[derive(Clone)]
pub struct ShardedStreamTransportBuilder {
    url: String,
    prefix: String,
    group: String,
    shards: u32,
    worker: Option<String>,
    field: String,
    lease_ttl: Duration,
    max_deliveries: u32,
    max_block: Duration,
    window: usize,
    backoff: Backoff,
}

impl fmt::Debug for ShardedStreamTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedStreamTransportBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("group", &self.group)
            .field("shards", &self.shards)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl ShardedStreamTransportBuilder {
    /// How many shards (default [`DEFAULT_SHARDS`]); must match what Redis records.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// This worker's name in the workers set and in its lease tokens (default
    /// `{hostname}-{pid}`).
    pub fn worker(mut self, name: impl Into<String>) -> Self {
        self.worker = Some(name.into());
        self
    }

    /// The entry field holding the update's JSON (default `update`).
    pub fn field(mut self, name: impl Into<String>) -> Self {
        self.field = name.into();
        self
    }

    /// How long a lease outlives its last renewal (default 10 s): a dead worker's shards
    /// are taken over about this long after it died, plus a quarter of it. Renewals run
    /// every quarter of it; a worker stops reading a shard half of it after its last
    /// successful renewal. Keep it well above Redis' worst pause (a failover, a slow
    /// fork): a lease that expires under a live worker stops its shard until it is taken
    /// again, and a handler still running there may overlap the next owner's.
    ///
    /// # Panics
    /// If `ttl` is under 300 ms.
    #[track_caller]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        assert!(ttl >= Duration::from_millis(300), "lease_ttl must be at least 300 ms");
        self.lease_ttl = ttl;
        self
    }

    /// Deliveries after which an entry goes to the dead-letter stream (default 5).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// The longest a fetch blocks waiting for new entries (default 2 s; never more than a
    /// quarter of the lease TTL).
    pub fn max_block(mut self, d: Duration) -> Self {
        self.max_block = d;
        self
    }

    /// Most entries in flight at once (the runtime's acknowledgement window, default 512).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// Retry delays for transient failures (default: those of
    /// [`max_outage`](Self::max_outage) with [`DEFAULT_MAX_OUTAGE`](crate::DEFAULT_MAX_OUTAGE)).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Rides out a Redis outage of at least `outage` (default 5 minutes) before a fetch
    /// or an acknowledgement fails with [`RedisTransportError::Unavailable`] (and the
    /// runtime stops); retries 100 ms doubling to 1 s. Meanwhile renewals fail, so the
    /// worker stops reading at half the lease TTL, and takes its shards again (or others
    /// do) once Redis answers.
    pub fn max_outage(mut self, outage: Duration) -> Self {
        self.backoff = outage_backoff(outage);
        self
    }

    /// Builds the transport (connecting lazily). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisTransportError::Config`] for an empty prefix or group, no shards, or a bad
    /// URL.
    pub fn build(self) -> Result<ShardedStreamTransport, RedisTransportError> {
        if self.prefix.is_empty() || self.group.is_empty() || self.shards == 0 {
            return Err(RedisTransportError::Config(
                "the prefix and group must not be empty and there must be at least one shard".into(),
            ));
        }
        let client = open_client(&self.url)?;
        let max_block = self.max_block.min(self.lease_ttl / 4);
        let worker = self.worker.unwrap_or_else(default_consumer);
        let nonce = splitmix64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()),
        );
        Ok(ShardedStreamTransport {
            inner: Arc::new(Inner {
                reader: connection(&client, Some(max_block + Duration::from_secs(5)))?,
                writer: connection(&client, Some(Duration::from_secs(5)))?,
                settings: Settings {
                    url: redact_url(&self.url),
                    layout: Layout {
                        prefix: self.prefix,
                        shards: self.shards,
                    },
                    group: self.group,
                    token: format!("{worker}/{nonce:016x}"),
                    worker,
                    field: self.field,
                    lease_ttl: self.lease_ttl,
                    max_deliveries: self.max_deliveries,
                    max_block,
                    window: self.window,
                    backoff: self.backoff,
                },
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                started: AtomicBool::new(false),
                stats: Counters::default(),
            }),
            leases: Mutex::new(None),
        })
    }
}

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

/// Reads the shard streams this worker holds leases on; see the [module docs](self).
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
    /// Starts configuring a worker reading the shard streams under `prefix` as a member
    /// of consumer `group`, on the Redis server at `url`.
    pub fn builder(
        url: impl Into<String>,
        prefix: impl Into<String>,
        group: impl Into<String>,
    ) -> ShardedStreamTransportBuilder {
        ShardedStreamTransportBuilder {
            url: url.into(),
            prefix: prefix.into(),
            group: group.into(),
            shards: DEFAULT_SHARDS,
            worker: None,
            field: DEFAULT_FIELD.into(),
            lease_ttl: Duration::from_secs(10),
            max_deliveries: 5,
            max_block: Duration::from_secs(2),
            window: 512,
            backoff: outage_backoff(DEFAULT_MAX_OUTAGE),
        }
    }

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

/// Every `every` (a quarter of the TTL: a renewal late by up to another quarter still keeps the shard, which is given up half a TTL after the last one): heartbeat, renew, balance.
async fn lease_task(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first round ran in `start`
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.lease_round().await {
            warn!(error = %e, "lease round failed; retrying at the next tick");
        }
    }
}

impl Inner {
    /// One command with the transport's retries.
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
        conn: &ConnectionManager,
    ) -> Result<T, RedisTransportError> {
        with_retries(&self.settings.backoff, &self.stats.retries, command, || {
            let mut conn = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        })
        .await
    }

    fn script(script: &str, keys: &[String]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(k);
        }
        cmd
    }

    /// Heartbeats into the workers set; returns how many workers are alive.
    async fn register(&self) -> Result<u64, RedisTransportError> {
        let s = &self.settings;
        let mut cmd = Self::script(WORKERS, &[s.layout.workers()]);
        cmd.arg(&s.worker).arg(s.lease_ttl.as_millis() as u64);
        self.query("EVAL (workers)", &cmd, &self.writer).await
    }

    /// Heartbeat, renew what is held, take or give up shards to hold about S / workers.
    async fn lease_round(&self) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let ttl_ms = s.lease_ttl.as_millis() as u64;
        let workers = self.register().await?;
        let share = s.layout.shards.div_ceil(workers.max(1) as u32);

        // Renew (what was not confirmed for half a TTL is given up first: it may already
        // be someone else's).
        let held: Vec<(u32, String)> = {
            let mut st = self.state.lock();
            self.give_up_unconfirmed(&mut st, Instant::now());
            st.held.iter().map(|(&k, h)| (k, h.token.clone())).collect()
        };
        if !held.is_empty() {
            let keys: Vec<String> = held.iter().map(|(k, _)| s.layout.lease(*k)).collect();
            let mut cmd = Self::script(RENEW, &keys);
            cmd.arg(ttl_ms);
            for (_, t) in &held {
                cmd.arg(t);
            }
            let sent = Instant::now();
            let renewed: Vec<i64> = self.query("EVAL (renew)", &cmd, &self.writer).await?;
            let mut st = self.state.lock();
            for ((shard, token), ok) in held.iter().zip(renewed) {
                let Some(h) = st.held.get_mut(shard).filter(|h| &h.token == token) else {
                    continue;
                };
                if ok == 1 {
                    h.confirmed = sent;
                } else {
                    let in_flight = h.in_flight.len();
                    st.held.remove(shard);
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        shard,
                        in_flight, "shard lease lost: reading and acknowledging nothing more there"
                    );
                }
            }
        }

        // Trim what every owner has acknowledged (where something was, since the last
        // trim): the streams would grow for ever.
        let trim: Vec<(u32, String)> = {
            let mut st = self.state.lock();
            st.held
                .iter_mut()
                .filter_map(|(&k, h)| (h.group_ready && std::mem::take(&mut h.trim_due)).then(|| (k, h.token.clone())))
                .collect()
        };
        for (shard, token) in trim {
            let mut cmd = Self::script(TRIM, &[s.layout.stream(shard), s.layout.lease(shard)]);
            cmd.arg(&s.group).arg(&token);
            match self.query::<i64>("EVAL (trim)", &cmd, &self.writer).await {
                Ok(n) if n > 0 => debug!(shard, trimmed = n, "acknowledged entries trimmed"),
                Ok(_) => {}
                Err(e) if group_missing(&e) => self.groups_lost([shard]),
                Err(e) => return Err(e),
            }
        }

        // Balance: drain what is over the share, take free shards up to it.
        let (active, release) = {
            let mut st = self.state.lock();
            let mut active: Vec<u32> = st
                .held
                .iter()
                .filter(|(_, h)| h.phase != Phase::Draining)
                .map(|(&k, _)| k)
                .collect();
            // Drain the shards with the least in flight first.
            active.sort_by_key(|k| st.held[k].in_flight.len());
            while active.len() > share as usize {
                let shard = active.remove(0);
                debug!(shard, share, "over the share: draining the shard");
                if let Some(h) = st.held.get_mut(&shard) {
                    h.phase = Phase::Draining;
                }
            }
            (active.len(), self.drained(&mut st))
        };
        self.release(release).await?;
        if active < share as usize {
            self.acquire(share as usize - active).await?;
        }
        Ok(())
    }

    /// Removes the draining shards with nothing in flight; returns their leases.
    fn drained(&self, st: &mut State) -> Vec<(u32, String)> {
        // Not under a read that may still be served: its entries would be delivered to
        // the owner after the next one had recovered.
        let now = Instant::now();
        let busy: Vec<u32> = match &st.blocked {
            Some((until, shards)) if now < *until => shards.clone(),
            _ => Vec::new(),
        };
        let done: Vec<u32> = st
            .held
            .iter()
            .filter(|(k, h)| h.phase == Phase::Draining && h.in_flight.is_empty() && !busy.contains(k))
            .map(|(&k, _)| k)
            .collect();
        done.into_iter()
            .filter_map(|k| st.held.remove(&k).map(|h| (k, h.token)))
            .collect()
    }

    /// Deletes the leases that still hold their tokens.
    async fn release(&self, leases: Vec<(u32, String)>) -> Result<(), RedisTransportError> {
        if leases.is_empty() {
            return Ok(());
        }
        let s = &self.settings;
        let keys: Vec<String> = leases.iter().map(|(k, _)| s.layout.lease(*k)).collect();
        let mut cmd = Self::script(RELEASE, &keys);
        for (_, t) in &leases {
            cmd.arg(t);
        }
        let _: Value = self.query("EVAL (release)", &cmd, &self.writer).await?;
        self.stats.released.fetch_add(leases.len() as u64, Ordering::Relaxed);
        info!(shards = ?leases.iter().map(|(k, _)| k).collect::<Vec<_>>(), "shard leases released");
        Ok(())
    }

    /// Takes up to `want` free shards, starting at a place of this worker's own (so that
    /// workers do not all contend for shard 0).
    async fn acquire(&self, want: usize) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let n = s.layout.shards;
        let (candidates, tokens) = {
            let mut st = self.state.lock();
            let start = (splitmix64(s.token.len() as u64 ^ hash_str(&s.token)) % u64::from(n)) as u32;
            let free: Vec<u32> = (0..n)
                .map(|i| (start + i) % n)
                .filter(|k| !st.held.contains_key(k))
                .collect();
            let tokens: Vec<(u64, String)> = free
                .iter()
                .map(|_| {
                    st.tenures += 1;
                    (st.tenures, format!("{}:{}", s.token, st.tenures))
                })
                .collect();
            (free, tokens)
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = candidates.iter().map(|k| s.layout.lease(*k)).collect();
        let mut cmd = Self::script(ACQUIRE, &keys);
        cmd.arg(s.lease_ttl.as_millis() as u64).arg(want);
        for (_, t) in &tokens {
            cmd.arg(t);
        }
        let sent = Instant::now();
        let taken: Vec<i64> = self.query("EVAL (acquire)", &cmd, &self.writer).await?;
        let mut new = Vec::new();
        {
            let mut st = self.state.lock();
            for ((shard, (tenure, token)), ok) in candidates.into_iter().zip(tokens).zip(taken) {
                if ok == 1 {
                    st.held.insert(
                        shard,
                        Held {
                            tenure,
                            token,
                            confirmed: sent,
                            phase: Phase::Recovering { cursor: None },
                            group_ready: false,
                            in_flight: HashSet::new(),
                            trim_due: true,
                        },
                    );
                    new.push(shard);
                }
            }
        }
        if !new.is_empty() {
            self.stats.acquired.fetch_add(new.len() as u64, Ordering::Relaxed);
            info!(shards = ?new, "shard leases taken");
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Whether `h` may still be read: its lease was confirmed less than half a TTL ago.
    fn usable(&self, h: &Held, now: Instant) -> bool {
        now < h.confirmed + self.settings.lease_ttl / 2
    }

    /// Gives up the shards whose lease has not been confirmed for half a TTL (Redis is
    /// unreachable, or this process was paused): the lease may expire at the server
    /// before this worker can renew it, and another worker take the shard. From now on
    /// nothing delivered under them starts here (revoked) or is acknowledged here; the
    /// next owner delivers it again.
    fn give_up_unconfirmed(&self, st: &mut State, now: Instant) {
        let stale: Vec<u32> = st
            .held
            .iter()
            .filter(|(_, h)| !self.usable(h, now))
            .map(|(&k, _)| k)
            .collect();
        for shard in stale {
            if let Some(h) = st.held.remove(&shard) {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                warn!(
                    shard,
                    in_flight = h.in_flight.len(),
                    "shard lease not confirmed for half its TTL: given up (its next owner delivers what was in flight)"
                );
            }
        }
    }

    /// Creates the group on a shard stream unless done this tenure.
    async fn ensure_group(&self, shard: u32) -> Result<(), RedisTransportError> {
        if self.state.lock().held.get(&shard).is_none_or(|h| h.group_ready) {
            return Ok(());
        }
        let s = &self.settings;
        let stream = s.layout.stream(shard);
        with_retries(&s.backoff, &self.stats.retries, "XGROUP CREATE", || {
            let mut conn = self.writer.clone();
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE").arg(&stream).arg(&s.group).arg("0").arg("MKSTREAM");
            async move {
                match cmd.query_async::<Value>(&mut conn).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        if let Some(h) = self.state.lock().held.get_mut(&shard) {
            h.group_ready = true;
        }
        Ok(())
    }

    /// Delivers up to `count` of the previous owners' pending entries of `shard`, in
    /// stream order; moves the shard to reading once there are no more.
    async fn recover(&self, shard: u32, count: usize, out: &mut Vec<Update>) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let (tenure, token, cursor, in_flight) = {
            let st = self.state.lock();
            let Some(h) = st.held.get(&shard) else { return Ok(()) };
            let Phase::Recovering { cursor } = &h.phase else {
                return Ok(());
            };
            (h.tenure, h.token.clone(), cursor.clone(), h.in_flight.clone())
        };
        let stream = s.layout.stream(shard);
        let start = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&stream).arg(&s.group).arg(start).arg("+").arg(count).arg(OWNER);
        let rows = reply::pending(self.query("XPENDING", &cmd, &self.writer).await?)?;
        let done = rows.len() < count;
        let last = rows.last().map(|(id, _)| id.clone());
        let ids: Vec<(String, u64)> = rows
            .into_iter()
            .filter(|(id, _)| !in_flight.contains(id.as_str()))
            .collect();
        if !ids.is_empty() {
            let mut cmd = Self::script(FENCED_CLAIM, &[stream.clone(), s.layout.lease(shard)]);
            cmd.arg(&s.group).arg(OWNER).arg(&token);
            for (id, _) in &ids {
                cmd.arg(id);
            }
            let claimed: Value = self.query("EVAL (claim)", &cmd, &self.writer).await?;
            if claimed == Value::Nil {
                // The lease is gone: stop now (a fetch would otherwise come straight back
                // to this shard until the next renewal).
                let mut st = self.state.lock();
                if st.held.get(&shard).is_some_and(|h| h.token == token) {
                    st.held.remove(&shard);
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    warn!(shard, "shard lease lost during recovery");
                }
                return Ok(());
            }
            let entries = reply::entries("XCLAIM", claimed)?;
            let present: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let deleted = ids.iter().filter(|(id, _)| !present.contains(id.as_str())).count();
            if deleted > 0 {
                warn!(
                    shard,
                    entries = deleted,
                    "pending entries were deleted from the stream before being handled"
                );
                self.stats.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
            }
            let deliveries: std::collections::HashMap<&str, u64> =
                ids.iter().map(|(id, d)| (id.as_str(), d + 1)).collect();
            let with_counts = entries
                .into_iter()
                .map(|e| {
                    let d = deliveries.get(e.id.as_str()).copied().unwrap_or(1);
                    (e, d)
                })
                .collect();
            self.accept((shard, tenure), &token, with_counts, true, out).await?;
        }
        let mut st = self.state.lock();
        if let Some(h) = st
            .held
            .get_mut(&shard)
            .filter(|h| h.token == token && h.phase != Phase::Draining)
        {
            h.phase = if done {
                Phase::Reading
            } else {
                Phase::Recovering { cursor: last }
            };
        }
        Ok(())
    }

    /// Turns entries of `shard` into updates with receipts `{shard}/{id}`; over-delivered
    /// and malformed entries go to the dead-letter stream.
    async fn accept(
        &self,
        (shard, tenure): (u32, u64),
        token: &str,
        entries: Vec<(Entry, u64)>,
        recovered: bool,
        out: &mut Vec<Update>,
    ) -> Result<(), RedisTransportError> {
        let max = u64::from(self.settings.max_deliveries);
        for (entry, deliveries) in entries {
            if entry.fields.is_none() {
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
                self.fenced_ack(shard, token, &[entry.id.as_str()]).await?;
                continue;
            }
            if deliveries > max {
                let reason =
                    format!("delivered {deliveries} times (max_deliveries {max}) without its handler finishing");
                self.dead_letter(shard, token, &entry, &reason, deliveries).await?;
                continue;
            }
            match decode(&entry, &self.settings.field) {
                Ok(update) => {
                    out.push(update.with_receipt(Arc::<str>::from(format!("{shard}/{tenure}/{}", entry.id))));
                    let counter = if recovered {
                        &self.stats.recovered
                    } else {
                        &self.stats.read
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => self.dead_letter(shard, token, &entry, &reason, deliveries).await?,
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        shard: u32,
        token: &str,
        entry: &Entry,
        reason: &str,
        deliveries: u64,
    ) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let stream = s.layout.stream(shard);
        let mut cmd = Self::script(FENCED_DEAD, &[stream.clone(), s.layout.lease(shard), s.layout.dead()]);
        cmd.arg(&s.group).arg(token).arg(&entry.id);
        for (field, value) in entry.fields.iter().flatten() {
            cmd.arg(field).arg(value.as_slice());
        }
        cmd.arg("pollgate_reason")
            .arg(reason)
            .arg("pollgate_source_stream")
            .arg(&stream)
            .arg("pollgate_source_id")
            .arg(&entry.id)
            .arg("pollgate_deliveries")
            .arg(deliveries)
            .arg("pollgate_consumer")
            .arg(&s.worker);
        let moved: i64 = self.query("EVAL (dead letter)", &cmd, &self.writer).await?;
        if moved == 1 {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            error!(shard, entry = %entry.id, deliveries, reason, "entry moved to the dead-letter stream");
        }
        Ok(())
    }

    /// `XACK`s `ids` of `shard` while this tenure's lease holds; returns how many.
    async fn fenced_ack(&self, shard: u32, token: &str, ids: &[&str]) -> Result<u64, RedisTransportError> {
        let s = &self.settings;
        let mut acked = 0;
        for chunk in ids.chunks(1000) {
            let mut cmd = Self::script(FENCED_ACK, &[s.layout.stream(shard), s.layout.lease(shard)]);
            cmd.arg(&s.group).arg(token);
            for id in chunk {
                cmd.arg(*id);
            }
            let n: i64 = match self.query("EVAL (ack)", &cmd, &self.writer).await {
                Ok(n) => n,
                Err(e) if group_missing(&e) => {
                    // Gone with the group (Redis lost its data): nothing to acknowledge.
                    self.groups_lost([shard]);
                    self.stats.fenced.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n < 0 {
                self.stats.fenced.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                warn!(
                    shard,
                    entries = chunk.len(),
                    "not acknowledged: the shard's lease was lost (its next owner delivers them again)"
                );
            } else {
                acked += n as u64;
            }
        }
        Ok(acked)
    }

    /// Reads new entries from the readable shards, at most `limit`, blocking up to
    /// `block` (never past the shards' usable time).
    ///
    /// One attempt only: a read resent after a failure would carry a `BLOCK` and a list
    /// of shards computed before it (a lease may be gone by then), and the lost reply may
    /// have delivered entries. On a failure the shards it covered recover their pending
    /// entries before reading again, after a backoff delay; the fetch returns what it has.
    async fn read_new(
        &self,
        shards: &[(u32, Instant)],
        limit: usize,
        block: Duration,
        out: &mut Vec<Update>,
    ) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        // `COUNT` is per stream: read at most `limit` shards, `limit / n` from each, so
        // that the batch never exceeds what the policy admits (the caller rotates which
        // shards come first). With more readable shards than that, do not block: the
        // others may have entries.
        let cut = shards.len() > limit;
        let shards = &shards[..shards.len().min(limit)];
        let per = limit / shards.len().max(1);
        let until = shards.iter().map(|(_, u)| *u).min().unwrap_or_else(Instant::now);
        let block = if cut {
            Duration::ZERO
        } else {
            block.min(until.saturating_duration_since(Instant::now()))
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&s.group).arg(OWNER).arg("COUNT").arg(per);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for (k, _) in shards {
            cmd.arg(s.layout.stream(*k));
        }
        for _ in shards {
            cmd.arg(">");
        }
        // Until its reply arrives the read may still be served: its shards are neither
        // released nor flushed before then, and a fetch dropped meanwhile marks them for
        // recovery.
        let covered: Vec<u32> = shards.iter().map(|(k, _)| *k).collect();
        self.state.lock().blocked = Some((Instant::now() + block + READ_SLACK, covered.clone()));
        let mut guard = ReadGuard {
            inner: self,
            shards: covered,
            armed: true,
        };
        let mut conn = self.reader.clone();
        let value = match cmd.query_async::<Value>(&mut conn).await {
            Ok(v) => {
                guard.armed = false;
                let mut st = self.state.lock();
                st.blocked = None;
                st.read_failures = 0;
                v
            }
            Err(e) => {
                drop(guard); // the shards recover first
                if no_group(&e) {
                    self.groups_lost(shards.iter().map(|(k, _)| *k));
                }
                if !(transient(&e) || no_group(&e)) {
                    return Err(RedisTransportError::Refused {
                        command: "XREADGROUP",
                        source: e,
                    });
                }
                let failures = {
                    let mut st = self.state.lock();
                    st.read_failures += 1;
                    st.read_failures
                };
                if s.backoff.max_retries.is_some_and(|max| failures > max) {
                    return Err(RedisTransportError::Unavailable {
                        command: "XREADGROUP",
                        attempts: failures,
                        source: e,
                    });
                }
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                let delay = s.backoff.delay(failures);
                warn!(error = %e, attempt = failures, ?delay, "XREADGROUP failed; recovering the shards' pending entries, then reading again");
                tokio::time::sleep(delay).await;
                return Ok(());
            }
        };
        for (stream, entries) in reply::read_groups(value)? {
            let Some(shard) = stream.rsplit(':').next().and_then(|k| k.parse::<u32>().ok()) else {
                continue;
            };
            let held = self.state.lock().held.get(&shard).map(|h| (h.tenure, h.token.clone()));
            let Some((tenure, token)) = held else { continue };
            let entries = entries.into_iter().map(|e| (e, 1)).collect();
            let before = out.len();
            self.accept((shard, tenure), &token, entries, false, out).await?;
            debug!(shard, entries = out.len() - before, "read");
        }
        Ok(())
    }

    /// The consumer group of these shards is gone (Redis lost its data, or failed over to
    /// a replica without it): it is created again, from the start of the stream, and
    /// the shards recover before reading.
    fn groups_lost(&self, shards: impl IntoIterator<Item = u32>) {
        let mut st = self.state.lock();
        for k in shards {
            if let Some(h) = st.held.get_mut(&k) {
                warn!(shard = k, "the consumer group is gone; creating it again");
                h.group_ready = false;
                if h.phase != Phase::Draining {
                    h.phase = Phase::Recovering { cursor: None };
                }
            }
        }
    }
}

/// Marks the shards of a read that did not complete (an error, or the fetch dropped) for
/// recovery: entries it delivered are pending on the owner, and `>` never returns them.
struct ReadGuard<'a> {
    inner: &'a Inner,
    shards: Vec<u32>,
    armed: bool,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.state.lock();
            for k in &self.shards {
                if let Some(h) = st.held.get_mut(k).filter(|h| h.phase == Phase::Reading) {
                    h.phase = Phase::Recovering { cursor: None };
                }
            }
        }
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

    fn ack_model(&self) -> AckModel {
        AckModel::Individual {
            window: self.inner.settings.window,
        }
    }

    /// The previous owners' pending entries of newly held shards first (in stream order),
    /// then new entries of the held shards, blocking up to `min(timeout, max_block)` only
    /// when nothing else was found. Holding no shard, it waits for the lease task to take
    /// one (or the timeout).
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
    async fn flush(&self) -> Result<(), RedisTransportError> {
        if let Some(h) = self.leases.lock().take() {
            h.abort();
        }
        let inner = &*self.inner;
        // A read that may still be served delivers to the owner: wait it out, or the next
        // owner could recover before it lands.
        let blocked = inner.state.lock().blocked.take().map(|(until, _)| until);
        if let Some(until) = blocked {
            tokio::time::sleep_until(until).await;
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
        inner.started.store(false, Ordering::Release);
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
