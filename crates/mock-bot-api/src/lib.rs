//! A Telegram Bot API-compatible HTTP server on loopback, for pollgate's tests, examples
//! and benchmarks.
//!
//! pollgate's promises (never fetch more than can be admitted, confirm offsets correctly,
//! survive 429s, 5xx, broken JSON and conflicts) are about how a client talks to the real
//! Bot API over HTTP. Testing them against a trait-level fake would skip the part that
//! breaks in production, and testing against Telegram is neither repeatable nor fast. This
//! crate is the middle ground: a real HTTP server with the official `getUpdates` semantics
//! (offsets, limits, long polls, 409 on a competing poll), a deterministic generator of
//! realistic backlogs, and fault injection on demand or at random.
//!
//! # Use in-process
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_bot_api::{BacklogSpec, Fault, MockConfig, MockServer};
//!
//! let server = MockServer::start(MockConfig {
//!     backlog: Some(BacklogSpec { updates: 10_000, ..BacklogSpec::default() }),
//!     ..MockConfig::default()
//! })
//! .await?;
//! let endpoint = format!("{}/bot{}/getUpdates", server.url(), server.token());
//! server.inject(Fault::TooManyRequests { retry_after: 1 });
//! // ... point the client at `endpoint`, then assert on `server.stats()`.
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Use from another process
//! `cargo run -p mock-bot-api -- --port 8081 --updates 100000` serves until Ctrl-C. Besides
//! `/bot{token}/{method}` it answers the control endpoints `GET /stats`,
//! `POST /control/backlog`, `/control/push`, `/control/faults`, `/control/inject`,
//! `/control/conflict_window`, `/control/reset` and `GET /control/sent` (bodies are JSON:
//! [`BacklogSpec`], [`FaultRates`], [`Fault`]s with a `kind` tag).
//!
//! # Methods
//! `getMe`, `getUpdates`, `setWebhook`, `deleteWebhook`, `getWebhookInfo`, `close`,
//! `logOut`, `sendMessage`; parameters from the query string, url-encoded and multipart
//! forms and JSON bodies. Unknown methods get 404, a wrong token 401, bad parameters 400,
//! each with the Bot API's `{"ok":false,...}` envelope.
//!
//! # Webhooks
//! While a webhook is set (`setWebhook`, [`MockServer::set_webhook`] or
//! [`MockServer::set_webhook_spec`], [`MockConfig::webhook`], or `--webhook-url` on the
//! command line), the server POSTs its pending updates to it as the real Bot API server
//! does: one update per request with the secret token header, at most `max_connections` at
//! once, one at a time per chat in id order, retried with exponential backoff
//! ([`WebhookTiming`]) or after `Retry-After` until a 2xx answer delivers them, and only one
//! request per 2 s while the receiver is down (refusing connections, or nothing delivered
//! for 10 s); meanwhile `getUpdates` gets 409. `setWebhook` takes `https://` URLs and, for
//! local testing, `http://` ones on a loopback host. `deleteWebhook` stops the sender and leaves the
//! undelivered updates to `getUpdates`. [`Stats`] counts the requests (`webhook_*`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use mock_bot_api::{BacklogSpec, MockConfig, MockServer, WebhookSpec, WebhookTiming};
//!
//! // Push 1000 updates to a bot on loopback, 8 requests at a time; retry failed ones after
//! // 10 ms, 20 ms, 40 ms ... instead of 1 s, 2 s, 4 s ...
//! let server = MockServer::start(MockConfig {
//!     backlog: Some(BacklogSpec::default()),
//!     webhook: Some(WebhookSpec {
//!         max_connections: 8,
//!         ..WebhookSpec::new("http://127.0.0.1:8443/hook")
//!     }),
//!     webhook_timing: WebhookTiming {
//!         base: Duration::from_millis(10),
//!         cap: Duration::from_millis(500),
//!         ..WebhookTiming::default()
//!     },
//!     ..MockConfig::default()
//! })
//! .await?;
//! // ... once the bot has answered 200 to each of them:
//! assert_eq!(server.stats().webhook_delivered, 1000);
//! # Ok(()) }
//! ```

mod api;
mod config;
mod control;
mod faults;
mod generator;
mod params;
mod reply;
mod send_limits;
mod server;
mod state;
mod stats;
mod webhook;

pub use config::{
    BacklogSpec, DEFAULT_MAX_CONNECTIONS, DEFAULT_TOKEN, LiveSpec, Mix, MockConfig, WebhookSpec, WebhookTiming,
};
pub use faults::{Fault, FaultRates};
pub use send_limits::SendLimits;
pub use server::MockServer;
pub use stats::Stats;
