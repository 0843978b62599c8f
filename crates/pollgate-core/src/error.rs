//! Typed errors of the Telegram transport, and which of them end the runtime.
//!
//! The classification is the contract users rely on (`docs/architecture.md`, "Errors and
//! recovery"):
//!
//! | error | recovery inside the transport |
//! |---|---|
//! | [`TelegramError::Network`], 5xx, a non-JSON answer | exponential backoff with jitter, capped |
//! | [`TelegramError::RateLimited`] (429) | wait exactly `retry_after`, then retry |
//! | [`TelegramError::Conflict`] (409: another `getUpdates` consumer) | backoff, logged at error level with what to do |
//! | [`TelegramError::InvalidJson`] (the response as a whole) | backoff, retried |
//! | [`TelegramError::BodyTooLarge`] | backoff, retried with half the `limit` (the body is not buffered) |
//! | [`TelegramError::WebhookActive`] (a webhook is set, found before the first `getUpdates`) | final, unless the transport was built with `delete_webhook(true)` |
//! | [`TelegramError::Unauthorized`] (401), [`TelegramError::NotFound`] (404), other 4xx API errors | final: returned, the runtime stops |
//!
//! Every text kept in an error has the bot token removed: body excerpts are redacted
//! before they are cut, and so are the parser's messages (serde quotes string values) and
//! the server's `description`s.

use std::fmt;
use std::time::Duration;

use crate::token::BotToken;

/// How many bytes of a body an error keeps.
pub const BODY_EXCERPT_BYTES: usize = 512;

/// The start of a response body, kept for debugging, with the token removed.
///
/// # Examples
///
/// ```
/// use pollgate_core::{BODY_EXCERPT_BYTES, BodyExcerpt, BotToken};
///
/// let token = BotToken::new("42:AAEsecretsecretsecret");
/// let body = format!("<html>proxy error for /bot{}/getUpdates{}</html>", token.expose(), " ".repeat(1000));
/// let excerpt = BodyExcerpt::new(body.as_bytes(), &token);
/// assert!(excerpt.as_str().starts_with("<html>proxy error for /bot<redacted>/getUpdates"));
/// assert!(excerpt.as_str().len() <= BODY_EXCERPT_BYTES);
/// assert_eq!(excerpt.total_len(), body.len());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BodyExcerpt {
    text: String,
    total_len: usize,
    truncated: bool,
}

