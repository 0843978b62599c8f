//! Configuration of a [`RedisStreamTransport`], checked once when it is built.

use super::*;

/// The field of a stream entry that holds the update's JSON, unless configured otherwise.
pub const DEFAULT_FIELD: &str = "update";

/// Where a new consumer group starts reading.
///
/// # Examples
///
/// ```
/// use pollgate_redis::{RedisStreamTransport, StartFrom};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pollgate_redis::RedisTransportError> {
/// assert_eq!(StartFrom::default(), StartFrom::Beginning);
/// // A new group for a live feed: what was added before it is someone else's.
/// let transport = RedisStreamTransport::builder("redis://127.0.0.1:6379", "bot:updates", "analytics")
///     .start_from(StartFrom::NewEntries)
///     .build()?;
/// # let _ = transport;
/// # Ok(()) }
/// ```
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
///
/// # Examples
///
/// Building connects nothing yet (a worker started before Redis waits for it):
///
/// ```
/// use std::time::Duration;
/// use pollgate_redis::{RedisStats, RedisStreamTransport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pollgate_redis::RedisTransportError> {
/// let transport = RedisStreamTransport::builder("redis://127.0.0.1:6379", "bot:updates", "workers")
///     .consumer("worker-1") // stable: a restarted worker resumes its own pending entries
///     .dead_letter_stream("bot:poison")
///     .claim_idle(Duration::from_secs(60))
///     .max_deliveries(3)
///     .window(256)
///     .max_outage(Duration::from_secs(60))
///     .build()?;
/// assert_eq!((transport.consumer(), transport.dead_letter_stream()), ("worker-1", "bot:poison"));
/// assert_eq!((transport.in_flight(), transport.stats()), (0, RedisStats::default()));
/// # Ok(()) }
/// ```
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
        for (name, value) in [("stream", &self.stream), ("group", &self.group)] {
            if value.is_empty() {
                return Err(RedisTransportError::Config(crate::ConfigError::Empty(name)));
            }
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
}
