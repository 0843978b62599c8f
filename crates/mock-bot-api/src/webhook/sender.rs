//! The sender's bookkeeping: which updates are loaded into which lane, which lane may send
//! now, which waits for a retry, which requests are in flight.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use super::key::ordering_key;
use super::post::{Failure, Level, post};
use super::reachability::Reachability;
use crate::config::{WebhookSpec, WebhookTiming};
use crate::state::Shared;

/// Most updates read from the backlog (and parsed for their key) in one step.
const INGEST_CHUNK: usize = 4096;

/// What a request task returns.
pub(super) type Outcome = Result<(), Failure>;

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

/// The loaded updates of one lane, oldest first.
#[derive(Debug)]
struct Queue {
    ids: VecDeque<i64>,
    turn: Turn,
    /// Failed attempts at the head update in a row (connection-level ones not counted).
    failures: u32,
}

/// The sender's bookkeeping; see the module docs.
#[derive(Debug)]
pub(super) struct Sender {
    timing: WebhookTiming,
    /// Built at the first request.
    client: Option<reqwest::Client>,
    /// The webhook generation last seen.
    generation: u64,
    /// The highest update id read from the backlog (into `staged` or a lane).
    seen: i64,
    /// Updates read from the backlog, with their lane, that are not loaded yet: the first
    /// one's lane is not loaded and no more lanes may be. In id order.
    staged: VecDeque<(i64, Lane)>,
    /// The loaded lanes: at most `2 * max_connections`, each with at least one update.
    lanes: HashMap<Lane, Queue>,
    /// Lanes whose head may be sent now, by head id.
    ready: BTreeSet<(i64, Lane)>,
    /// Lanes waiting for a retry, by due instant.
    waiting: BTreeSet<(Instant, Lane)>,
    /// Requests in flight: their update and lane.
    sending: HashMap<Id, (i64, Lane)>,
    /// Whether the receiver is up, and when the next request may start.
    reach: Reachability,
}

impl Sender {
    pub(super) fn new(timing: WebhookTiming) -> Self {
        Self {
            timing,
            client: None,
            generation: 0,
            seen: i64::MIN,
            staged: VecDeque::new(),
            lanes: HashMap::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            sending: HashMap::new(),
            reach: Reachability::new(&timing, Instant::now()),
        }
    }

