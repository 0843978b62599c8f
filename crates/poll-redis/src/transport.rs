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
//! - **Heartbeat**: a handler slower than `claim_idle` is not a dead consumer. Every
//!   `claim_idle / 4` a background task re-claims this worker's in-flight entries that it
//!   still owns (`XCLAIM … JUSTID` in a script that checks the owner first: it resets
//!   their idle time without counting a delivery, and never takes an entry back from a
//!   worker that claimed it), so only a consumer that stopped heart-beating (dead, or cut
//!   off from Redis) loses its entries to the others.
//! - **Dead-letter stream**: an entry delivered more than `max_deliveries` times (its
//!   handler keeps killing workers) or one that is not an update at all is moved to the
//!   dead-letter stream with the reason, by a script that adds it there before
//!   acknowledging it (if the add fails, the entry stays pending): never dropped, never
//!   retried forever.
//! - **Own pending entries first**: on start, and after any fetch that did not complete
//!   (an error, a lost reply, a cancelled fetch), the worker re-reads its own pending list
//!   (`XPENDING … consumer`), so an entry delivered into a lost reply is not stuck until
//!   another worker claims it. At start (a restart with a stable consumer name) each such
//!   entry counts as a delivery; after a lost reply it does not.
//! - **One delivery per entry at a time**: an entry is handed to the runtime only if it is
//!   still pending on this consumer and not in flight here, checked after the in-flight
//!   set (so an acknowledgement racing a re-read or a claim cannot deliver it twice).
//!
//! Two connections: the blocking read has its own, so acknowledgements never wait behind
//! a `BLOCK` (the runtime acknowledges while a fetch is in flight).

use std::collections::HashSet;
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
use crate::retry::{DEFAULT_MAX_OUTAGE, outage_backoff, with_retries};

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
        self.claim_idle = idle.clamp(Duration::from_millis(10), Duration::from_secs(86_400));
        self
    }

    /// How many deliveries an entry gets before it is moved to the dead-letter stream
    /// (default 5). A delivery that ends in a finished handler (success or error) is
    /// acknowledged; only entries whose worker died (or was cut off from Redis for longer
    /// than `claim_idle`) before the handler finished are delivered again. A handler that
    /// hangs in a live worker keeps its entry (the heartbeat goes on): give handlers
    /// timeouts.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// The longest one `XREADGROUP … BLOCK` waits (default 2 s, at least 10 ms), whatever
    /// the runtime's poll timeout: an idle worker looks for entries to claim at least this
    /// often, and no more often than every `claim_idle / 4`.
    pub fn max_block(mut self, d: Duration) -> Self {
        self.max_block = d.clamp(Duration::from_millis(10), Duration::from_secs(3600));
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

    /// Rides out a Redis outage (restart, failover) of at least `outage` (default 5
    /// minutes) before a fetch or an acknowledgement fails with
    /// [`RedisTransportError::Unavailable`] (and the runtime stops); retries 100 ms
    /// doubling to 1 s, so work resumes within about a second of Redis coming back.
    pub fn max_outage(mut self, outage: Duration) -> Self {
        self.backoff = outage_backoff(outage);
        self
    }

    /// Retry delays for transient failures (default: those of
    /// [`max_outage`](Self::max_outage) with [`DEFAULT_MAX_OUTAGE`](crate::DEFAULT_MAX_OUTAGE)).
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
                    history: History::AtStart,
                    history_cursor: None,
                    claim_cursor: "0-0".into(),
                    next_claim: Instant::now(),
                    in_flight: HashSet::new(),
                    blocked_until: None,
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

/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`; a `pass` or
/// `password` query parameter (`redis+unix:///s.sock?pass=secret`) is masked too.
pub(crate) fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                let masked = if userinfo.contains(':') { ":***" } else { "" };
                format!("{scheme}://{user}{masked}@{host}")
            }
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") => {
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `{hostname}-{pid}`.
pub(crate) fn default_consumer() -> String {
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

/// Reads a Redis stream through a consumer group, one consumer per worker process; see
/// the module docs for what each mechanism is for.
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
            backoff: outage_backoff(DEFAULT_MAX_OUTAGE),
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
            let every = (self.inner.settings.claim_idle / 4).max(Duration::from_millis(2));
            *slot = Some(tokio::spawn(heartbeat(weak, every)));
        }
    }
}

/// Re-claims (`XCLAIM … JUSTID`) the in-flight entries this consumer still owns, resetting
/// their idle time without counting a delivery; entries another worker claimed meanwhile
/// are left to it.
const HEARTBEAT: &str = "local n = 0 \
    for i = 3, #ARGV do \
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) \
      if #p > 0 and p[1][2] == ARGV[2] then \
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID') \
        n = n + 1 \
      end \
    end \
    return n";

