//! The check before the first `getUpdates`: is a webhook set for the bot?
//!
//! While a webhook is set, the Bot API answers every `getUpdates` with 409 ("can't use
//! getUpdates method while webhook is active"). Retrying cannot help, and the 409 reads
//! like the one a second polling instance causes, so a bot left with a webhook would
//! retry forever. The transport asks `getWebhookInfo` once, before its first `getUpdates`,
//! and then either removes the webhook (`deleteWebhook` with `drop_pending_updates=false`,
//! when built with `delete_webhook(true)`, as teloxide does) or stops with the final
//! [`TelegramError::WebhookActive`].
//!
//! A webhook set later, while polling, is not looked for again: its 409s are retried like
//! a competing consumer's, and logged with what to do.
//!
//! For bots that take updates by webhook (`pollgate-webhook`), [`SetWebhook`] with
//! [`TelegramTransport::set_webhook`] and [`TelegramTransport::delete_webhook`] switch
//! between the two: a webhook set stops `getUpdates`; deleting it (keeping the pending
//! updates) lets polling resume where the webhook left off.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::TelegramTransport;
use crate::error::TelegramError;
use crate::token::BotToken;

/// The part of `getWebhookInfo`'s `WebhookInfo` this check (and the backlog gauge) reads.
#[derive(Deserialize)]
struct WebhookInfo {
    /// The webhook's URL; empty when none is set.
    #[serde(default)]
    url: String,
    /// Updates waiting on the server (with or without a webhook).
    #[serde(default)]
    pending_update_count: Option<u64>,
}

#[derive(Serialize)]
struct DeleteWebhookParams {
    drop_pending_updates: bool,
}

#[derive(Serialize)]
struct NoParams {}

/// The parameters of `setWebhook` a bot sets: where Telegram posts, the secret it sends
/// with each request, how many requests it keeps open, which update kinds, and whether to
/// drop what is pending.
///
/// `Debug` redacts the secret.
///
/// # Examples
///
/// ```no_run
/// use pollgate_core::{SetWebhook, TelegramTransport};
///
/// # async fn demo() -> Result<(), pollgate_core::TelegramError> {
/// let bot = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN").unwrap()).build()?;
/// bot.set_webhook(
///     &SetWebhook::new("https://bot.example.com/telegram")
///         .secret_token("s3cr3t-token")
///         .max_connections(100),
/// )
/// .await?;
/// // ... and back to polling, keeping what is pending:
/// bot.delete_webhook(false).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct SetWebhook {
    /// The HTTPS URL Telegram posts updates to (ports 443, 80, 88 or 8443).
    pub url: String,
    /// Sent in `X-Telegram-Bot-Api-Secret-Token` with every request: 1–256 characters of
    /// `A-Z a-z 0-9 _ -`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_token: Option<String>,
    /// Requests Telegram keeps open at once, 1–100 (Telegram's default: 40).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The update kinds to receive (`message`, `callback_query`, ...); `None` keeps the
    /// previous setting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_updates: Option<Vec<String>>,
    /// Drop every pending update instead of delivering it to the new webhook.
    pub drop_pending_updates: bool,
}

impl SetWebhook {
    /// A webhook at `url`, with Telegram's defaults for the rest.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret_token: None,
            max_connections: None,
            allowed_updates: None,
            drop_pending_updates: false,
        }
    }

    /// Sets [`secret_token`](Self::secret_token).
    ///
    /// # Examples
    ///
    /// The secret goes to Telegram, never to a log line:
    ///
    /// ```
    /// use pollgate_core::SetWebhook;
    ///
    /// let params = SetWebhook::new("https://bot.example.com/telegram").secret_token("s3cr3t-token");
    /// assert_eq!(params.secret_token.as_deref(), Some("s3cr3t-token"));
    /// assert!(!format!("{params:?}").contains("s3cr3t"));
    /// ```
    #[must_use]
    pub fn secret_token(mut self, secret: impl Into<String>) -> Self {
        self.secret_token = Some(secret.into());
        self
    }

    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = Some(connections);
        self
    }

    /// Sets [`allowed_updates`](Self::allowed_updates).
    #[must_use]
    pub fn allowed_updates<S: Into<String>>(mut self, kinds: impl IntoIterator<Item = S>) -> Self {
        self.allowed_updates = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// Sets [`drop_pending_updates`](Self::drop_pending_updates).
    #[must_use]
    pub fn drop_pending_updates(mut self, drop: bool) -> Self {
        self.drop_pending_updates = drop;
        self
    }
}

impl std::fmt::Debug for SetWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetWebhook")
            .field("url", &self.url)
            .field("secret_token", &self.secret_token.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("allowed_updates", &self.allowed_updates)
            .field("drop_pending_updates", &self.drop_pending_updates)
            .finish()
    }
}

