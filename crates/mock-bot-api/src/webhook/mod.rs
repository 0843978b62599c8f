//! The webhook sender: while a webhook is set, the pending updates are POSTed to it the way
//! the Bot API server does, so that webhook receivers are tested against the traffic they
//! will get in production (many requests at once, per-chat order, retries after failures
//! and 429s, little traffic while they are down) rather than against a hand-written loop
//! of requests.
//!
//! # What it does
//! - One `POST` per update to the webhook's URL. The body is exactly the update's JSON
//!   object, the same text `getUpdates` would return for it, with
//!   `Content-Type: application/json` and, when a secret is set,
//!   `X-Telegram-Bot-Api-Secret-Token: <secret>`. Redirects are not followed.
//! - At most `max_connections` requests in flight at once.
//! - Per ordering key one at a time, in id order: an update is not sent while an earlier
//!   update with its key is in flight or waiting for a retry; updates of other keys go on.
//!   The key is the update's chat, else its user (the rule of pollgate's `Update::ordering_key`; see
//!   [`key::ordering_key`]). Updates without a key are not held back by anything.
//! - At most `2 * max_connections` keys are worked on at once (the real server's
//!   `max_loaded_updates_`): the backlog is taken in id order, and an update of another key
//!   waits, with every later update, until one of them has nothing left to send.
//! - A 2xx answer delivers the update: it leaves the backlog, so `pending_update_count`
//!   falls. Any other answer, a broken answer or a timeout fails the attempt, and the same
//!   update is tried again after [`WebhookTiming::backoff`] (1 s, 2 s, 4 s … 60 s by
//!   default), or after `Retry-After: N` seconds when the answer carries one (429 or any
//!   other status, as the real server does; at most an hour). Only its key waits.
//! - A request that cannot connect (refused, unresolvable host, failed TLS handshake) is
//!   not held against its update: the update is sent again as it was, failure count and
//!   retry time unchanged. It is counted in `webhook_failed` all the same.
//! - While the receiver counts as down, at most one request starts per
//!   [`WebhookTiming::probe_interval`] (2 s by default), however many keys wait: from the
//!   first request that cannot connect, and once [`WebhookTiming::down_after`] (10 s) has
//!   passed without a delivery; the next delivery ends it (see [`reachability`]). A
//!   receiver that is gone costs one burst of at most `max_connections` requests, then one
//!   request per 2 s.
//! - Removing the webhook (`deleteWebhook`, `setWebhook` with an empty URL, `reset`) stops
//!   the sender at once: requests in flight finish (a 2xx still delivers), nothing new is
//!   sent, and undelivered updates stay pending for `getUpdates`. Setting a webhook again,
//!   even the same one, starts over: every waiting retry is due at once and the receiver
//!   counts as up. Shutting the server down aborts the sender and its requests.
//!
//! Unlike the real server, the mock never gives up on an update (Telegram drops one after
//! about a day of failures), retries the first time after `base` rather than at once, does
//! not run a Bot API method named in the answer's body, and does not refuse ports or
//! reserved addresses.
//!
//! # How it works, and why this way
//! One task owns all the bookkeeping ([`sender::Sender`]): a FIFO of loaded update ids per
//! ordering key (a *lane*), the set of lanes whose head may be sent now (by head id, so the
//! backlog goes out in id order), the retry timers, the requests in flight and the
//! receiver's state. A single owner needs no lock beyond the one on [`Shared`] it takes to
//! read updates and count; the real server's `WebhookActor` is built the same way
//! (<https://github.com/tdlib/telegram-bot-api/blob/master/telegram-bot-api/WebhookActor.cpp>).
//! Requests run as tasks in a [`JoinSet`], so aborting the sender aborts them too.
//!
//! The sender reads the backlog incrementally (a few thousand updates at a time, letting
//! other tasks run in between) and parses each update once, for its key; what it read but
//! may not load yet stays in a small staging queue. The lane bound keeps the work per
//! wake-up proportional to `max_connections`, not to the number of chats in the backlog.
//! An update that left the backlog meanwhile (`drop_pending_updates`) is skipped when its
//! turn comes. When there is nothing it may send, it sleeps until one of four things
//! happens: [`Shared::webhook_wake`] (updates arrived, the webhook changed, the server
//! closes), a request ends, the earliest retry is due, or, while the receiver is down, the
//! next request's slot comes. It never polls.

mod key;
mod post;
mod reachability;
mod sender;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinSet;
use tokio::time::Instant;

use self::sender::Sender;
use crate::config::WebhookTiming;
use crate::state::Shared;

/// Runs the sender for `shared` until the server closes (or the task is aborted).
///
/// Spawned once per server by [`MockServer::start`](crate::MockServer::start); idle while no
/// webhook is set.
///
/// # Cancel safety
/// Dropping the future (aborting its task) drops the requests in flight: their updates stay
/// pending.
pub(crate) async fn run(shared: Arc<Shared>, timing: WebhookTiming) {
    let mut sender = Sender::new(timing);
    let mut requests = JoinSet::new();
    loop {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let (generation, spec) = shared.webhook();
        sender.observe(generation, Instant::now());
        let active = !spec.url.is_empty();
        let mut wake_at = None;
        if active {
            sender.release_due(Instant::now());
            loop {
                let more = sender.load(&shared, spec.max_connections);
                sender.start_requests(&shared, &spec, &mut requests);
                if !more {
                    break;
                }
                // A long backlog is read in chunks: let other tasks run in between.
                tokio::task::yield_now().await;
            }
            wake_at = sender.next_wake(spec.max_connections, Instant::now());
        } else if requests.is_empty() {
            sender.forget();
        }
        tokio::select! {
            () = shared.webhook_wake.notified() => {}
            Some(done) = requests.join_next_with_id(), if !requests.is_empty() => {
                sender.finish(&shared, done);
            }
            () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {}
        }
    }
}
