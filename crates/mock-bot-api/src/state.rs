//! The server's shared state: the backlog of unconfirmed updates, `getUpdates` offset
//! semantics, the webhook, scheduled and random faults, recorded `sendMessage` calls and
//! counters.
//!
//! Every update is stored once as its final JSON text (`Arc<str>`), so serving it is a
//! copy into the response body and nothing more.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;

use crate::config::WebhookSpec;
use crate::faults::{Fault, FaultRates};
use crate::stats::Stats;

/// Most `sendMessage` calls remembered; older ones are forgotten first.
pub(crate) const MAX_SENT_MESSAGES: usize = 100_000;
/// Most scheduled faults queued at once; further ones are ignored.
pub(crate) const MAX_SCHEDULED_FAULTS: usize = 100_000;

/// One stored update: its id and its full JSON text.
pub(crate) type Stored = (i64, Arc<str>);

/// State shared by the handle and every request handler.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The token in `/bot{token}/`.
    pub(crate) token: String,
    /// The bot's user id for `getMe`.
    pub(crate) bot_id: i64,
    /// Cap on long-poll waits.
    pub(crate) max_poll_timeout: Duration,
    /// Everything that changes.
    pub(crate) inner: Mutex<Inner>,
    /// Woken when updates arrive, a new `getUpdates` starts, or the server closes.
    pub(crate) wake: Notify,
    /// Set when the server shuts down: waiting polls return at once.
    pub(crate) closing: AtomicBool,
    /// Long polls currently waiting.
    pub(crate) in_flight_polls: AtomicU64,
    /// Wakes the webhook sender (its only waiter, so `notify_one` keeps a wake-up that
    /// comes while it is busy): updates arrived, the webhook changed, or the server closes.
    pub(crate) webhook_wake: Notify,
    /// Webhook requests in flight, kept by the sender.
    pub(crate) webhook_in_flight: AtomicU64,
    /// Telegram's send limits, when enforced.
    pub(crate) send_limiter: Option<Mutex<crate::send_limits::SendLimiter>>,
}

/// The mutable part of [`Shared`].
#[derive(Debug)]
pub(crate) struct Inner {
    backlog: VecDeque<Stored>,
    next_update_id: i64,
    highest_served: Option<i64>,
    /// Bumped by every `getUpdates` call; a waiting poll that sees it move was superseded.
    pub(crate) poll_generation: u64,
    scheduled: VecDeque<Fault>,
    conflict_window: usize,
    rates: FaultRates,
    rng: fastrand::Rng,
    /// Counters; `pending`, `next_update_id` and `in_flight_polls` are filled in on snapshot.
    pub(crate) stats: Stats,
    sent: VecDeque<Value>,
    next_message_id: i64,
    /// The webhook set by `setWebhook`; its `url` is empty when none is set.
    pub(crate) webhook: WebhookSpec,
    /// Bumped whenever the webhook is set or removed, so the sender sees every change.
    pub(crate) webhook_generation: u64,
    /// When (Unix seconds) and why the latest webhook request failed, for `getWebhookInfo`.
    pub(crate) webhook_last_error: Option<(u64, String)>,
}

impl Shared {
    /// Fresh state.
    pub(crate) fn new(token: String, max_poll_timeout: Duration, rates: FaultRates, seed: u64) -> Self {
        let bot_id = token.split(':').next().and_then(|s| s.parse().ok()).unwrap_or(123_456);
        Self {
            token,
            bot_id,
            max_poll_timeout,
            inner: Mutex::new(Inner {
                backlog: VecDeque::new(),
                next_update_id: 1,
                highest_served: None,
                poll_generation: 0,
                scheduled: VecDeque::new(),
                conflict_window: 0,
                rates,
                rng: fastrand::Rng::with_seed(seed),
                stats: Stats::default(),
                sent: VecDeque::new(),
                next_message_id: 1,
                webhook: WebhookSpec::default(),
                webhook_generation: 0,
                webhook_last_error: None,
            }),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            in_flight_polls: AtomicU64::new(0),
            webhook_wake: Notify::new(),
            webhook_in_flight: AtomicU64::new(0),
            send_limiter: None,
        }
    }

