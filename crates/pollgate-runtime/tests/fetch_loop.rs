//! How the dispatcher gets from one fetch to the next: what it waits on, and that every
//! wait ends. Each test here reproduces a defect found in review (a stall, a busy loop,
//! an overflow, a miscount) on paused time with an in-memory transport that records what
//! it was asked; a busy loop trips a counter that stops the run, so the test fails
//! instead of hanging.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{timed_handler, update};
use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Barrier, ByteBudget, Fixed, Limit, LimitSignal, Load};
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, InMemoryTransport, Transport, Update};
use pollgate_runtime::{CancellationToken, Delivery, Runtime};

/// An in-memory transport that cancels `trip` once it was asked more than `cap` times:
/// a dispatcher that polls in a loop is stopped (and the test fails on the count)
/// rather than spinning for ever with paused time unable to advance.
#[derive(Debug)]
struct Capped {
    inner: Arc<InMemoryTransport>,
    cap: usize,
    trip: CancellationToken,
}

impl Transport for Capped {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        self.inner.ack_model()
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        if self.inner.requests().len() >= self.cap {
            self.trip.cancel();
        }
        self.inner.fetch(request).await
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        self.inner.ack(ack).await
    }

    async fn flush(&self) -> Result<(), Infallible> {
        self.inner.flush().await
    }
}

/// Records the ids a handler finished, and sleeps per id as `delay` says.
fn recording_handler(
    delay: impl Fn(i64) -> Duration + Send + Sync + 'static,
) -> (Ids, impl Fn(Update) -> common::BoxedHandling + Send + Sync + 'static) {
    let (done, handler) = timed_handler(tokio::time::Instant::now(), delay);
    (Ids(done), handler)
}

/// The ids in a [`common::Done`], in finishing order.
struct Ids(common::Done);

impl Ids {
    fn lock(&self) -> Vec<i64> {
        self.0.lock().iter().map(|(id, _)| *id).collect()
    }
}

