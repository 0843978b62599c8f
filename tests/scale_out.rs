//! The scale-out demo end to end, against a real `redis-server` (`$POLLGATE_REDIS_URL`, or
//! a private one the demo starts from `PATH`): mock Bot API backlog → bridge → stream → 3
//! worker processes with their own byte budgets, one of them SIGKILLed mid-run. Every
//! update must be handled, the dead worker's entries claimed by the others, and each
//! surviving worker's peak RSS within its budget. Also the command-line contract.
//!
//! `cargo test` builds the examples first; the binary is next to this test's executable.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn scale_out() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("scale_out{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "build the example first: {}", path.display());
    path
}

fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(scale_out());
    cmd.args(args);
    if let Ok(url) = std::env::var(pollgate_redis::REDIS_URL_ENV) {
        cmd.args(["--redis-url", &url]);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_arguments_exit_with_2_and_say_what_is_wrong() {
    for (args, needle) in [
        (vec!["--workers", "0"], "--workers"),
        (vec!["--budget", "12XB"], "unknown size unit"),
        (vec!["--budget", "64KiB"], "smaller than one handler"),
        (vec!["--workers", "1", "--kill-one-after", "1"], "--workers 2 or more"),
        (vec!["--kill-one-after=-1"], "non-negative"),
        (vec!["--updates", "many"], "invalid value"),
    ] {
        let out = Command::new(scale_out()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn three_workers_one_killed_lose_nothing_and_stay_within_their_budgets() {
    const N: u64 = 3000;
    let out = run(&[
        "--workers",
        "3",
        "--updates",
        &N.to_string(),
        "--budget",
        "16MiB",
        "--work-kib",
        "256",
        "--work-ms",
        "200",
        "--kill-one-after",
        "1",
        "--claim-idle-ms",
        "500",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 4, "one object per worker and a final one: {stdout}");
    let (workers, total) = objects.split_at(3);
    let total = &total[0];
    for key in ["total_unique", "lost", "duplicates", "dead_lettered", "drain_s"] {
        assert!(total.get(key).is_some(), "final object lacks {key}: {total}");
    }
    assert_eq!(total["total_unique"], N, "{total}");
    assert_eq!(total["lost"], 0, "{total}");
    assert_eq!(total["dead_lettered"], 0, "{total}");
    let killed: Vec<&Value> = workers.iter().filter(|w| w["killed"] == true).collect();
    assert_eq!(killed.len(), 1, "{stdout}");
    let claimed: u64 = workers.iter().filter_map(|w| w["claimed"].as_u64()).sum();
    assert!(
        claimed > 0,
        "the killed worker's pending entries were claimed by the others: {stdout}"
    );
    for w in workers {
        for key in ["worker", "handled", "peak_rss_bytes", "budget_bytes"] {
            assert!(w.get(key).is_some(), "worker object lacks {key}: {w}");
        }
        assert!(w["handled"].as_u64().unwrap() > 0, "every worker took a share: {w}");
        assert_eq!(w["budget_bytes"], 16 << 20);
        if w["killed"] == false {
            let (peak, base) = (
                w["peak_rss_bytes"].as_u64().unwrap(),
                w["baseline_rss_bytes"].as_u64().unwrap(),
            );
            let limit = base + (16 << 20) + (16 << 20) / 10 + (16 << 20);
            assert!(peak <= limit, "worker over its budget: {w}");
            assert_eq!(w["within_budget"], true, "{w}");
        }
    }
    // At-least-once: a duplicate is possible (an entry finished but not yet acknowledged
    // when the worker died), but never more than what the killed worker had in flight.
    let in_flight_bound = (16u64 << 20) / (256 << 10);
    assert!(total["duplicates"].as_u64().unwrap() <= in_flight_bound, "{total}");
}

#[test]
fn ordered_workers_one_killed_keep_each_chats_order_and_never_share_a_chat() {
    const N: u64 = 2000;
    let out = run(&[
        "--ordered",
        "--shards",
        "8",
        "--workers",
        "3",
        "--updates",
        &N.to_string(),
        "--chats",
        "100",
        "--budget",
        "16MiB",
        "--work-kib",
        "64",
        "--work-ms",
        "50",
        "--kill-one-after",
        "1.5",
        "--lease-ms",
        "800",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (workers, total) = objects.split_at(3);
    let total = &total[0];
    assert_eq!(total["lost"], 0, "{total}");
    assert_eq!(total["total_unique"], N, "{total}");
    assert_eq!(
        total["order_violations"], 0,
        "each chat's first handlings in id order: {total}"
    );
    assert_eq!(total["overlaps"], 0, "no chat on two workers at once: {total}");
    assert_eq!(total["ordered"], true);
    assert!(
        total["recovered"].as_u64().unwrap() > 0,
        "the killed worker's pending entries went to the next owners of its shards: {stdout}"
    );
    assert_eq!(workers.iter().filter(|w| w["killed"] == true).count(), 1, "{stdout}");
}