    /// Stores update bodies (JSON objects without `update_id`) under fresh ids and wakes
    /// long polls. Returns the ids.
    pub(crate) fn push_bodies(&self, bodies: impl IntoIterator<Item = String>) -> Vec<i64> {
        let ids = {
            let mut inner = self.inner.lock();
            let mut ids = Vec::new();
            for body in bodies {
                let id = inner.next_update_id;
                inner.next_update_id += 1;
                inner.backlog.push_back((id, with_update_id(id, &body)));
                ids.push(id);
            }
            ids
        };
        if !ids.is_empty() {
            self.wake.notify_waiters();
            self.webhook_wake.notify_one();
        }
        ids
    }

    /// Stores a complete update text under `id`.
    ///
    /// # Panics
    /// If `id` is below the next free id: ids must increase.
    pub(crate) fn push_raw(&self, id: i64, raw: String) {
        {
            let mut inner = self.inner.lock();
            assert!(
                id >= inner.next_update_id,
                "push_raw: update ids must increase (got {id}, next free id is {})",
                inner.next_update_id
            );
            inner.next_update_id = id.saturating_add(1);
            inner.backlog.push_back((id, Arc::from(raw)));
        }
        self.wake.notify_waiters();
        self.webhook_wake.notify_one();
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let inner = self.inner.lock();
        let mut stats = inner.stats.clone();
        stats.pending = inner.backlog.len() as u64;
        stats.next_update_id = inner.next_update_id;
        stats.in_flight_polls = self.in_flight_polls.load(Ordering::SeqCst);
        stats.webhook_in_flight = self.webhook_in_flight.load(Ordering::SeqCst);
        stats
    }

    /// Empties the backlog, forgets faults, counters and the webhook; ids keep increasing.
    pub(crate) fn reset(&self) {
        self.set_webhook(WebhookSpec::default(), false);
        let mut inner = self.inner.lock();
        inner.backlog.clear();
        inner.highest_served = None;
        inner.scheduled.clear();
        inner.conflict_window = 0;
        inner.rates = FaultRates::default();
        inner.stats = Stats::default();
        inner.sent.clear();
    }

    /// Queues `fault` for a coming `getUpdates` call.
    pub(crate) fn inject(&self, fault: Fault) {
        let mut inner = self.inner.lock();
        if inner.scheduled.len() < MAX_SCHEDULED_FAULTS {
            inner.scheduled.push_back(fault);
        } else {
            tracing::warn!("mock-bot-api: too many scheduled faults, ignoring one");
        }
    }

    /// The next `calls` `getUpdates` calls get 409.
    pub(crate) fn inject_conflict_window(&self, calls: usize) {
        self.inner.lock().conflict_window = calls;
    }

    /// Replaces the random fault rates.
    pub(crate) fn set_fault_rates(&self, rates: FaultRates) {
        self.inner.lock().rates = rates;
    }

    /// Updates not yet confirmed.
    pub(crate) fn pending(&self) -> usize {
        self.inner.lock().backlog.len()
    }

    /// Sets the webhook (`setWebhook`; an empty `url` removes it, as `deleteWebhook` does),
    /// first dropping every pending update if `drop_pending`, and wakes the sender.
    /// `max_connections` is clamped to 1..=100.
    pub(crate) fn set_webhook(&self, mut spec: WebhookSpec, drop_pending: bool) {
        spec.max_connections = spec.max_connections.clamp(1, 100);
        {
            let mut inner = self.inner.lock();
            if drop_pending {
                inner.drop_pending();
            }
            inner.webhook = spec;
            inner.webhook_generation += 1;
            inner.webhook_last_error = None;
        }
        self.webhook_wake.notify_one();
    }

    /// The webhook URL; empty when none is set.
    pub(crate) fn webhook_url(&self) -> String {
        self.inner.lock().webhook.url.clone()
    }

    /// The webhook and its generation (which changes with every set or removal).
    pub(crate) fn webhook(&self) -> (u64, WebhookSpec) {
        let inner = self.inner.lock();
        (inner.webhook_generation, inner.webhook.clone())
    }

