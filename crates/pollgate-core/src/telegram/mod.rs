//! The Telegram Bot API transport: `getUpdates` long polling over reqwest (rustls).
//!
//! The protocol, as implemented here (the same as teloxide's `polling.rs`):
//! - before the first `getUpdates`, `getWebhookInfo` tells whether a webhook is set: the
//!   Bot API refuses `getUpdates` with 409 while one is, so retrying could never succeed.
//!   With [`delete_webhook(true)`](TelegramTransportBuilder::delete_webhook) it is removed
//!   (`deleteWebhook`, pending updates kept), else the fetch fails with
//!   [`TelegramError::WebhookActive`] ([`webhook`]);
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

mod builder;
mod stats;
mod webhook;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tracing::{error, warn};

use crate::backoff::{Backoff, Sleep};
use crate::decode::{GetUpdatesResponse, MethodResponse, decode_method};
use crate::error::{BodyExcerpt, ErrorChain, TelegramError};
use crate::token::BotToken;
use crate::transport::{Ack, AckModel, Batch, FetchRequest, Transport};

pub use builder::TelegramTransportBuilder;
use stats::Counters;
pub use stats::TelegramStats;
pub use webhook::SetWebhook;

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
    urls: MethodUrls,
    allowed_updates: Option<Vec<String>>,
    delete_webhook: bool,
    http_margin: Duration,
    backoff: Backoff,
    max_body_bytes: usize,
    sleep: Arc<dyn Sleep>,
    offset: AtomicI64,
    /// Set once `getWebhookInfo` found no webhook (or the webhook was deleted).
    webhook_checked: OnceCell<()>,
    stats: Counters,
}

/// The URLs of the methods the transport calls; each holds the token.
struct MethodUrls {
    get_updates: reqwest::Url,
    get_webhook_info: reqwest::Url,
    delete_webhook: reqwest::Url,
    set_webhook: reqwest::Url,
}

