#![doc = include_str!("../README.md")]
//!
//! # Crate map
//! - [`core`] (`pollgate-core`): the [`Transport`] trait, the [`Update`] envelope and the
//!   Telegram transport.
//! - [`admission`] (`pollgate-admission`): the [`AdmissionPolicy`] trait, the gate and the
//!   built-in policies.
//! - [`runtime`] (`pollgate-runtime`): the [`Runtime`] that composes them.
//! - `redis` (`pollgate-redis`, with the `redis` feature): the Redis Streams transport
//!   for scaling out to N workers (`docs/scale-out.md`).
//! - `webhook` (`pollgate-webhook`, with the `webhook` feature): the webhook transport —
//!   Telegram pushes, the same admission budget decides when each request is answered
//!   (`docs/webhooks.md`).
//! - `spool` (`pollgate-spool`, with the `spool` feature): the durable local spool for
//!   at-least-once delivery at full speed (`docs/tuning.md`).

pub use pollgate_admission as admission;
/// The transport contract ([`Transport`], [`Update`]) and the Telegram `getUpdates`
/// transport (`pollgate-core`).
pub use pollgate_core as transport;
pub use pollgate_runtime as runtime;

/// The Redis Streams transport, the stream producer for a bridge, and a private
/// `redis-server` for tests (the `redis` feature).
#[cfg(feature = "redis")]
pub use pollgate_redis as redis;

/// The webhook transport: an axum listener whose requests wait for admission (the
/// `webhook` feature).
#[cfg(feature = "webhook")]
pub use pollgate_webhook as webhook;

/// The durable local spool: fetch eagerly into redb, confirm once durable, handle at full
/// speed under at-least-once delivery (the `spool` feature).
#[cfg(feature = "spool")]
pub use pollgate_spool as spool;
/// teloxide handler trees under pollgate's admission control (feature `teloxide`).
#[cfg(feature = "teloxide")]
pub use pollgate_teloxide as teloxide;

pub use pollgate_admission::{
    Adaptive, AdmissionPolicy, Aimd, Barrier, ByteBudget, Fixed, Gate, Gradient2, Limit, Load, MemoryProbe, Outcome,
    RssAdaptive, all_of,
};
pub use pollgate_core::{TelegramError, TelegramTransport, Transport, Update, UpdateKind};
pub use pollgate_runtime::{CancellationToken, Delivery, Handler, Pacer, Retry, RunError, Runtime, Stats, Summary};
