//! The webhook sender: while a webhook is set, the pending updates are POSTed to it the way
//! the Bot API server does, so that webhook receivers are tested against the traffic they
//! will get in production (many requests at once, per-chat order, retries after failures
//! and 429s) rather than against a hand-written loop of requests.
//!
//! # What it does
//! - One `POST` per update to the webhook's URL. The body is exactly the update's JSON
//!   object, the same text `getUpdates` would return for it, with
//!   `Content-Type: application/json` and, when a secret is set,
//!   `X-Telegram-Bot-Api-Secret-Token: <secret>`. Redirects are not followed.
//! - At most `max_connections` requests in flight at once.
//! - Per ordering key one at a time, in id order: an update is not sent while an earlier
//!   update with its key is in flight or waiting for a retry; updates of other keys go on.
//!   The key is the update's chat, else its user (the rule of pollgate's `Update::key`; see
//!   [`ordering_key`]). Updates without a key are not held back by anything.
//! - A 2xx answer delivers the update: it leaves the backlog, so `pending_update_count`
//!   falls. Any other answer, a connection error or a timeout fails the attempt, and the
//!   same update is tried again after [`WebhookTiming::backoff`] (1 s, 2 s, 4 s … 60 s by
//!   default), or after `Retry-After: N` seconds when the answer carries one (429 or any
//!   other status, as the real server does; at most an hour). Only its key waits.
//! - Removing the webhook (`deleteWebhook`, `setWebhook` with an empty URL, `reset`) stops
//!   the sender at once: requests in flight finish (a 2xx still delivers), nothing new is
//!   sent, and undelivered updates stay pending for `getUpdates`. Setting a webhook again,
//!   even the same one, starts over: every waiting retry is due at once. Shutting the
//!   server down aborts the sender and its requests.
//!
//! Unlike the real server, the mock never gives up on an update (Telegram drops one after
//! about a day of failures), does not run a Bot API method named in the answer's body,
//! and does not refuse ports or reserved addresses.
//!
//! # How it works, and why this way
//! One task owns all the bookkeeping: a FIFO of update ids per ordering key (a *lane*),
//! the set of lanes whose head may be sent now (by head id, so the backlog goes out in id
//! order), the retry timers and the requests in flight. A single owner needs no lock beyond
//! the one on [`Shared`] it takes to read updates and count; the real server's
//! `WebhookActor` is built the same way
//! (<https://github.com/tdlib/telegram-bot-api/blob/master/telegram-bot-api/WebhookActor.cpp>).
//! Requests run as tasks in a [`JoinSet`], so aborting the sender aborts them too.
//!
//! The sender reads the backlog incrementally ([`INGEST_CHUNK`] updates at a time, only
//! while a connection is free and no known lane can use it) and parses each update once, for
//! its key. An update that left the backlog meanwhile (`drop_pending_updates`) is skipped
//! when its turn comes. When there is nothing it may send, it sleeps until one of three
//! things happens: [`Shared::webhook_wake`] (updates arrived, the webhook changed, the
//! server closes), a request ends, or the earliest retry is due. It never polls.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::Value;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::config::{WebhookSpec, WebhookTiming};
use crate::state::Shared;

/// The header that carries the webhook's secret token.
const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// Most updates read from the backlog (and parsed for their key) in one step.
const INGEST_CHUNK: usize = 4096;
/// The longest `Retry-After` honoured, as in the real server.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

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
        sender.observe(generation);
        let active = !spec.url.is_empty();
        if active {
            sender.release_due(Instant::now());
            sender.start_requests(&shared, &spec, &mut requests);
            // A connection is still free, so no known lane may send: the backlog's unread
            // updates may belong to other chats. Read on, letting other tasks run between
            // chunks.
            while sender.in_flight() < spec.max_connections as usize {
                let more = sender.ingest(&shared);
                sender.start_requests(&shared, &spec, &mut requests);
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
        } else if requests.is_empty() {
            sender.forget();
        }
        let retry_at = sender.next_retry().filter(|_| active);
        tokio::select! {
            () = shared.webhook_wake.notified() => {}
            Some(done) = requests.join_next_with_id(), if !requests.is_empty() => {
                sender.finish(&shared, done);
            }
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
        }
    }
}

/// What one update's requests are serialised on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Lane {
    /// Every update with this ordering key (a chat or user id): one at a time, in id order.
    Key(i64),
    /// The update with this id, which has no ordering key: alone in its lane.
    Alone(i64),
}

