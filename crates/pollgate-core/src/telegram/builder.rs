//! [`TelegramTransportBuilder`]: the settings of a [`TelegramTransport`], with defaults.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::stats::Counters;
use super::{DEFAULT_API_URL, DEFAULT_MAX_BODY_BYTES, MethodUrls, NO_OFFSET, TelegramTransport};
use crate::backoff::{Backoff, Sleep, TokioSleep};
use crate::error::TelegramError;
use crate::token::BotToken;

/// Builds a [`TelegramTransport`]; see [`TelegramTransport::builder`].
///
/// # Examples
///
/// A transport for a local Bot API server, taking only what the bot handles, and giving
/// up on a network outage after about a minute instead of retrying forever:
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Backoff, TelegramTransport};
///
/// let transport = TelegramTransport::builder("123456:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-ha")
///     .api_url("http://127.0.0.1:8081/")
///     .allowed_updates(["message", "callback_query"])
///     .http_timeout_margin(Duration::from_secs(5))
///     .connect_timeout(Duration::from_secs(3))
///     .max_body_bytes(16 << 20)
///     .backoff(Backoff { max_retries: Some(10), ..Backoff::default() })
///     .build()?; // no request yet: the first fetch sends the first
/// let debug = format!("{transport:?}");
/// assert!(debug.contains("http://127.0.0.1:8081") && !debug.contains("AAEhBOweik"));
/// # Ok::<(), pollgate_core::TelegramError>(())
/// ```
#[must_use]
pub struct TelegramTransportBuilder {
    token: BotToken,
    api_url: String,
    allowed_updates: Option<Vec<String>>,
    delete_webhook: bool,
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
            .field("delete_webhook", &self.delete_webhook)
            .finish_non_exhaustive()
    }
}

impl TelegramTransport {
    /// Starts building a transport for this bot token.
    pub fn builder(token: impl Into<String>) -> TelegramTransportBuilder {
        TelegramTransportBuilder {
            token: BotToken::new(token),
            api_url: DEFAULT_API_URL.to_owned(),
            allowed_updates: None,
            delete_webhook: false,
            http_margin: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            sleep: Arc::new(TokioSleep),
            client: None,
        }
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

    /// Whether a webhook found before the first `getUpdates` is removed (default `false`).
    ///
    /// The Bot API refuses `getUpdates` while a webhook is set. With `true` the transport
    /// calls `deleteWebhook` (keeping pending updates) and logs it at info level, as
    /// teloxide's polling does; with `false` the first fetch fails with the final
    /// [`TelegramError::WebhookActive`], since removing someone's webhook is not a
    /// decision to take silently.
    ///
    /// # Examples
    /// ```
    /// use pollgate_core::TelegramTransport;
    ///
    /// // A bot moving from webhooks to long polling: take over from the webhook.
    /// let transport = TelegramTransport::builder("123456:ABC-your-token")
    ///     .delete_webhook(true)
    ///     .build()?;
    /// # Ok::<(), pollgate_core::TelegramError>(())
    /// ```
    pub fn delete_webhook(mut self, delete: bool) -> Self {
        self.delete_webhook = delete;
        self
    }

    /// How much longer than the long-poll timeout the HTTP request may take before it is
    /// abandoned (default 10 s). Calls that do not long-poll (`getWebhookInfo`,
    /// `deleteWebhook`) get this margin alone.
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

    /// Builds the transport. No request is sent until the first fetch.
    ///
    /// # Errors
    /// [`TelegramError::Network`] when the HTTP client cannot be built;
    /// [`TelegramError::InvalidApiUrl`] when the API base URL does not make a valid URL.
    pub fn build(self) -> Result<TelegramTransport, TelegramError> {
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| TelegramError::Network(e.without_url()))?,
        };
        let url = |method: &str| {
            let url = format!("{}/bot{}/{method}", self.api_url, self.token.expose());
            reqwest::Url::parse(&url).map_err(|source| TelegramError::InvalidApiUrl {
                api_url: self.token.redact(&self.api_url),
                source,
            })
        };
        let urls = MethodUrls {
            get_updates: url("getUpdates")?,
            get_webhook_info: url("getWebhookInfo")?,
            delete_webhook: url("deleteWebhook")?,
            set_webhook: url("setWebhook")?,
        };
        Ok(TelegramTransport {
            client,
            token: self.token,
            api_url: self.api_url,
            urls,
            allowed_updates: self.allowed_updates,
            delete_webhook: self.delete_webhook,
            http_margin: self.http_margin,
            backoff: self.backoff,
            max_body_bytes: self.max_body_bytes,
            sleep: self.sleep,
            offset: AtomicI64::new(NO_OFFSET),
            webhook_checked: OnceCell::new(),
            stats: Counters::default(),
        })
    }
}
