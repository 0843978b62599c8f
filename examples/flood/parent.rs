//! Orchestration: start the embedded mock server (unless `--api-url`), run each policy
//! in a fresh child process against the same backlog, show progress, print the table
//! (or one JSON object per run) and write the plot.
//!
//! On SIGTERM or SIGINT the running child is told to drain (`stop.rs`): its result is
//! reported like any other, and no further run starts.

use std::process::Stdio;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::cli::{Args, DeliveryArg, PolicySpec, TransportArg};
use crate::report::{RunResult, table};
use crate::stop::Stops;

/// Runs the comparison; returns the process exit code.
pub(crate) fn main(args: Args) -> u8 {
    crate::process::run_main("flood", run(args), |()| 0)
}

async fn run(args: Args) -> Result<(), String> {
    let mut stops = crate::stop::listen()?;
    let outside = args.api_url.is_some() || args.webhook_listen.is_some();
    if let (false, Some(dir)) = (outside, &args.spool) {
        // A new embedded server starts its ids from 1: a spool left by an earlier run
        // holds updates of another server. (With --api-url the spool is kept: that is
        // the point of it.)
        let _ = std::fs::remove_file(dir.join("spool.redb"));
    }
    let server = match outside {
        true => None,
        false => Some(
            MockServer::start(MockConfig::default())
                .await
                .map_err(|e| format!("cannot start the embedded mock Bot API server: {e}"))?,
        ),
    };
    let (url, token) = match &server {
        Some(s) => (s.url(), s.token().to_owned()),
        None => (
            args.api_url.clone().unwrap_or_default(),
            args.token.clone().unwrap_or_default(),
        ),
    };
    let policies = args.policies();
    if !args.json {
        let source = match (&server, args.webhook_listen) {
            (Some(_), _) if args.transport == TransportArg::Webhook => {
                format!("embedded mock server at {url}, pushing by webhook")
            }
            (Some(_), _) => format!("embedded mock server at {url}"),
            (None, Some(addr)) => format!("a webhook sender posting to {addr}"),
            (None, None) => url.clone(),
        };
        println!(
            "flood: {} updates ({} B text, {} chats) from {source}; handler holds {} KiB for {} ms{}; {} run(s)",
            args.updates,
            args.text_bytes,
            args.chats,
            args.work_kib,
            args.work_ms,
            if args.slow_frac > 0.0 {
                format!(" ({}% take {}x)", args.slow_frac * 100.0, args.slow_x)
            } else {
                String::new()
            },
            policies.len()
        );
    }
    let bars = MultiProgress::new();
    let mut results = Vec::new();
    for spec in policies {
        if stops.requested() {
            break;
        }
        if let Some(s) = &server {
            s.reset();
            s.generate(&BacklogSpec {
                updates: args.updates,
                text_bytes: args.text_bytes,
                chats: args.chats,
                seed: args.seed,
                ..mock_bot_api::BacklogSpec::default()
            });
        }
        let Some(result) = run_child(&args, spec, &url, &token, &bars, &mut stops).await? else {
            break; // stopped before it could report
        };
        if args.json {
            println!("{}", serde_json::to_string(&result).expect("serialisable"));
        }
        results.push(result);
    }
    if results.is_empty() {
        return Err("stopped by a signal before the first run could report".into());
    }
    if !args.json {
        println!("\n{}", table(&results));
        if stops.requested() {
            println!(
                "stopped by a signal: the last run's `lost` counts what it did not handle; what it never fetched is still on the server"
            );
        }
    }
    if results.len() > 1 {
        let path = crate::plot::default_path();
        match crate::plot::write(&path, &results) {
            Ok(()) => eprintln!("plot written to {}", path.display()),
            Err(e) => eprintln!("flood: could not write the plot: {e}"),
        }
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(())
}

/// Runs one policy in a child process and reads its result; `None` when a stop signal
/// reached the child before it could report (it was still starting up).
async fn run_child(
    args: &Args,
    spec: PolicySpec,
    url: &str,
    token: &str,
    bars: &MultiProgress,
    stops: &mut Stops,
) -> Result<Option<RunResult>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child").args(["--policy", &spec.to_string()]);
    match args.webhook_listen {
        Some(addr) => {
            cmd.args(["--webhook-listen", &addr.to_string()]);
        }
        None => {
            cmd.args(["--api-url", url]).env("TELEGRAM_BOT_TOKEN", token); // not on the command line, where `ps` shows it
        }
    }
    if args.transport == TransportArg::Webhook {
        cmd.args(["--transport", "webhook"]);
    }
    if let Some(dir) = &args.spool {
        cmd.arg("--spool").arg(dir);
    }
    cmd.args(["--updates", &args.updates.to_string()])
        .args(["--text-bytes", &args.text_bytes.to_string()])
        .args(["--chats", &args.chats.to_string()])
        .args(["--work-kib", &args.work_kib.to_string()])
        .args(["--work-ms", &args.work_ms.to_string()])
        .args(["--slow-frac", &args.slow_frac.to_string()])
        .args(["--slow-x", &args.slow_x.to_string()])
        .args(["--fail-frac", &args.fail_frac.to_string()])
        .args(["--poison-frac", &args.poison_frac.to_string()])
        .args(["--attempts", &args.attempts.to_string()])
        .args(["--retry-ms", &args.retry_ms.to_string()])
        .args([
            "--delivery",
            if args.delivery == DeliveryArg::Eager {
                "eager"
            } else {
                "at-least-once"
            },
        ]);
    if args.ordered {
        cmd.arg("--ordered");
    }
    if let Some(addr) = args.metrics_addr {
        cmd.args(["--metrics-addr", &addr.to_string()]);
    }
    if let Some(ledger) = &args.ledger {
        cmd.arg("--ledger").arg(ledger);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // Its own process group: a terminal's Ctrl-C reaches this process only, which
    // forwards it once (`stop.rs`); the child still dies with us (its stdin closes).
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start a child process: {e}"))?;
    let _stdin = child.stdin.take(); // the child exits when this closes
    let stdout = child.stdout.take().expect("piped stdout");

    let bar = bars.add(ProgressBar::new(args.updates as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos:>7}/{len:7} {per_sec:>10} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(spec.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));

    let mut lines = BufReader::new(stdout).lines();
    let mut result = None;
    let mut stopped = false;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                _ => break,
            },
            kind = stops.next() => {
                // The child drains, confirms and prints its result as usual.
                if let Some(pid) = child.id() {
                    crate::stop::forward(pid, kind);
                    stopped = true;
                }
                continue;
            }
        };
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("progress") => {
                bar.set_position(v["handled"].as_u64().unwrap_or(0));
                bar.set_message(format!(
                    "in flight {:>5}  RSS {:>5} MiB",
                    v["in_flight"].as_u64().unwrap_or(0),
                    v["rss_bytes"].as_u64().unwrap_or(0) >> 20
                ));
            }
            Some("result") => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("event");
                }
                result = serde_json::from_value::<RunResult>(v).ok();
            }
            _ => {}
        }
    }
    let status = child.wait().await.map_err(|e| format!("waiting for the child: {e}"))?;
    match (status.success(), result) {
        (true, Some(r)) => {
            bar.set_position(r.handled);
            let message = format!(
                "{:.2} s, peak RSS {} MiB, efficiency {:.2}",
                r.drain_s,
                r.peak_rss_bytes >> 20,
                r.efficiency
            );
            if stopped {
                bar.abandon_with_message(format!("stopped: {message}")); // keeps the position
            } else {
                bar.finish_with_message(message);
            }
            Ok(Some(r))
        }
        // The signal reached it before it listened for one (still starting up).
        (_, None) if stopped => {
            bar.abandon_with_message("stopped before it started");
            Ok(None)
        }
        _ => {
            bar.abandon_with_message("failed");
            Err(format!("the {spec} run failed ({status})"))
        }
    }
}