/// Where a lane's head update stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// May be sent now (the lane is in [`Sender::ready`]).
    Ready,
    /// A request for it is in flight.
    Sending,
    /// Failed; may be sent again from this instant on (the lane is in [`Sender::waiting`]).
    Waiting(Instant),
}

/// The undelivered updates of one lane, oldest first.
#[derive(Debug)]
struct Queue {
    ids: VecDeque<i64>,
    turn: Turn,
    /// Failed attempts at the head update in a row.
    failures: u32,
}

/// Why an attempt failed.
#[derive(Debug)]
struct Failure {
    /// The answer's status, when there was an answer.
    status: Option<u16>,
    /// The answer's `Retry-After`, when it had a usable one.
    retry_after: Option<Duration>,
    /// What `getWebhookInfo` reports as `last_error_message`.
    message: String,
}

/// The sender's bookkeeping; see the module docs.
#[derive(Debug)]
struct Sender {
    timing: WebhookTiming,
    /// Built at the first request.
    client: Option<reqwest::Client>,
    /// The webhook generation last seen.
    generation: u64,
    /// The highest update id read from the backlog.
    seen: i64,
    lanes: HashMap<Lane, Queue>,
    /// Lanes whose head may be sent now, by head id.
    ready: BTreeSet<(i64, Lane)>,
    /// Lanes waiting for a retry, by due instant.
    waiting: BTreeSet<(Instant, Lane)>,
    /// Requests in flight: their update and lane.
    sending: HashMap<Id, (i64, Lane)>,
}

impl Sender {
    fn new(timing: WebhookTiming) -> Self {
        Self {
            timing,
            client: None,
            generation: 0,
            seen: i64::MIN,
            lanes: HashMap::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            sending: HashMap::new(),
        }
    }

    /// Requests in flight.
    fn in_flight(&self) -> usize {
        self.sending.len()
    }

