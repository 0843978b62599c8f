//! Configuration of a mock server: where it listens, what it serves and how it misbehaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::FaultRates;

/// The token a [`MockConfig`] uses unless told otherwise.
pub const DEFAULT_TOKEN: &str = "123456:TEST-token";

/// Everything [`MockServer::start`](crate::MockServer::start) needs to know.
///
/// Build it with struct update syntax from [`MockConfig::default`]:
/// `MockConfig { backlog: Some(BacklogSpec::default()), ..MockConfig::default() }`.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Port on 127.0.0.1 to bind; 0 picks a free one.
    pub port: u16,
    /// The bot token clients must put in `/bot{token}/{method}`. The part before `:` is the
    /// bot's user id in `getMe` when it is a number.
    pub token: String,
    /// A backlog generated before the server accepts its first request.
    pub backlog: Option<BacklogSpec>,
    /// Updates generated in the background at a steady rate while clients poll.
    pub live: Option<LiveSpec>,
    /// Random fault probabilities applied to every `getUpdates` call.
    pub faults: FaultRates,
    /// Seed of the random source that decides random faults.
    pub seed: u64,
    /// The longest a long poll waits, whatever `timeout` the client asks for.
    pub max_poll_timeout: Duration,
    /// A webhook set from the start, as if `setWebhook` had been called before the first
    /// request: the backlog is pushed to it at once and `getUpdates` gets 409.
    pub webhook: Option<WebhookSpec>,
    /// Retry delays and the request timeout of the webhook sender.
    pub webhook_timing: WebhookTiming,
    /// Telegram's limits on `sendMessage` (about 30/s overall, 1/s per chat, 20/min per
    /// group), answered 429 + `retry_after` past them; `None` (the default) sends freely.
    pub send_limits: Option<crate::SendLimits>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            port: 0,
            token: DEFAULT_TOKEN.to_owned(),
            backlog: None,
            live: None,
            faults: FaultRates::default(),
            seed: 1,
            max_poll_timeout: Duration::from_secs(50),
            webhook: None,
            webhook_timing: WebhookTiming::default(),
            send_limits: None,
        }
    }
}

/// The shape of a batch of generated updates.
///
/// Generation is deterministic: the same spec yields the same update bodies (only the
/// `update_id`s depend on what the server already holds). Out-of-range values are clamped
/// rather than rejected: `chats` to `1..=1_000_000`, `text_bytes` to at most 1 MiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BacklogSpec {
    /// How many updates to generate.
    pub updates: usize,
    /// Approximate size in bytes of each message text.
    pub text_bytes: usize,
    /// How many distinct chats the updates are spread over.
    pub chats: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Which kinds of chats and updates.
    pub mix: Mix,
}

impl Default for BacklogSpec {
    fn default() -> Self {
        Self {
            updates: 1000,
            text_bytes: 64,
            chats: 10,
            seed: 1,
            mix: Mix::Varied,
        }
    }
}

/// The kinds of chats and updates a [`BacklogSpec`] generates.
///
/// A bot's traffic is [`Varied`](Mix::Varied); the text-only mixes are the workloads of an
/// echo bot, where every update is answered once, for measuring replies against
/// Telegram's send limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mix {
    /// Private chats, groups, supergroups and channels, each with its own mix of update
    /// kinds (text, photos, edits, callback queries, inline queries, member updates).
    #[default]
    Varied,
    /// Private chats only, every update a text message (some of them commands).
    PrivateText,
    /// Groups and supergroups only, every update a text message (some of them commands).
    GroupText,
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `varied`, `private-text` or `group-text`.
    fn from_str(s: &str) -> Result<Mix, String> {
        match s {
            "varied" => Ok(Mix::Varied),
            "private-text" => Ok(Mix::PrivateText),
            "group-text" => Ok(Mix::GroupText),
            _ => Err(format!(
                "unknown mix {s:?}: expected varied, private-text or group-text"
            )),
        }
    }
}

/// Live mode: generated updates arrive at a steady rate while clients poll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveSpec {
    /// Updates per second; a value that is not a positive finite number disables live mode.
    pub rate_per_sec: f64,
    /// Shape of the generated updates; `updates` is how many to push before stopping
    /// (0 = never stop).
    pub spec: BacklogSpec,
}

/// `max_connections` of a webhook when `setWebhook` does not give one, as in the Bot API.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 40;

