//! Review reproducers for retries (commit 4b6c75f). Paused time, a recording queue.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use common::update;
use parking_lot::Mutex;
use pollgate_admission::{Barrier, ByteBudget};
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, HandlerFailure, Transport, Update};
use pollgate_runtime::{Delivery, Retry, Runtime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A queue with individual acks (receipt = the id), serving its updates once, in order,
/// and recording every fetch limit.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: VecDeque<Update>,
    limits: Vec<usize>,
    acked: Vec<String>,
    failed: Vec<HandlerFailure>,
}

impl Queue {
    fn with(updates: impl IntoIterator<Item = Update>) -> Arc<Queue> {
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

type Starts = Arc<Mutex<Vec<(i64, Duration)>>>;
type Handling = std::pin::Pin<Box<dyn Future<Output = Result<(), std::io::Error>> + Send>>;

/// Records each attempt's start; holds `hold(id)`; fails while `fails(id, attempt)`.
fn handler(
    start: Instant,
    hold: fn(i64) -> Duration,
    fails: fn(i64, usize) -> bool,
) -> (Starts, impl Fn(Update) -> Handling + Send + Sync) {
    let starts: Starts = Arc::default();
    let seen = Arc::clone(&starts);
    let h = move |u: Update| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let attempt = {
                let mut s = seen.lock();
                s.push((u.id(), start.elapsed()));
                s.iter().filter(|(id, _)| *id == u.id()).count()
            };
            tokio::time::sleep(hold(u.id())).await;
            if fails(u.id(), attempt) {
                Err(std::io::Error::other("no"))
            } else {
                Ok(())
            }
        }) as Handling
    };
    (starts, h)
}

fn starts_of(s: &Starts, id: i64) -> Vec<Duration> {
    s.lock().iter().filter(|(i, _)| *i == id).map(|(_, t)| *t).collect()
}

/// `retry.rs`: a waiting retry's reservation "keeps Barrier's batch open". Barrier(2),
/// batch {1, 2}: id 2 finishes first, then id 1 fails and waits 5-10 s for its retry.
/// The failed attempt's permit is released *before* the retry's reservation is taken, so
/// the release sees an empty load; `Barrier::fetch_limit` (evaluated by the gate for the
/// dispatcher's `fetch_ready` watcher under that release) opens the next batch, and the
/// dispatcher fetches id 3 while id 1 of the current batch is still unfinished.
#[tokio::test(start_paused = true)]
async fn barrier_does_not_fetch_the_next_batch_while_a_member_waits_for_its_retry() {
    let start = Instant::now();
    let (starts, h) = handler(
        start,
        |id| Duration::from_millis(if id == 1 { 20 } else { 10 }),
        |id, attempt| id == 1 && attempt == 1,
    );
    let queue = Queue::with([update(1, 1), update(2, 2), update(3, 3)]);
    let runtime = Runtime::builder(Arc::clone(&queue), h)
        .policy(Barrier::new(2))
        .delivery(Delivery::AtLeastOnce)
        .retry(Retry::attempts(2).initial_backoff(Duration::from_secs(10)))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(3)).await; // inside id 1's backoff (5-10 s)
    let s = stats.snapshot();
    let limits = queue.state.lock().limits.clone();
    let three = starts_of(&starts, 3);
    stop.cancel();
    let _ = run.await;
    assert_eq!(s.retried, 1, "id 1 waits for its retry");
    assert!(
        three.is_empty() && s.fetched == 2,
        "the next batch was fetched while id 1 of this one waits for its retry: \
         fetch limits {limits:?}, fetched {}, id 3 started at {three:?}",
        s.fetched
    );
}

/// A retry waiting for its permit keeps its reservation (`attempts`: the reservation is
/// dropped only after `gate.acquire(cost)`), and a plain `acquire` counts every
/// reservation's bytes, its own included: the update is counted twice (JSON size + its
/// cost) against a byte budget. Parked updates use `acquire_reserved`, which excludes
/// their own. Here: budget 1000, id 2 (cost 300) runs for 10 s, id 1 (cost 650) fails
/// once; 300 + 650 fits, but 300 + 650 + id 1's own ~85 reserved bytes does not, so id
/// 1's retry waits for the unrelated id 2 to finish instead of running after its backoff.
#[tokio::test(start_paused = true)]
async fn a_retry_under_a_byte_budget_is_not_counted_twice_against_it() {
    let start = Instant::now();
    let (starts, h) = handler(
        start,
        |id| {
            if id == 2 {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(10)
            }
        },
        |id, attempt| id == 1 && attempt == 1,
    );
    let queue = Queue::with([update(1, 1), update(2, 2)]);
    let runtime = Runtime::builder(Arc::clone(&queue), h)
        .policy(ByteBudget::new(1000))
        .cost_fn(|u: &Update| if u.id() == 1 { 650 } else { 300 })
        .delivery(Delivery::AtLeastOnce)
        .retry(Retry::attempts(2).initial_backoff(Duration::from_millis(100)))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.cancel();
    let _ = run.await;
    let one = starts_of(&starts, 1);
    assert_eq!(one.len(), 2, "{one:?}");
    assert!(
        one[1] <= Duration::from_millis(200),
        "id 1's retry (backoff 50-100 ms, 950 of 1000 bytes with id 2) started at {:?}, \
         after id 2 finished (10 s)",
        one[1]
    );
}