    /// Notes the webhook's generation; when it changed (the webhook was set or removed),
    /// every waiting retry becomes due and failure counts start over.
    fn observe(&mut self, generation: u64) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        for queue in self.lanes.values_mut() {
            queue.failures = 0;
        }
        while let Some((_, lane)) = self.waiting.pop_first() {
            self.make_ready(lane);
        }
    }

    /// Forgets every lane, so that the next webhook starts from the backlog as it is then.
    fn forget(&mut self) {
        debug_assert!(self.sending.is_empty(), "forget with requests in flight");
        self.seen = i64::MIN;
        self.lanes.clear();
        self.ready.clear();
        self.waiting.clear();
    }

    /// Reads up to [`INGEST_CHUNK`] updates the sender has not seen yet into their lanes.
    /// Returns whether there may be more.
    fn ingest(&mut self, shared: &Shared) -> bool {
        let batch = shared.inner.lock().updates_after(self.seen, INGEST_CHUNK);
        for (id, text) in &batch {
            self.seen = *id;
            let lane = ordering_key(text).map_or(Lane::Alone(*id), Lane::Key);
            let queue = self.lanes.entry(lane).or_insert_with(|| Queue {
                ids: VecDeque::new(),
                turn: Turn::Ready,
                failures: 0,
            });
            if queue.ids.is_empty() {
                debug_assert_eq!(queue.turn, Turn::Ready, "an empty lane is ready");
                self.ready.insert((*id, lane));
            }
            queue.ids.push_back(*id);
        }
        batch.len() == INGEST_CHUNK
    }

    /// Starts requests for ready lanes, lowest head id first, while fewer than
    /// `spec.max_connections` are in flight.
    fn start_requests(&mut self, shared: &Shared, spec: &WebhookSpec, requests: &mut JoinSet<Result<(), Failure>>) {
        while self.sending.len() < spec.max_connections as usize {
            let Some((id, lane)) = self.ready.pop_first() else {
                return;
            };
            let text = {
                let mut inner = shared.inner.lock();
                let text = inner.update_text(id);
                if text.is_some() {
                    let stats = &mut inner.stats;
                    stats.webhook_posts += 1;
                    stats.webhook_in_flight_peak = stats.webhook_in_flight_peak.max(self.sending.len() as u64 + 1);
                }
                text
            };
            let Some(text) = text else {
                // Dropped from the backlog since it was read: nothing to deliver.
                self.pop_head(lane);
                continue;
            };
            if let Some(queue) = self.lanes.get_mut(&lane) {
                queue.turn = Turn::Sending;
            }
            let client = match self.client() {
                Ok(client) => client,
                Err(e) => {
                    let failure = Failure::from_error(e);
                    tracing::error!("mock-bot-api: cannot build the webhook client: {}", failure.message);
                    self.settle(shared, id, lane, Err(failure));
                    continue;
                }
            };
            let secret = spec.secret_token.clone();
            let request = post(client, spec.url.clone(), secret, text, self.timing.request_timeout);
            let task = requests.spawn(request).id();
            self.sending.insert(task, (id, lane));
            shared
                .webhook_in_flight
                .store(self.sending.len() as u64, Ordering::SeqCst);
        }
    }

    /// Records the end of a request.
    fn finish(&mut self, shared: &Shared, done: Result<(Id, Result<(), Failure>), JoinError>) {
        let (task, result) = match done {
            Ok((task, result)) => (task, result),
            Err(e) => {
                let failure = Failure {
                    status: None,
                    retry_after: None,
                    message: "Webhook request failed".to_owned(),
                };
                (e.id(), Err(failure))
            }
        };
        let Some((id, lane)) = self.sending.remove(&task) else {
            debug_assert!(false, "a request the sender did not start");
            return;
        };
        shared
            .webhook_in_flight
            .store(self.sending.len() as u64, Ordering::SeqCst);
        self.settle(shared, id, lane, result);
    }

    /// Applies the outcome of an attempt at update `id`, the head of `lane`: counts it,
    /// removes a delivered update from the backlog and moves on to the lane's next update,
    /// or schedules a failed one's retry.
    fn settle(&mut self, shared: &Shared, id: i64, lane: Lane, result: Result<(), Failure>) {
        {
            let mut inner = shared.inner.lock();
            match &result {
                Ok(()) => {
                    inner.stats.webhook_delivered += 1;
                    inner.remove_update(id);
                }
                Err(failure) => {
                    inner.stats.webhook_failed += 1;
                    if failure.status == Some(429) {
                        inner.stats.webhook_429 += 1;
                    }
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    inner.webhook_last_error = Some((now, failure.message.clone()));
                }
            }
        }
        let Some(queue) = self.lanes.get_mut(&lane) else {
            return;
        };
        debug_assert_eq!(queue.ids.front(), Some(&id), "the lane's head was sent");
        match result {
            Ok(()) => self.pop_head(lane),
            Err(failure) => {
                queue.failures = queue.failures.saturating_add(1);
                let delay = failure
                    .retry_after
                    .unwrap_or_else(|| self.timing.backoff(queue.failures));
                let at = Instant::now() + delay;
                queue.turn = Turn::Waiting(at);
                self.waiting.insert((at, lane));
                tracing::debug!(
                    update_id = id,
                    failures = queue.failures,
                    ?delay,
                    "mock-bot-api: webhook delivery failed: {}",
                    failure.message
                );
            }
        }
    }

    /// Drops `lane`'s head (delivered or gone) and readies the next update, if any.
    fn pop_head(&mut self, lane: Lane) {
        let Some(queue) = self.lanes.get_mut(&lane) else {
            return;
        };
        queue.ids.pop_front();
        queue.failures = 0;
        queue.turn = Turn::Ready;
        match queue.ids.front() {
            Some(&next) => {
                self.ready.insert((next, lane));
            }
            None => {
                self.lanes.remove(&lane);
            }
        }
    }

    /// Makes `lane`'s head ready to be sent again.
    fn make_ready(&mut self, lane: Lane) {
        if let Some(queue) = self.lanes.get_mut(&lane) {
            queue.turn = Turn::Ready;
            if let Some(&head) = queue.ids.front() {
                self.ready.insert((head, lane));
            }
        }
    }

    /// Makes every lane whose retry is due at `now` ready.
    fn release_due(&mut self, now: Instant) {
        while let Some(&(at, lane)) = self.waiting.first() {
            if at > now {
                return;
            }
            self.waiting.pop_first();
            self.make_ready(lane);
        }
    }

    /// When the earliest waiting retry is due.
    fn next_retry(&self) -> Option<Instant> {
        self.waiting.first().map(|(at, _)| *at)
    }

    /// The HTTP client, built at first use: no proxy (the webhook is normally on loopback),
    /// no redirects (the real server follows none).
    fn client(&mut self) -> Result<reqwest::Client, reqwest::Error> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()?;
        self.client = Some(client.clone());
        Ok(client)
    }
}

