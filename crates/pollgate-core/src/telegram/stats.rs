//! [`TelegramStats`]: what a [`TelegramTransport`](super::TelegramTransport) did, counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::TelegramError;

/// A snapshot of a [`TelegramTransport`](super::TelegramTransport)'s counters.
///
/// # Examples
///
/// Against a port nothing listens on, with one retry allowed:
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Backoff, FetchRequest, TelegramTransport, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let backoff = Backoff { initial: Duration::from_millis(1), max_retries: Some(1), ..Backoff::default() };
/// let transport = TelegramTransport::builder("123456:ABC-your-token")
///     .api_url(format!("http://{closed}"))
///     .backoff(backoff)
///     .build()?;
/// assert!(transport.fetch(FetchRequest { limit: 1, timeout: Duration::ZERO }).await.is_err());
/// let stats = transport.stats();
/// assert_eq!((stats.requests, stats.retries_network, stats.updates), (2, 1, 0));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelegramStats {
    /// HTTP requests sent, whatever the method (`getUpdates`, `getWebhookInfo`,
    /// `deleteWebhook`).
    pub requests: u64,
    /// Updates received (decodable or not), duplicates included.
    pub updates: u64,
    /// Final offset confirmations sent by `flush`.
    pub flushes: u64,
    /// Webhooks removed before the first `getUpdates` (with `delete_webhook(true)`).
    pub webhooks_deleted: u64,
    /// Retries after network errors (refused, reset, dropped, timed out).
    pub retries_network: u64,
    /// Retries after 5xx answers.
    pub retries_server_error: u64,
    /// Retries after 429 answers.
    pub retries_rate_limited: u64,
    /// Retries after 409 answers.
    pub retries_conflict: u64,
    /// Retries after responses that did not decode (or were too large).
    pub retries_invalid: u64,
    /// Retries after other non-success answers.
    pub retries_other: u64,
    /// Total time waited on `retry_after`, in milliseconds.
    pub rate_limit_wait_ms: u64,
}

/// The live counters behind [`TelegramStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) updates: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) webhooks_deleted: AtomicU64,
    network: AtomicU64,
    server_error: AtomicU64,
    rate_limited: AtomicU64,
    conflict: AtomicU64,
    invalid: AtomicU64,
    other: AtomicU64,
    rate_limit_wait_ms: AtomicU64,
}

impl Counters {
    /// Counts a retry under the counter of `e`'s kind.
    pub(super) fn count_retry(&self, e: &TelegramError) {
        let counter = match e.kind() {
            "network" => &self.network,
            "server_error" => &self.server_error,
            "rate_limited" => &self.rate_limited,
            "conflict" => &self.conflict,
            "invalid_json" | "body_too_large" => &self.invalid,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a `retry_after` wait to the total.
    pub(super) fn add_rate_limit_wait(&self, wait: Duration) {
        self.rate_limit_wait_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
    }

    /// The current values.
    pub(super) fn snapshot(&self) -> TelegramStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TelegramStats {
            requests: r(&self.requests),
            updates: r(&self.updates),
            flushes: r(&self.flushes),
            webhooks_deleted: r(&self.webhooks_deleted),
            retries_network: r(&self.network),
            retries_server_error: r(&self.server_error),
            retries_rate_limited: r(&self.rate_limited),
            retries_conflict: r(&self.conflict),
            retries_invalid: r(&self.invalid),
            retries_other: r(&self.other),
            rate_limit_wait_ms: r(&self.rate_limit_wait_ms),
        }
    }
}
