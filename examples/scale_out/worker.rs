//! One worker process: the ordinary pollgate runtime on the Redis stream (or, with
//! `--shards`, on the shard streams it holds leases on, one update per chat at a time),
//! with a byte budget, the flood demo's handler (touch W KiB, hold T ms), a ledger line
//! per handled update written before the update counts as finished (so a SIGKILL loses
//! no line), and a start and an end event per handler run in the event ledger.
//!
//! Prints `{"event":"progress",...}` lines every 100 ms and a `{"event":"result",...}`
//! line at the end on stdout. Shuts down gracefully when stdin closes (the parent's stop
//! signal; also what happens when the parent dies), or on SIGTERM or SIGINT.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pollgate::{ByteBudget, Delivery, Runtime, Transport, Update};
use pollgate_redis::{RedisStreamTransport, ShardedStreamTransport};
use serde_json::Value;
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
    let events = Arc::new(Events {
        file: Mutex::new(File::create(&args.events).map_err(|e| format!("cannot open the event ledger: {e}"))?),
        worker: args.index,
    });
    match args.shards {
        Some(shards) => {
            let transport = Arc::new(
                ShardedStreamTransport::builder(&args.redis_url, &args.stream, &args.group)
                    .shards(shards)
                    .worker(format!("worker-{}-{}", args.index, std::process::id()))
                    .lease_ttl(Duration::from_millis(args.lease_ms))
                    .max_block(Duration::from_millis(500))
                    .build()
                    .map_err(|e| format!("cannot build the transport: {}", pollgate::transport::ErrorChain(&e)))?,
            );
            let t = Arc::clone(&transport);
            let report = move || {
                let s = t.stats();
                serde_json::json!({
                    "consumer": t.worker(),
                    "recovered": s.recovered,
                    "claimed": 0,
                    "dead_lettered": s.dead_lettered,
                    "acked": s.acked,
                    "fenced": s.fenced,
                    "leases_acquired": s.acquired,
                    "leases_lost": s.lost,
                })
            };
            serve(&args, transport, true, recorder, events, stop, report).await
        }
        None => {
            let transport = Arc::new(
                RedisStreamTransport::builder(&args.redis_url, &args.stream, &args.group)
                    .claim_idle(Duration::from_millis(args.claim_idle_ms))
                    .max_block(Duration::from_millis(500))
                    .build()
                    .map_err(|e| format!("cannot build the transport: {}", pollgate::transport::ErrorChain(&e)))?,
            );
            let t = Arc::clone(&transport);
            let report = move || {
                let s = t.stats();
                serde_json::json!({
                    "consumer": t.consumer(),
                    "claimed": s.claimed,
                    "recovered": s.recovered,
                    "dead_lettered": s.dead_lettered,
                    "acked": s.acked,
                })
            };
            serve(&args, transport, false, recorder, events, stop, report).await
        }
    }
}

/// The start/end event ledger: one JSON line per event, each written with one `write`
/// (the file is unbuffered, so a SIGKILL loses no event that was written).
struct Events {
    file: Mutex<File>,
    worker: u32,
}

impl Events {
    fn log(&self, ev: &str, u: &Update) {
        let t_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let line = format!(
            "{}\n",
            serde_json::json!({"ev": ev, "id": u.id(), "chat": u.ordering_key(), "worker": self.worker, "t_ns": t_ns})
        );
        // A full disk ends the demo's checks, not the worker.
        let _ = self.file.lock().write_all(line.as_bytes());
    }
}

/// Runs the runtime on `transport` until stopped, then reports.
async fn serve<T: Transport>(
    args: &WorkerArgs,
    transport: Arc<T>,
    ordered: bool,
    recorder: Arc<Recorder>,
    events: Arc<Events>,
    stop: CancellationToken,
    report: impl Fn() -> Value,
) -> Result<(), String> {
    let work = args.work_kib << 10;
    let rec = Arc::clone(&recorder);
    let handler = move |u: Update| {
        let (rec, events) = (Arc::clone(&rec), Arc::clone(&events));
        async move {
            events.log("start", &u);
            let copy = u.clone();
            let done = handle(rec, u).await;
            events.log("end", &copy);
            done
        }
    };
    let runtime = Runtime::builder(transport, handler)
        .policy(ByteBudget::new(args.budget).expected_cost(work))
        .cost_fn(move |_| work)
        .delivery(Delivery::AtLeastOnce)
        .ordered(ordered)
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
    let summary = runtime
        .run()
        .await
        .map_err(|e| format!("the worker stopped: {}", pollgate::transport::ErrorChain(&e)))?;
    progress.abort();
    let (_, peak) = rss_and_peak();
    let record = recorder.summary();
    let mut result = serde_json::json!({
        "event": "result",
        "worker": args.index,
        "handled": recorder.handled(),
        "unique": record.unique,
        "duplicates": record.duplicates,
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "budget_bytes": args.budget,
        "unfinished": summary.unfinished.len(),
        "p50_ms": record.p50_ms,
        "p99_ms": record.p99_ms,
    });
    if let (Some(result), Value::Object(extra)) = (result.as_object_mut(), report()) {
        result.extend(extra);
    }
    emit(result);
    Ok(())
}
