//! FIFO fairness, close, fetch readiness and limit signals.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pollgate_admission::{
    AdmissionPolicy, Barrier, ByteBudget, Closed, Fixed, Gate, MemorySample, RssAdaptive, TryAcquireError,
};

/// A waker that remembers it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag::default());
    (flag.clone(), Waker::from(flag))
}

#[test]
fn big_waiter_at_the_head_blocks_later_small_ones() {
    let gate = Gate::new(ByteBudget::new(100));
    let first = gate.try_acquire(60).unwrap();

    let (big_flag, big_waker) = flag();
    let mut big = pin!(gate.acquire(80));
    assert!(big.as_mut().poll(&mut Context::from_waker(&big_waker)).is_pending());

    // 60 + 30 fits, but the big one came first.
    let (small_flag, small_waker) = flag();
    let mut small = pin!(gate.acquire(30));
    assert!(small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_pending());
    assert_eq!(gate.try_acquire(1).unwrap_err(), TryAcquireError::NoCapacity);

    drop(first);
    assert!(big_flag.take(), "the head is woken");
    assert!(!small_flag.take(), "80 + 30 > 100: the small one keeps waiting");
    let big = match big.as_mut().poll(&mut Context::from_waker(&big_waker)) {
        Poll::Ready(Ok(permit)) => permit,
        other => panic!("{other:?}"),
    };
    assert!(small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_pending());

    drop(big);
    assert!(small_flag.take());
    assert!(matches!(
        small.as_mut().poll(&mut Context::from_waker(&small_waker)),
        Poll::Ready(Ok(_))
    ));
}

