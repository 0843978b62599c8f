//! Edges of the pacer (`RuntimeBuilder::pacer`) found in review, kept as regression
//! tests: a retry in ordered mode, a panicking pacer, a closed gate, what `paced` counts.
//! Paused time throughout.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Queue, timed_handler, update};
use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Retry, Runtime};
use tokio::time::Instant;

/// One start a second per chat, booked when asked (the `Pacer` doc example).
fn one_a_second_per_chat() -> impl pollgate_runtime::Pacer {
    let next: Mutex<HashMap<i64, Instant>> = Mutex::default();
    move |u: &Update| {
        let chat = u.ordering_key()?;
        let now = Instant::now();
        let mut next = next.lock();
        let at = next.get(&chat).copied().filter(|&t| t > now).unwrap_or(now);
        next.insert(chat, at + Duration::from_secs(1));
        Some(at)
    }
}

type Attempts = Arc<Mutex<Vec<(i64, Duration)>>>;
type Handling = std::pin::Pin<Box<dyn Future<Output = Result<(), std::io::Error>> + Send>>;

/// Records every attempt (id, start); the first attempt of `fail_first` fails.
fn failing_once(start: Instant, fail_first: i64) -> (Attempts, impl Fn(Update) -> Handling + Send + Sync + 'static) {
    let attempts: Attempts = Arc::default();
    let seen = Arc::clone(&attempts);
    let handler = move |u: Update| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let first = {
                let mut seen = seen.lock();
                seen.push((u.id(), start.elapsed()));
                seen.iter().filter(|(id, _)| *id == u.id()).count() == 1
            };
            if first && u.id() == fail_first {
                Err(std::io::Error::other("first attempt fails"))
            } else {
                Ok(())
            }
        }) as Handling
    };
    (attempts, handler)
}

/// Ordered mode: the pacer is asked at arrival for every update of chat 7 (slots at 0, 1,
/// 2, 3, 4 s). Update 1 fails once and is retried. Were the retry paced again, it would
/// be booked *behind its own parked successors* (5 s), which cannot run before it: the
/// chat would stall 5 s and its successors then run back to back. A retry is not paced
/// again.
#[tokio::test(start_paused = true)]
async fn an_ordered_retry_is_not_booked_behind_its_own_parked_successors() {
    let start = Instant::now();
    let (attempts, handler) = failing_once(start, 1);
    let queue = Queue::with((1..=5).map(|id| update(id, 7)));
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .ordered(true)
        .retry(Retry::attempts(2).initial_backoff(Duration::from_millis(100)))
        .pacer(one_a_second_per_chat())
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    common::run_until_paused(runtime, || stats.snapshot().finished() == 5).await;
    let attempts = attempts.lock().clone();
    let ms: Vec<(i64, u128)> = attempts.iter().map(|(id, t)| (*id, t.as_millis())).collect();
    let retry = attempts.iter().filter(|(id, _)| *id == 1).nth(1).unwrap().1;
    let starts: Vec<Duration> = attempts.iter().skip(1).map(|(_, t)| *t).collect();
    let closest = starts.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        retry < Duration::from_secs(2) && closest >= Duration::from_millis(900),
        "the retry of 1 started at {retry:?} (behind its own successors' slots), then chat 7 \
         ran with only {closest:?} between starts: {ms:?}"
    );
}

/// A panicking pacer, asked in the dispatcher, must not kill the run (a panicking handler
/// is caught and reported): the update starts at once.
#[tokio::test(start_paused = true)]
async fn a_pacer_panic_is_contained_and_the_update_runs() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |_| Duration::ZERO);
    let queue = Queue::with([update(1, 1)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(4))
        .pacer(|_: &Update| -> Option<Instant> { panic!("pacer bug") })
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let ended = run.await;
    assert!(
        ended.is_ok(),
        "Runtime::run panicked: {:?}",
        ended.err().map(|e| e.is_panic())
    );
    assert_eq!(done.lock().len(), 1, "the update ran");
}

/// After `Runtime::gate().close()` nothing can be admitted any more: a paced update gives
/// up at once rather than keep the run alive until the drain deadline (here 30 s).
#[tokio::test(start_paused = true)]
async fn a_closed_gate_gives_paced_updates_up_at_once() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |_| Duration::ZERO);
    let queue = Queue::with([update(1, 1)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .pacer(|_: &Update| Some(Instant::now() + Duration::from_secs(1000)))
        .drain_deadline(Duration::from_secs(30))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let gate = runtime.gate().clone();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    gate.close();
    let summary = run.await.unwrap().unwrap();
    assert!(done.lock().is_empty());
    assert_eq!(summary.unfinished, [1]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the run ended {:?} after the gate closed at 1 s",
        start.elapsed()
    );
}

/// `Stats::paced` counts updates the pacer held back: not an update parked behind its key
/// whose pacer time, in the future at arrival, has passed when its key frees (here its
/// predecessor runs 5 s).
#[tokio::test(start_paused = true)]
async fn paced_counts_only_updates_the_pacer_held_back() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |id| {
        if id == 1 {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        }
    });
    let queue = Queue::with([update(1, 7), update(2, 7)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .ordered(true)
        .pacer(one_a_second_per_chat())
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let summary = common::run_until_paused(runtime, || stats.snapshot().finished() == 2).await;
    let done = done.lock().clone();
    assert_eq!(
        done[1],
        (2, Duration::from_secs(5)),
        "2 ran as soon as 1 finished: {done:?}"
    );
    assert_eq!(summary.stats.paced, 0, "nothing waited for the pacer");
}
