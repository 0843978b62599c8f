//! Every way a permit (or reservation) can end gives its capacity back, and the policy hears
//! how it ended.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Completion, Fixed, Gate, Load, Outcome};

/// `Fixed`, plus a log of every completion it is told about.
#[derive(Debug)]
struct Recording {
    inner: Fixed,
    log: Mutex<Vec<Completion>>,
}

impl Recording {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Fixed::new(limit),
            log: Mutex::new(Vec::new()),
        })
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.log.lock().iter().map(|c| c.outcome).collect()
    }
}

impl AdmissionPolicy for Recording {
    fn fetch_limit(&self, load: &Load) -> usize {
        self.inner.fetch_limit(load)
    }
    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.inner.admits(load, cost)
    }
    fn on_complete(&self, completion: &Completion) {
        self.log.lock().push(*completion);
    }
}

fn gate(limit: usize) -> (Gate, Arc<Recording>) {
    let policy = Recording::new(limit);
    (Gate::with_shared(policy.clone()), policy)
}

fn idle(gate: &Gate) {
    assert_eq!(gate.load(), Load::default());
    let stats = gate.stats();
    assert_eq!(stats.admitted, stats.completed);
}

#[tokio::test]
async fn completed_releases_capacity() {
    let (gate, policy) = gate(1);
    let permit = gate.acquire(7).await.unwrap();
    assert_eq!(gate.load().in_flight, 1);
    assert_eq!(gate.load().bytes, 7);
    permit.finish(Outcome::Success, Duration::from_millis(3));
    idle(&gate);
    let log = policy.log.lock();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].cost, log[0].outcome), (7, Outcome::Success));
    assert_eq!(log[0].latency, Duration::from_millis(3));
}

#[tokio::test]
async fn failed_releases_capacity() {
    let (gate, policy) = gate(1);
    let permit = gate.acquire(1).await.unwrap();
    permit.finish(Outcome::Error, Duration::ZERO);
    idle(&gate);
    let permit = gate.acquire(1).await.unwrap();
    permit.finish(Outcome::Overload, Duration::ZERO);
    idle(&gate);
    assert_eq!(policy.outcomes(), [Outcome::Error, Outcome::Overload]);
}

#[tokio::test]
async fn panicked_task_releases_capacity() {
    let (gate, policy) = gate(1);
    let permit = gate.acquire(5).await.unwrap();
    let task = tokio::spawn(async move {
        let _permit = permit;
        panic!("handler failed");
    });
    let error = task.await.unwrap_err();
    assert!(error.is_panic());
    idle(&gate);
    // Unwinding dropped the permit: the policy hears `Cancelled` (a runtime that catches the
    // panic itself reports `Outcome::Panic` through `finish`).
    assert_eq!(policy.outcomes(), [Outcome::Cancelled]);
    assert!(gate.try_acquire(1).is_ok());
}

#[tokio::test]
async fn aborted_task_releases_capacity() {
    let (gate, policy) = gate(1);
    let permit = gate.acquire(5).await.unwrap();
    let task = tokio::spawn(async move {
        let _permit = permit;
        std::future::pending::<()>().await;
    });
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    idle(&gate);
    assert_eq!(policy.outcomes(), [Outcome::Cancelled]);
}

#[test]
fn dropped_future_releases_capacity() {
    let (gate, policy) = gate(1);
    let mut cx = Context::from_waker(Waker::noop());
    let held = gate.try_acquire(1).unwrap();

    // A pending acquire, dropped: it gives up its place.
    {
        let mut waiting = pin!(gate.acquire(2));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate.load().waiting, 1);
    }
    assert_eq!(gate.load().waiting, 0);

    // A granted but never polled acquire, dropped: the capacity comes back.
    {
        let mut granted = pin!(gate.acquire(3));
        assert!(granted.as_mut().poll(&mut cx).is_pending());
        drop(held);
        assert_eq!(gate.load().in_flight, 1, "handed over to the waiter");
        assert_eq!(gate.load().bytes, 3);
    }
    idle(&gate);
    assert_eq!(policy.outcomes(), [Outcome::Cancelled, Outcome::Cancelled]);
}

#[test]
fn dropped_reserved_future_releases_capacity_and_bytes() {
    let (gate, _policy) = gate(1);
    let mut cx = Context::from_waker(Waker::noop());
    let held = gate.try_acquire(0).unwrap();
    {
        let mut waiting = pin!(gate.acquire_reserved(gate.reserve(10)));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate.load().reserved, 1);
        assert_eq!(gate.load().bytes, 10);
    }
    assert_eq!(gate.load().bytes, 0, "the reservation went with the future");
    {
        let mut granted = pin!(gate.acquire_reserved(gate.reserve(10)));
        assert!(granted.as_mut().poll(&mut cx).is_pending());
        drop(held);
        let load = gate.load();
        assert_eq!((load.in_flight, load.reserved, load.bytes), (1, 0, 10));
    }
    idle(&gate);
}

#[tokio::test]
async fn reservation_drop_releases_bytes() {
    let (gate, _policy) = gate(1);
    let reservation = gate.reserve(40);
    assert_eq!(reservation.cost(), 40);
    let load = gate.load();
    assert_eq!((load.reserved, load.bytes, load.in_flight), (1, 40, 0));
    drop(reservation);
    idle(&gate);

    // Through a permit: bytes counted once, returned once.
    let permit = gate.acquire_reserved(gate.reserve(40)).await.unwrap();
    let load = gate.load();
    assert_eq!((load.reserved, load.bytes, load.in_flight), (0, 40, 1));
    drop(permit);
    idle(&gate);
}

#[tokio::test]
async fn finish_reports_the_outcome_and_drop_reports_cancelled() {
    let (gate, policy) = gate(4);
    gate.acquire(1).await.unwrap().finish(Outcome::Success, Duration::ZERO);
    gate.acquire(1).await.unwrap().finish(Outcome::Panic, Duration::ZERO);
    drop(gate.acquire(1).await.unwrap());
    assert_eq!(
        policy.outcomes(),
        [Outcome::Success, Outcome::Panic, Outcome::Cancelled]
    );
    idle(&gate);
}

#[tokio::test(start_paused = true)]
async fn drop_reports_latency_since_grant() {
    let (gate, policy) = gate(1);
    let permit = gate.acquire(1).await.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    drop(permit);
    assert!(policy.log.lock()[0].latency >= Duration::from_millis(5));
}

#[test]
fn closed_gate_still_releases() {
    let (gate, _policy) = gate(1);
    let permit = gate.try_acquire(3).unwrap();
    let reservation = gate.reserve(4);
    gate.close();
    drop(permit);
    drop(reservation);
    idle(&gate);
    let mut cx = Context::from_waker(Waker::noop());
    let mut late = pin!(gate.acquire(1));
    assert!(matches!(late.as_mut().poll(&mut cx), Poll::Ready(Err(_))));
}

/// A reservation made by one gate cannot become a permit of another: its bytes are
/// counted by the first. Checked when `acquire_reserved` is called, in release builds
/// too (it was a `debug_assert` on the first poll).
#[test]
#[should_panic(expected = "a reservation must be used with the gate that made it")]
fn a_reservation_from_another_gate_is_refused_when_called() {
    let (a, b) = (Gate::new(Fixed::new(1)), Gate::new(Fixed::new(1)));
    let foreign = a.reserve(10);
    let _never_polled = b.acquire_reserved(foreign);
}
