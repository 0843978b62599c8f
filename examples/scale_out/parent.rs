//! Orchestration: Redis, the mock Bot API server, the bridge and the workers; the kill;
//! the end condition; the report.
//!
//! The run is over when the bridge appended the whole backlog (and confirmed it to the
//! Bot API server), every update is in some worker's ledger or in the dead-letter stream,
//! and nothing is pending in the consumer group. Lost = backlog − unique handled −
//! dead-lettered, counted from the ledgers, which are written before an update is
//! acknowledged.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use parking_lot::Mutex;
use pollgate_redis::{LocalRedis, Persistence};
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

use crate::bridge::{BridgeArgs, run_bridge};
use crate::cli::{Args, Fsync};
use crate::process::{on_stdin_close, run_main};
use crate::size::Size;

const GROUP: &str = "workers";

/// The bridge as a child process: token from the environment, stops when stdin closes
/// or after `--stop-after` appends.
pub(crate) fn bridge_main(args: BridgeArgs) -> u8 {
    let Ok(token) = std::env::var("TELEGRAM_BOT_TOKEN") else {
        eprintln!("scale_out bridge: TELEGRAM_BOT_TOKEN is not set");
        return 2;
    };
    let stop = CancellationToken::new();
    on_stdin_close({
        let stop = stop.clone();
        move || stop.cancel()
    });
    run_main("scale_out", run_bridge(&args, token, stop), |_| 0)
}

/// Runs the demo; returns the process exit code.
pub(crate) fn main(args: Args) -> u8 {
    run_main("scale_out", run(args), |ok| if ok { 0 } else { 1 })
}

/// What the parent knows of one worker.
#[derive(Debug, Default)]
struct Seen {
    handled: u64,
    rss: u64,
    peak: u64,
    baseline: Option<u64>,
    result: Option<Value>,
}

struct Worker {
    index: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    seen: Arc<Mutex<Seen>>,
    reader: tokio::task::JoinHandle<()>,
    ledger: PathBuf,
    killed_at: Option<f64>,
    bar: ProgressBar,
}

/// Reads the ids appended to the ledgers since the last call.
#[derive(Debug, Default)]
struct LedgerTail {
    offsets: HashMap<PathBuf, u64>,
    partial: HashMap<PathBuf, String>,
    counts: HashMap<i64, u32>,
    per_file: HashMap<PathBuf, u64>,
}

impl LedgerTail {
    fn poll(&mut self, path: &Path) {
        let Ok(mut f) = std::fs::File::open(path) else { return };
        let off = self.offsets.get(path).copied().unwrap_or(0);
        if f.seek(SeekFrom::Start(off)).is_err() {
            return;
        }
        let mut buf = String::new();
        let Ok(n) = f.read_to_string(&mut buf) else { return };
        self.offsets.insert(path.to_path_buf(), off + n as u64);
        let partial = self.partial.entry(path.to_path_buf()).or_default();
        partial.push_str(&buf);
        let complete = partial.rfind('\n').map_or(0, |i| i + 1);
        let lines: String = partial.drain(..complete).collect();
        for line in lines.lines() {
            if let Ok(id) = line.trim().parse::<i64>() {
                *self.counts.entry(id).or_default() += 1;
                *self.per_file.entry(path.to_path_buf()).or_default() += 1;
            }
        }
    }

    fn unique(&self) -> u64 {
        self.counts.len() as u64
    }

    fn duplicates(&self) -> u64 {
        self.counts.values().map(|&c| u64::from(c.saturating_sub(1))).sum()
    }
}

/// Wall-clock time in ns, as the workers' event ledgers have it.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos:>7}/{len:7} {per_sec:>10} {msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

