//! A deterministic simulation of the adaptive policies against a downstream whose capacity
//! steps: light load, a backlog, a slowdown, a recovery. No clock and no threads: virtual
//! time, a real `Gate`, completions fed back through `Permit::finish`.
//!
//! The downstream has `capacity` parallel slots: an update started with `n` in flight takes
//! `service × max(1, n / capacity)` (the slots are shared), and past `2 × capacity` it is
//! refused at once (`Overload`, a tenth of the service time), as a full queue answers 429.
//! So the knee of the latency curve is at `capacity`, the overload point at twice it.
//!
//! `ADAPTIVE_SIM_PRINT=1 cargo test -p pollgate-admission --test adaptive_sim -- --nocapture`
//! prints the limit once a second (the figures in `docs/policies.md`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use pollgate_admission::{Adaptive, AdmissionPolicy, Aimd, Gate, Gradient2, LimitAlgorithm, Outcome, Permit};

/// One phase: until when, the arrival rate (`None`: a backlog, always something to start),
/// and the downstream's capacity and service time.
#[derive(Clone, Copy)]
struct Phase {
    until_s: f64,
    rate: Option<f64>,
    capacity: usize,
    service_s: f64,
}

const PHASES: [Phase; 4] = [
    // Light load: 100/s × 50 ms = 5 in flight, far below any limit.
    Phase {
        until_s: 20.0,
        rate: Some(100.0),
        capacity: 32,
        service_s: 0.05,
    },
    // A backlog.
    Phase {
        until_s: 80.0,
        rate: None,
        capacity: 32,
        service_s: 0.05,
    },
    // The downstream slows down: a quarter of the slots, four times slower.
    Phase {
        until_s: 140.0,
        rate: None,
        capacity: 8,
        service_s: 0.2,
    },
    // It recovers.
    Phase {
        until_s: 200.0,
        rate: None,
        capacity: 32,
        service_s: 0.05,
    },
];

struct Running {
    done_at: f64,
    latency: f64,
    overloaded: bool,
    permit: Permit,
}

impl PartialEq for Running {
    fn eq(&self, other: &Self) -> bool {
        self.done_at == other.done_at
    }
}
impl Eq for Running {}
impl PartialOrd for Running {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Running {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.done_at.total_cmp(&other.done_at)
    }
}

/// The limit at every whole second, and the updates handled and refused per phase.
fn simulate<A: LimitAlgorithm>(algorithm: A) -> (Vec<usize>, Vec<u64>, Vec<u64>) {
    let gate = Gate::new(Adaptive::new(algorithm));
    let mut running: BinaryHeap<Reverse<Running>> = BinaryHeap::new();
    let (mut t, mut next_arrival, mut waiting) = (0.0f64, 0.0f64, 0usize);
    let mut series = Vec::new();
    let mut handled = vec![0u64; PHASES.len()];
    let mut refused = vec![0u64; PHASES.len()];
    let mut next_second = 0.0;
    while t < PHASES[PHASES.len() - 1].until_s {
        let p = PHASES.iter().position(|p| t < p.until_s).expect("within the phases");
        let phase = PHASES[p];
        while t >= next_second {
            series.push(gate.policy().limit().slots.unwrap_or(0));
            next_second += 1.0;
        }
        // Finish what is due.
        while running.peek().is_some_and(|r| r.0.done_at <= t) {
            let Reverse(r) = running.pop().unwrap();
            let outcome = if r.overloaded {
                Outcome::Overload
            } else {
                Outcome::Success
            };
            if r.overloaded {
                refused[p] += 1;
            } else {
                handled[p] += 1;
            }
            r.permit.finish(outcome, Duration::from_secs_f64(r.latency));
        }
        // Arrivals of a light phase queue up in front of the gate.
        if let Some(rate) = phase.rate {
            while next_arrival <= t {
                waiting += 1;
                next_arrival += 1.0 / rate;
            }
        }
        // Start what the policy admits.
        loop {
            if phase.rate.is_some() && waiting == 0 {
                break;
            }
            let Ok(permit) = gate.try_acquire(0) else { break };
            waiting = waiting.saturating_sub(1);
            let n = gate.load().in_flight;
            let (latency, overloaded) = if n > 2 * phase.capacity {
                (phase.service_s / 10.0, true)
            } else {
                (phase.service_s * (n as f64 / phase.capacity as f64).max(1.0), false)
            };
            running.push(Reverse(Running {
                done_at: t + latency,
                latency,
                overloaded,
                permit,
            }));
        }
        // The next event.
        let mut next = running.peek().map_or(f64::INFINITY, |r| r.0.done_at);
        if phase.rate.is_some() {
            next = next.min(next_arrival);
        }
        t = next.min(phase.until_s).max(t + 1e-6);
    }
    (series, handled, refused)
}

