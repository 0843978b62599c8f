//! A durable local spool: at-least-once at full speed.
//!
//! # Why
//!
//! Telegram's offset confirms *everything below it*. A bot that confirms only what its
//! handlers finished can therefore have at most one fetch window (100 ids) out past its
//! oldest unfinished update: one slow handler holds the whole bot, and a 128 MiB budget
//! that allows 512 handlers at once ran at 0.19 of its ideal (`docs/benchmarks.md`).
//!
//! The spool breaks that coupling. [`SpoolTransport`] wraps the Telegram transport (or any
//! transport with cumulative acks): a filler task fetches eagerly into an embedded,
//! crash-safe store on local disk ([redb](https://docs.rs/redb)), commits each batch in
//! one transaction, and only then confirms the batch's offset to Telegram. The runtime
//! drives the spool like a queue with individual acks: each fetch takes entries in id
//! order under the admission policy, each acknowledgement deletes finished entries. The
//! budget governs memory; the spool holds the backlog on disk.
//!
//! # Guarantees
//!
//! * An update is confirmed to Telegram only once it is durable in the spool.
//! * After a crash or `kill -9`, the spool's entries are delivered again at start, in id
//!   order (each chat's updates in order): duplicates are at most what was in flight.
//! * When the spool is full ([`SpoolBuilder::max_entries`], [`SpoolBuilder::max_bytes`]),
//!   the filler stops fetching and the backlog stays on Telegram. Entries cost no RAM
//!   beyond their ids and sizes until a fetch takes them.
//! * A corrupt or unreadable spool is an error at open ([`SpoolError::Open`]), never
//!   silently emptied; redb checksums its pages and commits atomically.
//!
//! # Failed handlers: retries and dead letters
//!
//! The runtime retries a failed handler (`RuntimeBuilder::retry`), holding only its own
//! key. An update whose every attempt failed reaches the spool in
//! [`Ack::failed`](pollgate_core::Ack::failed): it is moved, in the same transaction as the
//! other acknowledgements, to the dead-letter table with its error and attempt count.
//! [`SpoolTransport::dead_letters`], [`SpoolTransport::replay_dead_letters`] and
//! [`SpoolTransport::purge_dead_letters`] work on them while the bot runs;
//! [`DeadLetters`] (and the `pollgate-spool` command, feature `cli`) once it has stopped.
//! Dead letters count against the spool's limits. `docs/spool.md` has the whole picture
//! and the measured figures.
//!
//! # Examples
//!
//! ```no_run
//! use pollgate_core::TelegramTransport;
//! use pollgate_spool::SpoolTransport;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let telegram = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?;
//! let spool = SpoolTransport::builder("/var/lib/mybot/spool")
//!     .max_entries(100_000)
//!     .open(telegram)?;
//! // Runtime::builder(spool, handler).delivery(Delivery::AtLeastOnce) ...
//! # Ok(()) }
//! ```

mod dead;
mod error;
mod store;
mod transport;
mod writer;

pub use dead::DeadLetters;
pub use error::SpoolError;
pub use store::{DeadLetter, SpoolStats, Which};
pub use transport::{SpoolBuilder, SpoolHandle, SpoolTransport};
