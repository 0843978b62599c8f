//! Shared pieces of the runtime's integration tests: a handler that checks invariants
//! itself, a Telegram transport pointed at the mock server with fast retries, and a
//! queue transport that records what it was asked (for paused time).
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use parking_lot::Mutex;
use pollgate_core::{
    Ack, AckModel, Backoff, Batch, FetchRequest, HandlerFailure, Sleep, SleepFuture, TelegramTransport, Transport,
    Update,
};
use pollgate_runtime::{Handler, Runtime, Summary};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Waits at most 2 ms whatever the server asked (keeps fault tests fast; the exact waits
/// are tested in poll-core with a recording sleeper).
#[derive(Debug)]
pub struct QuickSleep;

impl Sleep for QuickSleep {
    fn sleep(&self, d: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(d.min(Duration::from_millis(2))))
    }
}

pub fn telegram(server: &MockServer) -> TelegramTransport {
    telegram_builder(server).build().unwrap()
}

/// A Telegram transport builder pointed at `server`, with fast retries.
pub fn telegram_builder(server: &MockServer) -> pollgate_core::TelegramTransportBuilder {
    TelegramTransport::builder(server.token())
        .api_url(server.url())
        .backoff(Backoff {
            initial: Duration::from_millis(1),
            factor: 2.0,
            max: Duration::from_millis(5),
            max_retries: None,
        })
        .sleep(QuickSleep)
}

/// A started mock server with a generated backlog, and the backlog's ids.
pub async fn server_with(updates: usize, chats: usize) -> (MockServer, Vec<i64>) {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let ids = server.generate(&BacklogSpec {
        updates,
        text_bytes: 64,
        chats,
        seed: 7,
        ..mock_bot_api::BacklogSpec::default()
    });
    (server, ids.collect())
}

/// What the handler saw, checked by the handler itself while it runs.
#[derive(Debug, Default)]
pub struct Probe {
    pub handled: Mutex<Vec<i64>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Times a handler started while `limit` others were already running.
    pub over_limit: AtomicUsize,
    pub limit: usize,
    pub delay: Duration,
    last_per_key: Mutex<HashMap<i64, i64>>,
    running_keys: Mutex<HashMap<i64, usize>>,
    pub order_violations: AtomicUsize,
    crashed: std::sync::atomic::AtomicBool,
    /// Updates whose id is a multiple of this never finish (stuck handlers).
    pub stuck_every: Option<i64>,
}

impl Probe {
    pub fn new(limit: usize, delay: Duration) -> Arc<Probe> {
        Arc::new(Probe {
            limit,
            delay,
            ..Probe::default()
        })
    }

    /// Like `new`, but the handlers of every `every`-th update id hang for ever.
    pub fn with_stuck(limit: usize, delay: Duration, every: i64) -> Arc<Probe> {
        Arc::new(Probe {
            limit,
            delay,
            stuck_every: Some(every),
            ..Probe::default()
        })
    }