    /// Every recorded `sendMessage` parameter object, oldest first.
    pub(crate) fn sent_messages(&self) -> Vec<Value> {
        self.inner.lock().sent.iter().cloned().collect()
    }

    /// Records a `sendMessage` call and returns the message id it gets.
    pub(crate) fn record_sent(&self, params: Value) -> i64 {
        let mut inner = self.inner.lock();
        if inner.sent.len() >= MAX_SENT_MESSAGES {
            inner.sent.pop_front();
        }
        inner.sent.push_back(params);
        inner.stats.sent_messages += 1;
        let id = inner.next_message_id;
        inner.next_message_id += 1;
        id
    }
}

impl Inner {
    /// The fault for this `getUpdates` call, if any, counted in the stats.
    pub(crate) fn next_fault(&mut self) -> Option<Fault> {
        let fault = if self.conflict_window > 0 {
            self.conflict_window -= 1;
            Some(Fault::Conflict)
        } else if let Some(fault) = self.scheduled.pop_front() {
            Some(fault)
        } else {
            self.rates.pick(&mut self.rng)
        }?;
        *self.stats.faults.entry(fault.kind().to_owned()).or_default() += 1;
        Some(fault)
    }

    /// Applies `offset`: a non-negative one drops every update below it; `-N` drops all but
    /// the last `N`. Returns the offset to keep using for this call (`None` after `-N`).
    pub(crate) fn confirm(&mut self, offset: Option<i64>) -> Option<i64> {
        match offset {
            None => None,
            Some(o) if o >= 0 => {
                while self.backlog.front().is_some_and(|(id, _)| *id < o) {
                    self.backlog.pop_front();
                }
                self.stats.highest_confirmed_offset = self.stats.highest_confirmed_offset.max(o);
                Some(o)
            }
            Some(o) => {
                let keep = usize::try_from(o.unsigned_abs()).unwrap_or(usize::MAX);
                let drop = self.backlog.len().saturating_sub(keep);
                if drop > 0 {
                    self.backlog.drain(..drop);
                    let first_kept = self.backlog.front().map_or(self.next_update_id, |(id, _)| *id);
                    self.stats.highest_confirmed_offset = self.stats.highest_confirmed_offset.max(first_kept);
                }
                None
            }
        }
    }

    /// What a call with `offset` and `limit` would get, changing nothing.
    pub(crate) fn peek(&self, offset: Option<i64>, limit: usize) -> Vec<Stored> {
        let skip = match offset {
            None => 0,
            Some(o) if o >= 0 => self.backlog.partition_point(|(id, _)| *id < o),
            Some(o) => {
                let keep = usize::try_from(o.unsigned_abs()).unwrap_or(usize::MAX);
                self.backlog.len().saturating_sub(keep)
            }
        };
        self.backlog.iter().skip(skip).take(limit).cloned().collect()
    }

    /// Confirms `offset` (see [`Inner::confirm`]) and serves up to `limit` updates from it,
    /// counting them. Returns the offset to keep using and the served updates.
    pub(crate) fn serve(&mut self, offset: Option<i64>, limit: usize) -> (Option<i64>, Vec<Stored>) {
        let offset = self.confirm(offset);
        let batch = self.peek(offset, limit);
        for (id, _) in &batch {
            if self.highest_served.is_some_and(|h| *id <= h) {
                self.stats.duplicates_served += 1;
            }
            self.highest_served = Some(self.highest_served.map_or(*id, |h| h.max(*id)));
        }
        self.stats.updates_served += batch.len() as u64;
        (offset, batch)
    }

    /// Drops every pending update (`deleteWebhook` with `drop_pending_updates`).
    pub(crate) fn drop_pending(&mut self) {
        self.backlog.clear();
        self.stats.highest_confirmed_offset = self.stats.highest_confirmed_offset.max(self.next_update_id);
    }

    /// Updates not yet confirmed.
    pub(crate) fn pending(&self) -> usize {
        self.backlog.len()
    }

    /// Up to `max` pending updates with an id above `id`, in id order.
    pub(crate) fn updates_after(&self, id: i64, max: usize) -> Vec<Stored> {
        let skip = self.backlog.partition_point(|(i, _)| *i <= id);
        self.backlog.iter().skip(skip).take(max).cloned().collect()
    }

