//! Retries (`RuntimeBuilder::retry`): a failed handler runs again after its backoff, holds
//! only its own key meanwhile, holds a reservation rather than a slot, counts against
//! `max_queued`, and after its last attempt reaches the transport as a failure. Paused
//! time and a queue transport that records what it was asked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Queue, run_until_paused, update};
use parking_lot::Mutex;
use pollgate_admission::{Barrier, ByteBudget, Fixed};
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Retry, Runtime};
use tokio::time::Instant;

/// Every attempt: (id, when it started).
type Attempts = Arc<Mutex<Vec<(i64, Duration)>>>;
type Handling = std::pin::Pin<Box<dyn Future<Output = Result<(), std::io::Error>> + Send>>;

/// A handler that records each attempt and fails while `fails(id, attempt)` says so.
fn failing(
    start: Instant,
    hold: Duration,
    fails: impl Fn(i64, usize) -> bool + Send + Sync + 'static,
) -> (Attempts, impl Fn(Update) -> Handling + Send + Sync) {
    failing_after(start, move |_| hold, fails)
}

/// Like [`failing`], each update held for `hold(id)`.
fn failing_after(
    start: Instant,
    hold: impl Fn(i64) -> Duration + Send + Sync + 'static,
    fails: impl Fn(i64, usize) -> bool + Send + Sync + 'static,
) -> (Attempts, impl Fn(Update) -> Handling + Send + Sync) {
    let attempts: Attempts = Arc::default();
    let seen = Arc::clone(&attempts);
    let (fails, hold) = (Arc::new(fails), Arc::new(hold));
    let handler = move |u: Update| {
        let (seen, fails, hold) = (Arc::clone(&seen), Arc::clone(&fails), Arc::clone(&hold));
        Box::pin(async move {
            let attempt = {
                let mut seen = seen.lock();
                seen.push((u.id(), start.elapsed()));
                seen.iter().filter(|(id, _)| *id == u.id()).count()
            };
            tokio::time::sleep(hold(u.id())).await;
            if fails(u.id(), attempt) {
                Err(std::io::Error::other(format!("attempt {attempt} of {} failed", u.id())))
            } else {
                Ok(())
            }
        }) as Handling
    };
    (attempts, handler)
}

fn starts_of(attempts: &Attempts, id: i64) -> Vec<Duration> {
    attempts
        .lock()
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, t)| *t)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_handler_runs_again_after_its_backoff_and_its_last_failure_reaches_the_transport() {
    let start = Instant::now();
    // Id 2 always fails; id 3 fails its first attempt only.
    let (attempts, handler) = failing(start, Duration::from_millis(10), |id, attempt| {
        id == 2 || (id == 3 && attempt == 1)
    });
    let queue = Queue::with((1..=4).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(8))
        .delivery(Delivery::AtLeastOnce)
        .retry(Retry::attempts(3).initial_backoff(Duration::from_millis(100)))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let summary = run_until_paused(runtime, || stats.snapshot().finished() == 4).await;

    let two = starts_of(&attempts, 2);
    assert_eq!(two.len(), 3, "three attempts: {two:?}");
    // Each wait is the attempt's handler time (10 ms) plus a backoff in the upper half of
    // 100 ms, then of 200 ms.
    let first_wait = two[1] - two[0];
    let second_wait = two[2] - two[1];
    assert!(
        first_wait >= Duration::from_millis(60) && first_wait <= Duration::from_millis(111),
        "{first_wait:?}"
    );
    assert!(
        second_wait >= Duration::from_millis(110) && second_wait <= Duration::from_millis(211),
        "{second_wait:?}"
    );
    assert_eq!(starts_of(&attempts, 3).len(), 2);
    assert_eq!(starts_of(&attempts, 1).len(), 1);

    let s = queue.state.lock();
    let mut acked = s.acked.clone();
    acked.sort();
    assert_eq!(acked, ["1", "2", "3", "4"], "every update acknowledged once");
    assert_eq!(
        s.failed.len(),
        1,
        "only the update that failed every attempt: {:?}",
        s.failed
    );
    let failure = &s.failed[0];
    assert_eq!((failure.update_id, &*failure.receipt, failure.attempts), (2, "2", 3));
    assert_eq!(failure.error, "attempt 3 of 2 failed");

    assert_eq!(summary.stats.retried, 3, "two retries of id 2, one of id 3");
    assert_eq!(summary.stats.exhausted, 1);
    assert_eq!(summary.stats.failed, 4, "every failed attempt counts");
    assert_eq!(summary.stats.finished(), 4, "updates, not attempts");
}

