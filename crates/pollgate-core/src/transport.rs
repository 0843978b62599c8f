//! The [`Transport`] trait: what the runtime needs from a source of updates.
//!
//! Two families of sources exist and the trait serves both without special cases:
//! - **cumulative** ones (Telegram's `getUpdates`): one offset confirms everything below
//!   it and positions the next read, so unconfirmed updates are delivered again;
//! - **individual** ones (a queue with consumer groups and per-message acks, such as Redis
//!   Streams): each update is acknowledged on its own and is not delivered again to the
//!   same consumer while it is pending.
//!
//! The runtime decides *what* is acknowledged (it knows the delivery mode and which
//! handlers finished); the transport decides *how* ([`Transport::ack`]) and makes it
//! durable on shutdown ([`Transport::flush`]). Retrying transient failures is the
//! transport's job too: an error returned from [`Transport::fetch`] is final and stops the
//! runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::update::{EnvelopeError, Update};

/// How acknowledgements work for a transport.
///
/// # Examples
///
/// ```
/// use pollgate_core::{AckModel, TelegramTransport, Transport};
///
/// let telegram = TelegramTransport::builder("123456:ABC-your-token").build()?;
/// assert_eq!(telegram.ack_model(), AckModel::Cumulative { window: 100 });
/// assert_eq!(telegram.ack_model().window(), 100);
/// # Ok::<(), pollgate_core::TelegramError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckModel {
    /// One offset confirms every update below it, and each fetch reads from the confirmed
    /// offset on: updates fetched but not yet confirmed come back in the next fetch
    /// (Telegram). `window` is the most a single fetch can return.
    Cumulative {
        /// The most updates one fetch returns (Telegram: 100).
        window: usize,
    },
    /// Each update is acknowledged by its [`Update::receipt`]; pending updates are not
    /// delivered again to this consumer (queues with explicit acks).
    Individual {
        /// The most updates one fetch returns.
        window: usize,
    },
}

impl AckModel {
    /// The most updates one fetch can return.
    pub fn window(self) -> usize {
        match self {
            AckModel::Cumulative { window } | AckModel::Individual { window } => window,
        }
    }
}

/// One fetch: at most `limit` updates, waiting up to `timeout` when none are available.
///
/// The runtime sets `limit` to what its admission policy can admit now, so the rest of a
/// backlog stays on the server.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::FetchRequest;
///
/// // A long poll for at most what 12 free slots can start.
/// let request = FetchRequest { limit: 12, timeout: Duration::from_secs(30) };
/// // A short poll: answer at once, even with nothing.
/// let drain = FetchRequest { timeout: Duration::ZERO, ..request };
/// assert_eq!((drain.limit, drain.timeout), (12, Duration::ZERO));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// The most updates to return; the transport clamps it to what it supports
    /// (Telegram: 1..=100).
    pub limit: usize,
    /// How long the server may hold the request open when nothing is pending
    /// (long polling). Zero means a short poll.
    pub timeout: Duration,
}

/// What the runtime acknowledges, in the form both transport families understand.
///
/// # Examples
///
/// A cumulative transport reads `below`, one with individual acks reads `receipts`:
///
/// ```
/// use std::sync::Arc;
/// use pollgate_core::{Ack, HandlerFailure};
///
/// // Telegram: every update below 43 is done.
/// let cumulative = Ack { below: Some(43), receipts: &[], failed: &[] };
/// assert!(cumulative.receipts.is_empty());
///
/// // A queue: these two entries are done, and the second failed every attempt.
/// let receipts: [Arc<str>; 2] = ["1700000000000-0".into(), "1700000000000-1".into()];
/// let failed = [HandlerFailure::new(8, receipts[1].clone(), 3, "timed out")];
/// let individual = Ack { below: None, receipts: &receipts, failed: &failed };
/// assert_eq!(individual.failed[0].receipt, individual.receipts[1]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Ack<'a> {
    /// Every update with an id below this one is finished (or given up): the cumulative
    /// offset (Telegram's `offset`). `None` when nothing can be confirmed yet.
    pub below: Option<i64>,
    /// Receipts of the updates finished since the last ack, for transports that ack each
    /// update on its own. Empty for Telegram.
    pub receipts: &'a [Arc<str>],
    /// Those of `receipts` whose handler failed on every attempt (error, panic or
    /// timeout), with why. A transport that keeps dead letters (the spool) keeps these
    /// instead of deleting them; any other acknowledges them like the rest of `receipts`.
    pub failed: &'a [HandlerFailure],
}

/// An update whose handler failed on every attempt the runtime made.
///
/// The runtime acknowledges it past (it must not block the offset or its key for ever)
/// and hands this record to the transport in [`Ack::failed`], so that a transport with a
/// dead-letter store can keep the update for a later replay.
///
/// # Examples
///
/// ```
/// use pollgate_core::HandlerFailure;
///
/// let failure = HandlerFailure::new(42, "42".into(), 3, "the database is down");
/// assert_eq!((failure.update_id, failure.attempts), (42, 3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerFailure {
    /// The update's id.
    pub update_id: i64,
    /// The update's receipt ([`Update::receipt`]), as in [`Ack::receipts`].
    pub receipt: Arc<str>,
    /// How many times its handler ran.
    pub attempts: u32,
    /// The last attempt's error, panic message or timeout, as text.
    pub error: String,
}

