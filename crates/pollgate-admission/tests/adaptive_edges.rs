//! The adaptive policies at their edges, from the review of `adaptive/`: `finding_*` failed
//! before their fixes (the in-flight reading came from the last `admits` call, not the
//! gate at release; initial limits were clamped into the default bounds; an overflow),
//! `sound_*` check what was suspected and found sound (wake-ups, deadlocks, arithmetic).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pollgate_admission::{
    Adaptive, AdmissionPolicy, Aimd, ByteBudget, Completion, Fixed, Gate, Gradient2, LimitAlgorithm, Outcome, Permit,
    Sample, all_of,
};

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// `observed`: the in-flight snapshot fed to the algorithm
// ---------------------------------------------------------------------------------------

/// mod.rs: "the limit never grows while less than half of it is in use"
/// (also docs/policies.md). `observed` is only refreshed by `admits`/`fetch_limit`; when
/// a burst drains with nothing new arriving (the runtime is in a long poll: no admits, no
/// fetch watcher), every completion sees the snapshot from the last admit (9), so the
/// limit keeps growing while 2, then 1, handler runs.
#[test]
fn finding_limit_grows_while_under_half_used_during_a_drain() {
    let policy = Arc::new(Adaptive::new(Aimd::new(10)));
    let gate = Gate::with_shared(policy.clone());
    let permits: Vec<Permit> = (0..10).map(|_| gate.try_acquire(0).unwrap()).collect();
    let mut violations = Vec::new();
    for permit in permits {
        // Running handlers, this one included (what `Sample::in_flight` promises).
        let running = gate.load().in_flight;
        let before = policy.current();
        permit.finish(Outcome::Success, MS);
        let after = policy.current();
        if after > before && running * 2 < before {
            violations.push(format!("{running} running of limit {before} -> grew to {after}"));
        }
    }
    assert!(violations.is_empty(), "grew while under half used: {violations:#?}");
}

/// `Sample::in_flight`: "Handlers running when it finished (the gate's last reading,
/// itself included)". The last reading is usually an `admits` call, whose load excludes
/// the candidate, so the sample is one short. A closed loop that keeps exactly 2 of 3
/// slots busy is "used" by Aimd's own rule (`in_flight * 2 >= limit`: 4 >= 3) and should
/// grow to 5 (2 of 5 is < half); it stays at 3 forever.
#[test]
fn finding_sample_in_flight_is_one_short_and_a_used_limit_never_grows() {
    let policy = Arc::new(Adaptive::new(Aimd::new(3)));
    let gate = Gate::with_shared(policy.clone());
    let mut running: Vec<Permit> = (0..2).map(|_| gate.try_acquire(0).unwrap()).collect();
    for _ in 0..100 {
        assert_eq!(gate.load().in_flight, 2);
        running.remove(0).finish(Outcome::Success, MS);
        running.push(gate.try_acquire(0).unwrap());
    }
    assert_eq!(policy.current(), 5, "2 of 3 in use is 'used': Aimd must grow to 5");
}

/// `Gate::with_shared` / `RuntimeBuilder::shared_policy` ("shared with other runtimes"):
/// `observed` is one atomic for all gates, so an idle gate's readings overwrite the busy
/// gate's. Gate A runs 4 of 4 (fully used), gate B handles one update now and then; A's
/// completions are then sampled as "1 in flight" and A's limit never grows.
#[test]
fn finding_a_shared_policy_is_starved_by_another_gates_snapshot() {
    let policy = Arc::new(Adaptive::new(Aimd::new(4)));
    let a = Gate::with_shared(policy.clone());
    let b = Gate::with_shared(policy.clone());
    let mut running: Vec<Permit> = (0..4).map(|_| a.try_acquire(0).unwrap()).collect();
    for _ in 0..20 {
        // B's dispatcher: one update (an error: ignored by the policy, so only the snapshot
        // of B's load is left behind).
        b.try_acquire(0).unwrap().finish(Outcome::Error, MS);
        // A: one of its 4 (of 4) running handlers finishes, a new one starts.
        running.remove(0).finish(Outcome::Success, MS);
        if let Ok(p) = a.try_acquire(0) {
            running.push(p);
        }
        while running.len() < a.policy().limit().slots.unwrap() {
            match a.try_acquire(0) {
                Ok(p) => running.push(p),
                Err(_) => break,
            }
        }
    }
    assert!(
        policy.current() > 4,
        "A was fully used 20 times; limit still {}",
        policy.current()
    );
}

