//! Configuration of a [`ShardedStreamTransport`], checked once when it is built.

use super::*;

/// Configuration of a [`ShardedStreamTransport`]; see [`ShardedStreamTransport::builder`].
///
/// # Examples
///
/// Building connects nothing yet; the first fetch registers the worker and takes its
/// share of the leases.
///
/// ```
/// use std::time::Duration;
/// use pollgate_redis::ShardedStreamTransport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pollgate_redis::RedisTransportError> {
/// let transport = ShardedStreamTransport::builder("redis://127.0.0.1:6379", "bot:updates", "workers")
///     .shards(4) // as the bridge's ShardedProducer
///     .worker("worker-1")
///     .lease_ttl(Duration::from_secs(5))
///     .max_deliveries(3)
///     .build()?;
/// assert_eq!(transport.worker(), "worker-1");
/// assert!(transport.shards_held().is_empty(), "no lease before the first fetch");
/// # Ok(()) }
/// ```
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
        for (name, value) in [("prefix", &self.prefix), ("group", &self.group)] {
            if value.is_empty() {
                return Err(RedisTransportError::Config(crate::ConfigError::Empty(name)));
            }
        }
        if self.shards == 0 {
            return Err(RedisTransportError::Config(crate::ConfigError::NoShards));
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
}