impl HandlerFailure {
    /// A failure record for the update `update_id` with `receipt`.
    pub fn new(update_id: i64, receipt: Arc<str>, attempts: u32, error: impl Into<String>) -> HandlerFailure {
        HandlerFailure {
            update_id,
            receipt,
            attempts,
            error: error.into(),
        }
    }
}

/// The result of one fetch.
///
/// # Examples
///
/// ```
/// use pollgate_core::{Batch, Update};
///
/// let updates = [7, 8].map(|id| Update::from_json(&format!(r#"{{"update_id":{id}}}"#)).unwrap());
/// let batch = Batch { updates: updates.into(), ..Batch::default() };
/// assert_eq!((batch.len(), batch.last_id()), (2, Some(8)));
/// assert!(Batch::default().is_empty());
/// assert_eq!(Batch::default().last_id(), None);
/// ```
#[derive(Debug, Default)]
pub struct Batch {
    /// Decoded updates, in delivery order.
    pub updates: Vec<Update>,
    /// Updates of the response that could not be decoded. The runtime reports them and
    /// acknowledges past them, so one broken update never blocks the offset.
    pub failures: Vec<DecodeFailure>,
    /// Whether the transport asked its server for fewer updates than the request's limit
    /// (Telegram halves `limit` after a response over `max_body_bytes`). A short batch then
    /// does not mean that the server had nothing more.
    pub truncated: bool,
}

impl Batch {
    /// The highest update id in the batch, decodable or not.
    pub fn last_id(&self) -> Option<i64> {
        let decoded = self.updates.iter().map(Update::id);
        let failed = self.failures.iter().map(|f| f.update_id);
        decoded.chain(failed).max()
    }

    /// Number of updates in the response, decodable or not.
    pub fn len(&self) -> usize {
        self.updates.len() + self.failures.len()
    }

