//! The cost of admission: acquire + release through the gate, against a bare
//! `tokio::sync::Semaphore`, uncontended and with two workers hammering one gate.
//! Also the cost of one memory probe read (what the sampler thread pays per tick).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use pollgate_admission::rss::CgroupMemory;
use pollgate_admission::{Fixed, Gate, MemoryProbe, ProcStatusProbe, RssAdaptive, SysinfoProbe, WorkingSetProbe};
use tokio::sync::Semaphore;

const MANY: usize = 1 << 20;
const GIB: u64 = 1 << 30;

fn rss_manual() -> Gate {
    Gate::new(RssAdaptive::builder(64 * GIB).max_budget(32 * GIB).build_manual())
}

fn rss_sampled() -> Gate {
    Gate::new(RssAdaptive::builder(64 * GIB).max_budget(32 * GIB).build())
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("uncontended");
    for (name, gate) in [
        ("gate_fixed", Gate::new(Fixed::new(MANY))),
        ("gate_rss_manual", rss_manual()),
        ("gate_rss_sampler", rss_sampled()),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { drop(black_box(gate.acquire(black_box(1024)).await.unwrap())) })
        });
    }
    let fixed = Gate::new(Fixed::new(MANY));
    group.bench_function("gate_fixed_try_acquire", |b| {
        b.iter(|| drop(black_box(fixed.try_acquire(black_box(1024)).unwrap())))
    });
    let semaphore = Arc::new(Semaphore::new(MANY));
    group.bench_function("tokio_semaphore", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(black_box(semaphore.clone().acquire_owned().await.unwrap())) })
    });
    group.finish();
}

/// Two tasks on a 2-worker runtime, each doing `iters` acquire + release; the reported time
/// is the wall time divided by 2, i.e. per operation of the pair.
fn contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("contended_2_workers");
    for (name, gate) in [
        ("gate_fixed", Gate::new(Fixed::new(MANY))),
        ("gate_rss_manual", rss_manual()),
        ("gate_rss_sampler", rss_sampled()),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let gate = gate.clone();
                async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..2)
                        .map(|_| {
                            let gate = gate.clone();
                            tokio::spawn(async move {
                                for _ in 0..iters {
                                    drop(black_box(gate.acquire(1024).await.unwrap()));
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    start.elapsed() / 2
                }
            })
        });
    }
    let semaphore = Arc::new(Semaphore::new(MANY));
    group.bench_function("tokio_semaphore", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let semaphore = semaphore.clone();
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..2)
                    .map(|_| {
                        let semaphore = semaphore.clone();
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                drop(black_box(semaphore.clone().acquire_owned().await.unwrap()));
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start.elapsed() / 2
            }
        })
    });
    group.finish();
}

fn probe_sample(c: &mut Criterion) {
    let mut group = c.benchmark_group("probe_sample");
    let mut sysinfo = SysinfoProbe::new();
    group.bench_function("sysinfo", |b| b.iter(|| black_box(sysinfo.sample())));
    if let Some(mut statm) = ProcStatusProbe::new() {
        group.bench_function("proc_statm", |b| b.iter(|| black_box(statm.sample())));
    }
    // The process's own memory cgroup, where one is visible (the hierarchy root included:
    // the cost is the same two files).
    if let Some(mut working_set) = CgroupMemory::detect().and_then(|cgroup| WorkingSetProbe::for_cgroup(&cgroup).ok()) {
        group.bench_function("cgroup_working_set", |b| b.iter(|| black_box(working_set.sample())));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = uncontended, contended, probe_sample
}
/// Two tasks on a 2-worker runtime doing `ops` acquire + release each; the time per
/// operation of the pair.
fn pair(rt: &tokio::runtime::Runtime, ops: u64, gate: Option<&Gate>, semaphore: &Arc<Semaphore>) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (gate, semaphore) = (gate.cloned(), semaphore.clone());
                tokio::spawn(async move {
                    for _ in 0..ops {
                        match &gate {
                            Some(g) => drop(black_box(g.acquire(1024).await.unwrap())),
                            None => drop(black_box(semaphore.clone().acquire_owned().await.unwrap())),
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed().as_secs_f64() * 1e9 / (2 * ops) as f64
    })
}

/// The contended case is what the shared machine disturbs most: criterion measures one
/// function after the other, so a burst of noise lands on one side only. This runs the
/// gate and the semaphore alternately, round after round, and reports the median of the
/// per-round ratios (to `target/criterion/gate_interleaved.json`).
fn interleaved() {
    const ROUNDS: usize = 101;
    const OPS: u64 = 20_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let gate = Gate::new(Fixed::new(MANY));
    let semaphore = Arc::new(Semaphore::new(MANY));
    for _ in 0..5 {
        pair(&rt, OPS, Some(&gate), &semaphore);
        pair(&rt, OPS, None, &semaphore);
    }
    let (mut ratios, mut gates, mut sems) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (g, s) = if round % 2 == 0 {
            let g = pair(&rt, OPS, Some(&gate), &semaphore);
            (g, pair(&rt, OPS, None, &semaphore))
        } else {
            let s = pair(&rt, OPS, None, &semaphore);
            (pair(&rt, OPS, Some(&gate), &semaphore), s)
        };
        ratios.push(g / s);
        gates.push(g);
        sems.push(s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let report = serde_json::json!({
        "rounds": ROUNDS,
        "ops_per_task": OPS,
        "median_ratio": median(&mut ratios),
        "gate_median_ns": median(&mut gates),
        "semaphore_median_ns": median(&mut sems),
        "ratios": ratios,
    });
    println!("gate contended, interleaved: {report}");
    // Beside criterion's own output: target/criterion (the executable is in target/<profile>/deps).
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| std::path::PathBuf::from("target"));
    let _ = std::fs::create_dir_all(dir.join("criterion"));
    let _ = std::fs::write(dir.join("criterion/gate_interleaved.json"), report.to_string());
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        interleaved();
    }
}
