//! What can go wrong talking to Redis, typed so a caller can tell a dead server from a
//! misconfiguration.
//!
//! Transient failures (connection refused or dropped, timeouts, `LOADING`, `TRYAGAIN`)
//! are retried inside the transport with backoff; only what is left when retries are
//! exhausted, or what no retry can fix (wrong type at the key, authentication), reaches
//! the caller. A password in the Redis URL never appears in these messages: they carry
//! the server's reply or the client's I/O error, never the URL.

/// An error of [`RedisStreamTransport`](crate::RedisStreamTransport) or
/// [`StreamProducer`](crate::StreamProducer).
///
/// # Examples
///
/// A configuration error is final and says what is wrong, without the URL's password:
///
/// ```
/// use pollgate_core::ErrorChain;
/// use pollgate_redis::{ConfigError, RedisStreamTransport, RedisTransportError};
///
/// let empty = RedisStreamTransport::builder("redis://127.0.0.1:6379", "", "workers").build().unwrap_err();
/// assert!(matches!(empty, RedisTransportError::Config(ConfigError::Empty("stream"))));
/// assert!(!empty.is_transient(), "no retry fixes a configuration");
///
/// let url = RedisStreamTransport::builder("nonsense://:hunter2@host", "updates", "workers").build().unwrap_err();
/// let report = ErrorChain(&url).to_string();
/// assert!(report.starts_with("invalid configuration: the Redis URL"), "{report}");
/// assert!(!report.contains("hunter2"), "{report}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisTransportError {
    /// Redis could not be reached or kept failing transiently; retries are exhausted.
    #[error("redis unavailable after {attempts} attempts ({command})")]
    Unavailable {
        /// The command that failed.
        command: &'static str,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis refused a command for a reason no retry fixes (for example `WRONGTYPE`: the
    /// key holds something other than a stream, or `NOAUTH`).
    #[error("redis refused {command}")]
    Refused {
        /// The command that failed.
        command: &'static str,
        /// The server's error.
        #[source]
        source: redis::RedisError,
    },
    /// A reply did not have the shape the command documents.
    #[error("unexpected reply to {command}: {detail}")]
    Protocol {
        /// The command whose reply was unexpected.
        command: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// Redis records another number of shards under the prefix than this bridge or worker
    /// is configured with: changing it would move chats between shards and break their
    /// order (drain the shard streams first, or use a new prefix).
    #[error("redis records {recorded} shards at {key}, this process is configured with {configured}")]
    ShardCount {
        /// The key holding the recorded number.
        key: String,
        /// What Redis records.
        recorded: String,
        /// What this process was configured with.
        configured: u32,
    },
    /// The transport's configuration is invalid (empty stream or group name, a URL the
    /// client cannot parse, ...): [`ConfigError`] says what.
    #[error("invalid configuration")]
    Config(#[source] ConfigError),
}

/// What is wrong with a Redis transport's or producer's configuration
/// ([`RedisTransportError::Config`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A name that must be set is empty (`"stream"`, `"group"`, `"prefix"`).
    #[error("the {0} name must not be empty")]
    Empty(&'static str),
    /// Sharded streams need at least one shard.
    #[error("there must be at least one shard")]
    NoShards,
    /// The client cannot parse the URL. The URL is shown with its password masked.
    #[error("the Redis URL {url} could not be parsed ({kind})")]
    Url {
        /// The URL, password masked.
        url: String,
        /// The client's kind of error.
        kind: String,
    },
    /// The client could not set up a connection manager.
    #[error("could not set up a Redis connection")]
    Connection(#[source] redis::RedisError),
}

impl RedisTransportError {
    /// Whether retrying later could help (the server was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, RedisTransportError::Unavailable { .. })
    }
}

/// Whether a client error is worth retrying: connection trouble, timeouts and the
/// server's own "try again" replies.
pub(crate) fn transient(e: &redis::RedisError) -> bool {
    use redis::RetryMethod;
    // A wrong password does not fix itself (the client would reconnect and retry).
    if e.kind() == redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        return false;
    }
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
        )
}

/// Whether the error says the consumer group (or the stream) does not exist, which the
/// transport repairs by creating it again.
pub(crate) fn no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}
