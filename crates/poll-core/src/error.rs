//! Typed errors of the Telegram transport, and which of them end the runtime.
//!
//! The classification is the contract users rely on (DESIGN §6):
//!
//! | error | recovery inside the transport |
//! |---|---|
//! | [`TelegramError::Network`], 5xx, a non-JSON answer | exponential backoff with jitter, capped |
//! | [`TelegramError::RateLimited`] (429) | wait exactly `retry_after`, then retry |
//! | [`TelegramError::Conflict`] (409: another `getUpdates` consumer) | backoff, logged at error level |
//! | [`TelegramError::InvalidJson`] (the response as a whole) | backoff, retried |
//! | [`TelegramError::BodyTooLarge`] | backoff, retried with half the `limit` (the body is not buffered) |
//! | [`TelegramError::Unauthorized`] (401), [`TelegramError::NotFound`] (404), other 4xx API errors | final: returned, the runtime stops |
//!
//! Every text kept in an error has the bot token removed.

use std::fmt;
use std::time::Duration;

use crate::token::BotToken;

/// How many bytes of a body an error keeps.
pub const BODY_EXCERPT_BYTES: usize = 512;

/// The start of a response body, kept for debugging, with the token removed.
#[derive(Clone, PartialEq, Eq)]
pub struct BodyExcerpt {
    text: String,
    total_len: usize,
}

impl BodyExcerpt {
    /// Keeps at most [`BODY_EXCERPT_BYTES`] of `body` (cut at a character boundary) and
    /// removes the token from it.
    pub fn new(body: &[u8], token: &BotToken) -> BodyExcerpt {
        let total_len = body.len();
        let mut cut = body.len().min(BODY_EXCERPT_BYTES);
        let text = loop {
            match std::str::from_utf8(&body[..cut]) {
                Ok(s) => break s.to_owned(),
                Err(e) if e.error_len().is_none() => cut = e.valid_up_to(),
                Err(_) => break String::from_utf8_lossy(&body[..cut]).into_owned(),
            }
        };
        BodyExcerpt {
            text: token.redact(&text),
            total_len,
        }
    }

    /// The kept text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The length of the whole body in bytes.
    pub fn total_len(&self) -> usize {
        self.total_len
    }
}

impl fmt::Display for BodyExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.total_len > self.text.len() {
            write!(f, "… ({} bytes in all)", self.total_len)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BodyExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// An error of the Telegram transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelegramError {
    /// The request did not complete: connection refused or reset, DNS, TLS, timeout,
    /// dropped connection. The URL (which holds the token) is stripped from the source.
    #[error("network error: {0}")]
    Network(#[source] reqwest::Error),
    /// The server answered with a non-success status and a body that is not a Bot API
    /// error object (an HTML page from a proxy, for instance).
    #[error("HTTP {status}: {body}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the body.
        body: BodyExcerpt,
    },
    /// 429 Too Many Requests: the server asked to wait `retry_after`.
    #[error("rate limited (429): retry after {}s: {description}", .retry_after.as_secs())]
    RateLimited {
        /// How long the server asked to wait.
        retry_after: Duration,
        /// The server's description.
        description: String,
    },
    /// 409 Conflict: another consumer calls `getUpdates` with this token, or a webhook is
    /// set.
    #[error("conflict (409): {description}")]
    Conflict {
        /// The server's description.
        description: String,
    },
    /// 401 Unauthorized: the token was rejected. Final.
    #[error("unauthorized (401): the bot token was rejected: {description}")]
    Unauthorized {
        /// The server's description.
        description: String,
    },
    /// 404 Not Found: the method or the token path does not exist (a malformed token or a
    /// wrong base URL). Final.
    #[error("not found (404): check the bot token and the API base URL: {description}")]
    NotFound {
        /// The server's description.
        description: String,
    },
    /// Any other `ok: false` answer of the Bot API.
    #[error("Bot API error {error_code}: {description}")]
    Api {
        /// The `error_code` field.
        error_code: i64,
        /// The `description` field.
        description: String,
    },
    /// The response is not a valid Bot API response (bad JSON, an HTML page with status
    /// 200, a missing `result`).
    #[error("invalid response ({source}); body: {body}")]
    InvalidJson {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
        /// The start of the body.
        body: BodyExcerpt,
    },
    /// The response body is larger than the configured cap; it was not buffered.
    #[error("response body larger than the {limit}-byte cap")]
    BodyTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// Transient errors went on for more than the configured number of retries.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        last: Box<TelegramError>,
    },
}

impl TelegramError {
    /// Whether the error is final: retrying the same request cannot succeed.
    pub fn is_fatal(&self) -> bool {
        match self {
            TelegramError::Unauthorized { .. }
            | TelegramError::NotFound { .. }
            | TelegramError::RetriesExhausted { .. } => true,
            TelegramError::Api { error_code, .. } => (400..500).contains(error_code),
            _ => false,
        }
    }

    /// The wait the server asked for (429), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TelegramError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short, stable name of the error's kind, for counters and logs
    /// (`"network"`, `"rate_limited"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            TelegramError::Network(_) => "network",
            TelegramError::Http { status, .. } if *status >= 500 => "server_error",
            TelegramError::Http { .. } => "http",
            TelegramError::RateLimited { .. } => "rate_limited",
            TelegramError::Conflict { .. } => "conflict",
            TelegramError::Unauthorized { .. } => "unauthorized",
            TelegramError::NotFound { .. } => "not_found",
            TelegramError::Api { error_code, .. } if *error_code >= 500 => "server_error",
            TelegramError::Api { .. } => "api",
            TelegramError::InvalidJson { .. } => "invalid_json",
            TelegramError::BodyTooLarge { .. } => "body_too_large",
            TelegramError::RetriesExhausted { .. } => "retries_exhausted",
        }
    }
}
