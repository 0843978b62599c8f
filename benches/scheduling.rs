//! End-to-end scheduling overhead: updates per second through the runtime (in-memory
//! transport, no-op handler, `Fixed` policy) against a bare `tokio::spawn` + semaphore
//! loop over the same updates, in the same run, on a 2-worker runtime.
//!
//! What the ratio measures: everything pollgate adds per update (fetch limit, ack
//! tracking, gate, permit, outcome accounting, tracing spans) relative to the cheapest
//! correct way to bound concurrency by hand.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use pollgate::transport::InMemoryTransport;
use pollgate::{Fixed, Runtime, Update};
use tokio::sync::{Notify, Semaphore};

const N: usize = 10_000;
const CONCURRENCY: usize = 256;

fn updates() -> Vec<Update> {
    (1..=N as i64)
        .map(|id| {
            Update::from_json(&format!(
                r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{},"type":"private"}},"date":0,"text":"hello"}}}}"#,
                id % 97
            ))
            .unwrap()
        })
        .collect()
}

/// The runtime over a transport that already holds the updates (building it is setup,
/// as building the bare loop's vector is).
async fn through_runtime(transport: Arc<InMemoryTransport>) {
    let done = Arc::new((AtomicUsize::new(0), Notify::new()));
    let d = Arc::clone(&done);
    let handler = move |_u: Update| {
        let d = Arc::clone(&d);
        async move {
            if d.0.fetch_add(1, Ordering::Relaxed) + 1 == N {
                d.1.notify_one();
            }
            Ok::<(), Infallible>(())
        }
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(Fixed::new(CONCURRENCY))
        .poll_timeout(Duration::from_secs(1))
        .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    done.1.notified().await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    if std::env::var_os("SCHED_DEBUG").is_some() {
        eprintln!("fetches {}", transport.requests().len());
    }
}

/// The hand-written loop. Like the runtime's dispatcher it runs as a task on the worker
/// pool (not on the thread that blocks on the benchmark), so both get the same threads.
async fn bare_spawn_semaphore(updates: Vec<Update>) {
    tokio::spawn(async move {
        let semaphore = Arc::new(Semaphore::new(CONCURRENCY));
        let done = Arc::new((AtomicUsize::new(0), Notify::new()));
        for u in updates {
            let permit = Arc::clone(&semaphore).acquire_owned().await.unwrap();
            let d = Arc::clone(&done);
            tokio::spawn(async move {
                std::hint::black_box(u.id());
                if d.0.fetch_add(1, Ordering::Relaxed) + 1 == N {
                    d.1.notify_one();
                }
                drop(permit);
            });
        }
        done.1.notified().await;
    })
    .await
    .unwrap();
}

/// The runtime both loops run on: two workers, as on the 2-core machines we measure on.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn scheduling(c: &mut Criterion) {
    let rt = two_workers();
    let all = updates();
    let mut group = c.benchmark_group("scheduling_10k_noop");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    group.bench_function("runtime_fixed_256", |b| {
        b.to_async(&rt).iter_batched(
            || Arc::new(InMemoryTransport::with_updates(all.clone())),
            through_runtime,
            BatchSize::PerIteration,
        )
    });
    group.bench_function("bare_spawn_semaphore_256", |b| {
        b.to_async(&rt)
            .iter_batched(|| all.clone(), bare_spawn_semaphore, BatchSize::PerIteration)
    });
    group.finish();
}

criterion_group!(benches, scheduling);

/// The machine is shared and noisy: criterion measures one function after the other, so a
/// burst of noise can land on one side only. This also runs both loops alternately, round
/// after round, and reports the median of the per-round throughput ratios.
fn interleaved() {
    const ROUNDS: usize = 101;
    let rt = two_workers();
    let all = updates();
    // Inputs are built before the clock starts: a vector for the bare loop, a transport
    // holding the same updates for the runtime.
    let time = |runtime: bool| {
        if runtime {
            let transport = Arc::new(InMemoryTransport::with_updates(all.clone()));
            let started = std::time::Instant::now();
            rt.block_on(through_runtime(transport));
            started.elapsed().as_secs_f64()
        } else {
            let updates = all.clone();
            let started = std::time::Instant::now();
            rt.block_on(bare_spawn_semaphore(updates));
            started.elapsed().as_secs_f64()
        }
    };
    for _ in 0..3 {
        time(true);
        time(false);
    }
    let mut ratios = Vec::with_capacity(ROUNDS);
    let (mut rts, mut bares) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let (r, b) = if round % 2 == 0 {
            let r = time(true);
            (r, time(false))
        } else {
            let b = time(false);
            (time(true), b)
        };
        ratios.push(b / r);
        rts.push(N as f64 / r);
        bares.push(N as f64 / b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let report = serde_json::json!({
        "rounds": ROUNDS,
        "updates_per_round": N,
        "median_ratio": median(&mut ratios),
        "runtime_median_updates_per_s": median(&mut rts),
        "bare_median_updates_per_s": median(&mut bares),
        "ratios": ratios,
    });
    println!("scheduling, interleaved: {report}");
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| std::path::PathBuf::from("target"), Into::into);
    let _ = std::fs::create_dir_all(dir.join("criterion"));
    let _ = std::fs::write(dir.join("criterion/scheduling_interleaved.json"), report.to_string());
}

/// `SCHED_ONLY=runtime|bare [SCHED_ROUNDS=n]`: runs one side only, `n` rounds (default
/// 200), for a profiler (`perf record`, `valgrind --tool=callgrind`) to look at alone.
fn one_side(side: &str) {
    let rt = two_workers();
    let all = updates();
    let rounds: usize = std::env::var("SCHED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        if side == "runtime" {
            rt.block_on(through_runtime(Arc::new(InMemoryTransport::with_updates(all.clone()))));
        } else {
            rt.block_on(bare_spawn_semaphore(all.clone()));
        }
    }
    eprintln!("{side}: {rounds} rounds in {:.3} s", started.elapsed().as_secs_f64());
}

fn main() {
    if let Ok(side) = std::env::var("SCHED_ONLY") {
        return one_side(&side);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        interleaved();
    }
}