async fn run(args: Args) -> Result<bool, String> {
    let mut local = None;
    let (url, private) = match &args.redis_url {
        Some(u) => (u.clone(), false),
        None => {
            let persistence = match (args.restart_redis_after, args.appendfsync) {
                (None, _) => Persistence::None,
                (Some(_), Fsync::Everysec) => Persistence::AofEverySec,
                (Some(_), Fsync::Always) => Persistence::AofAlways,
            };
            let server = LocalRedis::start_with(persistence).map_err(|e| format!("cannot start redis-server: {e}"))?;
            let url = server.url();
            local = Some(server);
            (url, true)
        }
    };
    // Reconnects by itself: the monitoring rides out a Redis restart like the workers.
    // (one reconnection attempt per command, so that a look never blocks the loop).
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("bad --redis-url: {:?}", e.kind()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut redis = redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("cannot reach Redis: {e}"))?;
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let stream = format!("pollgate:scale-out:{tag}");
    let dead = format!("{stream}:dead");
    let ledgers = std::env::temp_dir().join(format!("pollgate-scale-out-{tag}"));
    std::fs::create_dir_all(&ledgers).map_err(|e| format!("cannot create {}: {e}", ledgers.display()))?;
    let events_dir = args.ledger_dir.clone().unwrap_or_else(|| ledgers.join("events"));
    std::fs::create_dir_all(&events_dir).map_err(|e| format!("cannot create {}: {e}", events_dir.display()))?;
    // The streams the bridge appends to: one, or the shard streams.
    let streams: Vec<String> = if args.ordered {
        (0..args.shards).map(|i| format!("{stream}:shard:{i}")).collect()
    } else {
        vec![stream.clone()]
    };

    let server = MockServer::start(MockConfig::default())
        .await
        .map_err(|e| format!("cannot start the embedded mock Bot API server: {e}"))?;
    let backlog = server.generate(&BacklogSpec {
        updates: args.updates as usize,
        text_bytes: args.text_bytes,
        chats: args.chats as usize,
        seed: 1,
        ..mock_bot_api::BacklogSpec::default()
    });
    if !args.json {
        println!(
            "scale_out: {} updates → bridge → {} on {} Redis → {} workers, {} budget each; handler holds {} KiB for {} ms",
            args.updates,
            if args.ordered {
                format!("{} shard streams {stream}:shard:N (ordered per chat)", args.shards)
            } else {
                format!("stream {stream}")
            },
            if private { "a private" } else { "the given" },
            args.workers,
            args.budget,
            args.work_kib,
            args.work_ms,
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let bars = MultiProgress::new();
    let started = Instant::now();
    let mut bridge = Command::new(&exe);
    bridge
        .arg("__bridge")
        .args(["--api-url", &server.url(), "--stream", &stream]);
    if args.ordered {
        bridge.args(["--shards", &args.shards.to_string()]);
    }
    let mut bridge = bridge
        .env("REDIS_URL", &url) // not on the command line, where `ps` shows a password
        .args(["--stop-after", &args.updates.to_string()])
        .env("TELEGRAM_BOT_TOKEN", server.token())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the bridge: {e}"))?;
    let bridge_bar = bars.add(ProgressBar::new(args.updates));
    bridge_bar.set_style(style());
    bridge_bar.set_prefix("bridge");

    let mut workers = Vec::new();
    for index in 0..args.workers {
        workers.push(spawn_worker(
            &exe,
            &args,
            index,
            &url,
            &stream,
            &ledgers,
            &events_dir,
            &bars,
        )?);
    }

    let mut tail = LedgerTail::default();
    let mut bridge_done = false;
    let mut kill_ns = None;
    // The Redis restart: when it was killed, restarted, and when work resumed after it.
    let (mut redis_killed, mut redis_restarted, mut resumed) = (None::<f64>, false, None::<f64>);
    let mut unique_at_kill = 0;
    let deadline = started + Duration::from_secs(args.timeout_s);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let (drain_s, dead_lettered) = loop {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        if let Some(after) = args.kill_one_after {
            let victim = &mut workers[0];
            if t >= after && victim.killed_at.is_none() {
                victim
                    .child
                    .start_kill()
                    .map_err(|e| format!("cannot kill worker 0: {e}"))?;
                victim.killed_at = Some(t);
                kill_ns = Some(wall_ns());
                victim.bar.abandon_with_message(format!("SIGKILLed at {t:.1} s"));
            }
        }
        if let (Some(after), Some(server)) = (args.restart_redis_after, local.as_mut()) {
            if t >= after && redis_killed.is_none() {
                server.kill().map_err(|e| format!("cannot kill redis-server: {e}"))?;
                redis_killed = Some(t);
                unique_at_kill = tail.unique();
                if !args.json {
                    bars.println(format!("redis-server SIGKILLed at {t:.1} s")).ok();
                }
            }
            if redis_killed.is_some_and(|k| t >= k + 3.0) && !redis_restarted {
                server
                    .restart()
                    .map_err(|e| format!("cannot restart redis-server: {e}"))?;
                redis_restarted = true;
                if !args.json {
                    bars.println(format!(
                        "redis-server restarted at {:.1} s",
                        started.elapsed().as_secs_f64()
                    ))
                    .ok();
                }
            }
        }
        if !bridge_done && let Some(status) = bridge.try_wait().map_err(|e| e.to_string())? {
            if !status.success() {
                return Err(format!("the bridge failed ({status})"));
            }
            bridge_done = true;
        }
        for w in &mut workers {
            if w.killed_at.is_none()
                && let Some(status) = w.child.try_wait().map_err(|e| e.to_string())?
            {
                return Err(format!("worker {} exited early ({status})", w.index));
            }
            tail.poll(&w.ledger);
            let s = w.seen.lock();
            if w.killed_at.is_none() {
                w.bar.set_position(tail.per_file.get(&w.ledger).copied().unwrap_or(0));
                w.bar
                    .set_message(format!("RSS {:>4} MiB (peak {:>4})", s.rss >> 20, s.peak >> 20));
            }
        }
        if redis_restarted && resumed.is_none() && tail.unique() > unique_at_kill {
            resumed = Some(t);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not drained after {} s: {} of {} handled",
                args.timeout_s,
                tail.unique(),
                args.updates,
            ));
        }
        // While Redis is down (restarting, failing over) the monitoring waits like the
        // workers do: a failed look is skipped, and the timeout above still applies.
        let (appended, dead, pending) = match look(&mut redis, &streams, &dead).await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the streams now; retrying");
                continue;
            }
        };
        bridge_bar.set_position(appended.min(args.updates));
        if bridge_done && tail.unique() + dead >= args.updates && pending == Some(0) {
            break (started.elapsed().as_secs_f64(), dead);
        }
    };
    bridge_bar.finish_with_message("appended");

    // Stop: close each live worker's stdin; it drains and reports.
    for w in &mut workers {
        w.stdin.take();
    }
    for w in &mut workers {
        let status = w.child.wait().await.map_err(|e| e.to_string())?;
        if w.killed_at.is_none() && !status.success() {
            return Err(format!("worker {} failed on shutdown ({status})", w.index));
        }
    }
    for w in &mut workers {
        (&mut w.reader).await.ok();
        tail.poll(&w.ledger);
    }
    drop(bridge);
    server.shutdown().await;
    // Dead-lettered entries keep the update's fields, `update_id` among them.
    let dead_entries: redis::streams::StreamRangeReply =
        redis.xrange_all(&dead).await.map_err(|e| format!("XRANGE: {e}"))?;
    let dead_ids: std::collections::HashSet<i64> = dead_entries
        .ids
        .iter()
        .filter_map(|e| e.get::<i64>("update_id"))
        .collect();
    if !private {
        let mut keys = streams.clone();
        keys.push(dead.clone());
        if args.ordered {
            keys.extend((0..args.shards).map(|i| format!("{stream}:lease:{i}")));
            keys.push(format!("{stream}:shards"));
            keys.push(format!("{stream}:workers"));
        }
        let _: Result<(), _> = redis.del(&keys).await;
    }
    let by_chat = runs_by_chat(&events_dir, args.workers);
    let (order_violations, overlaps) = order_and_overlaps(&by_chat);
    let takeover = kill_ns.and_then(|ns| takeover(&by_chat, 0, ns));
    let _ = std::fs::remove_dir_all(&ledgers);

    let total_unique = tail.unique();
    // Lost: a backlog id neither handled by a worker nor in the dead-letter stream.
    let lost = backlog
        .filter(|id| !tail.counts.contains_key(id) && !dead_ids.contains(id))
        .count() as u64;
    let duplicates = tail.duplicates();
    let mut rows = Vec::new();
    let mut all_within = true;
    for w in &workers {
        let s = w.seen.lock();
        let handled = tail.per_file.get(&w.ledger).copied().unwrap_or(0);
        let r = s.result.as_ref();
        let field = |name: &str| r.and_then(|r| r[name].as_u64());
        let peak = field("peak_rss_bytes").unwrap_or(s.peak);
        let baseline = field("baseline_rss_bytes").or(s.baseline);
        // The flood demo's bound: the process's own baseline, the budget plus 10% for
        // the allocator, and 16 MiB for the runtime's own buffers.
        let limit = baseline.map(|b| b + args.budget.0 + args.budget.0 / 10 + (16 << 20));
        let within = limit.is_none_or(|l| peak <= l);
        all_within &= within;
        let row = json!({
            "worker": w.index,
            "handled": handled,
            "peak_rss_bytes": peak,
            "budget_bytes": args.budget.0,
            "baseline_rss_bytes": baseline,
            "within_budget": within,
            "killed": w.killed_at.is_some(),
            "claimed": field("claimed"),
            "recovered": field("recovered"),
        });
        if args.json {
            println!("{row}");
        }
        rows.push((row, w.killed_at));
    }
    let claimed: u64 = rows.iter().filter_map(|(r, _)| r["claimed"].as_u64()).sum();
    let total = json!({
        "updates": args.updates,
        "workers": args.workers,
        "total_unique": total_unique,
        "lost": lost,
        "duplicates": duplicates,
        "dead_lettered": dead_lettered,
        "drain_s": drain_s,
        "throughput_per_s": total_unique as f64 / drain_s.max(1e-9),
        "claimed": claimed,
        "recovered": rows.iter().filter_map(|(r, _)| r["recovered"].as_u64()).sum::<u64>(),
        "ordered": args.ordered,
        "shards": args.ordered.then_some(args.shards),
        "order_violations": order_violations,
        "overlaps": overlaps,
        "redis_restarted": redis_restarted,
        "redis_pause_s": redis_killed.zip(resumed).map(|(k, r)| r - k),
        "appendfsync": args.restart_redis_after.map(|_| format!("{:?}", args.appendfsync).to_lowercase()),
        "takeover_median_s": takeover.map(|t| t.0),
        "takeover_max_s": takeover.map(|t| t.1),
        "killed_workers": workers.iter().filter(|w| w.killed_at.is_some()).count(),
        "budget_bytes": args.budget.0,
        "work_kib": args.work_kib,
        "work_ms": args.work_ms,
    });
    if args.json {
        println!("{total}");
    } else {
        println!(
            "\n{:>6} {:>8} {:>10} {:>10} {:>10} {:>8}  status",
            "worker", "handled", "peak RSS", "baseline", "budget", "claimed"
        );
        for (r, killed) in &rows {
            let mib = |v: &Value| v.as_u64().map_or("-".to_string(), |b| format!("{} MiB", b >> 20));
            println!(
                "{:>6} {:>8} {:>10} {:>10} {:>10} {:>8}  {}",
                r["worker"].to_string(),
                r["handled"].to_string(),
                mib(&r["peak_rss_bytes"]),
                mib(&r["baseline_rss_bytes"]),
                Size(args.budget.0).to_string(),
                r["claimed"].as_u64().map_or("-".into(), |c| c.to_string()),
                match killed {
                    Some(t) => format!("SIGKILLed at {t:.1} s"),
                    None if r["within_budget"] == true => "ok, within budget".into(),
                    None => "OVER BUDGET".into(),
                }
            );
        }
        println!(
            "\ntotal: {total_unique} unique of {}, lost {lost}, duplicates {duplicates}, dead-lettered {dead_lettered}, \
             claimed {claimed}; per chat: {order_violations} order violations, {overlaps} overlaps; \
             drained in {drain_s:.2} s ({:.0} updates/s)",
            args.updates,
            total_unique as f64 / drain_s.max(1e-9)
        );
    }
    Ok(lost == 0 && all_within)
}

