//! [`Pacer`]: keeps an update out of its handler, and out of the admission policy's
//! slots, until the moment it can do its work.
//!
//! # Why
//!
//! A handler that must wait for something outside the process before it can finish (a
//! send slot within Telegram's limits, a rate-limited API) holds its permit through the
//! wait: a concurrency slot, and the memory its cost stands for. A bot draining a backlog
//! into chats Telegram lets it answer once a second fills every slot with handlers that
//! sleep, while updates that could be answered now wait behind them. And the policy sees
//! slow handlers, not a rate limit.
//!
//! When the wait is known before the handler starts, it need not be spent inside it. A
//! pacer says when an update may start; until then the update waits the way an update
//! parked behind its key does: its cost reserved in the gate (so it counts against the
//! byte budget and `max_queued`, and fetching stops while too many wait), no slot held,
//! no handler running. At its time it takes a permit like everybody else.
//!
//! The pacer is asked once per update, in the order updates arrive: as each is
//! dispatched, also an update that then parks behind its key (it starts once its key is
//! free *and* its time has come). A pacer that books a resource (such as a send slot)
//! thus books in arrival order: a chat with many updates waiting gets its share of a
//! global limit throughout, rather than one slot each time its previous update finishes.
//! A booking whose update starts late (its previous update of the key ran long) is the
//! pacer's to notice: [`pollgate_teloxide::SendLimiter`] gives a stale booking back and
//! books anew.
//!
//! A [retry](crate::Retry) is not paced again: the updates of its key behind it were
//! booked after it, and a second booking would queue it behind them. Its backoff is at
//! least the `retry_after` its handler reported ([`Overloaded::retry_after`]); a handler
//! that must wait for something again (a send slot) waits itself.
//!
//! A pacer that panics is logged and the update starts at once.
//!
//! [`Overloaded::retry_after`]: crate::Overloaded::retry_after
//! [`pollgate_teloxide::SendLimiter`]: https://docs.rs/pollgate-teloxide

use std::sync::Arc;

use pollgate_core::Update;
use tokio::time::Instant;

/// Says when an update may start; see the [module docs](self) for what a paced update
/// holds while it waits.
///
/// Any `Fn(&Update) -> Option<Instant>` is a pacer.
///
/// # Examples
///
/// At most one update a second per chat:
///
/// ```
/// use std::collections::HashMap;
/// use std::time::Duration;
///
/// use parking_lot::Mutex;
/// use pollgate_core::Update;
/// use pollgate_runtime::Pacer;
/// use tokio::time::Instant;
///
/// fn one_a_second_per_chat() -> impl Pacer {
///     let next: Mutex<HashMap<i64, Instant>> = Mutex::default();
///     move |update: &Update| {
///         let chat = update.ordering_key()?;
///         let now = Instant::now();
///         let mut next = next.lock();
///         let at = next.get(&chat).copied().filter(|&t| t > now).unwrap_or(now);
///         next.insert(chat, at + Duration::from_secs(1));
///         Some(at)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let pacer = one_a_second_per_chat();
/// let update = Update::from_json(r#"{"update_id":1,"message":{"chat":{"id":7}}}"#).unwrap();
/// let first = pacer.start_at(&update).unwrap();
/// let second = pacer.start_at(&update).unwrap();
/// assert_eq!(second - first, Duration::from_secs(1));
/// # }
/// ```
pub trait Pacer: Send + Sync + 'static {
    /// When `update` may start: `None`, or an instant that has passed, for now.
    fn start_at(&self, update: &Update) -> Option<Instant>;
}

impl<F> Pacer for F
where
    F: Fn(&Update) -> Option<Instant> + Send + Sync + 'static,
{
    fn start_at(&self, update: &Update) -> Option<Instant> {
        self(update)
    }
}

impl<P: Pacer + ?Sized> Pacer for Arc<P> {
    fn start_at(&self, update: &Update) -> Option<Instant> {
        (**self).start_at(update)
    }
}

/// The configured pacer, shared by the runtime's tasks.
#[derive(Clone)]
pub(crate) struct SharedPacer(pub(crate) Arc<dyn Pacer>);

impl std::fmt::Debug for SharedPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pacer")
    }
}
