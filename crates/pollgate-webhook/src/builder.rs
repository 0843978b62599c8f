//! [`WebhookBuilder`]: where to listen, the secret, and the bounds on waiting requests.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pollgate_core::Transport;
use tokio::net::TcpListener;

use crate::transport::WebhookTransport;

/// Default [`WebhookBuilder::max_waiting`]: 100, Telegram's largest `max_connections`, so
/// Telegram's own traffic never meets a 429 from the bound alone.
pub const DEFAULT_MAX_WAITING: usize = 100;

/// Default [`WebhookBuilder::max_wait`]: 30 s, well inside the time Telegram's server
/// waits for an answer, so a request the budget cannot take soon is handed back with a
/// `Retry-After` instead of timing out on Telegram's side (which would count as a failure
/// and slow down every later delivery).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// Default [`WebhookBuilder::max_body_bytes`]: 1 MiB. Telegram's updates are a few KiB
/// (a message's text is at most 4096 characters).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Default [`WebhookBuilder::retry_after`]: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Configures a [`WebhookTransport`]. Made by [`WebhookTransport::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_webhook::WebhookTransport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let builder = WebhookTransport::builder()
///     .path("/telegram")
///     .secret("s3cr3t-token") // the `secret_token` given to setWebhook
///     .max_waiting(40) // Telegram's default max_connections
///     .max_wait(Duration::from_secs(20))
///     .max_body_bytes(256 << 10)
///     .retry_after(Duration::from_secs(2));
/// assert!(!format!("{builder:?}").contains("s3cr3t"));
///
/// // Telegram's rule for secrets is checked before anything is bound.
/// let refused = builder.clone().secret("no spaces allowed").bind("127.0.0.1:0".parse()?).await;
/// assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
/// let transport = builder.bind("127.0.0.1:0".parse()?).await?;
/// assert_ne!(transport.local_addr().port(), 0);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until bound"]
#[derive(Clone)]
pub struct WebhookBuilder {
    pub(crate) path: String,
    pub(crate) secret: Option<String>,
    pub(crate) max_waiting: usize,
    pub(crate) max_wait: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) retry_after: Duration,
    pub(crate) window: usize,
    pub(crate) backlog: Option<BacklogSource>,
}

/// One reading of a backlog source.
type BacklogReading = Pin<Box<dyn Future<Output = Option<u64>> + Send>>;

/// Reads the backlog of the server that pushes: [`WebhookBuilder::backlog_from`].
#[derive(Clone)]
pub(crate) struct BacklogSource(Arc<dyn Fn() -> BacklogReading + Send + Sync>);

impl BacklogSource {
    pub(crate) fn read(&self) -> BacklogReading {
        (self.0)()
    }
}

impl Default for WebhookBuilder {
    fn default() -> Self {
        Self {
            path: "/".into(),
            secret: None,
            max_waiting: DEFAULT_MAX_WAITING,
            max_wait: DEFAULT_MAX_WAIT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry_after: DEFAULT_RETRY_AFTER,
            window: 100,
            backlog: None,
        }
    }
}

impl WebhookBuilder {
    /// The path Telegram posts to (default `/`); other paths get 404, other methods 405.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The `secret_token` given to `setWebhook`: requests without it in
    /// `X-Telegram-Bot-Api-Secret-Token` are refused with 401 before their body is read.
    /// 1–256 characters of `A-Z a-z 0-9 _ -` (Telegram's rule, checked at bind).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The most requests that wait for admission at once (default
    /// [`DEFAULT_MAX_WAITING`]); one more gets 429 with `Retry-After`, before its body is
    /// read. Requests whose update was taken (running, or waiting for its handler under
    /// at-least-once) do not count: the policy bounds those.
    pub fn max_waiting(mut self, requests: usize) -> Self {
        self.max_waiting = requests;
        self
    }

