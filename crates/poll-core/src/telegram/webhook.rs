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

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::TelegramTransport;
use crate::error::TelegramError;
use crate::token::BotToken;

/// The part of `getWebhookInfo`'s `WebhookInfo` this check reads.
#[derive(Deserialize)]
struct WebhookInfo {
    /// The webhook's URL; empty when none is set.
    #[serde(default)]
    url: String,
}

#[derive(Serialize)]
struct DeleteWebhookParams {
    drop_pending_updates: bool,
}

#[derive(Serialize)]
struct NoParams {}

impl TelegramTransport {
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
            error!(error = %e, "getUpdates cannot start");
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
