//! The gate under real threads: a release racing an acquire (or a fetch watcher) that is
//! deciding to wait must still wake it. Many tasks on a 2-worker runtime hammer a small
//! gate; every one must get through (a lost wake-up would hang: the deadline turns that
//! into a failure), and the limit must hold throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pollgate_admission::{ByteBudget, Fixed, Gate};

async fn hammer(gate: Gate, tasks: usize, rounds: usize, limit: usize, cost: u64) {
    let running = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (gate, running, max_seen) = (gate.clone(), Arc::clone(&running), Arc::clone(&max_seen));
            tokio::spawn(async move {
                for i in 0..rounds {
                    let permit = gate.acquire(cost).await.unwrap();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max_seen.fetch_max(now, Ordering::SeqCst);
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            })
        })
        .collect();
    let all = async {
        for h in handles {
            h.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every acquire got through: no lost wake-up");
    assert!(max_seen.load(Ordering::SeqCst) <= limit, "limit {limit} exceeded");
    let load = gate.load();
    assert_eq!((load.in_flight, load.bytes, load.waiting), (0, 0, 0), "{load:?}");
    assert_eq!(gate.stats().completed, (tasks * rounds) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fixed_gate_under_two_threads_loses_no_wake_up() {
    hammer(Gate::new(Fixed::new(2)), 16, 2_000, 2, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_under_two_threads_loses_no_wake_up() {
    hammer(Gate::new(ByteBudget::new(3 << 10)), 16, 2_000, 3, 1 << 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_watchers_are_woken_by_racing_releases() {
    let gate = Gate::new(Fixed::new(2));
    for _ in 0..20_000 {
        let permits: Vec<_> = (0..2).map(|_| gate.try_acquire(1).unwrap()).collect();
        assert_eq!(gate.fetch_limit(), 0);
        let releaser = std::thread::spawn(move || drop(permits));
        let ready = tokio::time::timeout(Duration::from_secs(10), gate.fetch_ready_at_least(2))
            .await
            .expect("the watcher saw the releases");
        assert_eq!(ready.unwrap(), 2);
        releaser.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_release_racing_a_new_waiter_still_wakes_it() {
    // One slot, one holder: its release is the only event that can wake the waiter, and
    // it lands while the waiter is deciding to wait. Repeated to hit the window.
    let gate = Gate::new(Fixed::new(1));
    for _ in 0..20_000 {
        let held = gate.try_acquire(1).unwrap();
        let releaser = std::thread::spawn(move || drop(held));
        let got = tokio::time::timeout(Duration::from_secs(10), gate.acquire(1))
            .await
            .expect("the release woke the waiter");
        drop(got.unwrap());
        releaser.join().unwrap();
    }
}