/// Defect: with ordering, when `max_queued` updates are parked and the parked one then
/// has to wait in the gate for its permit, the dispatcher was woken before that wait
/// (while the update still counted as queued) and never again: nothing was fetched for
/// good. Here update 3 (chat 1) parks behind update 1, then waits in the gate for
/// update 2's bytes; update 4 arrives later and must still be fetched and handled.
#[tokio::test(start_paused = true)]
async fn ordered_dispatcher_resumes_when_a_parked_update_gets_its_permit_late() {
    let transport = Arc::new(InMemoryTransport::with_updates([
        update(1, 1),
        update(2, 2),
        update(3, 1),
    ]));
    let (done, handler) = recording_handler(|id| match id {
        2 => Duration::from_millis(100),
        _ => Duration::from_millis(10),
    });
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(ByteBudget::new(100))
        .cost_fn(|u| match u.id() {
            1 => 10,
            2 => 70,
            3 => 40,
            _ => 10,
        })
        .ordered(true)
        .max_queued(1)
        .build();
    let shutdown = runtime.shutdown_token();
    let stats = runtime.stats();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Update 3 waits in the gate behind update 2's 70 bytes: still queued.
    assert_eq!(
        stats.snapshot().reserved,
        1,
        "update 3 is parked, then waits for a permit"
    );
    transport.push([update(4, 3)]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let handled: BTreeSet<i64> = done.lock().iter().copied().collect();
    assert_eq!(
        handled,
        BTreeSet::from([1, 2, 3, 4]),
        "update 4 was never fetched: the dispatcher stalled ({:?})",
        stats.snapshot()
    );
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

/// Defect: in at-least-once mode, while any update above the offset is unfinished,
/// Telegram answers at once with the repeats, so the loop polled again and again. Now a
/// fetch that shows the server caught up waits for the re-poll interval; new arrivals
/// are still seen within it.
#[tokio::test(start_paused = true)]
async fn at_least_once_does_not_busy_poll_while_a_handler_is_slow() {
    let inner = Arc::new(InMemoryTransport::with_updates((1..=10).map(|id| update(id, id))));
    let trip = CancellationToken::new();
    let transport = Capped {
        inner: Arc::clone(&inner),
        cap: 1000,
        trip: trip.clone(),
    };
    let (done, handler) = recording_handler(|id| match id {
        1 => Duration::from_secs(10),
        _ => Duration::ZERO,
    });
    let runtime = Runtime::builder(transport, handler)
        .policy(Fixed::new(100))
        .delivery(Delivery::AtLeastOnce)
        .repoll_interval(Duration::from_secs(1))
        .shutdown(trip.clone())
        .build();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(3)).await;
    inner.push([update(11, 11)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        done.lock().contains(&11),
        "a new update must be seen within the re-poll interval while update 1 is slow"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fetches = inner.requests().len();
    trip.cancel();
    let summary = run.await.unwrap().unwrap();
    // 7.5 s with update 1 unfinished: about one poll a second, not one per wake-up.
    assert!(
        fetches <= 12,
        "{fetches} getUpdates calls in 7.5 s while one handler was slow: a busy poll"
    );
    assert_eq!(summary.stats.finished(), 11);
}

/// Counts `fetch_limit` calls and stops the run past `cap`; otherwise a `Fixed` whose
/// limit the test lowers.
#[derive(Debug)]
struct Counting {
    inner: Fixed,
    calls: AtomicUsize,
    cap: usize,
    trip: CancellationToken,
}

impl AdmissionPolicy for Counting {
    fn fetch_limit(&self, load: &Load) -> usize {
        if self.calls.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.trip.cancel();
        }
        self.inner.fetch_limit(load)
    }

    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.inner.admits(load, cost)
    }

    fn limit(&self) -> Limit {
        AdmissionPolicy::limit(&self.inner)
    }

    fn attach(&self, signal: LimitSignal) {
        self.inner.attach(signal);
    }
}

/// Defect: once the fetch-coalescing deadline had passed, a policy whose limit dropped to
/// 0 without a release made the loop spin (an already-due timer, then `continue`). Here
/// 7 of `Fixed(8)` run, the dispatcher coalesces (it wants 2, 1 fits), and the limit is
/// lowered to 7: it must sleep until a handler finishes.
#[tokio::test(start_paused = true)]
async fn coalescing_does_not_spin_when_the_limit_drops_to_zero() {
    let transport = Arc::new(InMemoryTransport::with_updates((1..=7).map(|id| update(id, id))));
    let trip = CancellationToken::new();
    let policy = Arc::new(Counting {
        inner: Fixed::new(8),
        calls: AtomicUsize::new(0),
        cap: 10_000,
        trip: trip.clone(),
    });
    let (done, handler) = recording_handler(|_| Duration::from_secs(5));
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(Arc::clone(&policy) as Arc<dyn AdmissionPolicy>)
        .fetch_batching(64, Duration::from_secs(1))
        .shutdown(trip.clone())
        .build();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        transport.requests().len(),
        1,
        "7 of 8 run; a fetch of 1 is being coalesced"
    );
    policy.inner.set_limit(7);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = policy.calls.load(Ordering::Relaxed);
    trip.cancel();
    run.await.unwrap().unwrap();
    assert!(
        calls < 1000,
        "{calls} fetch_limit calls while nothing could be admitted: a busy loop"
    );
    assert_eq!(done.lock().len(), 7);
}

/// Records what `on_batch` was told, around a `Barrier`.
#[derive(Debug)]
struct BatchLog {
    inner: Barrier,
    batches: Mutex<Vec<usize>>,
}

impl AdmissionPolicy for BatchLog {
    fn fetch_limit(&self, load: &Load) -> usize {
        self.inner.fetch_limit(load)
    }

    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.inner.admits(load, cost)
    }

    fn on_batch(&self, fetched: usize) {
        self.batches.lock().push(fetched);
        self.inner.on_batch(fetched);
    }
}