/// POSTs one update and reads the answer.
///
/// # Errors
/// A [`Failure`] for a non-2xx status, a connection error, or no complete answer within
/// `timeout`.
async fn post(
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
    update: Arc<str>,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(CONTENT_TYPE, "application/json")
        .body(update.to_string());
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    let response = request.send().await.map_err(Failure::from_error)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    // Read to the end, so that the connection can carry the next update.
    let body = response.bytes().await;
    if !status.is_success() {
        return Err(Failure {
            status: Some(status.as_u16()),
            retry_after,
            message: format!(
                "Wrong response from the webhook: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ),
        });
    }
    body.map(drop).map_err(Failure::from_error)
}

impl Failure {
    /// A request that got no (complete) answer. The message names the innermost cause
    /// ("Connection refused …"), never the URL, which often holds the bot's token.
    fn from_error(error: reqwest::Error) -> Self {
        let error = error.without_url();
        let message = if error.is_timeout() {
            "Read timeout expired".to_owned()
        } else {
            let mut cause: &dyn std::error::Error = &error;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("Connection failed: {cause}")
        };
        Self {
            status: None,
            retry_after: None,
            message,
        }
    }
}

/// `Retry-After` in whole seconds (the HTTP-date form is not supported), when above 0;
/// at most an hour.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The ordering key of an update given as JSON text: the chat where it has one, else the
/// acting user, else `None`.
///
/// Read from the update's content object (its field other than `update_id`), first match
/// wins: `chat.id` (messages of every kind, member changes, join requests, reactions,
/// boosts), `message.chat.id` (`callback_query`), `voter_chat.id` (`poll_answer` by a
/// chat), `from.id` (`inline_query`, `callback_query` without message, …), `user.id`
/// (`poll_answer`, `business_connection`). `poll` has none. This is the rule of pollgate's
/// `Update::key`, so the mock's per-chat order is the one a pollgate consumer keeps.
fn ordering_key(update: &str) -> Option<i64> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(update) else {
        return None;
    };
    let id = |v: &Value| v.get("id").and_then(Value::as_i64);
    fields
        .iter()
        .filter(|(name, _)| name.as_str() != "update_id")
        .find_map(|(_, content)| {
            content
                .get("chat")
                .and_then(id)
                .or_else(|| content.get("message").and_then(|m| m.get("chat")).and_then(id))
                .or_else(|| content.get("voter_chat").and_then(id))
                .or_else(|| content.get("from").and_then(id))
                .or_else(|| content.get("user").and_then(id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultRates;
    use serde_json::json;

    #[test]
    fn keys_follow_the_chat_then_the_user() {
        let key = |v: Value| ordering_key(&v.to_string());
        let chat = json!({"id": -100, "type": "supergroup"});
        let user = json!({"id": 7, "is_bot": false, "first_name": "A"});
        assert_eq!(
            key(json!({"update_id": 1, "message": {"chat": chat, "from": user}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "edited_channel_post": {"chat": chat}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "my_chat_member": {"chat": chat, "from": user}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "callback_query": {"from": user, "message": {"chat": chat}}})),
            Some(-100)
        );
        assert_eq!(key(json!({"update_id": 1, "callback_query": {"from": user}})), Some(7));
        assert_eq!(key(json!({"update_id": 1, "inline_query": {"from": user}})), Some(7));
        assert_eq!(key(json!({"update_id": 1, "poll_answer": {"user": user}})), Some(7));
        assert_eq!(
            key(json!({"update_id": 1, "poll_answer": {"voter_chat": chat, "user": user}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "business_connection": {"user": user}})),
            Some(7)
        );
        assert_eq!(key(json!({"update_id": 1, "poll": {"id": "5", "question": "?"}})), None);
        assert_eq!(key(json!({"update_id": 1})), None);
        assert_eq!(key(json!({"update_id": 1, "payload": 3})), None);
        assert_eq!(ordering_key("not json"), None);
        assert_eq!(ordering_key(r#"{"update_id":1,"message":{"chat":{"id":"x"}}}"#), None);
    }

    #[test]
    fn retry_after_is_whole_seconds_above_zero() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            h
        };
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(" 1 ")), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&headers("0")), None);
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    fn shared_with(chats: &[Option<i64>]) -> Shared {
        let s = Shared::new("1:t".into(), Duration::from_secs(1), FaultRates::default(), 1);
        s.push_bodies(chats.iter().map(|chat| match chat {
            Some(c) => json!({"message": {"chat": {"id": c}}}).to_string(),
            None => json!({"poll": {"id": "p"}}).to_string(),
        }));
        s
    }

    fn ready_ids(sender: &Sender) -> Vec<i64> {
        sender.ready.iter().map(|(id, _)| *id).collect()
    }

    /// Marks `id`, a ready head, as sent (what `start_requests` does without the HTTP).
    fn send(sender: &mut Sender, id: i64) -> Lane {
        let &(_, lane) = sender.ready.iter().find(|(head, _)| *head == id).expect("ready");
        sender.ready.remove(&(id, lane));
        sender.lanes.get_mut(&lane).unwrap().turn = Turn::Sending;
        lane
    }

    fn failed(status: u16, retry_after: Option<Duration>) -> Result<(), Failure> {
        Err(Failure {
            status: Some(status),
            retry_after,
            message: String::new(),
        })
    }

    #[test]
    fn one_update_per_chat_is_ready_and_the_next_follows_delivery() {
        // Ids 1..=6: chats A, B, A, (no key), B, (no key).
        let shared = shared_with(&[Some(10), Some(20), Some(10), None, Some(20), None]);
        let mut sender = Sender::new(WebhookTiming::default());
        assert!(!sender.ingest(&shared));
        assert_eq!(
            ready_ids(&sender),
            [1, 2, 4, 6],
            "heads of A and B, and each keyless one"
        );

        let a = send(&mut sender, 1);
        sender.settle(&shared, 1, a, Ok(()));
        assert_eq!(ready_ids(&sender), [2, 3, 4, 6], "A's next update follows");
        assert_eq!(shared.pending(), 5, "the delivered update left the backlog");
        assert_eq!(shared.stats().webhook_delivered, 1);

        // B fails: B waits, the others stay ready.
        let b = send(&mut sender, 2);
        sender.settle(&shared, 2, b, failed(500, None));
        assert_eq!(ready_ids(&sender), [3, 4, 6]);
        let due = sender.next_retry().expect("a retry is scheduled");
        sender.release_due(due - Duration::from_millis(1));
        assert_eq!(ready_ids(&sender), [3, 4, 6], "not due yet");
        sender.release_due(due);
        assert_eq!(ready_ids(&sender), [2, 3, 4, 6], "B's head again, not id 5");
        assert_eq!(sender.lanes[&b].failures, 1);
        let stats = shared.stats();
        assert_eq!((stats.webhook_failed, stats.webhook_429, stats.pending), (1, 0, 5));
    }

    #[test]
    fn failures_back_off_and_retry_after_overrides() {
        let shared = shared_with(&[Some(1)]);
        let timing = WebhookTiming {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
        };
        let mut sender = Sender::new(timing);
        sender.ingest(&shared);
        let mut waits = Vec::new();
        for result in [
            failed(500, None),
            failed(502, None),
            failed(429, Some(Duration::from_secs(10))),
            failed(500, None),
        ] {
            let lane = send(&mut sender, 1);
            let before = Instant::now();
            sender.settle(&shared, 1, lane, result);
            let due = sender.next_retry().unwrap();
            waits.push((due - before).as_secs());
            sender.release_due(due);
        }
        assert_eq!(waits, [1, 2, 10, 3]);
        assert_eq!(shared.stats().webhook_429, 1);

        // A new webhook generation makes a waiting retry due at once and starts counting over.
        let lane = send(&mut sender, 1);
        sender.settle(&shared, 1, lane, failed(500, None));
        assert!(sender.ready.is_empty());
        sender.observe(sender.generation + 1);
        assert_eq!(ready_ids(&sender), [1]);
        assert_eq!(sender.lanes[&lane].failures, 0);
    }

    #[test]
    fn updates_gone_from_the_backlog_are_skipped() {
        let shared = shared_with(&[Some(1), Some(1), Some(2)]);
        let mut sender = Sender::new(WebhookTiming::default());
        sender.ingest(&shared);
        shared.inner.lock().drop_pending();
        let mut requests = JoinSet::new();
        sender.start_requests(&shared, &WebhookSpec::new("http://127.0.0.1:1/"), &mut requests);
        assert!(requests.is_empty(), "nothing to send");
        assert!(sender.lanes.is_empty() && sender.ready.is_empty());
        assert_eq!(shared.stats().webhook_posts, 0);
    }
}