impl BodyExcerpt {
    /// Removes the token from `body`, then keeps at most [`BODY_EXCERPT_BYTES`] of it (cut
    /// at a character boundary; invalid UTF-8 becomes U+FFFD).
    ///
    /// Redacting first means a token that crosses the cut shows none of its characters.
    /// Only the start of a large body is redacted: enough for the excerpt plus one token.
    pub fn new(body: &[u8], token: &BotToken) -> BodyExcerpt {
        let (text, truncated) = token.redacted_prefix(body, BODY_EXCERPT_BYTES);
        BodyExcerpt {
            text,
            total_len: body.len(),
            truncated,
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
        if self.truncated {
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
///
/// # Examples
///
/// What a caller branches on: whether a retry can help, and how long the server asked to
/// wait.
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{TelegramError, TelegramTransport};
///
/// let limited = TelegramError::RateLimited {
///     retry_after: Duration::from_secs(3),
///     description: "Too Many Requests: retry after 3".into(),
/// };
/// assert!(limited.is_transient());
/// assert_eq!((limited.kind(), limited.retry_after()), ("rate_limited", Some(Duration::from_secs(3))));
///
/// // A configuration mistake is final, and found before any request is sent.
/// let error = TelegramTransport::builder("123456:ABC").api_url("not a url").build().unwrap_err();
/// assert!(matches!(error, TelegramError::InvalidApiUrl { .. }));
/// assert!(!error.is_transient());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelegramError {
    /// The request did not complete: connection refused or reset, DNS, TLS, timeout,
    /// dropped connection. The URL (which holds the token) is stripped from the source.
    #[error("network error")]
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
    /// 409 Conflict: another consumer calls `getUpdates` with this token, or a webhook was
    /// set after the transport's start-up check. Retried with backoff; each retry is logged
    /// at error level with what to do.
    #[error("conflict (409): {description}")]
    Conflict {
        /// The server's description.
        description: String,
    },
    /// A webhook is set for the bot, and `getUpdates` does not work while one is (the Bot
    /// API answers every call with 409). Found by `getWebhookInfo` before the first
    /// `getUpdates`. Final: remove the webhook with `deleteWebhook`, or build the transport
    /// with [`delete_webhook(true)`](crate::TelegramTransportBuilder::delete_webhook).
    #[error(
        "a webhook is set for this bot{}, so getUpdates cannot be used: call deleteWebhook, or build the transport with .delete_webhook(true) to remove it at start",
        .host.as_deref().map(|h| format!(" (to {h})")).unwrap_or_default()
    )]
    WebhookActive {
        /// The host of the webhook's URL. Only the host is kept: the path of a webhook URL
        /// often holds a secret (the bot token itself, by a common convention).
        host: Option<String>,
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
    /// 200, a missing `result`). A parser message that quoted the token was rebuilt with
    /// the token removed (its text keeps the position; `line()`/`column()` read 0).
    #[error("invalid response; body: {body}")]
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
    /// The API base URL does not make a valid request URL (a configuration error, found
    /// when the transport is built). Final.
    #[error("invalid API base URL {api_url:?}")]
    InvalidApiUrl {
        /// The base URL as configured (with the token removed, should it contain it).
        api_url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// Transient errors went on for more than the configured number of retries.
    #[error("gave up after {attempts} attempts")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        last: Box<TelegramError>,
    },
}

impl TelegramError {
    /// Whether retrying the same request later could succeed (the network, the server's
    /// 5xx and 429, a conflict, a bad or oversized body). `false` for what no retry fixes:
    /// the token rejected, a wrong URL, a webhook in the way, other 4xx answers, and the
    /// retries already exhausted. The transport retries exactly the transient ones.
    pub fn is_transient(&self) -> bool {
        match self {
            TelegramError::Unauthorized { .. }
            | TelegramError::NotFound { .. }
            | TelegramError::WebhookActive { .. }
            | TelegramError::InvalidApiUrl { .. }
            | TelegramError::RetriesExhausted { .. } => false,
            TelegramError::Api { error_code, .. } => !(400..500).contains(error_code),
            _ => true,
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
            TelegramError::WebhookActive { .. } => "webhook_active",
            TelegramError::Unauthorized { .. } => "unauthorized",
            TelegramError::NotFound { .. } => "not_found",
            TelegramError::Api { error_code, .. } if *error_code >= 500 => "server_error",
            TelegramError::Api { .. } => "api",
            TelegramError::InvalidJson { .. } => "invalid_json",
            TelegramError::BodyTooLarge { .. } => "body_too_large",
            TelegramError::InvalidApiUrl { .. } => "invalid_api_url",
            TelegramError::RetriesExhausted { .. } => "retries_exhausted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "42:AAEsecretsecretsecretsecret";

    #[test]
    fn a_token_at_any_offset_around_the_cut_leaks_nothing() {
        let token = BotToken::new(TOKEN);
        for start in BODY_EXCERPT_BYTES - 40..BODY_EXCERPT_BYTES + 5 {
            let body = format!("{}{TOKEN}{}", "x".repeat(start), "y".repeat(100));
            let excerpt = BodyExcerpt::new(body.as_bytes(), &token);
            let shown = format!("{excerpt} {excerpt:?}");
            assert!(!shown.contains("42:") && !shown.contains("AAE"), "{start}: {shown}");
            assert!(excerpt.as_str().len() <= BODY_EXCERPT_BYTES);
            assert_eq!(excerpt.total_len(), body.len());
            assert!(shown.contains(&format!("… ({} bytes in all)", body.len())), "{shown}");
        }
    }

    #[test]
    fn the_length_note_appears_only_when_something_was_cut() {
        let token = BotToken::new(TOKEN);
        // Redaction makes the kept text shorter than the body, but nothing was cut.
        let whole = BodyExcerpt::new(format!("<p>{TOKEN}</p>").as_bytes(), &token);
        assert_eq!(whole.to_string(), "<p><redacted></p>");
        let cut = BodyExcerpt::new(&[b'z'; BODY_EXCERPT_BYTES + 1], &token);
        assert_eq!(cut.as_str().len(), BODY_EXCERPT_BYTES);
        assert!(
            cut.to_string()
                .ends_with(&format!("… ({} bytes in all)", BODY_EXCERPT_BYTES + 1))
        );
    }

    #[test]
    fn webhook_active_is_final_and_names_the_remedy() {
        let e = TelegramError::WebhookActive {
            host: Some("bot.example.com".into()),
        };
        assert!(!e.is_transient());
        assert_eq!(e.kind(), "webhook_active");
        let text = e.to_string();
        assert!(text.contains("(to bot.example.com)"), "{text}");
        assert!(
            text.contains("deleteWebhook") && text.contains(".delete_webhook(true)"),
            "{text}"
        );
        let text = TelegramError::WebhookActive { host: None }.to_string();
        assert!(text.starts_with("a webhook is set for this bot, so"), "{text}");
    }
}

/// Shows an error and its causes (`source()`) as one line, `outer: inner: innermost`, for
/// logs and reports: each error's own message says only what it is, so a report that
/// wants the reason walks the chain.
///
/// # Examples
///
/// ```
/// use pollgate_core::ErrorChain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the final acknowledgement failed")]
/// struct Outer(#[source] std::io::Error);
///
/// let e = Outer(std::io::Error::other("connection reset"));
/// assert_eq!(ErrorChain(&e).to_string(), "the final acknowledgement failed: connection reset");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
