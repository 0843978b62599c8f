//! teloxide's handler trees under pollgate's admission control.
//!
//! # Why
//!
//! teloxide's `Dispatcher` spawns a worker per chat with no bound on their number, and
//! fetches `getUpdates` as fast as the server answers: a backlog becomes as many running
//! handlers as there are chats, each holding its memory. pollgate fetches only what its
//! admission policy admits. This crate runs the same handler tree (a `dptree` handler with
//! its dependencies: the `Bot`, shared state, a DB pool) as pollgate's [`Handler`], on typed
//! [`teloxide::types::Update`]s, so a teloxide bot keeps its handlers and gains the budget,
//! per-chat ordering, at-least-once delivery, the spool and retries.
//!
//! # Migrating a teloxide bot
//!
//! Before:
//!
//! ```no_run
//! use teloxide::prelude::*;
//!
//! # async fn demo(handler: teloxide::dispatching::UpdateHandler<teloxide::RequestError>) {
//! let bot = Bot::from_env();
//! Dispatcher::builder(bot, handler)
//!     .dependencies(dptree::deps![])
//!     .build()
//!     .dispatch()
//!     .await;
//! # }
//! ```
//!
//! After (the same `handler` and dependencies; `Bot` and `Me` are inserted for you):
//!
//! ```no_run
//! use pollgate_core::TelegramTransport;
//! use pollgate_runtime::Runtime;
//! use pollgate_teloxide::TeloxideHandler;
//! use teloxide::prelude::*;
//!
//! # async fn demo(handler: teloxide::dispatching::UpdateHandler<teloxide::RequestError>) -> Result<(), Box<dyn std::error::Error>> {
//! let token = std::env::var("TELEGRAM_BOT_TOKEN")?;
//! let bot = Bot::new(&token);
//! let handler = TeloxideHandler::new(bot, handler, dptree::deps![]).await?;
//! let transport = TelegramTransport::builder(token).build()?;
//! Runtime::builder(transport, handler)
//!     .ordered(true) // one update per chat at a time, as the Dispatcher's workers
//!     .shutdown_on_signals()
//!     .build()
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # What reaches the policy
//!
//! A branch that returns `Err(RequestError::RetryAfter(_))` (Telegram's 429) or a network
//! error returns [`TeloxideError::Overloaded`], which the runtime reports to the admission
//! policy as overload: an adaptive policy (`pollgate_admission::Aimd`, `Gradient2`) then
//! runs fewer handlers at once. Other errors are failures unrelated to load. An update that
//! teloxide cannot decode is [`TeloxideError::Undecodable`] with its id, never a panic; an
//! update no branch handles is logged at debug level and counts as handled.
//!
//! [`Handler`]: pollgate_runtime::Handler

mod error;
mod handler;
mod send_limits;

pub use error::TeloxideError;
pub use handler::TeloxideHandler;
pub use send_limits::SendLimiter;
