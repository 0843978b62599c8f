//! Random sequences of gate operations keep the gate's invariants.
//!
//! Futures are driven by hand with wakers that record being woken, so the test sees exactly
//! what an executor would: which futures were woken, in which order they complete.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use pollgate_admission::{AdmissionPolicy, ByteBudget, Closed, Fixed, Gate, Load, Outcome, Permit, Reservation};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Acquire(u64),
    TryAcquire(u64),
    Reserve(u64),
    AcquireReserved(usize),
    DropReservation(usize),
    Finish(usize),
    DropPermit(usize),
    Cancel(usize),
    PollAll,
    SetLimit(u64),
}

fn op(max_cost: u64, max_limit: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=max_cost).prop_map(Op::Acquire),
        1 => (0..=max_cost).prop_map(Op::TryAcquire),
        2 => (0..=max_cost).prop_map(Op::Reserve),
        2 => any::<usize>().prop_map(Op::AcquireReserved),
        1 => any::<usize>().prop_map(Op::DropReservation),
        2 => any::<usize>().prop_map(Op::Finish),
        2 => any::<usize>().prop_map(Op::DropPermit),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => Just(Op::PollAll),
        1 => (1..=max_limit).prop_map(Op::SetLimit),
    ]
}

#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type AcquireFuture<'a> = Pin<Box<dyn Future<Output = Result<Permit, Closed>> + 'a>>;

struct Pending<'a> {
    future: AcquireFuture<'a>,
    cost: u64,
    reserved: bool,
    woken: Arc<Flag>,
}

/// The policy under test, and how to check "the policy's limit" after each step.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Fixed,
    Bytes,
}

struct Harness<'a> {
    gate: &'a Gate,
    kind: Kind,
    fixed: Option<Arc<Fixed>>,
    bytes: Option<Arc<ByteBudget>>,
    permits: Vec<Permit>,
    reservations: Vec<Reservation>,
    pending: Vec<Pending<'a>>,
}

impl<'a> Harness<'a> {
    fn start(&mut self, future: AcquireFuture<'a>, cost: u64, reserved: bool) {
        let woken = Arc::new(Flag::default());
        let mut pending = Pending {
            future,
            cost,
            reserved,
            woken,
        };
        match poll(&mut pending) {
            Poll::Ready(Ok(permit)) => self.permits.push(permit),
            Poll::Ready(Err(Closed)) => unreachable!("never closed here"),
            Poll::Pending => self.pending.push(pending),
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Acquire(cost) => self.start(Box::pin(self.gate.acquire(cost)), cost, false),
            Op::TryAcquire(cost) => {
                let waiting = self.gate.load().waiting;
                match self.gate.try_acquire(cost) {
                    Ok(permit) => {
                        assert_eq!(waiting, 0, "try_acquire jumped the queue");
                        self.permits.push(permit);
                    }
                    Err(e) => assert_eq!(e, pollgate_admission::TryAcquireError::NoCapacity),
                }
            }
            Op::Reserve(cost) => self.reservations.push(self.gate.reserve(cost)),
            Op::AcquireReserved(i) if !self.reservations.is_empty() => {
                let r = self.reservations.swap_remove(i % self.reservations.len());
                let cost = r.cost();
                self.start(Box::pin(self.gate.acquire_reserved(r)), cost, true);
            }
            Op::DropReservation(i) if !self.reservations.is_empty() => {
                drop(self.reservations.swap_remove(i % self.reservations.len()));
            }
            Op::Finish(i) if !self.permits.is_empty() => {
                let permit = self.permits.swap_remove(i % self.permits.len());
                permit.finish(Outcome::Success, std::time::Duration::ZERO);
            }
            Op::DropPermit(i) if !self.permits.is_empty() => {
                drop(self.permits.swap_remove(i % self.permits.len()));
            }
            Op::Cancel(i) if !self.pending.is_empty() => {
                // `remove`, not `swap_remove`: the list stays in arrival order.
                drop(self.pending.remove(i % self.pending.len()));
            }
            Op::PollAll => {
                let mut still = Vec::new();
                for mut pending in std::mem::take(&mut self.pending) {
                    let was_woken = pending.woken.0.load(Ordering::SeqCst);
                    match poll(&mut pending) {
                        Poll::Ready(Ok(permit)) => {
                            assert!(was_woken, "completed without a wake-up: lost wake-up");
                            self.permits.push(permit);
                        }
                        Poll::Ready(Err(Closed)) => unreachable!(),
                        Poll::Pending => still.push(pending),
                    }
                }
                self.pending = still;
            }
            Op::SetLimit(n) => match self.kind {
                Kind::Fixed => self.fixed.as_ref().unwrap().set_limit(n as usize),
                Kind::Bytes => self.bytes.as_ref().unwrap().set_budget(n),
            },
            _ => {}
        }
    }