/// Every `every` (a quarter of `claim_idle`), heart-beats all in-flight entries, so slow
/// handlers are not mistaken for a dead consumer; a failed beat is retried at the next
/// tick, still well within `claim_idle`.
async fn heartbeat(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let ids: Vec<Arc<str>> = inner.state.lock().in_flight.iter().cloned().collect();
        let s = &inner.settings;
        for chunk in ids.chunks(500) {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(HEARTBEAT).arg(1).arg(&s.stream).arg(&s.group).arg(&s.consumer);
            for id in chunk {
                cmd.arg(&**id);
            }
            let mut conn = inner.writer.clone();
            match cmd.query_async::<i64>(&mut conn).await {
                Ok(n) => {
                    inner.stats.heartbeats.fetch_add(n.max(0) as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(error = %e, entries = chunk.len(), "heartbeat failed; retrying at the next tick");
                }
            }
        }
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

/// The stream's JSON field of an entry as an update, or why it is not one.
pub(crate) fn decode(entry: &Entry, field: &str) -> Result<Update, String> {
    match entry.field(field) {
        None => Err(format!("the entry has no `{field}` field")),
        Some(raw) => std::str::from_utf8(raw)
            .map_err(|_| format!("the `{field}` field is not UTF-8"))
            .and_then(|json| Update::from_json(json).map_err(|e| format!("not a Telegram update: {e}"))),
    }
}

/// Adds an entry to the dead-letter stream, then acknowledges it, if it is still pending
/// on this consumer. An error (the add refused) aborts before the acknowledgement, so the
/// entry stays pending; a retried call after a lost reply does nothing the second time.
const DEAD_LETTER: &str = "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) \
    if #p == 0 then return 0 end \
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4)) \
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) \
    return 1";

/// Deletes this consumer from the group if it has no pending entry, in one script so no
/// entry can be delivered to it between the check and the deletion (deleting a consumer
/// drops its pending entries for good).
const LEAVE_GROUP: &str = "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then \
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end return -1";

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
                    Box::pin(self.create_group(true)).await?;
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
        self.create_group(false).await
    }

    /// Creates the group. A group re-created because it disappeared starts at the
    /// beginning of the stream whatever [`StartFrom`] says: entries added since it
    /// vanished must not be skipped.
    async fn create_group(&self, again: bool) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let start = match s.start {
            StartFrom::NewEntries if !again => "$",
            _ => "0",
        };
        let created = with_retries(&s.backoff, &self.stats.retries, "XGROUP CREATE", || {
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
            info!(stream = %s.stream, group = %s.group, start, "consumer group created");
        }
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
        conn: &ConnectionManager,
    ) -> Result<T, RedisTransportError> {
        self.retry(command, || {
            let mut conn = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        })
        .await
    }

    fn script(&self, script: &str, keys: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        cmd
    }

    /// Ids of up to `count` entries of this consumer's own pending list, after the cursor.
    async fn own_pending(&self, count: usize) -> Result<Vec<String>, RedisTransportError> {
        let s = &self.settings;
        let (cursor, in_flight) = {
            let st = self.state.lock();
            (st.history_cursor.clone(), st.in_flight.len())
        };
        let start = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
        let want = count + in_flight;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(start)
            .arg("+")
            .arg(want)
            .arg(&s.consumer);
        let rows = reply::pending(self.query("XPENDING", &cmd, &self.writer).await?)?;
        let mut st = self.state.lock();
        st.history_cursor = rows.last().map(|(id, _)| id.clone());
        if rows.len() < want {
            st.history = History::Done;
            st.history_cursor = None;
        }
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    /// Claims up to `count` entries idle for longer than `claim_idle`; returns their ids.
    async fn claim(&self, count: usize) -> Result<Vec<String>, RedisTransportError> {
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
        let (next, claimed, deleted) = reply::auto_claim(self.query("XAUTOCLAIM", &cmd, &self.writer).await?)?;
        if !deleted.is_empty() {
            // Redis removed them from the pending list itself.
            warn!(entries = ?deleted, "pending entries were deleted from the stream before being handled");
            self.stats.deleted.fetch_add(deleted.len() as u64, Ordering::Relaxed);
        }
        let mut st = self.state.lock();
        if next == "0-0" {
            // A full pass: look again after a fraction of the idle time.
            st.next_claim = Instant::now() + (s.claim_idle / 4).max(Duration::from_millis(5));
        }
        st.claim_cursor = next;
        Ok(claimed.into_iter().map(|e| e.id).collect())
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

    /// For re-deliveries (own pending entries, claimed ones): which are still pending on
    /// this consumer, how often they were delivered, and their content, in one pipeline.
    /// `count_delivery` claims each to itself (`XCLAIM`), which counts a delivery;
    /// otherwise the content is read with `XRANGE`, which does not.
    ///
    /// Entries in flight here are skipped before asking, so an acknowledgement that races
    /// this cannot make an entry look fresh: if it is no longer in the in-flight set, its
    /// `XACK` has run, and the `XPENDING` below no longer lists it.
    async fn redeliver(
        &self,
        ids: Vec<String>,
        count_delivery: bool,
        seen: &HashSet<String>,
    ) -> Result<Vec<(Entry, u64)>, RedisTransportError> {
        let ids: Vec<String> = {
            let st = self.state.lock();
            ids.into_iter()
                .filter(|id| !st.in_flight.contains(id.as_str()) && !seen.contains(id))
                .collect()
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let s = &self.settings;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("XPENDING")
                .arg(&s.stream)
                .arg(&s.group)
                .arg(id)
                .arg(id)
                .arg(1)
                .arg(&s.consumer);
            if count_delivery {
                pipe.cmd("XCLAIM")
                    .arg(&s.stream)
                    .arg(&s.group)
                    .arg(&s.consumer)
                    .arg(0)
                    .arg(id);
            } else {
                pipe.cmd("XRANGE").arg(&s.stream).arg(id).arg(id);
            }
        }
        let replies: Vec<Value> = self
            .retry("XPENDING+XRANGE", || {
                let mut conn = self.writer.clone();
                let pipe = pipe.clone();
                async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
            })
            .await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let mut replies = replies.into_iter();
        for id in ids {
            let (Some(pending), Some(content)) = (replies.next(), replies.next()) else {
                return Err(RedisTransportError::Protocol {
                    command: "XPENDING+XRANGE",
                    detail: "fewer replies than commands".into(),
                });
            };
            let Some((_, deliveries)) = reply::pending(pending)?.into_iter().next() else {
                continue; // acknowledged meanwhile, or claimed by another worker
            };
            match reply::entries("XRANGE", content)?.into_iter().next() {
                Some(entry) if entry.fields.is_some() => {
                    out.push((entry, deliveries + u64::from(count_delivery)));
                }
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            warn!(entries = ?gone, "pending entries were deleted from the stream before being handled; acknowledged");
            let ids: Vec<&str> = gone.iter().map(String::as_str).collect();
            self.xack(&ids).await?;
            self.stats.deleted.fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Moves an entry to the dead-letter stream with the reason, then acknowledges it.
    async fn dead_letter(&self, entry: &Entry, reason: &str, deliveries: u64) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let mut cmd = self.script(DEAD_LETTER, &[&s.stream, &s.dead_letter]);
        cmd.arg(&s.group).arg(&s.consumer).arg(&entry.id);
        for (field, value) in entry.fields.iter().flatten() {
            cmd.arg(field).arg(value.as_slice());
        }
        cmd.arg("pollgate_reason")
            .arg(reason)
            .arg("pollgate_source_stream")
            .arg(&s.stream)
            .arg("pollgate_source_id")
            .arg(&entry.id)
            .arg("pollgate_deliveries")
            .arg(deliveries)
            .arg("pollgate_consumer")
            .arg(&s.consumer);
        let moved: i64 = self.query("EVAL (dead letter)", &cmd, &self.writer).await?;
        if moved == 1 {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            error!(entry = %entry.id, deliveries, reason, dead_letter = %s.dead_letter, "entry moved to the dead-letter stream");
        }
        Ok(())
    }

    async fn leave_group(&self) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let mut cmd = self.script(LEAVE_GROUP, &[&s.stream]);
        cmd.arg(&s.group).arg(&s.consumer);
        if let Value::Int(-1) = self.query("EVAL (leave group)", &cmd, &self.writer).await? {
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
            let n: i64 = self.query("XACK", &cmd, &self.writer).await?;
            acked += n.max(0) as u64;
        }
        Ok(acked)
    }

    /// Turns delivered entries into updates (appended to `out`, their ids to `seen`);
    /// over-delivered and malformed entries are dead-lettered instead.
    async fn accept(
        &self,
        entries: Vec<(Entry, u64)>,
        source: Source,
        out: &mut Vec<Update>,
        seen: &mut HashSet<String>,
    ) -> Result<(), RedisTransportError> {
        let max = u64::from(self.settings.max_deliveries);
        for (entry, deliveries) in entries {
            if !seen.insert(entry.id.clone()) {
                continue;
            }
            if entry.fields.is_none() {
                // Pending but deleted from the stream (a new read never returns one).
                warn!(entry = %entry.id, "a pending entry was deleted from the stream; acknowledged");
                self.xack(&[entry.id.as_str()]).await?;
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if deliveries > max {
                let reason =
                    format!("delivered {deliveries} times (max_deliveries {max}) without its handler finishing");
                self.dead_letter(&entry, &reason, deliveries).await?;
                continue;
            }
            match decode(&entry, &self.settings.field) {
                Ok(update) => {
                    out.push(update.with_receipt(Arc::<str>::from(entry.id.as_str())));
                    let counter = match source {
                        Source::New => &self.stats.read,
                        Source::Own => &self.stats.recovered,
                        Source::Claimed => &self.stats.claimed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => self.dead_letter(&entry, &reason, deliveries).await?,
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

    /// Own pending entries first (after a start or an incomplete fetch), then entries of
    /// dead consumers (when a claim pass is due), then new entries, blocking up to
    /// `min(timeout, max_block)` only when nothing else was found. The returned entries
    /// join the in-flight set (and the heartbeat) only when the fetch completes; a fetch
    /// that fails or is dropped marks the own pending list for re-reading instead.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("redis://:hunter2@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact_url("redis://u:hunter2@host"), "redis://u:***@host");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://alice@host"), "redis://alice@host");
        assert_eq!(
            redact_url("redis+unix:///run/r.sock?db=1&pass=hunter2"),
            "redis+unix:///run/r.sock?db=1&pass=***"
        );
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
