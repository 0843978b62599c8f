//! One worker process: the ordinary pollgate runtime on the Redis stream, with a byte
//! budget, the flood demo's handler (touch W KiB, hold T ms) and a ledger line per handled
//! update written before the update counts as finished (so a SIGKILL loses no line).
//!
//! Prints `{"event":"progress",...}` lines every 100 ms and a `{"event":"result",...}`
//! line at the end on stdout. Shuts down gracefully when stdin closes (the parent's stop
//! signal; also what happens when the parent dies), or on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use pollgate::{ByteBudget, Delivery, Runtime};
use pollgate_redis::RedisStreamTransport;
use tokio_util::sync::CancellationToken;

use crate::cli::WorkerArgs;
use crate::proc_mem::rss_and_peak;
use crate::process::{emit, on_stdin_close, run_main};
use crate::workload::{Recorder, Workload, handle};

/// Runs a worker; returns the process exit code.
pub(crate) fn main(args: WorkerArgs) -> u8 {
    run_main("scale_out worker", run(args), |()| 0)
}

async fn run(args: WorkerArgs) -> Result<(), String> {
    let stop = CancellationToken::new();
    on_stdin_close({
        let stop = stop.clone();
        move || stop.cancel()
    });
    let work = args.work_kib << 10;
    let workload = Workload {
        bytes: work as usize,
        hold: Duration::from_millis(args.work_ms),
        slow_frac: 0.0,
        slow_x: 1.0,
        fail_frac: 0.0,
        poison_frac: 0.0,
    };
    let recorder = Recorder::new(workload, args.updates, false, Some(&args.ledger))
        .map_err(|e| format!("cannot open the ledger: {e}"))?;
    let transport = Arc::new(
        RedisStreamTransport::builder(&args.redis_url, &args.stream, &args.group)
            .claim_idle(Duration::from_millis(args.claim_idle_ms))
            .max_block(Duration::from_millis(500))
            .build()
            .map_err(|e| format!("cannot build the transport: {e}"))?,
    );
    let rec = Arc::clone(&recorder);
    let runtime = Runtime::builder(Arc::clone(&transport), move |u| handle(Arc::clone(&rec), u))
        .policy(ByteBudget::new(args.budget).expected_cost(work))
        .cost_fn(move |_| work)
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(500))
        .shutdown(stop.clone())
        .shutdown_on_signals()
        .build();
    let stats = runtime.stats();
    let (baseline, _) = rss_and_peak();
    let progress = tokio::spawn({
        let recorder = Arc::clone(&recorder);
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let (rss, peak) = rss_and_peak();
                emit(serde_json::json!({
                    "event": "progress",
                    "handled": recorder.handled(),
                    "in_flight": stats.snapshot().in_flight,
                    "rss_bytes": rss,
                    "peak_rss_bytes": peak,
                    "baseline_rss_bytes": baseline,
                }));
            }
        }
    });
    let summary = runtime.run().await.map_err(|e| format!("the worker stopped: {e}"))?;
    progress.abort();
    let (_, peak) = rss_and_peak();
    let record = recorder.summary();
    let redis = transport.stats();
    emit(serde_json::json!({
        "event": "result",
        "worker": args.index,
        "consumer": transport.consumer(),
        "handled": recorder.handled(),
        "unique": record.unique,
        "duplicates": record.duplicates,
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "budget_bytes": args.budget,
        "claimed": redis.claimed,
        "recovered": redis.recovered,
        "dead_lettered": redis.dead_lettered,
        "acked": redis.acked,
        "unfinished": summary.unfinished.len(),
        "p50_ms": record.p50_ms,
        "p99_ms": record.p99_ms,
    }));
    Ok(())
}
