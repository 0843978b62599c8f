//! A webhook transport for pollgate: Telegram pushes, admission still decides.
//!
//! # Why
//!
//! With a webhook, Telegram's Bot API server sends each update as an HTTP POST and waits
//! for the answer: at most `max_connections` (1–100, default 40) requests at a time, one
//! update of a chat at a time, a non-2xx answer retried with a growing delay (about 1, 2,
//! 4 … s, capped near a minute), `Retry-After` honoured. Frameworks answer 200 at once and
//! run the handler in the background, so after an outage the whole backlog is in memory
//! at once — the polling problem again. Here the answer *is* the admission: a request
//! waits until the runtime takes its update under its policy, and is answered
//! 200 then (eager delivery) or once the handler finished (at-least-once). While it waits,
//! Telegram's connection stays busy, so Telegram itself slows down; the backlog stays on
//! Telegram's side, exactly as polling leaves it in `getUpdates`.
//!
//! [`WebhookTransport`] is a [`Transport`](pollgate_core::Transport) with individual acks
//! (the receipt of each request), so the runtime drives it like any other transport:
//! every policy, `ordered(true)`, handler timeouts and shutdown work unchanged.
//!
//! # Bounds and answers
//!
//! | request | answer |
//! |---|---|
//! | not a POST, or another path | 405 / 404 (axum's router), body not read |
//! | without the secret header, or a wrong one (when a secret is set) | 401, counted, body not read |
//! | more than [`WebhookBuilder::max_waiting`] requests already waiting for admission | 429 with `Retry-After`, body not read |
//! | a body over [`WebhookBuilder::max_body_bytes`] | 413 |
//! | a body not received within [`WebhookBuilder::max_wait`] (stalled connection) | 408 |
//! | not JSON, or no integer `update_id` | 400 (not an update; Telegram never sends one) |
//! | an update whose envelope cannot be decoded | 200 after an error log, counted: retrying it cannot help (as polling acknowledges past it) |
//! | waited [`WebhookBuilder::max_wait`] without being admitted | 429 with `Retry-After`: Telegram sends it again later |
//! | admitted (eager) or handled (at-least-once) | 200 |
//! | the runtime stopped before taking it | 503 with `Retry-After` |
//!
//! Telegram resends what was not answered 2xx, so a request that times out on Telegram's
//! side after its update was taken is delivered again: webhooks are at-least-once, and
//! handlers should tolerate a repeat (the `update_id` identifies it).
//!
//! # Security
//!
//! Set a secret ([`WebhookBuilder::secret`], the `secret_token` of `setWebhook`): every
//! request must carry it in `X-Telegram-Bot-Api-Secret-Token`, compared in constant time.
//! The secret never appears in `Debug` output or logs. TLS is left to a reverse proxy
//! (nginx, Caddy, a cloud load balancer) in front of the listener; Telegram accepts ports
//! 443, 80, 88 and 8443.
//!
//! # Examples
//!
//! ```no_run
//! use pollgate_webhook::WebhookTransport;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let transport = WebhookTransport::builder()
//!     .path("/telegram")
//!     .secret(std::env::var("TELEGRAM_WEBHOOK_SECRET").expect("a secret"))
//!     .bind("127.0.0.1:8080".parse().unwrap())
//!     .await?;
//! println!("listening on {}", transport.local_addr());
//! // Runtime::builder(transport, handler).policy(...).build().run().await
//! # Ok(()) }
//! ```

mod builder;
mod queue;
mod receive;
mod stats;
mod transport;

pub use builder::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT, DEFAULT_MAX_WAITING, DEFAULT_RETRY_AFTER, WebhookBuilder};
pub use stats::WebhookStats;
pub use transport::{WebhookHandle, WebhookTransport};

/// The header Telegram sends the webhook's `secret_token` in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
