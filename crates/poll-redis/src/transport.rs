//! [`RedisStreamTransport`]: a consumer-group reader that fits pollgate's [`Transport`]
//! trait with per-entry acknowledgements.
//!
//! Why each piece exists:
//! - **`XREADGROUP … COUNT limit`**: the runtime's fetch limit becomes `COUNT`, so a worker
//!   takes from the stream only what its admission policy can admit; the rest stays in
//!   Redis for the other workers.
//! - **`XACK` after the handler**: the runtime hands over receipts (entry ids) only once a
//!   handler finished, so a worker that dies leaves its unfinished entries pending.
//! - **`XAUTOCLAIM`**: entries pending longer than `claim_idle` belong to a consumer that
//!   died (or hangs); a worker with room claims them, so nothing waits for a restart.
//! - **Heartbeat**: a handler slower than `claim_idle` is not a dead consumer. A
//!   background task re-claims this worker's own in-flight entries (`XCLAIM … JUSTID`,
//!   which resets their idle time without counting a delivery), so only entries of a
//!   consumer that stopped heart-beating are claimed by others.
//! - **Dead-letter stream**: an entry delivered more than `max_deliveries` times (its
//!   handler keeps killing workers) or one that is not an update at all is moved to the
//!   dead-letter stream with the reason, in one `MULTI` with its `XACK`: never dropped,
//!   never retried forever.
//! - **Own pending entries first**: on start, and after any read whose reply may have
//!   been lost (a dropped connection, a cancelled fetch), the worker re-reads its own
//!   pending list (`XREADGROUP … 0`), so an entry delivered into a lost reply is not stuck
//!   until another worker claims it.
//!
//! Two connections: the blocking read has its own, so acknowledgements never wait behind
//! a `BLOCK` (the runtime acknowledges while a fetch is in flight).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_core::{Ack, AckModel, Backoff, Batch, FetchRequest, Transport, Update};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use tracing::{debug, error, info, warn};

use crate::error::{RedisTransportError, no_group};
use crate::reply::{self, Entry};
use crate::retry::with_retries;

/// The field of a stream entry that holds the update's JSON, unless configured otherwise.
pub const DEFAULT_FIELD: &str = "update";

/// Where a new consumer group starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Every entry already in the stream (`XGROUP CREATE … 0`): nothing added before the
    /// workers started is missed. The default.
    #[default]
    Beginning,
    /// Only entries added after the group is created (`$`).
    NewEntries,
}

/// Configuration of a [`RedisStreamTransport`]; see [`RedisStreamTransport::builder`].
#[derive(Clone)]
pub struct RedisStreamTransportBuilder {
    url: String,
    stream: String,
    group: String,
    consumer: Option<String>,
    field: String,
    dead_letter: Option<String>,
    claim_idle: Duration,
    max_deliveries: u32,
    max_block: Duration,
    window: usize,
    start: StartFrom,
    backoff: Backoff,
}

impl fmt::Debug for RedisStreamTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamTransportBuilder")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("claim_idle", &self.claim_idle)
            .field("max_deliveries", &self.max_deliveries)
            .finish_non_exhaustive()
    }
}

impl RedisStreamTransportBuilder {
    /// This worker's consumer name in the group. Default: `{hostname}-{pid}`, unique per
    /// process, so a restarted worker is a new consumer and its predecessor's entries are
    /// claimed after `claim_idle`. A stable name (say, a pod name) lets a restarted worker
    /// resume its own pending entries at once.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// The entry field holding the update's JSON (default [`DEFAULT_FIELD`]).
    pub fn field(mut self, name: impl Into<String>) -> Self {
        self.field = name.into();
        self
    }

    /// The stream poison entries are moved to (default `{stream}:dead`).
    pub fn dead_letter_stream(mut self, name: impl Into<String>) -> Self {
        self.dead_letter = Some(name.into());
        self
    }

