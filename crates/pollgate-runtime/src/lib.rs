//! pollgate's runtime: fetch only what the admission policy can admit, run each update
//! as a tracked task, acknowledge what is finished, and shut down without losing work.
//!
//! A long-polling bot that spawns a task per fetched update holds the whole backlog in
//! memory after an outage and is killed for it. [`Runtime`] composes a
//! [`pollgate_core::Transport`], a [`pollgate_admission::AdmissionPolicy`] and a
//! [`Handler`] so that:
//! - the next fetch asks for exactly as many updates as the policy can admit now, and
//!   overlaps the running handlers (pipelining); the rest of the backlog stays on the
//!   server;
//! - each update holds an RAII permit for its declared cost while it runs; its outcome
//!   (success, error, panic, latency) is fed back to the policy; errors and panics are
//!   counted and logged and never stop the loop;
//! - acknowledgement follows the [`Delivery`] mode: eager, or at-least-once (the offset
//!   never passes an unfinished update; redelivered updates are dropped);
//! - optional per-key ordering runs one update per chat at a time without letting a slow
//!   chat stall the others;
//! - an optional [`Pacer`] keeps an update that cannot do its work yet (a reply waiting
//!   for its chat's send slot) out of the policy's slots until it can;
//! - an optional handler timeout cancels a stuck handler and reports it as overload;
//! - a graceful shutdown, on the shutdown token or on SIGTERM/SIGINT, drains running
//!   handlers up to a deadline and confirms the offset.
//!
//! # Features
//! - `signal` (default): [`RuntimeBuilder::shutdown_on_signals`], through tokio's
//!   `signal` feature.
//!
//! # Examples
//! ```no_run
//! use std::time::Duration;
//!
//! use pollgate_admission::ByteBudget;
//! use pollgate_core::{TelegramTransport, Update};
//! use pollgate_runtime::{Delivery, Runtime};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?;
//! let runtime = Runtime::builder(transport, |update: Update| async move {
//!     println!("update {} from chat {:?}", update.id(), update.ordering_key());
//!     Ok::<(), std::io::Error>(())
//! })
//! .policy(ByteBudget::new(256 << 20))
//! .cost_fn(|_| 1 << 20) // each handler holds about 1 MiB
//! .delivery(Delivery::AtLeastOnce)
//! .ordered(true)
//! .handler_timeout(Duration::from_secs(60)) // a stuck handler must not hold the offset
//! .shutdown_on_signals() // SIGTERM or Ctrl-C: stop fetching, drain, confirm the offset
//! .build();
//! let summary = runtime.run().await?;
//! println!("handled {}", summary.stats.finished());
//! # Ok(()) }
//! ```

mod acks;
mod config;
mod dispatch;
mod handler;
pub mod metrics;
mod ordering;
pub mod pace;
mod retry;
mod runtime;
mod shutdown;
#[cfg(feature = "signal")]
mod signals;
mod stats;
#[cfg(feature = "signal")]
pub use signals::{StopSignal, StopSignals};
mod task;

pub use config::{DEFAULT_COST_FACTOR, DEFAULT_REPOLL_INTERVAL, Delivery, RuntimeBuilder};
pub use handler::{BoxError, Handler, Overloaded};
pub use pace::Pacer;
pub use retry::Retry;
pub use runtime::{FlushError, RunError, Runtime, Summary};
pub use stats::{Stats, StatsHandle};
pub use tokio_util::sync::CancellationToken;
