//! Fault soak: live traffic plus faults on 10% of calls, handlers that fail on 1% and
//! panic on 1% of updates; at the end, nothing may be lost and memory must have stayed
//! within the budget.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 300          # minutes, for a report
//! cargo run --release --example soak -- --seconds 5 --json     # what CI runs
//! ```
//!
//! The embedded mock server generates `rate` updates per second for `seconds`, and
//! answers `getUpdates` with, in equal shares of `--faults`: 429 (with `retry_after`), 5xx
//! HTML pages, dropped connections, slow answers, malformed bodies and batches with one
//! malformed update; a 409 window opens at the start. The consumer is a `ByteBudget`
//! runtime whose handlers hold `work-kib` for `work-ms`. The report counts updates
//! handled, failed, panicked, undecodable (reported and skipped) and lost (must be 0),
//! peak RSS against the budget, retries per fault kind and whether every 429 was waited
//! exactly as long as the server asked.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mock_bot_api::{BacklogSpec, FaultRates, LiveSpec, MockConfig, MockServer};
use parking_lot::Mutex;
use pollgate::transport::Backoff;
use pollgate::{ByteBudget, Runtime, TelegramTransport, Update};

/// Live traffic and faults against a budgeted consumer.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long traffic is generated.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Updates per second.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Share of getUpdates calls that fail (spread over the fault kinds).
    #[arg(long, default_value_t = 0.10)]
    faults: f64,
    /// Byte budget of the consumer, in MiB.
    #[arg(long, default_value_t = 32)]
    budget_mib: u64,
    /// KiB each handler holds.
    #[arg(long, default_value_t = 256)]
    work_kib: u64,
    /// Milliseconds each handler holds it.
    #[arg(long, default_value_t = 20)]
    work_ms: u64,
    /// Seed of the traffic and the faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Internal: consume from this server in this process (the parent starts the server
    /// and runs the consumer as a child, so the child's peak RSS is the consumer's alone).
    #[arg(long, hide = true)]
    consumer: Option<String>,
}

fn vm(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Deterministic per-update choice: 1% fail, 1% panic.
fn fate(id: i64) -> u64 {
    ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The 1% of deliberate handler panics are counted, not printed.
        let deliberate = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("soak:"));
        if !deliberate {
            default_hook(info);
        }
    }));
    let total = (args.rate * args.seconds as f64).round() as usize;
    if let Some(url) = &args.consumer {
        let token = std::env::var("TELEGRAM_BOT_TOKEN").expect("the parent passes the token");
        println!("{}", consume(&args, url, &token, total).await);
        return;
    }
    let share = args.faults / 6.0;
    let server = MockServer::start(MockConfig {
        live: Some(LiveSpec {
            rate_per_sec: args.rate,
            spec: BacklogSpec {
                updates: total,
                text_bytes: 256,
                chats: 50,
                seed: args.seed,
                ..mock_bot_api::BacklogSpec::default()
            },
        }),
        faults: FaultRates {
            too_many_requests: share,
            retry_after_secs: 1,
            server_error: share,
            malformed_json: share,
            malformed_update: share,
            drop_connection: share,
            slow: share,
            slow_ms: 300,
        },
        seed: args.seed,
        ..MockConfig::default()
    })
    .await
    .expect("start the mock server");
    server.inject_conflict_window(5);

    let exe = std::env::current_exe().expect("this executable");
    let mut child = std::process::Command::new(exe);
    child
        .args([
            "--consumer",
            &server.url(),
            "--seconds",
            &args.seconds.to_string(),
            "--rate",
            &args.rate.to_string(),
        ])
        .args([
            "--budget-mib",
            &args.budget_mib.to_string(),
            "--work-kib",
            &args.work_kib.to_string(),
        ])
        .args(["--work-ms", &args.work_ms.to_string()])
        .env("TELEGRAM_BOT_TOKEN", server.token())
        .stderr(std::process::Stdio::inherit());
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        child.env("MALLOC_ARENA_MAX", "1"); // the soak checks budgets, which glibc retention would blur; see docs/deployment.md
    }
    let output = tokio::task::spawn_blocking(move || child.output())
        .await
        .expect("join")
        .expect("run the consumer");
    let mut report: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("soak: the consumer failed ({}) and left no report: {e}", output.status);
            std::process::exit(1);
        }
    };
    let mock = server.stats();
    let handled = report["handled"].as_u64().unwrap_or(0);
    let undecodable = report["undecodable"].as_u64().unwrap_or(0);
    let lost = (total as u64).saturating_sub(handled + undecodable);
    let rate_limited = mock.faults.get("too_many_requests").copied().unwrap_or(0);
    let (baseline, peak, budget) = (
        report["baseline_rss_bytes"].as_u64().unwrap_or(0),
        report["peak_rss_bytes"].as_u64().unwrap_or(0),
        report["budget_bytes"].as_u64().unwrap_or(0),
    );
    let o = report.as_object_mut().expect("an object");
    o.insert("seconds".into(), args.seconds.into());
    o.insert("rate".into(), args.rate.into());
    o.insert("generated".into(), total.into());
    o.insert("lost".into(), lost.into());
    o.insert(
        "rss_within_budget".into(),
        (peak <= baseline + budget + budget / 10 + (16 << 20)).into(),
    );
    o.insert(
        "faults_injected".into(),
        serde_json::to_value(&mock.faults).expect("serialisable"),
    );
    o.insert("rate_limit_asked_ms".into(), (rate_limited * 1000).into());
    let honoured = report["retries"]["rate_limited"].as_u64() == Some(rate_limited)
        && report["rate_limit_wait_ms"].as_u64() == Some(rate_limited * 1000);
    report["retry_after_honoured"] = honoured.into();
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    }
    let duplicates = report["duplicates"].as_u64().unwrap_or(0);
    server.shutdown().await;
    if lost > 0 || duplicates > 0 {
        std::process::exit(1);
    }
}