#[test]
fn a_release_hands_over_to_as_many_waiters_as_fit_in_order() {
    let gate = Gate::new(Fixed::new(2));
    let held = [gate.try_acquire(1).unwrap(), gate.try_acquire(1).unwrap()];
    let flags: Vec<_> = (0..3).map(|_| flag()).collect();
    let mut futures: Vec<_> = (0..3).map(|_| Box::pin(gate.acquire(1))).collect();
    for (fut, (_, waker)) in futures.iter_mut().zip(&flags) {
        assert!(fut.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
    }
    drop(held);
    let woken: Vec<bool> = flags.iter().map(|(f, _)| f.take()).collect();
    assert_eq!(woken, [true, true, false], "no thundering herd, FIFO order");
    assert_eq!(gate.load().in_flight, 2);
    assert_eq!(gate.load().waiting, 1);
}

#[tokio::test(start_paused = true)]
async fn close_wakes_everyone_with_closed() {
    let gate = Gate::new(Fixed::new(1));
    let held = gate.acquire(1).await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let gate = gate.clone();
        waiters.push(tokio::spawn(async move { gate.acquire(1).await.map(drop) }));
    }
    let reserved = tokio::spawn({
        let gate = gate.clone();
        async move {
            let reservation = gate.reserve(9);
            gate.acquire_reserved(reservation).await.map(drop)
        }
    });
    let fetch = tokio::spawn({
        let gate = gate.clone();
        async move { gate.fetch_ready().await }
    });
    let changed = tokio::spawn({
        let gate = gate.clone();
        async move { gate.changed().await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(gate.load().waiting, 4);

    gate.close();
    assert!(gate.is_closed());
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), Err(Closed));
    }
    assert_eq!(reserved.await.unwrap(), Err(Closed));
    assert_eq!(fetch.await.unwrap(), Err(Closed));
    changed.await.unwrap();
    assert_eq!(gate.acquire(1).await.unwrap_err(), Closed);
    assert_eq!(gate.try_acquire(1).unwrap_err(), TryAcquireError::Closed);
    assert_eq!(
        gate.load().bytes,
        1,
        "only the held permit: the reservation was returned"
    );
    drop(held);
    assert_eq!(gate.load().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn fetch_ready_waits_for_a_release() {
    let gate = Gate::new(Fixed::new(2));
    let a = gate.acquire(1).await.unwrap();
    let b = gate.acquire(1).await.unwrap();
    let fetch = tokio::spawn({
        let gate = gate.clone();
        async move { gate.fetch_ready().await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!fetch.is_finished());
    drop(a);
    assert_eq!(fetch.await.unwrap(), Ok(1));
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn barrier_fetches_after_the_whole_batch() {
    let gate = Gate::new(Barrier::new(3));
    assert_eq!(gate.fetch_ready().await, Ok(3));
    gate.on_batch(3); // what the runtime reports after fetching the batch
    let mut batch: Vec<_> = (0..3).map(|_| gate.try_acquire(1).unwrap()).collect();
    let fetch = tokio::spawn({
        let gate = gate.clone();
        async move { gate.fetch_ready().await }
    });
    for _ in 0..2 {
        drop(batch.pop());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!fetch.is_finished(), "stragglers hold the next batch");
    }
    drop(batch.pop());
    assert_eq!(fetch.await.unwrap(), Ok(3));
}

#[tokio::test(start_paused = true)]
async fn changed_resolves_at_the_next_change() {
    let gate = Gate::new(Fixed::new(1));
    let permit = gate.acquire(1).await.unwrap();
    let changed = tokio::spawn({
        let gate = gate.clone();
        async move { gate.changed().await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!changed.is_finished());
    drop(permit);
    changed.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn raising_a_limit_wakes_waiters() {
    let policy = Arc::new(Fixed::new(1));
    let gate = Gate::with_shared(policy.clone());
    let other_gate = Gate::with_shared(policy.clone());
    let _held = gate.acquire(1).await.unwrap();
    let _held_too = other_gate.acquire(1).await.unwrap();
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.acquire(1).await.map(drop) }
    });
    let other_waiter = tokio::spawn({
        let gate = other_gate.clone();
        async move { gate.acquire(1).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    policy.set_limit(2);
    waiter.await.unwrap().unwrap();
    other_waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn rss_budget_growth_wakes_waiters() {
    const MIB: u64 = 1 << 20;
    let policy = Arc::new(
        RssAdaptive::builder(1000 * MIB)
            .min_budget(10 * MIB)
            .max_budget(800 * MIB)
            .probe(|| Some(990 * MIB)) // starts at the floor
            .build_manual(),
    );
    let gate = Gate::with_shared(policy.clone());
    assert_eq!(policy.budget(), 10 * MIB);
    let _held = gate.acquire(8 * MIB).await.unwrap();
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.acquire(8 * MIB).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!waiter.is_finished());
    // RSS fell well below the low mark while the budget is used: it grows and wakes.
    let mut at_ms = 0;
    while !waiter.is_finished() {
        policy.on_memory(MemorySample {
            rss_bytes: 100 * MIB,
            at_ms,
        });
        at_ms += 50;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(at_ms < 5_000, "budget {}", policy.budget());
    }
    waiter.await.unwrap().unwrap();
    assert!(gate.stats().memory.is_some());
}

#[test]
fn a_reserved_candidate_does_not_count_its_own_bytes() {
    let gate = Gate::new(ByteBudget::new(100));
    let reservation = gate.reserve(100);
    let _other = gate.reserve(0);
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(gate.acquire_reserved(reservation));
    let permit = match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(permit)) => permit,
        other => panic!("{other:?}"),
    };
    let load = gate.load();
    assert_eq!((load.in_flight, load.reserved, load.bytes), (1, 1, 100));
    drop(permit);
}

#[test]
fn stats_count_admissions_and_completions() {
    let gate = Gate::new(Fixed::new(3));
    let a = gate.try_acquire(5).unwrap();
    let b = gate.try_acquire(6).unwrap();
    drop(a);
    let stats = gate.stats();
    assert_eq!(
        (stats.admitted, stats.completed, stats.in_flight, stats.bytes),
        (2, 1, 1, 6)
    );
    assert_eq!(stats.limit.slots, Some(3));
    assert!(format!("{gate:?}").contains("in_flight: 1"));
    drop(b);
    assert_eq!(gate.policy().fetch_limit(&gate.load()), 3);
}

#[tokio::test(start_paused = true)]
async fn fetch_ready_at_least_sleeps_until_the_threshold_fits() {
    let gate = Gate::new(Fixed::new(4));
    let mut held: Vec<_> = (0..4).map(|_| gate.try_acquire(1).unwrap()).collect();
    let ready = tokio::spawn({
        let gate = gate.clone();
        async move { gate.fetch_ready_at_least(3).await }
    });
    for _ in 0..2 {
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!ready.is_finished(), "woken before 3 fit");
    }
    drop(held.pop());
    assert_eq!(ready.await.unwrap(), Ok(3));
    gate.close();
    assert_eq!(gate.fetch_ready_at_least(1).await, Err(pollgate_admission::Closed));
}