    /// Whether the response held no update at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One update of a response that could not be decoded.
#[derive(Debug)]
pub struct DecodeFailure {
    /// The update's id. When the id itself is unreadable it is inferred from its position
    /// (Telegram's ids are sequential: the previous id + 1, or the next id − 1);
    /// `id_inferred` says so.
    pub update_id: i64,
    /// Whether `update_id` was inferred rather than read.
    pub id_inferred: bool,
    /// Why it failed.
    pub error: EnvelopeError,
    /// The update's JSON text, truncated to a few hundred bytes.
    pub raw: String,
}

/// A source of updates that the runtime drives: fetch with a limit, acknowledge, flush.
///
/// Methods take `&self` so a transport can acknowledge while a fetch is in flight; the
/// runtime never runs two fetches at once.
///
/// # Examples
///
/// A minimal cumulative transport over updates in memory, served as `getUpdates` serves
/// them: from the confirmed offset on, at most `limit` at a time.
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Mutex;
/// use std::time::Duration;
///
/// use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport, Update};
///
/// struct Backlog {
///     updates: Vec<Update>,
///     offset: Mutex<i64>,
/// }
///
/// impl Transport for Backlog {
///     type Error = Infallible;
///
///     fn ack_model(&self) -> AckModel {
///         AckModel::Cumulative { window: 100 }
///     }
///
///     async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
///         let offset = *self.offset.lock().unwrap();
///         let pending = self.updates.iter().filter(|u| u.id() >= offset);
///         let updates = pending.take(request.limit).cloned().collect();
///         Ok(Batch { updates, ..Batch::default() })
///     }
///
///     async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
///         if let Some(below) = ack.below {
///             let mut offset = self.offset.lock().unwrap();
///             *offset = (*offset).max(below); // forward only: a repeated ack is harmless
///         }
///         Ok(())
///     }
///
///     async fn flush(&self) -> Result<(), Infallible> {
///         Ok(()) // nothing to make durable in memory
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let updates = (1..=5).map(|id| Update::from_json(&format!(r#"{{"update_id":{id}}}"#)).unwrap());
/// let transport = Backlog { updates: updates.collect(), offset: Mutex::new(0) };
/// let request = FetchRequest { limit: 2, timeout: Duration::ZERO };
/// assert_eq!(transport.fetch(request).await.unwrap().last_id(), Some(2));
/// transport.ack(Ack { below: Some(3), receipts: &[], failed: &[] }).await.unwrap();
/// let next = transport.fetch(request).await.unwrap();
/// assert_eq!(next.updates[0].id(), 3, "what was confirmed is not delivered again");
/// # }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// The transport's error. Every error returned is final: retries happen inside.
    type Error: std::error::Error + Send + Sync + 'static;

    /// How acknowledgements work for this transport.
    fn ack_model(&self) -> AckModel;

    /// Fetches at most `request.limit` updates, long-polling up to `request.timeout`.
    ///
    /// # Errors
    /// Only final errors (bad credentials, retries exhausted); transient failures are
    /// retried inside.
    ///
    /// # Cancel safety
    /// Must be cancel safe: dropping the future loses no update (an update counts as
    /// delivered only once returned, and nothing is confirmed by a fetch alone).
    fn fetch(&self, request: FetchRequest) -> impl Future<Output = Result<Batch, Self::Error>> + Send;

    /// Records an acknowledgement. Transports may apply it lazily (Telegram sends the
    /// offset with the next fetch) and must make it durable on [`Transport::flush`].
    ///
    /// # Errors
    /// When the acknowledgement could not be recorded.
    ///
    /// # Cancel safety
    /// The runtime drops an `ack` future when it stops (it then sends the same receipts,
    /// and an offset at least as high, in its final acknowledgement) and when a shutdown's
    /// drain deadline passes (it then gives up: what was not acknowledged is delivered
    /// again). So an implementation must expect to be dropped at any await point, having
    /// applied all of `ack`, part of it or none, and must keep two promises: it never
    /// acknowledges anything `ack` does not name (dropped or not), and acknowledging the
    /// same offset or receipt again is harmless. A dropped acknowledgement then costs at
    /// most a redelivery, never an update.
    fn ack(&self, ack: Ack<'_>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes every recorded acknowledgement durable (Telegram: one final
    /// `getUpdates(offset, limit=1, timeout=0)`), so a restart replays nothing finished.
    ///
    /// # Errors
    /// When the server could not be reached.
    ///
    /// # Cancel safety
    /// The runtime bounds the flush with its drain deadline and drops it when that
    /// passes. Dropped, a flush may have made all, part or none of the recorded
    /// acknowledgements durable; what it did not is delivered again after a restart
    /// (at-least-once). It must never confirm more than was acknowledged, however far it
    /// got.
    fn flush(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Updates this transport delivered and has since taken back, if it ever does
    /// (default: never). A transport that hands out work under a lease (a shard of a
    /// stream) revokes what it delivered when it loses the lease: the runtime then starts
    /// none of them, so that the lease's next holder is the only one to run them. It still
    /// hands their receipts to [`ack`](Transport::ack), so that its window moves on: the
    /// transport must acknowledge nothing for a receipt it revoked.
    fn revocations(&self) -> Option<Arc<dyn Revocations>> {
        None
    }

    /// How many times this transport retried after a transient failure since it was
    /// built, by kind (`("network", 3)`, `("rate_limited", 1)`, ...): cumulative counts
    /// with stable kind names, which the runtime exports as
    /// `pollgate_transport_retries_total{kind}` (default: none).
    fn retries(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// How many updates wait on the server, if the transport can tell (Telegram:
    /// `getWebhookInfo`'s `pending_update_count`, which counts what is not yet confirmed,
    /// so updates fetched and still running are included). Asked at
    /// an interval when the runtime exports metrics, as `pollgate_backlog_updates`; one
    /// request, no retries: `None` when it fails or the transport cannot tell (default).
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only reads.
    fn backlog(&self) -> impl Future<Output = Option<u64>> + Send {
        std::future::ready(None)
    }
}

/// Tells whether a delivered update was taken back; see [`Transport::revocations`].
///
/// The runtime asks once per update, right before its handler would start (after its
/// permit was granted), so the check must be cheap and must not block.
///
/// # Examples
///
/// A transport that delivers under leases revokes what it delivered under one it lost
/// (here, a lease per chat):
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Arc;
///
/// use parking_lot::Mutex;
/// use pollgate_core::{Revocations, Update};
///
/// struct LostLeases(Arc<Mutex<HashSet<i64>>>);
///
/// impl Revocations for LostLeases {
///     fn is_revoked(&self, update: &Update) -> bool {
///         update.ordering_key().is_some_and(|chat| self.0.lock().contains(&chat))
///     }
/// }
///
/// let lost = Arc::new(Mutex::new(HashSet::from([7])));
/// let revocations = LostLeases(Arc::clone(&lost));
/// let update = Update::from_json(r#"{"update_id":1,"message":{"chat":{"id":7}}}"#).unwrap();
/// assert!(revocations.is_revoked(&update));
/// ```
pub trait Revocations: Send + Sync + 'static {
    /// Whether `update` (delivered by this transport) must not be started any more.
    fn is_revoked(&self, update: &Update) -> bool;
}

/// A shared transport is a transport (so a test or a supervisor can keep a handle to it).
impl<T: Transport> Transport for Arc<T> {
    type Error = T::Error;

    fn ack_model(&self) -> AckModel {
        (**self).ack_model()
    }

    fn fetch(&self, request: FetchRequest) -> impl Future<Output = Result<Batch, Self::Error>> + Send {
        (**self).fetch(request)
    }

    fn ack(&self, ack: Ack<'_>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        (**self).ack(ack)
    }

    fn flush(&self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        (**self).flush()
    }

    fn revocations(&self) -> Option<Arc<dyn Revocations>> {
        (**self).revocations()
    }

    fn retries(&self) -> Vec<(&'static str, u64)> {
        (**self).retries()
    }

    fn backlog(&self) -> impl Future<Output = Option<u64>> + Send {
        (**self).backlog()
    }
}