/// A webhook: where the server pushes updates, with what secret and how many at once.
///
/// What `setWebhook` sets (its `url`, `secret_token` and `max_connections` parameters), for
/// [`MockConfig::webhook`] and [`MockServer::set_webhook_spec`](crate::MockServer::set_webhook_spec).
/// An empty `url` means no webhook. `max_connections` is clamped to 1..=100 when set.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Where updates are POSTed. Any scheme the HTTP client speaks (`http://` or `https://`).
    pub url: String,
    /// Sent as `X-Telegram-Bot-Api-Secret-Token` with every request when set.
    pub secret_token: Option<String>,
    /// Most requests in flight at once (1..=100; default 40).
    pub max_connections: u32,
}

impl WebhookSpec {
    /// A webhook at `url` without secret and with the default 40 connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for WebhookSpec {
    /// No webhook (empty `url`), no secret, 40 connections.
    fn default() -> Self {
        Self {
            url: String::new(),
            secret_token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl std::fmt::Debug for WebhookSpec {
    /// Shows the URL, whether a secret is set (never the secret) and `max_connections`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &self.url)
            .field("secret_token", &self.secret_token.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// How the webhook sender waits: between attempts at an update that failed, for an answer,
/// and while the receiver seems to be down.
///
/// After the `n`-th failure in a row of one update the next attempt waits
/// `base * 2^(n-1)`, at most `cap` (1 s, 2 s, 4 s … 60 s by default), unless the answer
/// carried `Retry-After`.
///
/// The receiver counts as down once `down_after` has passed without a delivered update
/// (counted from when the webhook was set, then from each delivery), and at once when a
/// request cannot connect (refused, unresolvable host, failed TLS handshake). While it is
/// down, at most one request starts per `probe_interval`, however many chats wait; the next
/// delivery ends it. The defaults, 10 s and 2 s, are the real server's for opening new
/// connections. A request that cannot connect does not count against its update: it keeps
/// its failure count and retry time.
///
/// Tests and demos scale all of these down to milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookTiming {
    /// The wait after an update's first failure.
    pub base: Duration,
    /// The longest wait between two attempts at one update (without `Retry-After`).
    pub cap: Duration,
    /// How long one request may take, from connecting to the end of the answer's body;
    /// a request that takes longer is a failure.
    pub request_timeout: Duration,
    /// How long without a delivered update before the receiver counts as down.
    pub down_after: Duration,
    /// While the receiver is down, the least time between the starts of two requests (at
    /// least 1 ms).
    pub probe_interval: Duration,
}

impl Default for WebhookTiming {
    /// 1 s doubling up to 60 s; 60 s per request; down after 10 s without a delivery, then
    /// one request per 2 s.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            down_after: Duration::from_secs(10),
            probe_interval: Duration::from_secs(2),
        }
    }
}

impl WebhookTiming {
    /// The wait before the next attempt at an update that failed `failures` times in a row:
    /// `base * 2^(failures-1)`, at most `cap` (and `base` for 0 or 1 failures).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use mock_bot_api::WebhookTiming;
    ///
    /// // Tests scale the delays down: 10 ms, 20 ms, 40 ms, then 50 ms from there on.
    /// let timing = WebhookTiming {
    ///     base: Duration::from_millis(10),
    ///     cap: Duration::from_millis(50),
    ///     ..WebhookTiming::default()
    /// };
    /// assert_eq!(timing.backoff(3), Duration::from_millis(40));
    /// assert_eq!(timing.backoff(4), Duration::from_millis(50));
    /// ```
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1 << doublings)
            .map_or(self.cap, |delay| delay.min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let timing = WebhookTiming::default();
        let secs: Vec<u64> = (1..=9).map(|n| timing.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(timing.backoff(0), Duration::from_secs(1));
        assert_eq!(timing.backoff(u32::MAX), Duration::from_secs(60));
        let fast = WebhookTiming {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            ..timing
        };
        let ms: Vec<u128> = (1..=5).map(|n| fast.backoff(n).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 50, 50]);
    }

    #[test]
    fn debug_hides_the_secret() {
        let spec = WebhookSpec {
            secret_token: Some("s3cr3t".into()),
            ..WebhookSpec::new("http://127.0.0.1:1/hook")
        };
        let text = format!("{spec:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
