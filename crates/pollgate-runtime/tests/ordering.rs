//! Per-key ordering: same key one at a time in update_id order, different keys
//! concurrent, and one slow key does not stall the others.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Probe, run_until, server_with, telegram};
use parking_lot::Mutex;
use pollgate_admission::{ByteBudget, Fixed, all_of};
use pollgate_core::{InMemoryTransport, Update};
use pollgate_runtime::Runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_runs_one_at_a_time_in_id_order_over_http() {
    const N: usize = 1500;
    let (server, _) = server_with(N, 12).await;
    let probe = Probe::new(24, Duration::from_millis(1));
    let runtime = Runtime::builder(telegram(&server), probe.handler())
        .policy(Fixed::new(24))
        .ordered(true)
        .poll_timeout(Duration::from_secs(1))
        .build();
    let (done, summary) = run_until(runtime, || probe.count() >= N).await;
    assert!(done, "stuck at {}", probe.count());
    assert_eq!(probe.order_violations.load(Ordering::SeqCst), 0);
    assert_eq!(summary.stats.finished(), N as u64);
    assert!(
        probe.max_in_flight.load(Ordering::SeqCst) > 1,
        "different keys must run concurrently"
    );
    assert_eq!(summary.stats.reserved, 0);
}

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap()
}

/// Completions per key after `window` of (paused) time, with key 0's handler taking
/// `slow_key_time` and every other handler 10 ms.
async fn completions_by_key(slow_key_time: Duration, window: Duration) -> HashMap<i64, usize> {
    const KEYS: i64 = 100;
    let transport = Arc::new(InMemoryTransport::with_updates(
        (1..=20_000).map(|id| update(id, id % KEYS)),
    ));
    let done: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let d = Arc::clone(&done);
    let handler = move |u: Update| {
        let d = Arc::clone(&d);
        async move {
            let key = u.ordering_key().unwrap();
            let t = if key == 0 {
                slow_key_time
            } else {
                Duration::from_millis(10)
            };
            tokio::time::sleep(t).await;
            *d.lock().entry(key).or_default() += 1;
            Ok::<(), Infallible>(())
        }
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(all_of(Fixed::new(40), ByteBudget::new(64 << 20)))
        .ordered(true)
        .cost_fn(|_| 1 << 10)
        .drain_deadline(Duration::ZERO)
        .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(window).await;
    let counts = done.lock().clone();
    shutdown.cancel();
    run.await.unwrap().unwrap();
    counts
}

#[tokio::test(start_paused = true)]
async fn a_blocked_key_costs_the_other_keys_less_than_five_percent() {
    let window = Duration::from_secs(2);
    let others = |m: &HashMap<i64, usize>| m.iter().filter(|(k, _)| **k != 0).map(|(_, n)| n).sum::<usize>();
    let normal = completions_by_key(Duration::from_millis(10), window).await;
    let blocked = completions_by_key(Duration::from_secs(3600), window).await;
    let (normal_others, blocked_others) = (others(&normal), others(&blocked));
    assert!(
        normal_others > 1000,
        "the baseline did too little work: {normal_others}"
    );
    assert_eq!(blocked.get(&0).copied().unwrap_or(0), 0, "key 0 was blocked");
    assert!(
        blocked_others as f64 >= 0.95 * normal_others as f64,
        "other keys: {blocked_others} with key 0 blocked vs {normal_others} without"
    );
}

/// An update parked behind its busy key holds its JSON, not its handler's working set: it
/// reserves its size, so the budget it would have taken stays free for other chats' updates
/// (a parked update reserving its whole cost kept chat 8's update from running).
#[tokio::test(start_paused = true)]
async fn a_parked_update_reserves_its_json_size_not_its_cost() {
    let start = tokio::time::Instant::now();
    let (done, handler) = common::timed_handler(start, |_| Duration::from_secs(1));
    // Budget: two handlers of 4 KiB and a little. Chat 7 has three updates, chat 8 one.
    let updates = [(1, 7), (2, 7), (3, 7), (4, 8)].map(|(id, chat)| common::update(id, chat));
    let json: u64 = updates[1].size() as u64 + updates[2].size() as u64;
    let queue = common::Queue::with(updates);
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .policy(ByteBudget::new(9 << 10))
        .cost_fn(|_| 4 << 10)
        .ordered(true)
        .delivery(pollgate_runtime::Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let probe = {
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stats.snapshot()
        })
    };
    let summary = common::run_until_paused(runtime, || stats.snapshot().finished() == 4).await;
    let mid = probe.await.unwrap();
    assert_eq!((mid.in_flight, mid.reserved), (2, 2), "{mid:?}");
    assert_eq!(
        mid.bytes,
        (8 << 10) + json,
        "two running handlers and two parked JSONs: {mid:?}"
    );
    let done = done.lock().clone();
    let at = |id| done.iter().find(|(i, _)| *i == id).unwrap().1;
    assert_eq!(at(4), Duration::from_secs(1), "chat 8 ran beside chat 7: {done:?}");
    assert_eq!(at(3), Duration::from_secs(3), "chat 7 one at a time: {done:?}");
    assert_eq!(summary.stats.max_in_flight, 2);
}
