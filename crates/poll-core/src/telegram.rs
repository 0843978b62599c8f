//! The Telegram Bot API transport: `getUpdates` long polling over reqwest (rustls).
//!
//! The protocol, as implemented here (the same as teloxide's `polling.rs`):
//! - each `getUpdates` call sends the offset recorded by the last [`Transport::ack`]
//!   (`offset` both confirms everything below it and positions the read), a `limit`
//!   clamped to 1..=100, the long-poll `timeout`, and `allowed_updates` when set;
//! - the HTTP timeout of a call is the long-poll timeout plus a margin, so a server that
//!   accepts the connection and never answers is detected;
//! - [`Transport::flush`] sends one final `getUpdates(offset, limit=1, timeout=0)` so
//!   that a restart does not replay what was acknowledged;
//! - failures are retried inside [`Transport::fetch`] as the table in [`crate::error`]
//!   says; only final errors are returned.
//!
//! Bodies are read chunk by chunk up to a cap (default 8 MiB, room for 100 large
//! updates), so a hostile or broken server cannot make the client buffer without bound.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tracing::{error, warn};

use crate::backoff::{Backoff, Sleep, TokioSleep};
use crate::decode::GetUpdatesResponse;
use crate::error::{BodyExcerpt, TelegramError};
use crate::token::BotToken;
use crate::transport::{Ack, AckModel, Batch, FetchRequest, Transport};

/// The public Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// The most updates one `getUpdates` call returns.
pub const MAX_LIMIT: usize = 100;
/// Default cap of a response body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

const NO_OFFSET: i64 = i64::MIN;

