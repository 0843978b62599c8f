//! [`StreamProducer`]: appends updates to a stream, for a bridge from `getUpdates` (or any
//! other source) to the workers.
//!
//! An append is acknowledged by Redis before [`StreamProducer::add`] returns, so a bridge
//! that confirms its upstream offset only after `add` returned loses nothing if it dies:
//! at worst the updates of the last unconfirmed batch are appended twice (at-least-once;
//! the workers' handlers must tolerate a duplicate, as with any at-least-once queue).
//! Concurrent `add` calls share one multiplexed connection, so they are pipelined.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use pollgate_core::{Backoff, Update};
use redis::aio::ConnectionManager;
use std::time::Duration;

use crate::error::RedisTransportError;
use crate::retry::with_retries;
use crate::transport::{DEFAULT_FIELD, connection, open_client, redact_url};

/// Appends updates to a Redis stream (`XADD`), retrying transient failures.
///
/// ```no_run
/// use pollgate_core::Update;
/// use pollgate_redis::StreamProducer;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let producer = StreamProducer::builder("redis://127.0.0.1:6379", "updates").build()?;
/// let update = Update::from_json(r#"{"update_id": 1, "message": {"chat": {"id": 7}}}"#)?;
/// let entry_id = producer.add(&update).await?; // returns once Redis stored it
/// # Ok(()) }
/// ```
pub struct StreamProducer {
    conn: ConnectionManager,
    url: String,
    stream: String,
    field: String,
    max_len: Option<usize>,
    backoff: Backoff,
    added: AtomicU64,
    retries: AtomicU64,
}

impl fmt::Debug for StreamProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`StreamProducer`]; see [`StreamProducer::builder`].
#[derive(Clone)]
pub struct StreamProducerBuilder {
    url: String,
    stream: String,
    field: String,
    max_len: Option<usize>,
    backoff: Backoff,
}

impl fmt::Debug for StreamProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducerBuilder")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl StreamProducerBuilder {
    /// The entry field the update's JSON goes into (default `update`, what
    /// [`RedisStreamTransport`](crate::RedisStreamTransport) reads).
    pub fn field(mut self, name: impl Into<String>) -> Self {
        self.field = name.into();
        self
    }

    /// Caps the stream at about `n` entries (`XADD … MAXLEN ~ n`). Off by default: a cap
    /// deletes the oldest entries, handled or not, so it trades completeness for bounded
    /// Redis memory. Workers acknowledge entries deleted while pending and log them.
    pub fn max_len_approx(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Retry delays for transient failures (default: 250 ms doubling to 30 s, forever).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Builds the producer (connecting lazily). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisTransportError::Config`] for an empty stream name or a bad URL.
    pub fn build(self) -> Result<StreamProducer, RedisTransportError> {
        if self.stream.is_empty() {
            return Err(RedisTransportError::Config("the stream name must not be empty".into()));
        }
        let client = open_client(&self.url)?;
        Ok(StreamProducer {
            conn: connection(&client, Some(Duration::from_secs(5)))?,
            url: redact_url(&self.url),
            stream: self.stream,
            field: self.field,
            max_len: self.max_len,
            backoff: self.backoff,
            added: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }
}

impl StreamProducer {
    /// Starts configuring a producer appending to `stream` on the server at `url`.
    pub fn builder(url: impl Into<String>, stream: impl Into<String>) -> StreamProducerBuilder {
        StreamProducerBuilder {
            url: url.into(),
            stream: stream.into(),
            field: DEFAULT_FIELD.into(),
            max_len: None,
            backoff: Backoff::default(),
        }
    }

    /// Appends one update (its JSON in the configured field, its id in `update_id` for
    /// people reading the stream) and returns the entry id once Redis stored it.
    ///
    /// # Errors
    /// When Redis refuses the append, or stays unreachable past the backoff's
    /// `max_retries`.
    pub async fn add(&self, update: &Update) -> Result<String, RedisTransportError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream);
        if let Some(n) = self.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*")
            .arg(&self.field)
            .arg(update.raw())
            .arg("update_id")
            .arg(update.id());
        let id: String = with_retries(&self.backoff, &self.retries, "XADD", || {
            let mut conn = self.conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async(&mut conn).await }
        })
        .await?;
        self.added.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Entries appended so far.
    pub fn added(&self) -> u64 {
        self.added.load(Ordering::Relaxed)
    }

    /// Appends retried after a transient failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}