#[tokio::test(start_paused = true)]
async fn a_retrying_update_holds_its_own_key_only() {
    let start = Instant::now();
    // Chat 1: ids 1 (fails once) and 2. Chat 2: ids 3 and 4.
    let (attempts, handler) = failing(start, Duration::from_millis(10), |id, attempt| id == 1 && attempt == 1);
    let queue = Queue::with([update(1, 1), update(2, 1), update(3, 2), update(4, 2)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(8))
        .delivery(Delivery::AtLeastOnce)
        .ordered(true)
        .retry(Retry::attempts(2).initial_backoff(Duration::from_secs(1)))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    run_until_paused(runtime, || stats.snapshot().finished() == 4).await;

    let one = starts_of(&attempts, 1);
    assert_eq!(one.len(), 2);
    let two = starts_of(&attempts, 2);
    assert_eq!(two.len(), 1);
    assert!(
        two[0] >= one[1] + Duration::from_millis(10),
        "chat 1's next update waits for the retry to succeed: {two:?} vs {one:?}"
    );
    for id in [3, 4] {
        let t = starts_of(&attempts, id)[0];
        assert!(
            t < one[1],
            "chat 2 (id {id}) runs during chat 1's backoff: {t:?} vs {one:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_retry_holds_a_reservation_not_a_slot() {
    let start = Instant::now();
    let (attempts, handler) = failing(start, Duration::from_millis(10), |id, attempt| id == 1 && attempt == 1);
    let queue = Queue::with([update(1, 1), update(2, 2)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(1))
        .delivery(Delivery::AtLeastOnce)
        .retry(Retry::attempts(2).initial_backoff(Duration::from_secs(10)))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    // Well inside id 1's backoff (5-10 s): id 2 took the only slot and finished.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = stats.snapshot();
    assert_eq!(s.in_flight, 0, "the waiting retry holds no slot");
    assert_eq!(s.reserved, 1, "but is counted as waiting in memory");
    assert_eq!(starts_of(&attempts, 2).len(), 1, "id 2 ran with the only slot");
    assert_eq!(starts_of(&attempts, 1).len(), 1, "id 1 is still waiting (pending)");
    assert_eq!(s.finished(), 1);
    // After the backoff it is ready and runs.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let s = stats.snapshot();
    assert_eq!(starts_of(&attempts, 1).len(), 2, "id 1 ran again after its backoff");
    assert_eq!((s.reserved, s.finished()), (0, 2));
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_abandons_a_waiting_retry_which_is_not_a_failure() {
    let start = Instant::now();
    let (attempts, handler) = failing(start, Duration::from_millis(10), |id, _| id == 1);
    let queue = Queue::with([update(1, 1)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .retry(
            Retry::attempts(3)
                .initial_backoff(Duration::from_secs(3600))
                .max_backoff(Duration::from_secs(3600)),
        )
        .drain_deadline(Duration::from_secs(1))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(stats.snapshot().retried, 1, "waiting for its second attempt");
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the drain ends at its deadline, not after the hour-long backoff")
        .unwrap()
        .unwrap();
    assert_eq!(summary.unfinished, vec![1], "delivered again after a restart");
    assert_eq!(summary.stats.aborted, 1);
    assert_eq!(summary.stats.exhausted, 0);
    assert_eq!(starts_of(&attempts, 1).len(), 1);
    let s = queue.state.lock();
    assert!(
        s.acked.is_empty() && s.failed.is_empty(),
        "neither acknowledged nor failed"
    );
}

#[tokio::test(start_paused = true)]
async fn updates_waiting_for_a_retry_pause_fetching_at_max_queued() {
    let start = Instant::now();
    let (attempts, handler) = failing(start, Duration::from_millis(10), |_, _| true);
    let queue = Queue::with((1..=20).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(2))
        .delivery(Delivery::AtLeastOnce)
        .max_queued(3)
        .retry(
            Retry::attempts(2)
                .initial_backoff(Duration::from_secs(3600))
                .max_backoff(Duration::from_secs(3600)),
        )
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = stats.snapshot();
    // Fetching pauses once max_queued wait; the handlers running then may still fail and
    // join them: at most max_queued + the policy's 2 slots.
    assert!((3..=5).contains(&s.reserved), "{} wait for their retry", s.reserved);
    assert_eq!(s.fetched, s.reserved as u64, "nothing else was fetched");
    assert_eq!(attempts.lock().len(), s.reserved);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(stats.snapshot().fetched, s.fetched, "fetching stays paused");
    let limits = queue.state.lock().limits.clone();
    assert!(
        limits.iter().all(|&l| l <= 3),
        "no fetch asked past max_queued: {limits:?}"
    );
    stop.cancel();
    let _ = run.await;
}

/// Barrier(2), batch {1, 2}: id 2 finishes first, then id 1 fails and waits 5-10 s for its
/// retry. Were the failed attempt's permit released before the retry's reservation is
/// taken, the release would see an empty load, `Barrier` would open its next batch and the
/// dispatcher would fetch id 3 while id 1 of this batch is unfinished (found in review).
#[tokio::test(start_paused = true)]
async fn a_barrier_batch_stays_closed_while_one_of_it_waits_for_its_retry() {
    let start = Instant::now();
    let (attempts, handler) = failing_after(
        start,
        |id| Duration::from_millis(if id == 1 { 20 } else { 10 }),
        |id, attempt| id == 1 && attempt == 1,
    );
    let queue = Queue::with([update(1, 1), update(2, 2), update(3, 3)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
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
    assert_eq!(s.retried, 1, "id 1 waits for its retry");
    assert_eq!(s.fetched, 2, "pending: the next batch is not fetched");
    assert!(starts_of(&attempts, 3).is_empty());
    // Ready once id 1's retry has finished the batch.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(starts_of(&attempts, 1).len(), 2);
    assert_eq!(starts_of(&attempts, 3).len(), 1, "the next batch after the retry");
    stop.cancel();
    run.await.unwrap().unwrap();
}

/// Budget 1000: id 2 (cost 300) runs for 10 s, id 1 (cost 650) fails once. 300 + 650 fits,
/// so id 1's retry runs right after its backoff; counting its waiting reservation against
/// itself too (a plain acquire while the reservation is held) would make it wait for the
/// unrelated id 2 (found in review).
#[tokio::test(start_paused = true)]
async fn a_retry_is_counted_once_against_a_byte_budget() {
    let start = Instant::now();
    let (attempts, handler) = failing_after(
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
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
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
    run.await.unwrap().unwrap();
    let one = starts_of(&attempts, 1);
    assert_eq!(one.len(), 2, "{one:?}");
    assert!(
        one[1] <= Duration::from_millis(200),
        "id 1's retry (backoff 50-100 ms) started at {:?}, not after its backoff",
        one[1]
    );
}