// ---------------------------------------------------------------------------------------
// Constructors and doc claims
// ---------------------------------------------------------------------------------------

/// `Gradient2::new`: "Starts at `initial` (clamped into the bounds)". It is clamped into
/// the *default* bounds 4..=1000 before `bounds()` can widen them.
#[test]
fn finding_gradient2_initial_is_clamped_into_default_bounds_not_the_given_ones() {
    assert_eq!(Gradient2::new(2000).bounds(4, 5000).initial_limit(), 2000);
}

#[test]
fn finding_gradient2_small_initial_is_raised_to_4_despite_bounds_from_1() {
    assert_eq!(Gradient2::new(2).bounds(1, 10).initial_limit(), 2);
}

/// `Aimd::new` clamps into its bounds: `Aimd::new(5000)` starts at the default max (1000)
/// instead of at 5000 with its first "+1 while used" step cutting it to 1000; with wider
/// bounds it starts at 5000 and grows.
#[test]
fn finding_aimd_new_above_default_max_then_a_growth_step_cuts_it_by_80_percent() {
    let mut a = Aimd::new(5000);
    assert_eq!(a.initial_limit(), 1000);
    assert_eq!(a.update(Sample::new(MS, 1000, false)), 1000);
    let mut wide = Aimd::new(5000).bounds(1, 10_000);
    assert_eq!(wide.initial_limit(), 5000);
    assert_eq!(wide.update(Sample::new(MS, 5000, false)), 5001);
}

/// `Sample::new` is public "for driving an algorithm by hand"; a large `in_flight`
/// overflows `in_flight * 2` (debug: panic; release: wraps and reads as under-used).
#[test]
fn finding_aimd_update_overflows_on_large_in_flight() {
    let mut a = Aimd::new(10);
    let r = std::panic::catch_unwind(move || a.update(Sample::new(MS, usize::MAX / 2 + 1, false)));
    assert!(r.is_ok(), "Aimd::update panicked on a large in_flight");
}
/// A limit raised by hand-driven feedback (no release follows) re-checks both the queue
/// and the fetch watcher, also through `all_of` (attach is forwarded to both members).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sound_growth_without_a_release_wakes_the_waiter_and_the_fetch_watcher() {
    let adaptive = Arc::new(Adaptive::new(Aimd::new(1)));
    let gate = Gate::new(all_of(ByteBudget::new(1 << 30), adaptive.clone()));
    let held = gate.acquire(0).await.unwrap();
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.acquire(0).await.unwrap() }
    });
    tokio::task::yield_now().await;
    assert_eq!(gate.load().waiting, 1);
    // 1 in flight of limit 1: used; two successes -> limit 3.
    gate.policy().on_complete(&Completion::new(0, Outcome::Success, MS));
    let second = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("waiter woken by the raised limit")
        .unwrap();
    let fetch = tokio::spawn({
        let gate = gate.clone();
        async move { gate.fetch_ready().await.unwrap() }
    });
    tokio::task::yield_now().await;
    assert!(!fetch.is_finished());
    gate.policy().on_complete(&Completion::new(0, Outcome::Success, MS));
    assert_eq!(adaptive.current(), 3);
    let n = tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .expect("fetch watcher woken by the raised limit")
        .unwrap();
    assert_eq!(n, 1);
    drop((held, second));
}