    /// How long a request may wait for admission before it is answered 429 with
    /// `Retry-After` (default [`DEFAULT_MAX_WAIT`]).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The largest body accepted (default [`DEFAULT_MAX_BODY_BYTES`]); a larger one gets 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The `Retry-After` sent with 429 and 503 answers, rounded up to whole seconds
    /// (default [`DEFAULT_RETRY_AFTER`]).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The most updates one fetch hands to the runtime (default 100).
    pub fn window(mut self, updates: usize) -> Self {
        self.window = updates.max(1);
        self
    }

    /// Where [`Transport::backlog`] reads the updates still waiting on the server that
    /// pushes (default: nowhere, and the runtime exports no backlog gauge). A listener
    /// only sees what Telegram sends it; what Telegram still holds is `getWebhookInfo`'s
    /// `pending_update_count`, which a [`TelegramTransport`] for the same bot reads.
    ///
    /// Only `source`'s [`backlog`](Transport::backlog) is ever called, each time the
    /// runtime reads the backlog (every `backlog_interval`, with
    /// `RuntimeBuilder::export_metrics`); never its `fetch`, so a `TelegramTransport` built
    /// with `delete_webhook(true)` deletes nothing here. Pass an `Arc` to keep using the
    /// transport elsewhere (`setWebhook`, `deleteWebhook`).
    ///
    /// [`TelegramTransport`]: pollgate_core::TelegramTransport
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use pollgate_core::{SetWebhook, TelegramTransport};
    /// use pollgate_webhook::WebhookTransport;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let bot = Arc::new(TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?);
    /// let listener = WebhookTransport::builder()
    ///     .backlog_from(Arc::clone(&bot)) // pending_update_count, as the backlog gauge
    ///     .bind("127.0.0.1:8080".parse()?)
    ///     .await?;
    /// bot.set_webhook(&SetWebhook::new("https://bot.example.com/")).await?;
    /// # let _ = listener;
    /// # Ok(()) }
    /// ```
    pub fn backlog_from<B: Transport>(mut self, source: B) -> Self {
        let source = Arc::new(source);
        self.backlog = Some(BacklogSource(Arc::new(move || {
            let source = Arc::clone(&source);
            Box::pin(async move { source.backlog().await })
        })));
        self
    }

    /// Binds `addr` and starts serving (on the current tokio runtime).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound, or the configuration is invalid
    /// ([`io::ErrorKind::InvalidInput`]: a bad secret, a path not starting with `/`, a
    /// zero `max_waiting`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it returns, it leaves nothing bound and nothing
    /// serving (the listener, if bound yet, is closed with the future).
    pub async fn bind(self, addr: SocketAddr) -> io::Result<WebhookTransport> {
        self.validate()?;
        let listener = TcpListener::bind(addr).await?;
        WebhookTransport::serve(self, listener)
    }

    /// Starts serving on a listener the caller bound (for example one handed over by
    /// systemd socket activation).
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind), except binding.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns the server task).
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_webhook::WebhookTransport;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// // Bound elsewhere: here, by the test; in production, by systemd or a supervisor.
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let transport = WebhookTransport::builder().path("/hook").listen(listener)?;
    /// assert_eq!(transport.local_addr(), addr);
    /// # Ok(()) }
    /// ```
    pub fn listen(self, listener: TcpListener) -> io::Result<WebhookTransport> {
        self.validate()?;
        WebhookTransport::serve(self, listener)
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if let Some(secret) = &self.secret
            && (secret.is_empty()
                || secret.len() > 256
                || !secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return invalid(
                "webhook secret: 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's secret_token rule)".into(),
            );
        }
        if !self.path.starts_with('/') {
            return invalid(format!("webhook path {:?} must start with /", self.path));
        }
        if self.max_waiting == 0 {
            return invalid("webhook max_waiting must be at least 1".into());
        }
        Ok(())
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Debug for WebhookBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookBuilder")
            .field("path", &self.path)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_waiting", &self.max_waiting)
            .field("max_wait", &self.max_wait)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("retry_after", &self.retry_after)
            .field("window", &self.window)
            .field("backlog", &self.backlog.as_ref().map(|_| "<source>"))
            .finish()
    }
}