    /// Notes the webhook's generation; when it changed (the webhook was set or removed),
    /// every waiting retry becomes due, failure counts start over and the receiver counts
    /// as up again.
    pub(super) fn observe(&mut self, generation: u64, now: Instant) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.reach.restart(now);
        for queue in self.lanes.values_mut() {
            queue.failures = 0;
        }
        while let Some((_, lane)) = self.waiting.pop_first() {
            self.make_ready(lane);
        }
    }

    /// Forgets every update read, so that the next webhook starts from the backlog as it
    /// is then.
    pub(super) fn forget(&mut self) {
        debug_assert!(self.sending.is_empty(), "forget with requests in flight");
        self.seen = i64::MIN;
        self.staged.clear();
        self.lanes.clear();
        self.ready.clear();
        self.waiting.clear();
    }

    /// Loads updates into their lanes in id order, reading the backlog [`INGEST_CHUNK`]
    /// updates at a time and parsing each once, while at most `2 * max_connections` lanes
    /// are loaded (the real server's `max_loaded_updates_`). An update whose lane is not
    /// loaded when that many are waits, with every later update, until a lane empties; the
    /// updates of loaded lanes before it are loaded.
    ///
    /// Returns whether there may be more to load now: call again (after letting other
    /// tasks run).
    pub(super) fn load(&mut self, shared: &Shared, max_connections: u32) -> bool {
        let max_lanes = 2 * max_connections.max(1) as usize;
        if self.staged.is_empty() {
            let batch = shared.inner.lock().updates_after(self.seen, INGEST_CHUNK);
            if batch.is_empty() {
                return false;
            }
            for (id, text) in &batch {
                self.seen = *id;
                let lane = ordering_key(text).map_or(Lane::Alone(*id), Lane::Key);
                self.staged.push_back((*id, lane));
            }
        }
        while let Some(&(id, lane)) = self.staged.front() {
            if self.lanes.len() >= max_lanes && !self.lanes.contains_key(&lane) {
                return false;
            }
            self.staged.pop_front();
            let queue = self.lanes.entry(lane).or_insert_with(|| Queue {
                ids: VecDeque::new(),
                turn: Turn::Ready,
                failures: 0,
            });
            if queue.ids.is_empty() {
                debug_assert_eq!(queue.turn, Turn::Ready, "an empty lane is ready");
                self.ready.insert((id, lane));
            }
            queue.ids.push_back(id);
        }
        // All of the chunk is loaded; the backlog may hold more.
        true
    }

    /// Starts requests for ready lanes, lowest head id first, while fewer than
    /// `spec.max_connections` are in flight and the receiver's state allows
    /// ([`Reachability::may_start`]).
    pub(super) fn start_requests(&mut self, shared: &Shared, spec: &WebhookSpec, requests: &mut JoinSet<Outcome>) {
        while self.sending.len() < spec.max_connections as usize && !self.ready.is_empty() {
            let now = Instant::now();
            if !self.reach.may_start(now) {
                return;
            }
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
            self.reach.on_start(now);
            let client = match self.client() {
                Ok(client) => client,
                Err(e) => {
                    let mut failure = Failure::from_error(e);
                    // Nothing was sent: the update is not to blame.
                    failure.level = Level::Connection;
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
    pub(super) fn finish(&mut self, shared: &Shared, done: Result<(Id, Outcome), JoinError>) {
        let (task, result) = match done {
            Ok((task, result)) => (task, result),
            Err(e) => (e.id(), Err(Failure::lost())),
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
    /// schedules an update-level failure's retry, or puts the update back at the head of
    /// its lane, unchanged, after a connection-level one.
    fn settle(&mut self, shared: &Shared, id: i64, lane: Lane, result: Outcome) {
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
        let now = Instant::now();
        match &result {
            Ok(()) => self.reach.on_delivered(now),
            Err(failure) if failure.level == Level::Connection => self.reach.on_unreachable(now),
            Err(_) => {}
        }
        let Some(queue) = self.lanes.get_mut(&lane) else {
            return;
        };
        debug_assert_eq!(queue.ids.front(), Some(&id), "the lane's head was sent");
        match result {
            Ok(()) => self.pop_head(lane),
            Err(failure) if failure.level == Level::Connection => {
                tracing::debug!(
                    update_id = id,
                    "mock-bot-api: webhook unreachable, update kept: {}",
                    failure.message
                );
                self.make_ready(lane);
            }
            Err(failure) => {
                queue.failures = queue.failures.saturating_add(1);
                let delay = failure
                    .retry_after
                    .unwrap_or_else(|| self.timing.backoff(queue.failures));
                let at = now + delay;
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

    /// Drops `lane`'s head (delivered or gone) and readies the next update, if any; an
    /// emptied lane is unloaded, making room for another.
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
    pub(super) fn release_due(&mut self, now: Instant) {
        while let Some(&(at, lane)) = self.waiting.first() {
            if at > now {
                return;
            }
            self.waiting.pop_first();
            self.make_ready(lane);
        }
    }

    /// When the sender has something to do next without being woken: the earliest retry
    /// falls due, or a ready update gets its start slot while the receiver is down (only
    /// when a connection is free for it).
    pub(super) fn next_wake(&self, max_connections: u32, now: Instant) -> Option<Instant> {
        let retry = self.waiting.first().map(|(at, _)| *at);
        let slot = if !self.ready.is_empty() && self.sending.len() < max_connections as usize {
            self.reach.next_start(now)
        } else {
            None
        };
        retry.into_iter().chain(slot).min()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::faults::FaultRates;

    fn shared_with(chats: &[Option<i64>]) -> Shared {
        let s = Shared::new("1:t".into(), Duration::from_secs(1), FaultRates::default(), 1);
        s.push_bodies(chats.iter().map(|chat| match chat {
            Some(c) => json!({"message": {"chat": {"id": c}}}).to_string(),
            None => json!({"poll": {"id": "p"}}).to_string(),
        }));
        s
    }

    /// Loads everything that may be loaded.
    fn load_all(sender: &mut Sender, shared: &Shared, max_connections: u32) {
        while sender.load(shared, max_connections) {}
    }

    fn ready_ids(sender: &Sender) -> Vec<i64> {
        sender.ready.iter().map(|(id, _)| *id).collect()
    }

    /// Every loaded update id, lane by lane (lanes by head id).
    fn loaded(sender: &Sender) -> Vec<Vec<i64>> {
        let mut lanes: Vec<Vec<i64>> = sender.lanes.values().map(|q| q.ids.iter().copied().collect()).collect();
        lanes.sort_unstable();
        lanes
    }

    /// Marks `id`, a ready head, as sent (what `start_requests` does without the HTTP).
    fn send(sender: &mut Sender, id: i64) -> Lane {
        let &(_, lane) = sender.ready.iter().find(|(head, _)| *head == id).expect("ready");
        sender.ready.remove(&(id, lane));
        sender.lanes.get_mut(&lane).unwrap().turn = Turn::Sending;
        lane
    }

    fn failed(status: u16, retry_after: Option<Duration>) -> Outcome {
        Err(Failure {
            level: Level::Update,
            status: Some(status),
            retry_after,
            message: String::new(),
        })
    }

    fn refused() -> Outcome {
        Err(Failure {
            level: Level::Connection,
            status: None,
            retry_after: None,
            message: "Connection failed: refused".to_owned(),
        })
    }

    #[test]
    fn one_update_per_chat_is_ready_and_the_next_follows_delivery() {
        // Ids 1..=6: chats A, B, A, (no key), B, (no key).
        let shared = shared_with(&[Some(10), Some(20), Some(10), None, Some(20), None]);
        let mut sender = Sender::new(WebhookTiming::default());
        load_all(&mut sender, &shared, 40);
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
        let due = sender.next_wake(40, Instant::now()).expect("a retry is scheduled");
        sender.release_due(due - Duration::from_millis(1));
        assert_eq!(ready_ids(&sender), [3, 4, 6], "not due yet");
        sender.release_due(due);
        assert_eq!(ready_ids(&sender), [2, 3, 4, 6], "B's head again, not id 5");
        assert_eq!(sender.lanes[&b].failures, 1);
        let stats = shared.stats();
        assert_eq!((stats.webhook_failed, stats.webhook_429, stats.pending), (1, 0, 5));
    }

    #[test]
    fn at_most_twice_max_connections_lanes_are_loaded_and_the_rest_follows_as_lanes_empty() {
        // Ids 1..=8 in chats 1, 2, 1, 3, 2, 4, 1, (no key); max_connections 1: two lanes.
        let shared = shared_with(&[Some(1), Some(2), Some(1), Some(3), Some(2), Some(4), Some(1), None]);
        let mut sender = Sender::new(WebhookTiming::default());
        load_all(&mut sender, &shared, 1);
        assert_eq!(
            loaded(&sender),
            [vec![1, 3], vec![2]],
            "chats 1 and 2 up to the first update of a third chat (id 4), which waits"
        );
        assert_eq!(sender.staged.len(), 5, "read once, not loaded");

        // Chat 2 empties: chat 3 is loaded, then chat 2 again (id 5), up to chat 4 (id 6).
        let two = send(&mut sender, 2);
        sender.settle(&shared, 2, two, Ok(()));
        load_all(&mut sender, &shared, 1);
        assert_eq!(loaded(&sender), [vec![1, 3], vec![4]]);
        let three = send(&mut sender, 4);
        sender.settle(&shared, 4, three, Ok(()));
        load_all(&mut sender, &shared, 1);
        assert_eq!(loaded(&sender), [vec![1, 3], vec![5]]);

        // Per-chat order holds across the bound: chat 1's id 7 only after 1 and 3.
        for id in [1, 3] {
            let one = send(&mut sender, id);
            sender.settle(&shared, id, one, Ok(()));
        }
        load_all(&mut sender, &shared, 1);
        assert_eq!(loaded(&sender), [vec![5], vec![6]]);
        let mut order = Vec::new();
        while let Some(&(id, _)) = sender.ready.first() {
            let lane = send(&mut sender, id);
            sender.settle(&shared, id, lane, Ok(()));
            order.push(id);
            load_all(&mut sender, &shared, 1);
            assert!(sender.lanes.len() <= 2);
        }
        assert_eq!(order, [5, 6, 7, 8]);
        assert_eq!(shared.pending(), 0);
    }

    #[test]
    fn updates_of_loaded_lanes_keep_loading_past_the_bound() {
        // One chat's long backlog is one lane: all of it loads.
        let shared = shared_with(&vec![Some(7); INGEST_CHUNK + 10]);
        let mut sender = Sender::new(WebhookTiming::default());
        assert!(sender.load(&shared, 1), "a full chunk: maybe more");
        load_all(&mut sender, &shared, 1);
        assert_eq!(sender.lanes.len(), 1);
        assert_eq!(sender.lanes[&Lane::Key(7)].ids.len(), INGEST_CHUNK + 10);
        assert!(!sender.load(&shared, 1), "nothing new");
        shared.push_bodies([json!({"message": {"chat": {"id": 7}}}).to_string()]);
        load_all(&mut sender, &shared, 1);
        assert_eq!(sender.lanes[&Lane::Key(7)].ids.len(), INGEST_CHUNK + 11);
    }

    #[test]
    fn failures_back_off_and_retry_after_overrides() {
        let shared = shared_with(&[Some(1)]);
        let timing = WebhookTiming {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            ..WebhookTiming::default()
        };
        let mut sender = Sender::new(timing);
        load_all(&mut sender, &shared, 40);
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
            let due = sender.next_wake(40, before).unwrap();
            waits.push((due - before).as_secs());
            sender.release_due(due);
        }
        assert_eq!(waits, [1, 2, 10, 3]);
        assert_eq!(shared.stats().webhook_429, 1);

        // A new webhook generation makes a waiting retry due at once and starts counting over.
        let lane = send(&mut sender, 1);
        sender.settle(&shared, 1, lane, failed(500, None));
        assert!(sender.ready.is_empty());
        sender.observe(sender.generation + 1, Instant::now());
        assert_eq!(ready_ids(&sender), [1]);
        assert_eq!(sender.lanes[&lane].failures, 0);
    }

    #[test]
    fn a_connection_failure_keeps_the_update_and_its_failures_and_holds_back_every_lane() {
        let shared = shared_with(&[Some(1), Some(2)]);
        let timing = WebhookTiming {
            probe_interval: Duration::from_secs(2),
            ..WebhookTiming::default()
        };
        let mut sender = Sender::new(timing);
        load_all(&mut sender, &shared, 40);
        let one = send(&mut sender, 1);
        sender.settle(&shared, 1, one, failed(500, None));
        sender.release_due(Instant::now() + Duration::from_secs(5));
        assert_eq!(sender.lanes[&one].failures, 1);

        let one = send(&mut sender, 1);
        let before = Instant::now();
        sender.settle(&shared, 1, one, refused());
        assert_eq!(ready_ids(&sender), [1, 2], "back at the head of its lane, ready");
        assert_eq!(sender.lanes[&one].failures, 1, "not counted against the update");
        assert!(sender.waiting.is_empty());
        let stats = shared.stats();
        assert_eq!((stats.webhook_failed, stats.pending), (2, 2), "counted as a failure");
        // Neither lane may start before the probe slot.
        let slot = sender.next_wake(40, Instant::now()).expect("a probe slot");
        assert!(slot >= before + Duration::from_secs(2));
        assert_eq!(sender.next_wake(0, Instant::now()), None, "no free connection: no slot");
        assert!(!sender.reach.may_start(Instant::now()));
        // A delivery (of a request still in flight) ends it.
        sender.reach.on_delivered(Instant::now());
        assert_eq!(sender.next_wake(40, Instant::now()), None);
    }

    #[test]
    fn updates_gone_from_the_backlog_are_skipped() {
        let shared = shared_with(&[Some(1), Some(1), Some(2)]);
        let mut sender = Sender::new(WebhookTiming::default());
        load_all(&mut sender, &shared, 40);
        shared.inner.lock().drop_pending();
        let mut requests = JoinSet::new();
        sender.start_requests(&shared, &WebhookSpec::new("http://127.0.0.1:1/"), &mut requests);
        assert!(requests.is_empty(), "nothing to send");
        assert!(sender.lanes.is_empty() && sender.ready.is_empty());
        assert_eq!(shared.stats().webhook_posts, 0);
    }
}
