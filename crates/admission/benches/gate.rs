//! The cost of admission: acquire + release through the gate, against a bare
//! `tokio::sync::Semaphore`, uncontended and with two workers hammering one gate.
//! Also the cost of one memory probe read (what the sampler thread pays per tick).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pollgate_admission::{Fixed, Gate, MemoryProbe, ProcStatusProbe, RssAdaptive, SysinfoProbe};
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
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = uncontended, contended, probe_sample
}
criterion_main!(benches);
