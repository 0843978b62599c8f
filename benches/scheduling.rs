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

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pollgate::{Fixed, MemoryTransport, Runtime, Update};
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

async fn through_runtime(updates: Vec<Update>) {
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
    let transport = Arc::new(MemoryTransport::with_updates(updates));
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

async fn bare_spawn_semaphore(updates: Vec<Update>) {
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
}

fn scheduling(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let all = updates();
    let mut group = c.benchmark_group("scheduling_10k_noop");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    group.bench_function("runtime_fixed_256", |b| {
        b.to_async(&rt).iter(|| through_runtime(all.clone()))
    });
    group.bench_function("bare_spawn_semaphore_256", |b| {
        b.to_async(&rt).iter(|| bare_spawn_semaphore(all.clone()))
    });
    group.finish();
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