    /// How long an entry stays pending, without a heartbeat from its consumer, before
    /// another worker claims it (default 30 s). Shorter recovers faster from a dead
    /// worker; it must stay well above a network hiccup, since a worker cut off for
    /// longer loses its entries to the others (they are then handled twice).
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle.max(Duration::from_millis(10));
        self
    }

    /// How many deliveries an entry gets before it is moved to the dead-letter stream
    /// (default 5). A delivery that ends in a finished handler (success or error) is
    /// acknowledged; only entries whose handler never finishes (the worker died, or hung
    /// past `claim_idle`) are delivered again.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// The longest one `XREADGROUP … BLOCK` waits (default 2 s), whatever the runtime's
    /// poll timeout: an idle worker looks for entries to claim at least this often.
    pub fn max_block(mut self, d: Duration) -> Self {
        self.max_block = d;
        self
    }

    /// The most entries one fetch returns (default 512).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// Where the group starts if this transport creates it (default
    /// [`StartFrom::Beginning`]). An existing group is left as it is.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Retry delays for transient failures (default: 250 ms doubling to 30 s, forever).
    /// With `max_retries` set, a fetch or ack that still fails returns
    /// [`RedisTransportError::Unavailable`] and the runtime stops.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Builds the transport. Connections are opened lazily, on the first command, so a
    /// worker started before Redis waits for it (with backoff) instead of failing.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisTransportError::Config`] for an empty stream or group name or a URL the
    /// client cannot parse.
    pub fn build(self) -> Result<RedisStreamTransport, RedisTransportError> {
        if self.stream.is_empty() || self.group.is_empty() {
            return Err(RedisTransportError::Config(
                "the stream and group names must not be empty".into(),
            ));
        }
        let client = open_client(&self.url)?;
        let reader = connection(&client, Some(self.max_block + Duration::from_secs(5)))?;
        let writer = connection(&client, Some(Duration::from_secs(5)))?;
        let dead_letter = self.dead_letter.unwrap_or_else(|| format!("{}:dead", self.stream));
        let consumer = self.consumer.unwrap_or_else(default_consumer);
        let settings = Settings {
            url: redact_url(&self.url),
            stream: self.stream,
            group: self.group,
            consumer,
            field: self.field,
            dead_letter,
            claim_idle: self.claim_idle,
            max_deliveries: self.max_deliveries,
            max_block: self.max_block,
            window: self.window,
            start: self.start,
            backoff: self.backoff,
        };
        Ok(RedisStreamTransport {
            inner: Arc::new(Inner {
                settings,
                reader,
                writer,
                state: Mutex::new(State {
                    history: true,
                    history_cursor: "0-0".into(),
                    claim_cursor: "0-0".into(),
                    next_claim: Instant::now(),
                    in_flight: HashMap::new(),
                }),
                group_ready: AtomicBool::new(false),
                stats: Counters::default(),
            }),
            heartbeat: Mutex::new(None),
        })
    }
}

/// Opens a client for `url`, with an error that does not repeat the URL (it may hold a
/// password).
pub(crate) fn open_client(url: &str) -> Result<redis::Client, RedisTransportError> {
    redis::Client::open(url).map_err(|e| {
        RedisTransportError::Config(format!(
            "the Redis URL {} could not be parsed ({:?})",
            redact_url(url),
            e.kind()
        ))
    })
}

/// A lazily connected, self-reconnecting connection. The transport retries with its own
/// backoff, so the manager gives up on a reconnection quickly and reports the error.
pub(crate) fn connection(
    client: &redis::Client,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager, RedisTransportError> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| RedisTransportError::Config(format!("could not set up a Redis connection: {e}")))
}

/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// `{hostname}-{pid}`.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pollgate".into());
    format!("{host}-{}", std::process::id())
}

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