impl fmt::Debug for TelegramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramTransport")
            .field("token", &self.token)
            .field("api_url", &self.api_url)
            .field("allowed_updates", &self.allowed_updates)
            .field("delete_webhook", &self.delete_webhook)
            .field("offset", &self.offset())
            .field("backoff", &self.backoff)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
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
    /// The offset the next `getUpdates` call will send (`None` before the first ack).
    ///
    /// # Examples
    ///
    /// An acknowledgement only records the offset; it goes to Telegram with the next
    /// `getUpdates` (or the final one of [`flush`](Transport::flush)):
    ///
    /// ```
    /// use pollgate_core::{Ack, TelegramTransport, Transport};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), pollgate_core::TelegramError> {
    /// let transport = TelegramTransport::builder("123456:ABC-your-token").build()?;
    /// assert_eq!(transport.offset(), None);
    /// transport.ack(Ack { below: Some(43), receipts: &[], failed: &[] }).await?;
    /// transport.ack(Ack { below: Some(40), receipts: &[], failed: &[] }).await?; // late
    /// assert_eq!(transport.offset(), Some(43), "offsets only move forward");
    /// assert_eq!(transport.stats().requests, 0, "nothing was sent");
    /// # Ok(()) }
    /// ```
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

    /// One `getUpdates` call with retries, as [`Transport::fetch`] describes; the webhook
    /// check runs first, once.
    async fn get_updates(
        &self,
        limit: usize,
        timeout: Duration,
        max_retries: Option<u32>,
    ) -> Result<Batch, TelegramError> {
        self.ensure_no_webhook().await?;
        let mut failures = 0u32;
        let asked = limit.clamp(1, MAX_LIMIT);
        let mut limit = limit;
        loop {
            let offset = self.offset();
            match self.get_updates_once(offset, limit, timeout).await {
                Ok(mut batch) => {
                    batch.truncated = limit < asked;
                    self.stats.updates.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return Ok(batch);
                }
                Err(e) => {
                    if matches!(e, TelegramError::BodyTooLarge { .. }) {
                        // Ask for fewer updates: the same request would be refused again.
                        limit = (limit.min(MAX_LIMIT) / 2).max(1);
                    }
                    self.wait_before_retry("getUpdates", e, &mut failures, max_retries)
                        .await?;
                }
            }
        }
    }

    /// A call to another method than `getUpdates`, with the same retries.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: &reqwest::Url,
        params: &impl Serialize,
    ) -> Result<T, TelegramError> {
        let mut failures = 0u32;
        loop {
            match self.call_once(url, params).await {
                Ok(result) => return Ok(result),
                Err(e) => {
                    self.wait_before_retry(method, e, &mut failures, self.backoff.max_retries)
                        .await?
                }
            }
        }
    }

    /// After a failed attempt (`failures` of them before it): a final error, or the
    /// `failures`-th beyond the retry budget, is returned; any other is counted, logged
    /// and waited out (`retry_after` for 429, backoff otherwise), so the caller retries.
    async fn wait_before_retry(
        &self,
        method: &'static str,
        e: TelegramError,
        failures: &mut u32,
        max_retries: Option<u32>,
    ) -> Result<(), TelegramError> {
        if !e.is_transient() {
            error!(error = %ErrorChain(&e), method, "request failed for good");
            return Err(e);
        }
        *failures += 1;
        if max_retries.is_some_and(|max| *failures > max) {
            return Err(TelegramError::RetriesExhausted {
                attempts: *failures,
                last: Box::new(e),
            });
        }
        self.stats.count_retry(&e);
        let delay = match e.retry_after() {
            Some(wait) => {
                self.stats.add_rate_limit_wait(wait);
                wait
            }
            None => self.backoff.delay(*failures),
        };
        if matches!(e, TelegramError::Conflict { .. }) {
            error!(
                error = %ErrorChain(&e),
                method,
                attempt = *failures,
                ?delay,
                "another getUpdates consumer is running with this token (or a webhook was set meanwhile): stop the other instance; retrying"
            );
        } else {
            warn!(error = %ErrorChain(&e), kind = e.kind(), method, attempt = *failures, ?delay, "request failed; retrying");
        }
        self.sleep.sleep(delay).await;
        Ok(())
    }

    async fn get_updates_once(
        &self,
        offset: Option<i64>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Batch, TelegramError> {
        let params = GetUpdatesParams {
            offset,
            limit: limit.clamp(1, MAX_LIMIT),
            timeout: timeout.as_secs(),
            allowed_updates: self.allowed_updates.as_deref(),
        };
        let http_timeout = Duration::from_secs(params.timeout) + self.http_margin;
        let (status, text) = self.post(&self.urls.get_updates, &params, http_timeout).await?;
        let decoded =
            GetUpdatesResponse::decode_redacted(&text, offset, Some(&self.token)).map(|response| match response {
                GetUpdatesResponse::Updates(batch) => MethodResponse::Ok(batch),
                GetUpdatesResponse::Error {
                    error_code,
                    description,
                    retry_after,
                } => MethodResponse::Error {
                    error_code,
                    description,
                    retry_after,
                },
            });
        self.answer(status, &text, decoded)
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        params: &impl Serialize,
    ) -> Result<T, TelegramError> {
        let (status, text) = self.post(url, params, self.http_margin).await?;
        let decoded = decode_method::<T>(&text);
        self.answer(status, &text, decoded)
    }

    /// Turns a decoded answer into the result or its typed error; an undecodable body is
    /// classified by its HTTP status and kept as a redacted excerpt.
    fn answer<T>(
        &self,
        status: u16,
        text: &str,
        decoded: Result<MethodResponse<T>, serde_json::Error>,
    ) -> Result<T, TelegramError> {
        match decoded {
            Ok(MethodResponse::Ok(result)) => Ok(result),
            Ok(MethodResponse::Error {
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

    /// Sends one request and reads its body (capped) as text; returns the HTTP status too.
    async fn post(
        &self,
        url: &reqwest::Url,
        params: &impl Serialize,
        timeout: Duration,
    ) -> Result<(u16, String), TelegramError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .client
            .post(url.clone())
            .json(params)
            .timeout(timeout)
            .send()
            .await
            .map_err(network)?;
        let status = response.status().as_u16();
        let body = read_capped(response, self.max_body_bytes).await?;
        match String::from_utf8(body) {
            Ok(text) => Ok((status, text)),
            Err(e) => {
                let body = BodyExcerpt::new(e.as_bytes(), &self.token);
                let source = serde::de::Error::custom("the body is not UTF-8");
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

    /// A body that is not a Bot API response: judged by the HTTP status. The parser's
    /// message is redacted here, as it may quote the body.
    fn classify_undecodable(&self, status: u16, source: serde_json::Error, body: BodyExcerpt) -> TelegramError {
        match status {
            200..=299 => TelegramError::InvalidJson {
                source: self.token.redact_json_error(source),
                body,
            },
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

    fn retries(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats();
        vec![
            ("network", s.retries_network),
            ("server_error", s.retries_server_error),
            ("rate_limited", s.retries_rate_limited),
            ("conflict", s.retries_conflict),
            ("invalid_response", s.retries_invalid),
            ("other", s.retries_other),
        ]
    }

    /// `getWebhookInfo`'s `pending_update_count` (one request, no retries).
    async fn backlog(&self) -> Option<u64> {
        self.pending_update_count().await
    }

    /// Fetches with `getUpdates`; the first call checks for a webhook first
    /// ([`TelegramError::WebhookActive`]).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped fetch confirms nothing, and a webhook check it interrupted
    /// runs again on the next fetch.
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, TelegramError> {
        self.get_updates(request.limit, request.timeout, self.backoff.max_retries)
            .await
    }

    /// Records `ack.below` as the offset of the next `getUpdates`; receipts mean nothing to
    /// Telegram. Sends nothing.
    ///
    /// # Cancel safety
    /// Cancel safe: it completes at its first poll.
    async fn ack(&self, ack: Ack<'_>) -> Result<(), TelegramError> {
        if let Some(below) = ack.below {
            // Offsets only move forward: a late ack must not re-open confirmed updates.
            self.offset.fetch_max(below, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Sends the recorded offset with one final `getUpdates(offset, limit=1, timeout=0)`
    /// (at most 3 retries), so that Telegram forgets what was acknowledged. Sends nothing
    /// when nothing was acknowledged.
    ///
    /// # Cancel safety
    /// Dropping it may leave the recorded offset unconfirmed (the request was not sent yet,
    /// or was sent and not answered): the next start then gets again what Telegram was not
    /// told about, from the offset of the last `getUpdates` it received. Nothing beyond
    /// the recorded offset is ever confirmed, and calling it again sends the same offset.
    async fn flush(&self) -> Result<(), TelegramError> {
        if self.offset().is_none() {
            return Ok(());
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        let retries = Some(self.backoff.max_retries.unwrap_or(u32::MAX).min(3));
        self.get_updates(1, Duration::ZERO, retries).await.map(drop)
    }
}