#[allow(clippy::too_many_arguments)]
fn spawn_worker(
    exe: &Path,
    args: &Args,
    index: u32,
    url: &str,
    stream: &str,
    ledgers: &Path,
    events: &Path,
    bars: &MultiProgress,
) -> Result<Worker, String> {
    let ledger = ledgers.join(format!("worker-{index}.ledger"));
    let mut cmd = Command::new(exe);
    cmd.arg("__worker")
        .args(["--index", &index.to_string()])
        .env("REDIS_URL", url)
        .args(["--stream", stream, "--group", GROUP])
        .args(["--budget", &args.budget.0.to_string()])
        .args(["--work-kib", &args.work_kib.to_string()])
        .args(["--work-ms", &args.work_ms.to_string()])
        .args(["--claim-idle-ms", &args.claim_idle_ms.to_string()])
        .args(["--updates", &args.updates.to_string()])
        .arg("--ledger")
        .arg(&ledger)
        .arg("--events")
        .arg(events.join(format!("worker-{index}.jsonl")))
        .args(["--lease-ms", &args.lease_ms.to_string()]);
    if args.ordered {
        cmd.args(["--shards", &args.shards.to_string()]);
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // As in the flood demo: one glibc arena, so freed handler memory is reused across
        // threads instead of inflating the peak (docs/tuning.md).
        cmd.env("MALLOC_ARENA_MAX", "1");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start worker {index}: {e}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let mut s = seen.lock();
                match v["event"].as_str() {
                    Some("progress") => {
                        s.handled = v["handled"].as_u64().unwrap_or(s.handled);
                        s.rss = v["rss_bytes"].as_u64().unwrap_or(0);
                        s.peak = s.peak.max(v["peak_rss_bytes"].as_u64().unwrap_or(0));
                        s.baseline = v["baseline_rss_bytes"].as_u64().or(s.baseline);
                    }
                    Some("result") => s.result = Some(v),
                    _ => {}
                }
            }
        }
    });
    let bar = bars.add(ProgressBar::new(args.updates));
    bar.set_style(style());
    bar.set_prefix(format!("worker {index}"));
    Ok(Worker {
        index,
        child,
        stdin,
        seen,
        reader,
        ledger,
        killed_at: None,
        bar,
    })
}