    /// The text of pending update `id`, if it is still pending.
    pub(crate) fn update_text(&self, id: i64) -> Option<Arc<str>> {
        let at = self.backlog.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(Arc::clone(&self.backlog[at].1))
    }

    /// Removes pending update `id` (delivered to the webhook), wherever it is in the
    /// backlog; later `getUpdates` offsets work as before, ids only skip it. Returns whether
    /// it was still pending. Cheap near the front, where deliveries happen.
    pub(crate) fn remove_update(&mut self, id: i64) -> bool {
        match self.backlog.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(at) => {
                self.backlog.remove(at);
                true
            }
            Err(_) => false,
        }
    }
}

/// `{"update_id":id,` + the rest of `body` (an object); non-objects are kept under
/// `"payload"` so the text stays valid JSON.
fn with_update_id(id: i64, body: &str) -> Arc<str> {
    let trimmed = body.trim();
    let text = match trimmed.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!(r#"{{"update_id":{id}}}"#),
        Some(rest) => format!(r#"{{"update_id":{id},{rest}"#),
        None => format!(r#"{{"update_id":{id},"payload":{trimmed}}}"#),
    };
    Arc::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with(n: usize) -> Shared {
        let s = Shared::new("1:t".into(), Duration::from_secs(1), FaultRates::default(), 1);
        s.push_bodies((0..n).map(|i| format!(r#"{{"message":{{"n":{i}}}}}"#)));
        s
    }

    fn ids(batch: &[Stored]) -> Vec<i64> {
        batch.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn update_id_is_spliced_in() {
        assert_eq!(
            &*with_update_id(7, r#"{"message":{}}"#),
            r#"{"update_id":7,"message":{}}"#
        );
        assert_eq!(&*with_update_id(7, "{ }"), r#"{"update_id":7}"#);
        assert_eq!(&*with_update_id(7, "3"), r#"{"update_id":7,"payload":3}"#);
    }

    #[test]
    fn offset_confirms_and_limits() {
        let s = shared_with(10);
        let mut inner = s.inner.lock();
        assert_eq!(ids(&inner.serve(None, 3).1), [1, 2, 3]);
        assert_eq!(ids(&inner.serve(Some(4), 100).1), (4..=10).collect::<Vec<_>>());
        assert_eq!(inner.pending(), 7);
        assert_eq!(ids(&inner.serve(Some(-2), 100).1), [9, 10]);
        assert_eq!(inner.pending(), 2);
        assert_eq!(inner.stats.highest_confirmed_offset, 9);
        assert_eq!(inner.stats.duplicates_served, 2);
        assert!(inner.serve(Some(11), 100).1.is_empty());
        assert_eq!(inner.pending(), 0);
    }

    #[test]
    fn peek_changes_nothing() {
        let s = shared_with(5);
        let inner = s.inner.lock();
        assert_eq!(ids(&inner.peek(Some(3), 2)), [3, 4]);
        assert_eq!(ids(&inner.peek(Some(-1), 2)), [5]);
        assert_eq!(inner.pending(), 5);
    }

    #[test]
    fn delivered_updates_leave_holes_that_offsets_skip() {
        let s = shared_with(5);
        let mut inner = s.inner.lock();
        assert!(inner.remove_update(3));
        assert!(!inner.remove_update(3), "already gone");
        assert_eq!(ids(&inner.updates_after(1, 10)), [2, 4, 5]);
        assert_eq!(ids(&inner.updates_after(0, 2)), [1, 2]);
        assert!(inner.update_text(3).is_none());
        assert_eq!(
            inner.update_text(4).as_deref(),
            Some(r#"{"update_id":4,"message":{"n":3}}"#)
        );
        assert_eq!(ids(&inner.serve(Some(2), 100).1), [2, 4, 5]);
        assert_eq!(ids(&inner.serve(Some(4), 100).1), [4, 5]);
    }

    #[test]
    #[should_panic(expected = "ids must increase")]
    fn push_raw_rejects_decreasing_ids() {
        let s = shared_with(3);
        s.push_raw(2, "{}".into());
    }
}