/// Many threads finishing (and so notifying from `on_complete`) while others acquire and
/// format the gate with `{:?}` (gate lock, then the algorithm's lock): no deadlock, no
/// lost wake-up, nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sound_no_deadlock_or_lost_wake_up_under_threads() {
    for gate in [
        Gate::new(Adaptive::new(Aimd::new(2).bounds(1, 8))),
        Gate::new(all_of(Adaptive::new(Gradient2::new(4).bounds(1, 8)), Fixed::new(6))),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let dbg = std::thread::spawn({
            let (gate, stop) = (gate.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = format!("{gate:?}");
                }
            }
        });
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    for i in 0..2_000u32 {
                        let p = gate.acquire(0).await.unwrap();
                        if i % 5 == 0 {
                            tokio::task::yield_now().await;
                        }
                        let outcome = match (i + t) % 11 {
                            0 => Outcome::Overload,
                            1 => Outcome::Error,
                            _ => Outcome::Success,
                        };
                        p.finish(outcome, Duration::from_micros(u64::from(i % 50)));
                    }
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("no deadlock, no lost wake-up");
        stop.store(true, Ordering::Relaxed);
        dbg.join().unwrap();
        assert_eq!(gate.load().in_flight, 0);
        assert_eq!(gate.stats().completed, 32_000);
    }
}

/// Gradient2 arithmetic edge cases: zero latency, `Duration::MAX`, min == max, a huge
/// queue allowance. The limit stays finite and in bounds.
#[test]
fn sound_gradient2_edges_stay_finite_and_in_bounds() {
    let lat = [
        Duration::ZERO,
        Duration::MAX,
        Duration::from_nanos(1),
        Duration::ZERO,
        Duration::MAX,
    ];
    for (min, max) in [(1, 1), (5, 5), (4, 1000), (1, usize::MAX)] {
        let mut g = Gradient2::new(20).bounds(min, max).queue_size(usize::MAX);
        for i in 0..20_000 {
            let l = g.update(Sample::new(lat[(i / 37) % lat.len()], i % 3000, i % 13 == 0));
            assert!((min..=max).contains(&l), "{l} not in {min}..={max}");
        }
        let mut g = Gradient2::new(20).bounds(min, max);
        for i in 0..20_000 {
            let l = g.update(Sample::new(lat[i % lat.len()], 1000, false));
            assert!((min..=max).contains(&l));
        }
        assert!(
            !format!("{g:?}").contains("NaN") && !format!("{g:?}").contains("inf"),
            "{g:?}"
        );
    }
}

/// A limit knocked down to 1 by overloads recovers under a fully used closed loop (the
/// `max(1)` in `on_complete` prevents the 0-snapshot trap at limit 1).
#[test]
fn sound_limit_recovers_from_the_minimum() {
    for policy in [
        Arc::new(Adaptive::new(Aimd::new(1))) as Arc<dyn Probe>,
        Arc::new(Adaptive::new(Gradient2::new(1).bounds(1, 1000))),
    ] {
        let gate = Gate::with_shared(policy.clone().as_policy());
        let mut running: Vec<Permit> = Vec::new();
        for _ in 0..5_000 {
            while let Ok(p) = gate.try_acquire(0) {
                running.push(p);
            }
            running.remove(0).finish(Outcome::Success, Duration::from_millis(10));
        }
        assert!(policy.current() >= 8, "stuck at {}", policy.current());
    }
}

trait Probe: Send + Sync {
    fn current(&self) -> usize;
    fn as_policy(self: Arc<Self>) -> Arc<dyn AdmissionPolicy>;
}
impl<A: LimitAlgorithm> Probe for Adaptive<A> {
    fn current(&self) -> usize {
        Adaptive::current(self)
    }
    fn as_policy(self: Arc<Self>) -> Arc<dyn AdmissionPolicy> {
        self
    }
}