/// One handler run from a worker's event ledger.
struct Run {
    worker: u32,
    id: i64,
    start: u64,
    end: u64,
}

/// Every handler run in the workers' event ledgers, by chat, in start order. A run without
/// an end (its worker was killed) ends at its worker's last event.
fn runs_by_chat(dir: &Path, workers: u32) -> HashMap<i64, Vec<Run>> {
    let mut by_chat: HashMap<i64, Vec<Run>> = HashMap::new();
    for w in 0..workers {
        let text = std::fs::read_to_string(dir.join(format!("worker-{w}.jsonl"))).unwrap_or_default();
        let mut open: HashMap<i64, (i64, u64)> = HashMap::new();
        let mut last = 0u64;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(id), Some(t)) = (v["id"].as_i64(), v["t_ns"].as_u64()) else {
                continue;
            };
            let chat = v["chat"].as_i64().unwrap_or(id);
            last = last.max(t);
            match v["ev"].as_str() {
                Some("start") => {
                    open.insert(id, (chat, t));
                }
                Some("end") => {
                    if let Some((chat, start)) = open.remove(&id) {
                        by_chat.entry(chat).or_default().push(Run {
                            worker: w,
                            id,
                            start,
                            end: t,
                        });
                    }
                }
                _ => {}
            }
        }
        for (id, (chat, start)) in open {
            by_chat.entry(chat).or_default().push(Run {
                worker: w,
                id,
                start,
                end: last,
            });
        }
    }
    for runs in by_chat.values_mut() {
        runs.sort_by_key(|r| r.start);
    }
    by_chat
}