/// The mean limit over the last `secs` seconds of phase `p`.
fn settled(series: &[usize], p: usize, secs: usize) -> f64 {
    let end = PHASES[p].until_s as usize;
    let window = &series[end - secs..end];
    window.iter().sum::<usize>() as f64 / window.len() as f64
}

fn report(name: &str, (series, handled, refused): &(Vec<usize>, Vec<u64>, Vec<u64>)) {
    if std::env::var_os("ADAPTIVE_SIM_PRINT").is_some() {
        println!("{name}: limit each second: {series:?}");
        println!("{name}: handled per phase: {handled:?}");
        println!("{name}: refused per phase: {refused:?}");
        for p in 0..PHASES.len() {
            println!("{name}: phase {p}: settled limit {:.1}", settled(series, p, 10));
        }
    }
}

#[test]
fn aimd_settles_below_the_overload_point_through_a_slowdown_and_back() {
    let run = simulate(Aimd::new(20).bounds(2, 1000));
    report("aimd", &run);
    let (series, handled, _) = run;
    // Light load: less than half the limit in use, so it never grows.
    assert!(series[..20].iter().all(|&l| l == 20), "{:?}", &series[..20]);
    // A backlog: it climbs until the downstream refuses (past 2 × 32), then saws below it.
    let b = settled(&series, 1, 10);
    assert!((48.0..=65.0).contains(&b), "backlog: {b}");
    // A quarter of the capacity: it follows the overload point down (2 × 8).
    let c = settled(&series, 2, 10);
    assert!((10.0..=17.0).contains(&c), "slowdown: {c}");
    // Recovery: back up, one step per used completion.
    let d = settled(&series, 3, 10);
    assert!((48.0..=65.0).contains(&d), "recovery: {d}");
    full_throughput(&handled);
}

#[test]
fn gradient2_finds_the_latency_knee_through_a_slowdown_and_back() {
    let run = simulate(Gradient2::new(20).bounds(2, 1000));
    report("gradient2", &run);
    let (series, handled, refused) = run;
    // It finds the knee from latency alone: no refusal in the backlog, almost none after.
    assert_eq!(refused[1], 0, "{refused:?}");
    assert!(refused[3] * 100 < handled[3], "{refused:?}");
    assert!(series[..20].iter().all(|&l| l == 20), "{:?}", &series[..20]);
    // A backlog: past the knee (32 slots), short of the overload point (64); it creeps up
    // as the long-term latency follows the queueing it allows.
    let b = settled(&series, 1, 10);
    assert!((32.0..56.0).contains(&b), "backlog: {b}");
    // The slowdown: down to the new knee (8 slots) within seconds, no refusals needed.
    let c = settled(&series, 2, 10);
    assert!((6.0..=12.0).contains(&c), "slowdown: {c}");
    assert!(series[86] <= 12, "within 6 s of the slowdown: {:?}", &series[80..90]);
    // Recovery: up again, still short of the overload point.
    let d = settled(&series, 3, 10);
    assert!((32.0..64.0).contains(&d), "recovery: {d}");
    full_throughput(&handled);
}

/// In the backlog and recovery phases, at least 95% of what 32 slots at 50 ms handle.
fn full_throughput(handled: &[u64]) {
    let ideal = 60.0 * 32.0 / 0.05;
    for p in [1, 3] {
        assert!(
            handled[p] as f64 >= 0.95 * ideal,
            "phase {p} handled {} of {ideal}",
            handled[p]
        );
    }
}

#[test]
fn the_simulation_is_deterministic() {
    assert_eq!(simulate(Gradient2::default()), simulate(Gradient2::default()));
}
