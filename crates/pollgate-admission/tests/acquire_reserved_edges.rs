//! Edges found in review: `Gate::acquire_reserved` is now a plain fn that checks the
//! reservation's gate when called and returns the `Acquire` future. Its accounting when
//! the future is dropped before its first poll, while queued, and after being granted
//! but never polled again; and the wrong-gate check firing at the call, not the poll.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use pollgate_admission::{Closed, Fixed, Gate, Permit};

/// Polls `fut` exactly once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

fn assert_empty(gate: &Gate) {
    let load = gate.load();
    assert_eq!(
        (load.in_flight, load.bytes, load.reserved, load.waiting),
        (0, 0, 0, 0),
        "{load:?}"
    );
}

/// Dropped before its first poll: the reservation's bytes and count go back, no waiter
/// was queued.
#[tokio::test(start_paused = true)]
async fn dropped_before_the_first_poll_returns_the_reservation() {
    let gate = Gate::new(Fixed::new(1));
    let reservation = gate.reserve(100);
    assert_eq!((gate.load().reserved, gate.load().bytes), (1, 100));
    let fut = gate.acquire_reserved(reservation);
    drop(fut);
    assert_empty(&gate);
    // The gate still admits.
    let permit = gate.try_acquire(1).expect("free");
    drop(permit);
    assert_empty(&gate);
}

/// Dropped while queued behind a running permit: the waiter leaves the queue, the
/// reservation goes back, the running permit's bytes stay.
#[tokio::test(start_paused = true)]
async fn dropped_while_queued_leaves_the_queue_and_returns_the_reservation() {
    let gate = Gate::new(Fixed::new(1));
    let running = gate.try_acquire(7).expect("free");
    let reservation = gate.reserve(100);
    let mut fut = Box::pin(gate.acquire_reserved(reservation));
    assert!(poll_once(&mut fut).await.is_pending());
    let load = gate.load();
    assert_eq!(
        (load.in_flight, load.bytes, load.reserved, load.waiting),
        (1, 107, 1, 1)
    );
    drop(fut);
    let load = gate.load();
    assert_eq!((load.in_flight, load.bytes, load.reserved, load.waiting), (1, 7, 0, 0));
    drop(running);
    assert_empty(&gate);
}

/// Granted by a release while queued, then dropped without being polled again: the
/// capacity comes straight back, the reservation's bytes are returned once (no
/// double-decrement, no leak), and the next acquire is served.
#[tokio::test(start_paused = true)]
async fn granted_then_dropped_unpolled_hands_the_capacity_back_once() {
    let gate = Gate::new(Fixed::new(1));
    let running = gate.try_acquire(7).expect("free");
    let reservation = gate.reserve(100);
    let mut fut = Box::pin(gate.acquire_reserved(reservation));
    assert!(poll_once(&mut fut).await.is_pending());
    drop(running); // grants the waiter
    let load = gate.load();
    assert_eq!(
        (load.in_flight, load.bytes, load.reserved, load.waiting),
        (1, 100, 0, 0)
    );
    drop(fut);
    assert_empty(&gate);
    let next: Permit = tokio::time::timeout(Duration::from_secs(1), gate.acquire(5))
        .await
        .expect("served")
        .expect("open");
    drop(next);
    assert_empty(&gate);
}

/// On a closed gate the future fails and the reservation still goes back.
#[tokio::test(start_paused = true)]
async fn a_closed_gate_fails_and_returns_the_reservation() {
    let gate = Gate::new(Fixed::new(1));
    let reservation = gate.reserve(100);
    gate.close();
    let result: Result<Permit, Closed> = gate.acquire_reserved(reservation).await;
    assert!(result.is_err());
    assert_empty(&gate);
}

/// A reservation of another gate is refused when `acquire_reserved` is called, before
/// any poll, in every build.
#[tokio::test(start_paused = true)]
async fn another_gates_reservation_panics_at_the_call() {
    let (a, b) = (Gate::new(Fixed::new(1)), Gate::new(Fixed::new(1)));
    let foreign = b.reserve(10);
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fut = a.acquire_reserved(foreign);
        drop(fut); // never polled
    }));
    assert!(called.is_err(), "the wrong gate was accepted");
    assert_empty(&a);
    // The foreign reservation was dropped by the unwinding: its own gate got it back.
    assert_empty(&b);
}