impl TelegramTransport {
    /// Sets the bot's webhook (`setWebhook`), with the transport's retries. From then on
    /// Telegram posts updates there and `getUpdates` fails with 409.
    ///
    /// # Errors
    /// The Bot API's answer (for example `BadRequest` for a URL that is not HTTPS), or the
    /// network error after the retries.
    ///
    /// # Cancel safety
    /// Not cancel safe: a request already sent may still reach Telegram and take effect
    /// after the future is dropped, so the webhook may be set or not. Calling it again
    /// with the same parameters is harmless; [`delete_webhook`](Self::delete_webhook)
    /// undoes it.
    pub async fn set_webhook(&self, params: &SetWebhook) -> Result<(), TelegramError> {
        let _: bool = self.call("setWebhook", &self.urls.set_webhook, params).await?;
        info!(
            webhook_host = webhook_host(&params.url, &self.token).as_deref().unwrap_or("?"),
            max_connections = params.max_connections,
            "webhook set"
        );
        Ok(())
    }

    /// Removes the bot's webhook (`deleteWebhook`); with `drop_pending_updates` false the
    /// pending updates wait for `getUpdates` (or the next webhook).
    ///
    /// # Errors
    /// The Bot API's answer, or the network error after the retries.
    ///
    /// # Cancel safety
    /// Not cancel safe: a request already sent may still reach Telegram, so after a drop
    /// the webhook may be deleted or not (and, with `drop_pending_updates`, the pending
    /// updates dropped or not). Calling it again is harmless.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pollgate_core::TelegramTransport;
    ///
    /// # async fn demo() -> Result<(), pollgate_core::TelegramError> {
    /// let bot = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN").unwrap()).build()?;
    /// // Back from webhooks to long polling; what Telegram holds waits for `getUpdates`.
    /// bot.delete_webhook(false).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_webhook(&self, drop_pending_updates: bool) -> Result<(), TelegramError> {
        let params = DeleteWebhookParams { drop_pending_updates };
        let _: bool = self.call("deleteWebhook", &self.urls.delete_webhook, &params).await?;
        info!(drop_pending_updates, "webhook deleted");
        Ok(())
    }

    /// Runs the webhook check unless it already succeeded.
    ///
    /// # Errors
    /// [`TelegramError::WebhookActive`] when a webhook is set and may not be deleted; the
    /// errors of `getWebhookInfo` and `deleteWebhook` after their retries.
    ///
    /// # Cancel safety
    /// Cancel safe: a check that is dropped, or fails, runs again on the next call.
    pub(super) async fn ensure_no_webhook(&self) -> Result<(), TelegramError> {
        self.webhook_checked
            .get_or_try_init(|| self.check_webhook())
            .await
            .map(drop)
    }

    /// `getWebhookInfo`'s `pending_update_count`: the updates that wait on the server.
    /// One request, no retries (a gauge that misses a reading loses nothing).
    pub(super) async fn pending_update_count(&self) -> Option<u64> {
        match self
            .call_once::<WebhookInfo>(&self.urls.get_webhook_info, &NoParams {})
            .await
        {
            Ok(info) => info.pending_update_count,
            Err(e) => {
                tracing::debug!(error = %crate::ErrorChain(&e), "getWebhookInfo failed; no backlog reading");
                None
            }
        }
    }

    async fn check_webhook(&self) -> Result<(), TelegramError> {
        let urls = &self.urls;
        let info: WebhookInfo = self
            .call("getWebhookInfo", &urls.get_webhook_info, &NoParams {})
            .await?;
        if info.url.is_empty() {
            return Ok(());
        }
        let host = webhook_host(&info.url, &self.token);
        if !self.delete_webhook {
            let e = TelegramError::WebhookActive { host };
            error!(error = %crate::ErrorChain(&e), "getUpdates cannot start");
            return Err(e);
        }
        let params = DeleteWebhookParams {
            drop_pending_updates: false,
        };
        let _: bool = self.call("deleteWebhook", &urls.delete_webhook, &params).await?;
        self.stats.webhooks_deleted.fetch_add(1, Ordering::Relaxed);
        info!(
            webhook_host = host.as_deref().unwrap_or("?"),
            "deleted the bot's webhook so that getUpdates can work (delete_webhook(true)); pending updates are kept"
        );
        Ok(())
    }
}

/// The host of a webhook URL, which is all an error or a log line shows of it: the rest
/// may hold a secret (often the bot token itself), and is redacted in any case.
fn webhook_host(url: &str, token: &BotToken) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.host_str().map(|host| token.redact(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_of_a_webhook_url_is_kept() {
        let token = BotToken::new("7:AAEsecretsecretsecret");
        let host = |url: &str| webhook_host(url, &token);
        assert_eq!(
            host("https://bot.example.com:8443/7:AAEsecretsecretsecret?k=v").as_deref(),
            Some("bot.example.com")
        );
        assert_eq!(host("https://user:pw@10.0.0.1/hook").as_deref(), Some("10.0.0.1"));
        assert_eq!(host("not a url"), None);
    }
}