/// What the consumer child reports to the parent.
async fn consume(args: &Args, url: &str, token: &str, total: usize) -> serde_json::Value {
    let transport = Arc::new(
        TelegramTransport::builder(token)
            .api_url(url)
            .http_timeout_margin(Duration::from_secs(2))
            .backoff(Backoff {
                initial: Duration::from_millis(50),
                factor: 2.0,
                max: Duration::from_secs(2),
                max_retries: None,
            })
            .build()
            .expect("transport"),
    );
    let work = args.work_kib * 1024;
    let budget = args.budget_mib << 20;
    let seen: Arc<Mutex<(HashSet<i64>, u64)>> = Arc::default();
    let s = Arc::clone(&seen);
    let work_ms = args.work_ms;
    let handler = move |u: Update| {
        let s = Arc::clone(&s);
        async move {
            {
                let mut seen = s.lock();
                if !seen.0.insert(u.id()) {
                    seen.1 += 1;
                }
            }
            let buf = vec![1u8; work as usize];
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
            std::hint::black_box(&buf);
            match fate(u.id()) {
                0 => Err(std::io::Error::other("soak: deliberate failure")),
                1 => panic!("soak: deliberate panic on {}", u.id()),
                _ => Ok(()),
            }
        }
    };
    let baseline = vm("VmRSS:");
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(ByteBudget::new(budget).expected_cost(work))
        .cost_fn(move |_| work)
        .poll_timeout(Duration::from_secs(1))
        .shutdown_on_signals()
        .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    // Traffic for `seconds`, then until everything generated is handled or reported.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds * 3 + 30);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = stats.snapshot();
        // A signal stops the run early: report what was handled.
        if s.finished() + s.undecodable >= total as u64 || tokio::time::Instant::now() > deadline || run.is_finished() {
            break;
        }
    }
    shutdown.cancel();
    let summary = run.await.expect("runtime task").expect("no fatal transport error");
    let peak = vm("VmHWM:");
    let (handled, duplicates) = {
        let seen = seen.lock();
        (seen.0.len() as u64, seen.1)
    };
    let st = summary.stats;
    let t = transport.stats();
    serde_json::json!({
        "handled": handled,
        "completed": st.completed,
        "failed": st.failed,
        "panicked": st.panicked,
        "undecodable": st.undecodable,
        "duplicates": duplicates,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "budget_bytes": budget,
        "retries": {
            "network": t.retries_network,
            "server_error": t.retries_server_error,
            "rate_limited": t.retries_rate_limited,
            "conflict": t.retries_conflict,
            "invalid": t.retries_invalid,
            "other": t.retries_other,
        },
        "rate_limit_wait_ms": t.rate_limit_wait_ms,
    })
}
