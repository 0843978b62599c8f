//! pollgate's transport layer: where updates come from, and how they are acknowledged.
//!
//! A long-polling consumer that fetches whatever the server hands out runs out of memory
//! on a large backlog. pollgate fetches only what its admission policy can admit, so the
//! transport's one essential knob is the `limit` of each fetch: [`Transport::fetch`] takes
//! it. The rest of this crate is what a correct Telegram consumer needs and nothing more:
//!
//! - [`Transport`]: fetch at most `limit` updates with a long-poll timeout, acknowledge
//!   (cumulative offsets or per-update receipts), flush on shutdown;
//! - [`Update`]: one update's raw JSON with its id, kind, size and ordering key, decoded
//!   without a second parse and without allocating per field;
//! - [`TelegramTransport`]: `getUpdates` over reqwest with rustls, typed errors
//!   ([`TelegramError`]), retries with backoff, `retry_after`, a body-size cap, a webhook
//!   check before the first poll (a set webhook would make every `getUpdates` fail), and a
//!   bot token that never reaches a log line, an error or a `Debug` output.
//!
//! This crate knows nothing about admission or scheduling (`pollgate-admission` and
//! `pollgate-runtime` do).

mod backoff;
mod decode;
mod error;
#[cfg(feature = "test-util")]
mod in_memory;
mod telegram;
mod token;
mod transport;
mod update;

pub use backoff::{Backoff, Sleep, SleepFuture, TokioSleep};
pub use decode::GetUpdatesResponse;
pub use error::{BODY_EXCERPT_BYTES, BodyExcerpt, ErrorChain, TelegramError};
#[cfg(feature = "test-util")]
pub use in_memory::InMemoryTransport;
pub use telegram::{
    DEFAULT_API_URL, DEFAULT_MAX_BODY_BYTES, MAX_LIMIT, SetWebhook, TelegramStats, TelegramTransport,
    TelegramTransportBuilder,
};
pub use token::BotToken;
pub use transport::{Ack, AckModel, Batch, DecodeFailure, FetchRequest, HandlerFailure, Revocations, Transport};
pub use update::{EnvelopeError, Update, UpdateKind};