    pub fn enter(&self, u: &Update) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if now > self.limit {
            self.over_limit.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(key) = u.ordering_key() {
            let mut last = self.last_per_key.lock();
            if last.get(&key).is_some_and(|&prev| prev >= u.id()) {
                self.order_violations.fetch_add(1, Ordering::SeqCst);
            }
            last.insert(key, u.id());
            let mut running = self.running_keys.lock();
            let n = running.entry(key).or_default();
            *n += 1;
            if *n > 1 {
                self.order_violations.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Records a finished update; `false` after [`Probe::crash`] (the process is "dead":
    /// nothing finishes any more).
    pub fn exit(&self, u: &Update) -> bool {
        let mut handled = self.handled.lock();
        if self.crashed.load(Ordering::SeqCst) {
            return false;
        }
        if let Some(key) = u.ordering_key() {
            *self.running_keys.lock().entry(key).or_default() -= 1;
        }
        handled.push(u.id());
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        true
    }

    /// From now on no handler finishes (they hang), as if the process had died.
    pub fn crash(&self) {
        let _handled = self.handled.lock();
        self.crashed.store(true, Ordering::SeqCst);
    }

    pub fn count(&self) -> usize {
        self.handled.lock().len()
    }

    /// A handler that records into this probe and holds each update for `delay`.
    pub fn handler(
        self: &Arc<Self>,
    ) -> impl Fn(Update) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>> + Send + Sync + 'static
    {
        let probe = Arc::clone(self);
        move |u: Update| {
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                probe.enter(&u);
                if probe.stuck_every.is_some_and(|every| u.id() % every == 0) {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(probe.delay).await;
                if !probe.exit(&u) {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        }
    }
}

/// Polls `cond` every few milliseconds for up to `secs` seconds of real time.
pub async fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// Runs `runtime` until `done` holds (polled for up to 60 s of real time), then shuts it
/// down gracefully; returns whether `done` was reached, and the run's summary.
pub async fn run_until<T: Transport, H: Handler>(
    runtime: Runtime<T, H>,
    done: impl FnMut() -> bool,
) -> (bool, Summary) {
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    let reached = wait_until(60, done).await;
    shutdown.cancel();
    (reached, run.await.unwrap().unwrap())
}

/// A private-chat text message `id` in chat `chat`.
pub fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap()
}

pub type Done = Arc<Mutex<Vec<(i64, Duration)>>>;
pub type BoxedHandling = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Infallible>> + Send>>;

/// Records `(id, time since start)` for every finished update; sleeps per id as `delay` says.
pub fn timed_handler(
    start: tokio::time::Instant,
    delay: impl Fn(i64) -> Duration + Send + Sync + 'static,
) -> (Done, impl Fn(Update) -> BoxedHandling + Send + Sync + 'static) {
    let done: Done = Arc::default();
    let d = Arc::clone(&done);
    let delay = Arc::new(delay);
    let handler = move |u: Update| {
        let (d, delay) = (Arc::clone(&d), Arc::clone(&delay));
        Box::pin(async move {
            tokio::time::sleep(delay(u.id())).await;
            d.lock().push((u.id(), start.elapsed()));
            Ok::<(), Infallible>(())
        }) as BoxedHandling
    };
    (done, handler)
}

/// A queue with individual acks (receipt = the id): serves its updates once, in order,
/// and records every fetch limit, receipt and failure it was given.
#[derive(Debug, Default)]
pub struct Queue {
    pub state: Mutex<QueueState>,
    pub arrived: Notify,
}

#[derive(Debug, Default)]
pub struct QueueState {
    pub pending: VecDeque<Update>,
    pub limits: Vec<usize>,
    pub acked: Vec<String>,
    pub failed: Vec<HandlerFailure>,
}

impl Queue {
    pub fn with(updates: impl IntoIterator<Item = Update>) -> Arc<Queue> {
        let queue = Queue::default();
        queue.state.lock().pending = updates
            .into_iter()
            .map(|u| {
                let id = u.id();
                u.with_receipt(id.to_string())
            })
            .collect();
        Arc::new(queue)
    }
}

impl Transport for Queue {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        AckModel::Individual { window: 100 }
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        let deadline = Instant::now() + request.timeout;
        loop {
            let arrived = self.arrived.notified();
            {
                let mut s = self.state.lock();
                if !s.pending.is_empty() {
                    s.limits.push(request.limit);
                    let n = request.limit.min(s.pending.len());
                    let updates = s.pending.drain(..n).collect();
                    return Ok(Batch {
                        updates,
                        ..Batch::default()
                    });
                }
            }
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Batch::default()),
            }
        }
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        let mut s = self.state.lock();
        s.acked.extend(ack.receipts.iter().map(|r| r.to_string()));
        s.failed.extend(ack.failed.iter().cloned());
        Ok(())
    }

    async fn flush(&self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Runs until `done` holds (checked on paused time, every millisecond), then drains.
pub async fn run_until_paused<T: Transport, H: Handler>(
    runtime: Runtime<T, H>,
    mut done: impl FnMut() -> bool,
) -> Summary {
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    for _ in 0..600_000 {
        if done() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(done(), "not reached within 10 minutes of paused time");
    stop.cancel();
    run.await.unwrap().unwrap()
}