/// A [`Transport`] over the Telegram Bot API's `getUpdates`.
///
/// # Examples
/// ```no_run
/// use pollgate_core::{FetchRequest, TelegramTransport, Transport};
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), pollgate_core::TelegramError> {
/// let transport = TelegramTransport::builder("123456:ABC-your-token")
///     .allowed_updates(["message", "callback_query"])
///     .build()?;
/// let batch = transport
///     .fetch(FetchRequest { limit: 100, timeout: Duration::from_secs(30) })
///     .await?;
/// println!("{} updates", batch.updates.len());
/// # Ok(()) }
/// ```
pub struct TelegramTransport {
    client: reqwest::Client,
    token: BotToken,
    api_url: String,
    get_updates_url: reqwest::Url,
    allowed_updates: Option<Vec<String>>,
    http_margin: Duration,
    backoff: Backoff,
    max_body_bytes: usize,
    sleep: Arc<dyn Sleep>,
    offset: AtomicI64,
    stats: Counters,
}

impl fmt::Debug for TelegramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramTransport")
            .field("token", &self.token)
            .field("api_url", &self.api_url)
            .field("allowed_updates", &self.allowed_updates)
            .field("offset", &self.offset())
            .field("backoff", &self.backoff)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TelegramTransport`]; see [`TelegramTransport::builder`].
#[must_use]
pub struct TelegramTransportBuilder {
    token: BotToken,
    api_url: String,
    allowed_updates: Option<Vec<String>>,
    http_margin: Duration,
    connect_timeout: Duration,
    backoff: Backoff,
    max_body_bytes: usize,
    sleep: Arc<dyn Sleep>,
    client: Option<reqwest::Client>,
}

impl fmt::Debug for TelegramTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramTransportBuilder")
            .field("token", &self.token)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl TelegramTransportBuilder {
    /// The API server's base URL, such as a local Bot API server or a mock
    /// (default [`DEFAULT_API_URL`]). Requests go to `{api_url}/bot{token}/{method}`.
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Only these update kinds are delivered (`allowed_updates`); by default the server's
    /// setting is kept.
    pub fn allowed_updates<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_updates = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// How much longer than the long-poll timeout the HTTP request may take before it is
    /// abandoned (default 10 s).
    pub fn http_timeout_margin(mut self, margin: Duration) -> Self {
        self.http_margin = margin;
        self
    }

    /// The TCP/TLS connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retry delays for network errors, 5xx and conflicts (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Responses larger than this are refused without being buffered
    /// (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How retries wait (default [`TokioSleep`]); tests inject a recorder.
    pub fn sleep(mut self, sleep: impl Sleep) -> Self {
        self.sleep = Arc::new(sleep);
        self
    }

    /// Uses this reqwest client instead of building one (its timeouts are overridden per
    /// request).
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the transport.
    ///
    /// # Errors
    /// [`TelegramError::Network`] when the HTTP client cannot be built, or when the URL is
    /// invalid ([`TelegramError::NotFound`]).
    pub fn build(self) -> Result<TelegramTransport, TelegramError> {
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| TelegramError::Network(e.without_url()))?,
        };
        let url = format!("{}/bot{}/getUpdates", self.api_url, self.token.expose());
        let get_updates_url = reqwest::Url::parse(&url).map_err(|e| TelegramError::NotFound {
            description: format!("invalid API URL {:?}: {e}", self.api_url),
        })?;
        Ok(TelegramTransport {
            client,
            token: self.token,
            api_url: self.api_url,
            get_updates_url,
            allowed_updates: self.allowed_updates,
            http_margin: self.http_margin,
            backoff: self.backoff,
            max_body_bytes: self.max_body_bytes,
            sleep: self.sleep,
            offset: AtomicI64::new(NO_OFFSET),
            stats: Counters::default(),
        })
    }
}

#[derive(Serialize)]
struct GetUpdatesParams<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    limit: usize,
    timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_updates: Option<&'a [String]>,
}

impl TelegramTransport {
    /// Starts building a transport for this bot token.
    pub fn builder(token: impl Into<String>) -> TelegramTransportBuilder {
        TelegramTransportBuilder {
            token: BotToken::new(token),
            api_url: DEFAULT_API_URL.to_owned(),
            allowed_updates: None,
            http_margin: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            sleep: Arc::new(TokioSleep),
            client: None,
        }
    }

    /// The offset the next `getUpdates` call will send (`None` before the first ack).
    pub fn offset(&self) -> Option<i64> {
        match self.offset.load(Ordering::Acquire) {
            NO_OFFSET => None,
            o => Some(o),
        }
    }

    /// Counters of requests and retries, for reports and tests.
    pub fn stats(&self) -> TelegramStats {
        self.stats.snapshot()
    }

    /// The bot token (its `Debug` is redacted).
    pub fn token(&self) -> &BotToken {
        &self.token
    }

    /// One `getUpdates` call with retries, as [`Transport::fetch`] describes.
    async fn get_updates(
        &self,
        limit: usize,
        timeout: Duration,
        max_retries: Option<u32>,
    ) -> Result<Batch, TelegramError> {
        let mut failures = 0u32;
        let mut limit = limit;
        loop {
            let offset = self.offset();
            match self.get_updates_once(offset, limit, timeout).await {
                Ok(batch) => {
                    self.stats.updates.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return Ok(batch);
                }
                Err(e) if e.is_fatal() => {
                    error!(error = %e, "getUpdates failed for good");
                    return Err(e);
                }
                Err(e) => {
                    failures += 1;
                    self.stats.count_retry(&e);
                    if matches!(e, TelegramError::BodyTooLarge { .. }) {
                        // Ask for fewer updates: the same request would be refused again.
                        limit = (limit.min(MAX_LIMIT) / 2).max(1);
                    }
                    if max_retries.is_some_and(|max| failures > max) {
                        return Err(TelegramError::RetriesExhausted {
                            attempts: failures,
                            last: Box::new(e),
                        });
                    }
                    let delay = match e.retry_after() {
                        Some(wait) => {
                            self.stats.add_rate_limit_wait(wait);
                            wait
                        }
                        None => self.backoff.delay(failures),
                    };
                    if matches!(e, TelegramError::Conflict { .. }) {
                        error!(error = %e, attempt = failures, ?delay, "another getUpdates consumer or a webhook is active for this bot; retrying");
                    } else {
                        warn!(error = %e, kind = e.kind(), attempt = failures, ?delay, "getUpdates failed; retrying");
                    }
                    self.sleep.sleep(delay).await;
                }
            }
        }
    }

    async fn get_updates_once(
        &self,
        offset: Option<i64>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Batch, TelegramError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let params = GetUpdatesParams {
            offset,
            limit: limit.clamp(1, MAX_LIMIT),
            timeout: timeout.as_secs(),
            allowed_updates: self.allowed_updates.as_deref(),
        };
        let response = self
            .client
            .post(self.get_updates_url.clone())
            .json(&params)
            .timeout(Duration::from_secs(params.timeout) + self.http_margin)
            .send()
            .await
            .map_err(network)?;
        let status = response.status().as_u16();
        let body = read_capped(response, self.max_body_bytes).await?;
        let text = match String::from_utf8(body) {
            Ok(text) => text,
            Err(e) => {
                let body = BodyExcerpt::new(e.as_bytes(), &self.token);
                return Err(self.classify_undecodable(status, serde::de::Error::custom("the body is not UTF-8"), body));
            }
        };
        match GetUpdatesResponse::decode(Arc::from(text.as_str()), offset) {
            Ok(GetUpdatesResponse::Updates(batch)) => Ok(batch),
            Ok(GetUpdatesResponse::Error {
                error_code,
                description,
                retry_after,
            }) => Err(self.api_error(error_code, &description, retry_after)),
            Err(source) => {
                let body = BodyExcerpt::new(text.as_bytes(), &self.token);
                Err(self.classify_undecodable(status, source, body))
            }
        }
    }

    fn api_error(&self, code: i64, description: &str, retry_after: Option<Duration>) -> TelegramError {
        let description = self.token.redact(description);
        match code {
            401 => TelegramError::Unauthorized { description },
            404 => TelegramError::NotFound { description },
            409 => TelegramError::Conflict { description },
            429 => TelegramError::RateLimited {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                description,
            },
            error_code => TelegramError::Api {
                error_code,
                description,
            },
        }
    }

    /// A body that is not a Bot API response: judged by the HTTP status.
    fn classify_undecodable(&self, status: u16, source: serde_json::Error, body: BodyExcerpt) -> TelegramError {
        match status {
            200..=299 => TelegramError::InvalidJson { source, body },
            401 => TelegramError::Unauthorized {
                description: body.to_string(),
            },
            404 => TelegramError::NotFound {
                description: body.to_string(),
            },
            409 => TelegramError::Conflict {
                description: body.to_string(),
            },
            status => TelegramError::Http { status, body },
        }
    }
}

fn network(e: reqwest::Error) -> TelegramError {
    TelegramError::Network(e.without_url())
}

/// Reads the body chunk by chunk, refusing it as soon as it exceeds `cap`.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, TelegramError> {
    let too_large = TelegramError::BodyTooLarge { limit: cap };
    let declared = response.content_length().unwrap_or(0);
    if declared > cap as u64 {
        return Err(too_large);
    }
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Transport for TelegramTransport {
    type Error = TelegramError;

    fn ack_model(&self) -> AckModel {
        AckModel::Cumulative { window: MAX_LIMIT }
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, TelegramError> {
        self.get_updates(request.limit, request.timeout, self.backoff.max_retries)
            .await
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), TelegramError> {
        if let Some(below) = ack.below {
            // Offsets only move forward: a late ack must not re-open confirmed updates.
            self.offset.fetch_max(below, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), TelegramError> {
        if self.offset().is_none() {
            return Ok(());
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        let retries = Some(self.backoff.max_retries.unwrap_or(u32::MAX).min(3));
        self.get_updates(1, Duration::ZERO, retries).await.map(drop)
    }
}

/// A snapshot of a [`TelegramTransport`]'s counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelegramStats {
    /// HTTP requests sent.
    pub requests: u64,
    /// Updates received (decodable or not), duplicates included.
    pub updates: u64,
    /// Final offset confirmations sent by `flush`.
    pub flushes: u64,
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

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    updates: AtomicU64,
    flushes: AtomicU64,
    network: AtomicU64,
    server_error: AtomicU64,
    rate_limited: AtomicU64,
    conflict: AtomicU64,
    invalid: AtomicU64,
    other: AtomicU64,
    rate_limit_wait_ms: AtomicU64,
}

impl Counters {
    fn count_retry(&self, e: &TelegramError) {
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

    fn add_rate_limit_wait(&self, wait: Duration) {
        self.rate_limit_wait_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TelegramStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TelegramStats {
            requests: r(&self.requests),
            updates: r(&self.updates),
            flushes: r(&self.flushes),
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