#[derive(Debug)]
struct State {
    /// This consumer's own pending list must be read before new entries.
    history: bool,
    history_cursor: String,
    /// Where the next `XAUTOCLAIM` scan continues (`0-0`: from the start).
    claim_cursor: String,
    next_claim: Instant,
    /// Entries handed to the runtime and not yet acknowledged, with when they were
    /// delivered or last heart-beaten.
    in_flight: HashMap<Arc<str>, Instant>,
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

/// Reads a Redis stream through a consumer group, one consumer per worker process; see
/// the module docs for what each mechanism is for.
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
    /// Starts configuring a transport reading `stream` as a member of consumer `group`
    /// on the Redis server at `url` (`redis://[:password@]host:port[/db]`).
    pub fn builder(
        url: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> RedisStreamTransportBuilder {
        RedisStreamTransportBuilder {
            url: url.into(),
            stream: stream.into(),
            group: group.into(),
            consumer: None,
            field: DEFAULT_FIELD.into(),
            dead_letter: None,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            max_block: Duration::from_secs(2),
            window: 512,
            start: StartFrom::Beginning,
            backoff: Backoff::default(),
        }
    }

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

    fn start_heartbeat(&self) {
        let mut slot = self.heartbeat.lock();
        if slot.is_none() {
            let weak = Arc::downgrade(&self.inner);
            let every = (self.inner.settings.claim_idle / 3).max(Duration::from_millis(5));
            *slot = Some(tokio::spawn(heartbeat(weak, every)));
        }
    }
}

/// Resets the idle time of this worker's in-flight entries that have not been touched for
/// `every`, so slow handlers are not mistaken for a dead consumer.
async fn heartbeat(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let stale: Vec<Arc<str>> = {
            let state = inner.state.lock();
            let now = Instant::now();
            state
                .in_flight
                .iter()
                .filter(|(_, at)| now.duration_since(**at) >= every)
                .map(|(id, _)| Arc::clone(id))
                .collect()
        };
        if stale.is_empty() {
            continue;
        }
        let s = &inner.settings;
        for chunk in stale.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&s.stream).arg(&s.group).arg(&s.consumer).arg(0);
            for id in chunk {
                cmd.arg(&**id);
            }
            cmd.arg("JUSTID");
            let mut conn = inner.writer.clone();
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(_) => {
                    let now = Instant::now();
                    let mut state = inner.state.lock();
                    for id in chunk {
                        if let Some(at) = state.in_flight.get_mut(id) {
                            *at = now;
                        }
                    }
                    inner.stats.heartbeats.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(error = %e, entries = chunk.len(), "heartbeat failed; in-flight entries may be claimed by another worker");
                }
            }
        }
    }
}

/// Marks the own pending list for re-reading if a new-entries read does not complete
/// (cancelled, or its reply lost): the entries it delivered are pending on this consumer.
struct ReadGuard<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut s = self.inner.state.lock();
            s.history = true;
            s.history_cursor = "0-0".into();
        }
    }
}