/// Defect: `on_batch` was told the size of the response, repeats included, so in
/// at-least-once mode a `Barrier` closed its batch early. Here update 50 is slow, so the
/// second fetch brings back 51 repeats with 49 new updates.
#[tokio::test(start_paused = true)]
async fn barrier_counts_only_new_updates_into_its_batch() {
    let transport = Arc::new(InMemoryTransport::with_updates((1..=400).map(|id| update(id, id))));
    let policy = Arc::new(BatchLog {
        inner: Barrier::new(150),
        batches: Mutex::default(),
    });
    let (done, handler) = recording_handler(|id| match id {
        50 => Duration::from_secs(5),
        _ => Duration::ZERO,
    });
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(Arc::clone(&policy) as Arc<dyn AdmissionPolicy>)
        .delivery(Delivery::AtLeastOnce)
        .build();
    let shutdown = runtime.shutdown_token();
    let stats = runtime.stats();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(20)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let told: usize = policy.batches.lock().iter().sum();
    let fetched = stats.snapshot().fetched;
    assert_eq!(
        told as u64,
        fetched,
        "on_batch must count the new updates only ({:?})",
        policy.batches.lock()
    );
    assert!(fetched >= 300 && done.lock().len() as u64 == fetched);
    // The first batch is 150 new updates, whatever the repeats: it closes only then.
    let first: usize = policy
        .batches
        .lock()
        .iter()
        .scan(0, |sum, n| {
            let before = *sum;
            *sum += n;
            (before < 150).then_some(*n)
        })
        .sum();
    assert_eq!(first, 150);
}

/// Defect: dropping `Runtime::run`'s future left its handler tasks and its summary
/// reporter running. Everything that holds the policy must let go of it.
#[tokio::test(start_paused = true)]
async fn dropping_the_run_future_stops_handlers_and_helpers() {
    let transport = Arc::new(InMemoryTransport::with_updates((1..=20).map(|id| update(id, id))));
    let policy: Arc<dyn AdmissionPolicy> = Arc::new(Fixed::new(8));
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let handler = move |_u: Update| {
        let s = Arc::clone(&s);
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok::<(), Infallible>(())
        }
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(Arc::clone(&policy))
        .summary_every(Duration::from_millis(100))
        .build();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(started.load(Ordering::SeqCst), 8);
    assert!(Arc::strong_count(&policy) > 1);
    run.abort();
    let _ = run.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        Arc::strong_count(&policy),
        1,
        "a handler task, the watchdog or the reporter still holds the runtime"
    );
}

/// Lets everything in: `fetch_limit` answers `usize::MAX`, which the trait documents as
/// "as many as you like".
#[derive(Debug)]
struct Unlimited;

impl AdmissionPolicy for Unlimited {
    fn fetch_limit(&self, _load: &Load) -> usize {
        usize::MAX
    }

    fn admits(&self, _load: &Load, _cost: u64) -> bool {
        true
    }
}

/// Defect: the batch-size arithmetic (`in_flight + admits`) overflowed, and the dispatcher
/// panicked, as soon as a handler ran while the policy answered `usize::MAX`.
/// `tests/policy_answers.rs` checks arbitrary answers; this is the one that broke.
#[tokio::test(start_paused = true)]
async fn a_policy_answering_usize_max_is_taken_without_overflow() {
    let transport = Arc::new(InMemoryTransport::with_updates((1..=300).map(|id| update(id, id))));
    let (done, handler) = recording_handler(|_| Duration::from_millis(10));
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(Unlimited)
        .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    run.await.expect("the dispatcher must not panic").unwrap();
    assert_eq!(done.lock().len(), 300);
    assert!(transport.requests().iter().all(|r| (1..=100).contains(&r.limit)));
}
