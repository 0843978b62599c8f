//! The pacer (`RuntimeBuilder::pacer`): an update it holds back waits with its cost
//! reserved and no slot, lets others run meanwhile, keeps its key's order, counts against
//! `max_queued`, is asked once per update (not again for a retry), and gives up at the
//! drain deadline.
//! Paused time and a queue transport that records what it was asked.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Queue, run_until_paused, timed_handler, update};
use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Overloaded, Retry, Runtime};
use tokio::time::Instant;

/// A pacer that holds each update back by `delay(id)` from when it is asked, and records
/// each question.
fn delaying(
    delay: impl Fn(i64) -> Duration + Send + Sync + 'static,
) -> (Arc<Mutex<Vec<i64>>>, impl pollgate_runtime::Pacer) {
    let asked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let log = Arc::clone(&asked);
    let pacer = move |u: &Update| {
        log.lock().push(u.id());
        Some(Instant::now() + delay(u.id()))
    };
    (asked, pacer)
}

/// One send a second per chat, booked when asked (the doc example's pacer); records the
/// ids it was asked for.
fn one_a_second_per_chat() -> (Arc<Mutex<Vec<i64>>>, impl pollgate_runtime::Pacer) {
    let next: Mutex<HashMap<i64, Instant>> = Mutex::default();
    let asked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let log = Arc::clone(&asked);
    let pacer = move |u: &Update| {
        log.lock().push(u.id());
        let chat = u.ordering_key()?;
        let now = Instant::now();
        let mut next = next.lock();
        let at = next.get(&chat).copied().filter(|&t| t > now).unwrap_or(now);
        next.insert(chat, at + Duration::from_secs(1));
        Some(at)
    };
    (asked, pacer)
}

#[tokio::test(start_paused = true)]
async fn a_paced_update_holds_no_slot_while_it_waits_and_others_run_meanwhile() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |_| Duration::from_millis(10));
    // One slot. Update 1 may start 10 s from now; 2 and 3 at once.
    let (asked, pacer) = delaying(|id| {
        if id == 1 {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        }
    });
    let queue = Queue::with((1..=3).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(1))
        .delivery(Delivery::AtLeastOnce)
        .pacer(pacer)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let probe = {
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stats.snapshot()
        })
    };
    let summary = run_until_paused(runtime, || stats.snapshot().finished() == 3).await;
    let mid = probe.await.unwrap();
    assert_eq!(
        (mid.in_flight, mid.reserved),
        (0, 1),
        "while it waits: no slot, its cost reserved: {mid:?}"
    );
    let done = done.lock().clone();
    let order: Vec<i64> = done.iter().map(|(id, _)| *id).collect();
    assert_eq!(order, [2, 3, 1], "the others ran while 1 waited");
    assert!(done[1].1 < Duration::from_millis(100), "{done:?}");
    assert_eq!(
        done[2].1,
        Duration::from_millis(10_010),
        "1 started at its time: {done:?}"
    );
    assert_eq!(summary.stats.paced, 1, "a pacer answer of now is not counted");
    assert_eq!(*asked.lock(), [1, 2, 3], "asked once each");
    assert_eq!(summary.stats.max_in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn ordered_updates_are_paced_in_arrival_order_and_keep_their_keys_order() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |_| Duration::from_millis(100));
    // Chat 7: ids 1, 2, 3, 5; chat 8: id 4.
    let updates = [(1, 7), (2, 7), (3, 7), (4, 8), (5, 7)].map(|(id, chat)| update(id, chat));
    let queue = Queue::with(updates);
    let (asked, pacer) = one_a_second_per_chat();
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .ordered(true)
        .pacer(pacer)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let summary = run_until_paused(runtime, || stats.snapshot().finished() == 5).await;
    let done = done.lock().clone();
    let ms = |id| done.iter().find(|(i, _)| *i == id).map(|(_, t)| t.as_millis()).unwrap();
    // Chat 7 once a second from its first start, in id order; chat 8 at once.
    assert_eq!([ms(1), ms(2), ms(3), ms(5)], [100, 1100, 2100, 3100], "{done:?}");
    assert_eq!(ms(4), 100, "{done:?}");
    assert_eq!(summary.stats.paced, 3);
    assert_eq!(summary.stats.max_in_flight, 2, "a paced update holds no slot");
    assert_eq!(
        *asked.lock(),
        [1, 2, 3, 4, 5],
        "asked in arrival order, parked ones too"
    );
}

#[tokio::test(start_paused = true)]
async fn paced_updates_count_against_max_queued_and_fetching_pauses() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |_| Duration::ZERO);
    let (_, pacer) = delaying(|_| Duration::from_secs(60));
    let queue = Queue::with((1..=10).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(8))
        .delivery(Delivery::AtLeastOnce)
        .max_queued(3)
        .pacer(pacer)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let probe = {
        let stats = stats.clone();
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (stats.snapshot(), queue.state.lock().limits.clone())
        })
    };
    let summary = run_until_paused(runtime, || stats.snapshot().finished() == 10).await;
    let (mid, limits) = probe.await.unwrap();
    assert_eq!((mid.fetched, mid.reserved, mid.in_flight), (3, 3, 0), "{mid:?}");
    assert_eq!(limits, [3], "one fetch, of what may wait, then nothing until they go");
    assert_eq!(summary.stats.finished(), 10);
    assert_eq!(done.lock().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_not_paced_again_and_waits_as_long_as_its_downstream_asked() {
    let start = Instant::now();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    // The first attempt is pushed back with a retry_after of 3 s.
    let handler = move |u: Update| {
        let seen = Arc::clone(&seen);
        async move {
            let first = {
                let mut seen = seen.lock();
                seen.push((u.id(), start.elapsed()));
                seen.iter().filter(|(id, _)| *id == u.id()).count() == 1
            };
            if first {
                Err(Overloaded::new("429").retry_after(Duration::from_secs(3)))
            } else {
                Ok(())
            }
        }
    };
    let (asked, pacer) = delaying(|_| Duration::from_secs(2));
    let queue = Queue::with([update(1, 1)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(8))
        .delivery(Delivery::AtLeastOnce)
        .retry(Retry::attempts(2).initial_backoff(Duration::from_millis(100)))
        .pacer(pacer)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let summary = run_until_paused(runtime, || stats.snapshot().finished() == 1).await;
    let attempts = attempts.lock().clone();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].1, Duration::from_secs(2), "paced on arrival");
    assert_eq!(
        attempts[1].1 - attempts[0].1,
        Duration::from_secs(3),
        "the retry waits the 3 s asked (not the 50–100 ms backoff), and is not paced again"
    );
    assert_eq!(*asked.lock(), [1]);
    assert_eq!((summary.stats.paced, summary.stats.retried), (1, 1));

    // An update paced past the drain deadline gives up there and is not acknowledged.
    let (done, handler) = timed_handler(start, |_| Duration::ZERO);
    let (_, pacer) = delaying(|_| Duration::from_secs(1000));
    let queue = Queue::with([update(1, 1)]);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(Fixed::new(8))
        .delivery(Delivery::AtLeastOnce)
        .pacer(pacer)
        .drain_deadline(Duration::from_secs(1))
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let summary = run_until_paused(runtime, || stats.snapshot().paced == 1).await;
    assert!(done.lock().is_empty());
    assert_eq!(summary.stats.aborted, 1, "{:?}", summary.stats);
    assert!(queue.state.lock().acked.is_empty(), "not acknowledged: delivered again");
    assert_eq!(summary.unfinished, [1]);
}