/// A stream id as a comparable pair.
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Inner {
    /// Runs a command, retrying transient failures with backoff and re-creating the group
    /// if it disappeared.
    async fn retry<T, F, Fut>(&self, command: &'static str, mut attempt: F) -> Result<T, RedisTransportError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut recreated = false;
        loop {
            match with_retries(&self.settings.backoff, &self.stats.retries, command, &mut attempt).await {
                Err(RedisTransportError::Refused { source, .. }) if no_group(&source) && !recreated => {
                    warn!(command, group = %self.settings.group, "consumer group missing; creating it again");
                    recreated = true;
                    self.group_ready.store(false, Ordering::Release);
                    Box::pin(self.ensure_group()).await?;
                }
                other => return other,
            }
        }
    }

    /// Creates the consumer group (and the stream) unless done already.
    async fn ensure_group(&self) -> Result<(), RedisTransportError> {
        if self.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let s = &self.settings;
        let start = match s.start {
            StartFrom::Beginning => "0",
            StartFrom::NewEntries => "$",
        };
        let created = self
            .retry("XGROUP CREATE", || {
                let mut conn = self.writer.clone();
                let mut cmd = redis::cmd("XGROUP");
                cmd.arg("CREATE")
                    .arg(&s.stream)
                    .arg(&s.group)
                    .arg(start)
                    .arg("MKSTREAM");
                async move {
                    match cmd.query_async::<Value>(&mut conn).await {
                        Ok(_) => Ok(true),
                        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if created {
            info!(stream = %s.stream, group = %s.group, "consumer group created");
        }
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn query(
        &self,
        command: &'static str,
        cmd: redis::Cmd,
        conn: &ConnectionManager,
    ) -> Result<Value, RedisTransportError> {
        self.retry(command, || {
            let mut conn = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<Value>(&mut conn).await }
        })
        .await
    }

    /// Reads up to `count` entries of this consumer's own pending list.
    async fn read_own(&self, count: usize) -> Result<Vec<Entry>, RedisTransportError> {
        let s = &self.settings;
        let cursor = self.state.lock().history_cursor.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(&cursor);
        let entries = reply::read_group(self.query("XREADGROUP", cmd, &self.writer).await?)?;
        let mut state = self.state.lock();
        if let Some(last) = entries.last() {
            state.history_cursor = last.id.clone();
        }
        if entries.len() < count {
            state.history = false;
            state.history_cursor = "0-0".into();
        }
        Ok(entries)
    }

    /// Claims up to `count` entries idle for longer than `claim_idle`.
    async fn claim(&self, count: usize) -> Result<(Vec<Entry>, Vec<String>), RedisTransportError> {
        let s = &self.settings;
        let cursor = self.state.lock().claim_cursor.clone();
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(s.claim_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(count);
        let (next, claimed, deleted) = reply::auto_claim(self.query("XAUTOCLAIM", cmd, &self.writer).await?)?;
        let mut state = self.state.lock();
        if next == "0-0" {
            // A full pass: look again after a fraction of the idle time.
            state.next_claim = Instant::now() + (s.claim_idle / 4).max(Duration::from_millis(5));
        }
        state.claim_cursor = next;
        Ok((claimed, deleted))
    }

    /// Reads up to `count` new entries, blocking up to `block` when there are none.
    async fn read_new(&self, count: usize, block: Duration) -> Result<Vec<Entry>, RedisTransportError> {
        let s = &self.settings;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&s.group).arg(&s.consumer).arg("COUNT").arg(count);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&s.stream).arg(">");
        let mut guard = ReadGuard {
            inner: self,
            armed: true,
        };
        let value = self
            .retry("XREADGROUP", || {
                let mut conn = self.reader.clone();
                let cmd = cmd.clone();
                async move {
                    let r = cmd.query_async::<Value>(&mut conn).await;
                    if r.is_err() {
                        // The reply may have been lost after Redis delivered entries.
                        let mut st = self.state.lock();
                        st.history = true;
                        st.history_cursor = "0-0".into();
                    }
                    r
                }
            })
            .await?;
        guard.armed = false;
        reply::read_group(value)
    }

    /// Delivery counts of `ids` (all pending on this consumer).
    async fn deliveries(&self, ids: &[&str]) -> Result<HashMap<String, u64>, RedisTransportError> {
        let (Some(min), Some(max)) = (
            ids.iter().min_by_key(|i| parse_id(i)),
            ids.iter().max_by_key(|i| parse_id(i)),
        ) else {
            return Ok(HashMap::new());
        };
        let s = &self.settings;
        let span = ids.len() + self.state.lock().in_flight.len() + 16;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(*min)
            .arg(*max)
            .arg(span)
            .arg(&s.consumer);
        let wanted: HashSet<&str> = ids.iter().copied().collect();
        Ok(reply::pending(self.query("XPENDING", cmd, &self.writer).await?)?
            .into_iter()
            .filter(|(id, _)| wanted.contains(id.as_str()))
            .collect())
    }

    /// Moves an entry to the dead-letter stream with the reason, and acknowledges it, in
    /// one transaction.
    async fn dead_letter(&self, entry: &Entry, reason: &str, deliveries: u64) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let add = pipe.cmd("XADD").arg(&s.dead_letter).arg("*");
        for (field, value) in entry.fields.iter().flatten() {
            add.arg(field).arg(value.as_slice());
        }
        add.arg("pollgate_reason")
            .arg(reason)
            .arg("pollgate_source_stream")
            .arg(&s.stream)
            .arg("pollgate_source_id")
            .arg(&entry.id)
            .arg("pollgate_deliveries")
            .arg(deliveries)
            .arg("pollgate_consumer")
            .arg(&s.consumer);
        pipe.cmd("XACK").arg(&s.stream).arg(&s.group).arg(&entry.id).ignore();
        self.retry("MULTI XADD+XACK (dead letter)", || {
            let mut conn = self.writer.clone();
            let pipe = pipe.clone();
            async move { pipe.query_async::<Value>(&mut conn).await }
        })
        .await?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        error!(entry = %entry.id, deliveries, reason, dead_letter = %s.dead_letter, "entry moved to the dead-letter stream");
        Ok(())
    }

    /// Deletes this consumer from the group if it has no pending entry, in one script so
    /// no entry can be delivered to it between the check and the deletion (deleting a
    /// consumer drops its pending entries for good).
    async fn leave_group(&self) -> Result<(), RedisTransportError> {
        const SCRIPT: &str = "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then \
             return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end return -1";
        let s = &self.settings;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT).arg(1).arg(&s.stream).arg(&s.group).arg(&s.consumer);
        if let Value::Int(-1) = self.query("EVAL (leave group)", cmd, &self.writer).await? {
            debug!(consumer = %s.consumer, "entries still pending: the consumer stays in the group");
        } else {
            debug!(consumer = %s.consumer, "consumer removed from the group");
        }
        Ok(())
    }

    async fn xack(&self, ids: &[&str]) -> Result<u64, RedisTransportError> {
        let s = &self.settings;
        let mut acked = 0;
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&s.stream).arg(&s.group);
            for id in chunk {
                cmd.arg(*id);
            }
            if let Value::Int(n) = self.query("XACK", cmd, &self.writer).await? {
                acked += n.max(0) as u64;
            }
        }
        Ok(acked)
    }

    /// Turns delivered entries into updates: deleted ones are acknowledged, entries in
    /// flight here are skipped, over-delivered and malformed ones are dead-lettered.
    async fn accept(
        &self,
        entries: Vec<Entry>,
        source: Source,
        out: &mut Vec<Update>,
    ) -> Result<(), RedisTransportError> {
        if entries.is_empty() {
            return Ok(());
        }
        let fresh: Vec<Entry> = {
            let state = self.state.lock();
            entries
                .into_iter()
                .filter(|e| !state.in_flight.contains_key(e.id.as_str()))
                .collect()
        };
        let gone: Vec<&str> = fresh
            .iter()
            .filter(|e| e.fields.is_none())
            .map(|e| e.id.as_str())
            .collect();
        if !gone.is_empty() {
            warn!(entries = ?gone, "pending entries were deleted from the stream before being handled; acknowledged");
            self.xack(&gone).await?;
            self.stats.deleted.fetch_add(gone.len() as u64, Ordering::Relaxed);
        }
        let live: Vec<&Entry> = fresh.iter().filter(|e| e.fields.is_some()).collect();
        let counts = match source {
            Source::New => HashMap::new(),
            Source::Own | Source::Claimed => {
                let ids: Vec<&str> = live.iter().map(|e| e.id.as_str()).collect();
                self.deliveries(&ids).await?
            }
        };
        let max = u64::from(self.settings.max_deliveries);
        for entry in live {
            let deliveries = counts.get(&entry.id).copied().unwrap_or(1);
            if deliveries > max {
                let reason =
                    format!("delivered {deliveries} times (max_deliveries {max}) without its handler finishing");
                self.dead_letter(entry, &reason, deliveries).await?;
                continue;
            }
            let update = match entry.field(&self.settings.field) {
                None => Err(format!("the entry has no `{}` field", self.settings.field)),
                Some(raw) => std::str::from_utf8(raw)
                    .map_err(|_| format!("the `{}` field is not UTF-8", self.settings.field))
                    .and_then(|json| Update::from_json(json).map_err(|e| format!("not a Telegram update: {e}"))),
            };
            match update {
                Ok(update) => {
                    let receipt: Arc<str> = Arc::from(entry.id.as_str());
                    self.state.lock().in_flight.insert(Arc::clone(&receipt), Instant::now());
                    out.push(update.with_receipt(receipt));
                    let counter = match source {
                        Source::New => &self.stats.read,
                        Source::Own => &self.stats.recovered,
                        Source::Claimed => &self.stats.claimed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => self.dead_letter(entry, &reason, deliveries).await?,
            }
        }
        Ok(())
    }
}

impl Transport for RedisStreamTransport {
    type Error = RedisTransportError;

    fn ack_model(&self) -> AckModel {
        AckModel::Individual {
            window: self.inner.settings.window,
        }
    }

    /// Own pending entries first (after a start or a lost reply), then entries of dead
    /// consumers (when a claim pass is due), then new entries, blocking up to
    /// `min(timeout, max_block)` only when nothing else was found.
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, RedisTransportError> {
        let inner = &*self.inner;
        inner.ensure_group().await?;
        self.start_heartbeat();
        let limit = request.limit.clamp(1, inner.settings.window);
        let mut out = Vec::new();
        if inner.state.lock().history {
            let own = inner.read_own(limit).await?;
            if !own.is_empty() {
                debug!(entries = own.len(), "re-delivering this consumer's own pending entries");
            }
            inner.accept(own, Source::Own, &mut out).await?;
        }
        let claim_due = Instant::now() >= inner.state.lock().next_claim;
        if out.len() < limit && claim_due {
            let (claimed, deleted) = inner.claim(limit - out.len()).await?;
            if !claimed.is_empty() {
                info!(
                    entries = claimed.len(),
                    "claimed entries left pending by another consumer"
                );
            }
            if !deleted.is_empty() {
                warn!(entries = ?deleted, "claimed entries were deleted from the stream; acknowledged");
                let ids: Vec<&str> = deleted.iter().map(String::as_str).collect();
                inner.xack(&ids).await?;
                inner.stats.deleted.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            inner.accept(claimed, Source::Claimed, &mut out).await?;
        }
        if out.len() < limit {
            let block = if out.is_empty() {
                request.timeout.min(inner.settings.max_block)
            } else {
                Duration::ZERO
            };
            let new = inner.read_new(limit - out.len(), block).await?;
            inner.accept(new, Source::New, &mut out).await?;
        }
        Ok(Batch {
            updates: out,
            failures: Vec::new(),
        })
    }

    /// `XACK`s the receipts (entry ids) of finished updates; the cumulative part of the
    /// ack means nothing to a stream and is ignored.
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

    /// Acknowledgements are sent when made, so nothing is buffered. A worker that leaves
    /// with nothing in flight and nothing pending removes its consumer from the group, so
    /// the group's consumer list does not grow with every restart (a default consumer
    /// name is new per process).
    async fn flush(&self) -> Result<(), RedisTransportError> {
        if self.inner.state.lock().in_flight.is_empty() {
            self.inner.leave_group().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("redis://:hunter2@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact_url("redis://u:hunter2@host"), "redis://u:***@host");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn ids_compare_numerically() {
        assert!(parse_id("10-0") > parse_id("9-5"));
        assert!(parse_id("9-10") > parse_id("9-9"));
    }

    #[tokio::test]
    async fn a_bad_url_is_a_config_error_without_the_password() {
        let e = RedisStreamTransport::builder("nonsense://:hunter2@x", "s", "g")
            .build()
            .unwrap_err();
        assert!(matches!(e, RedisTransportError::Config(_)), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = RedisStreamTransport::builder("redis://x", "", "g").build().unwrap_err();
        assert!(matches!(e, RedisTransportError::Config(_)));
    }
}