    fn check(&self, in_flight_before: usize) {
        let load = self.gate.load();
        let stats = self.gate.stats();
        // Accounting: every running permit is either held or granted to a pending future.
        let granted = self.pending.len() - load.waiting;
        assert_eq!(load.in_flight, self.permits.len() + granted);
        assert_eq!(stats.admitted - stats.completed, load.in_flight as u64);
        let reserved_waiting = self.pending[granted..].iter().filter(|p| p.reserved).count();
        assert_eq!(load.reserved, self.reservations.len() + reserved_waiting);
        let expected_bytes: u64 = self.permits.iter().map(Permit::cost).sum::<u64>()
            + self.reservations.iter().map(Reservation::cost).sum::<u64>()
            + self.pending.iter().filter(|p| p.reserved).map(|p| p.cost).sum::<u64>()
            + self.pending[..granted]
                .iter()
                .filter(|p| !p.reserved)
                .map(|p| p.cost)
                .sum::<u64>();
        assert_eq!(load.bytes, expected_bytes);

        // The limit: no admission ever takes the gate past it.
        if load.in_flight > in_flight_before {
            match self.kind {
                Kind::Fixed => {
                    assert!(load.in_flight <= self.fixed.as_deref().unwrap().slots());
                }
                Kind::Bytes => {
                    let budget = self.bytes.as_ref().unwrap().budget();
                    assert!(
                        load.bytes <= budget || load.in_flight == 1,
                        "over budget: {load:?} > {budget}"
                    );
                }
            }
        }

        // Granted futures were woken; nobody sleeps while the policy would admit the head.
        for pending in &self.pending[..granted] {
            assert!(pending.woken.0.load(Ordering::SeqCst), "granted but not woken");
        }
        if let Some(head) = self.pending.get(granted) {
            let candidate = Load::new(load.in_flight, load.bytes - if head.reserved { head.cost } else { 0 })
                .with_reserved(load.reserved - usize::from(head.reserved))
                .with_waiting(load.waiting - 1);
            assert!(
                !self.gate.policy().admits(&candidate, head.cost),
                "head asleep although admissible: {candidate:?} cost {}",
                head.cost
            );
        }
    }
}

fn poll(pending: &mut Pending<'_>) -> Poll<Result<Permit, Closed>> {
    pending.woken.0.store(false, Ordering::SeqCst);
    let waker = Waker::from(pending.woken.clone());
    pending.future.as_mut().poll(&mut Context::from_waker(&waker))
}

fn run(kind: Kind, initial_limit: u64, ops: Vec<Op>) {
    let (gate, fixed, bytes) = match kind {
        Kind::Fixed => {
            let fixed = Arc::new(Fixed::new(initial_limit as usize));
            (Gate::with_shared(fixed.clone()), Some(fixed), None)
        }
        Kind::Bytes => {
            let bytes = Arc::new(ByteBudget::new(initial_limit));
            (Gate::with_shared(bytes.clone()), None, Some(bytes))
        }
    };
    let mut harness = Harness {
        gate: &gate,
        kind,
        fixed,
        bytes,
        permits: Vec::new(),
        reservations: Vec::new(),
        pending: Vec::new(),
    };
    for op in ops {
        let before = gate.load().in_flight;
        harness.apply(op);
        harness.check(before);
    }
    // Everything dropped: all capacity is back.
    drop(harness);
    assert_eq!(gate.load(), Load::default());
    let stats = gate.stats();
    assert_eq!(stats.admitted, stats.completed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fixed_gate_keeps_its_invariants(
        limit in 1..5u64,
        ops in prop::collection::vec(op(10, 5), 1..120),
    ) {
        run(Kind::Fixed, limit, ops);
    }

    #[test]
    fn byte_budget_gate_keeps_its_invariants(
        budget in 1..200u64,
        ops in prop::collection::vec(op(300, 250), 1..120),
    ) {
        run(Kind::Bytes, budget, ops);
    }
}

#[test]
fn all_of_gate_drains() {
    use pollgate_admission::all_of;
    let gate = Gate::new(all_of(Fixed::new(2), ByteBudget::new(10)));
    let permits: Vec<_> = (0..2).filter_map(|_| gate.try_acquire(4).ok()).collect();
    assert_eq!(permits.len(), 2);
    assert!(gate.try_acquire(1).is_err());
    drop(permits);
    assert_eq!(gate.policy().fetch_limit(&gate.load()), 2);
}