/// Each chat's first handlings out of id order (a handling that starts after one of a
/// later update of the same chat), and handler runs of one chat that overlap in time (on
/// any workers).
fn order_and_overlaps(by_chat: &HashMap<i64, Vec<Run>>) -> (u64, u64) {
    let (mut violations, mut overlaps) = (0u64, 0u64);
    for runs in by_chat.values() {
        let mut seen = std::collections::HashSet::new();
        let mut highest = i64::MIN;
        let mut busy_until = 0u64;
        for r in runs {
            if seen.insert(r.id) {
                if r.id < highest {
                    violations += 1;
                }
                highest = highest.max(r.id);
            }
            if r.start < busy_until {
                overlaps += 1;
            }
            busy_until = busy_until.max(r.end);
        }
    }
    (violations, overlaps)
}

/// For the chats the killed worker was last to handle before it died: how long after the
/// kill (wall clock, ns) another worker started one of their updates; the median and the
/// longest, in seconds.
fn takeover(by_chat: &HashMap<i64, Vec<Run>>, killed: u32, kill_ns: u64) -> Option<(f64, f64)> {
    let mut gaps: Vec<f64> = by_chat
        .values()
        .filter(|runs| {
            runs.iter()
                .rev()
                .find(|r| r.start < kill_ns)
                .is_some_and(|r| r.worker == killed)
        })
        .filter_map(|runs| runs.iter().find(|r| r.start >= kill_ns && r.worker != killed))
        .map(|r| (r.start - kill_ns) as f64 / 1e9)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    Some((gaps[gaps.len() / 2], gaps[gaps.len() - 1]))
}

/// The streams' total length, the dead-letter stream's, and what is pending in the
/// groups (`None` until a worker created one).
async fn look(
    redis: &mut redis::aio::ConnectionManager,
    streams: &[String],
    dead: &str,
) -> Result<(u64, u64, Option<usize>), redis::RedisError> {
    let mut appended = 0u64;
    for s in streams {
        appended += redis.xlen::<_, u64>(s).await?;
    }
    let dead: u64 = redis.xlen(dead).await?;
    let mut pending = None;
    for s in streams {
        match redis
            .xpending::<_, _, redis::streams::StreamPendingReply>(s, GROUP)
            .await
        {
            Ok(p) => *pending.get_or_insert(0) += p.count(),
            Err(e) if e.code() == Some("NOGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok((appended, dead, pending))
}
