//! The bridge's side: each update appended to its chat's shard.

use super::*;

/// Appends updates to the shard streams of a prefix (`XADD {prefix}:shard:N`), each to
/// its chat's shard ([`shard_of`]), for a bridge. How shards, leases and fencing work: `docs/scale-out.md`, "Per-chat order across workers".
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
///
/// # Examples
///
/// Building connects nothing yet: the first [`add`](ShardedProducer::add) does, and
/// checks the number of shards Redis records.
///
/// ```
/// use std::time::Duration;
/// use pollgate_redis::ShardedProducer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pollgate_redis::RedisTransportError> {
/// let producer = ShardedProducer::builder("redis://127.0.0.1:6379", "bot:updates")
///     .shards(4) // every bridge and worker of the prefix must agree
///     .max_outage(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(producer.streams()[3], "bot:updates:shard:3");
/// assert_eq!(producer.streams().len(), 4);
/// # Ok(()) }
/// ```
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
        if self.prefix.is_empty() {
            return Err(RedisTransportError::Config(crate::ConfigError::Empty("prefix")));
        }
        if self.shards == 0 {
            return Err(RedisTransportError::Config(crate::ConfigError::NoShards));
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
    ///
    /// # Cancel safety
    ///
    /// As [`StreamProducer::add`](crate::StreamProducer::add): dropped after the `XADD`
    /// was sent, the update may be in its shard without the caller knowing; append it
    /// again, and do not confirm it upstream. Dropped during the first call's check of
    /// the shard count, nothing was appended and the check runs again.
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
