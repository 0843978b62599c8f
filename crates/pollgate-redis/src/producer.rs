//! [`StreamProducer`]: appends updates to a stream, for a bridge from `getUpdates` (or any
//! other source) to the workers.
//!
//! An append is acknowledged by Redis before [`StreamProducer::add`] returns, so a bridge
//! that confirms its upstream offset only after `add` returned loses nothing if it dies:
//! at worst the updates of the last unconfirmed batch are appended twice (at-least-once;
//! the workers' handlers must tolerate a duplicate, as with any at-least-once queue).
//! Concurrent `add` calls share one multiplexed connection, so they are pipelined.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pollgate_core::{Backoff, Update};

use crate::connect::{connection, open_client, redact_url};
use crate::durable::{Appender, DEFAULT_WINDOW};
use crate::error::RedisTransportError;
use crate::retry::{DEFAULT_MAX_OUTAGE, outage_backoff};
use crate::transport::DEFAULT_FIELD;

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
    appender: Appender,
    url: String,
    stream: String,
    field: String,
    max_len: Option<usize>,
}

impl fmt::Debug for StreamProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("appender", &self.appender)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`StreamProducer`]; see [`StreamProducer::builder`].
///
/// # Examples
///
/// Building connects nothing yet: the first [`add`](StreamProducer::add) does.
///
/// ```
/// use std::time::Duration;
/// use pollgate_redis::StreamProducer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pollgate_redis::RedisTransportError> {
/// let producer = StreamProducer::builder("redis://127.0.0.1:6379", "bot:updates")
///     .max_len_approx(1_000_000) // bound Redis' memory, at the cost of the oldest entries
///     .max_outage(Duration::from_secs(60))
///     .durability_window(Duration::from_secs(3))
///     .build()?;
/// assert_eq!((producer.stream(), producer.added()), ("bot:updates", 0));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StreamProducerBuilder {
    url: String,
    stream: String,
    field: String,
    max_len: Option<usize>,
    backoff: Backoff,
    window: Duration,
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

    /// Retry delays for transient failures (default: those of
    /// [`max_outage`](Self::max_outage) with [`DEFAULT_MAX_OUTAGE`](crate::DEFAULT_MAX_OUTAGE)).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Rides out a Redis outage (restart, failover) of at least `outage` before an append
    /// fails with [`RedisTransportError::Unavailable`]; retries 100 ms doubling to 1 s, so
    /// appends resume within about a second of Redis coming back (default 5 minutes).
    pub fn max_outage(mut self, outage: Duration) -> Self {
        self.backoff = outage_backoff(outage);
        self
    }

    /// How long appends are remembered, to be appended again if Redis restarts without
    /// them (AOF `everysec` loses up to about two seconds of acknowledged writes); default
    /// 5 s, zero to remember nothing (with `appendfsync always`). The memory is the
    /// updates appended in that time.
    pub fn durability_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Builds the producer (connecting lazily). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisTransportError::Config`] for an empty stream name or a bad URL.
    pub fn build(self) -> Result<StreamProducer, RedisTransportError> {
        if self.stream.is_empty() {
            return Err(RedisTransportError::Config(crate::ConfigError::Empty("stream")));
        }
        let client = open_client(&self.url)?;
        let conn = connection(&client, Some(Duration::from_secs(5)))?;
        Ok(StreamProducer {
            appender: Appender::new(conn, self.backoff, self.window, self.max_len),
            url: redact_url(&self.url),
            stream: self.stream,
            field: self.field,
            max_len: self.max_len,
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
            backoff: outage_backoff(DEFAULT_MAX_OUTAGE),
            window: DEFAULT_WINDOW,
        }
    }

    /// Appends one update (its JSON in the configured field, its id in `update_id` for
    /// people reading the stream) and returns the entry id once Redis stored it.
    ///
    /// # Errors
    /// When Redis refuses the append, or stays unreachable past the backoff's
    /// `max_retries`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the `XADD` was sent, the update may be in the stream
    /// without the caller learning its entry id (and without it being remembered for the
    /// [durability window](StreamProducerBuilder::durability_window)). Treat a dropped
    /// `add` as not done: append the update again (at worst a duplicate, which at-least-once
    /// handlers tolerate) and do not confirm it upstream. Dropped during the check that
    /// follows a connection failure, the check runs again on the next `add`; updates it
    /// was appending again after a Redis restart may then be appended twice.
    pub async fn add(&self, update: &Update) -> Result<String, RedisTransportError> {
        self.appender
            .append(&self.stream, update_fields(&self.field, update))
            .await
    }

    /// Entries appended so far.
    pub fn added(&self) -> u64 {
        self.appender.added.load(Ordering::Relaxed)
    }

    /// Appends retried after a transient failure.
    pub fn retries(&self) -> u64 {
        self.appender.retries.load(Ordering::Relaxed)
    }

    /// Appends a restarted Redis had lost, appended again ([`durability_window`](StreamProducerBuilder::durability_window)).
    pub fn reappended(&self) -> u64 {
        self.appender.reappended.load(Ordering::Relaxed)
    }
}

/// An update's entry fields: its JSON in `field`, its id in `update_id` (for people
/// reading the stream, and the dead-letter stream).
pub(crate) fn update_fields(field: &str, update: &Update) -> Vec<(String, Vec<u8>)> {
    vec![
        (field.to_owned(), update.raw().as_bytes().to_vec()),
        ("update_id".to_owned(), update.id().to_string().into_bytes()),
    ]
}

impl StreamProducer {
    /// The stream appended to.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}
