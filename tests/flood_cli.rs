//! The flood demo's command-line and JSON contract, which scripts outside the project rely
//! on: bad arguments exit with 2 and a clear message; `--json` prints exactly one object
//! per policy run with the documented fields; a rejected token exits non-zero and says so.
//!
//! `cargo test` builds the examples before running tests; the binary is found next to
//! this test's own executable (`target/<profile>/examples/flood`).

use std::path::PathBuf;
use std::process::{Command, Output};

use mock_bot_api::{BacklogSpec, MockConfig, MockServer};

fn flood() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("flood{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "build the example first: {}", path.display());
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(flood())
        .args(args)
        .env_remove("TELEGRAM_BOT_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn bad_arguments_exit_with_2_and_say_what_is_wrong() {
    for (args, needle) in [
        (vec!["--policy", "lifo:3"], "unknown policy"),
        (vec!["--policy", "bytes:12XB"], "unknown size unit"),
        (vec!["--policy", "fixed:0"], "positive count"),
        (vec!["--slow-frac", "2"], "--slow-frac"),
        (vec!["--updates", "many"], "invalid value"),
        (vec!["--api-url", "http://127.0.0.1:1"], "--token"),
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

const FIELDS: [&str; 14] = [
    "policy",
    "updates",
    "handled",
    "duplicates",
    "order_violations",
    "drain_s",
    "peak_rss_bytes",
    "baseline_rss_bytes",
    "p50_ms",
    "p99_ms",
    "ideal_s",
    "efficiency",
    "fetch_calls",
    "max_in_flight",
];

#[test]
fn json_prints_one_object_per_run_with_the_contract_fields() {
    let out = run(&[
        "--updates",
        "300",
        "--text-bytes",
        "64",
        "--chats",
        "7",
        "--work-kib",
        "4",
        "--work-ms",
        "1",
        "--policy",
        "fixed:8",
        "--policy",
        "bytes:64KiB",
        "--ordered",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one JSON object per policy run and nothing else: {stdout}"
    );
    for (line, policy) in lines.iter().zip(["fixed:8", "bytes:64KiB"]) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in FIELDS {
            assert!(v.get(field).is_some(), "{policy}: missing {field}: {line}");
        }
        assert_eq!(v["policy"], policy);
        assert_eq!(v["updates"], 300);
        assert_eq!(v["handled"], 300, "{line}");
        assert_eq!(v["duplicates"], 0);
        assert_eq!(v["order_violations"], 0);
        assert!(v["max_in_flight"].as_u64().unwrap() <= 16, "{line}");
        let (ideal, drain, eff) = (
            v["ideal_s"].as_f64().unwrap(),
            v["drain_s"].as_f64().unwrap(),
            v["efficiency"].as_f64().unwrap(),
        );
        assert!(
            (eff - ideal / drain).abs() < 1e-9,
            "efficiency = ideal_s / drain_s: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_url_drains_an_external_server_and_a_rejected_token_fails_clearly() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    server.generate(&BacklogSpec {
        updates: 120,
        text_bytes: 32,
        chats: 3,
        seed: 3,
        ..mock_bot_api::BacklogSpec::default()
    });
    let (url, token) = (server.url(), server.token().to_owned());
    let ledger = std::env::temp_dir().join(format!("flood-ledger-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&ledger);
    let ok = {
        let (url, token, ledger) = (url.clone(), token.clone(), ledger.clone());
        tokio::task::spawn_blocking(move || {
            run(&[
                "--api-url",
                &url,
                "--token",
                &token,
                "--updates",
                "120",
                "--work-kib",
                "4",
                "--work-ms",
                "1",
                "--policy",
                "fixed:4",
                "--delivery",
                "at-least-once",
                "--ledger",
                ledger.to_str().unwrap(),
                "--json",
            ])
        })
        .await
        .unwrap()
    };
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["handled"], 120);
    let lines = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(lines.lines().count(), 120, "one ledger line per handled update");
    let _ = std::fs::remove_file(&ledger);
    assert_eq!(server.pending(), 0, "the final offset was confirmed");

    let bad = tokio::task::spawn_blocking(move || {
        run(&[
            "--api-url",
            &url,
            "--token",
            "999:not-the-token",
            "--policy",
            "fixed:4",
            "--json",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("unauthorized (401)"), "{stderr}");
    assert!(!stderr.contains("not-the-token"), "the token leaked: {stderr}");
    assert!(bad.stdout.is_empty(), "no result object for a failed run");
}

/// The secrets audit: the demo drains a server that fails in every way the mock can
/// (429, HTML 5xx, malformed bodies and updates, dropped connections, slow answers, a
/// 409 window), with every log level on — including the HTTP client's own records —
/// and then meets a rejected token. The token appears nowhere in what it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_stdout_stderr_or_the_logs() {
    const SECRET: &str = "AAF-very-recognisable-SECRET-0123456789";
    let token = format!("4242:{SECRET}");
    let server = MockServer::start(MockConfig {
        token: token.clone(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    server.generate(&BacklogSpec {
        updates: 400,
        text_bytes: 32,
        chats: 5,
        seed: 4,
        ..mock_bot_api::BacklogSpec::default()
    });
    server.set_fault_rates(mock_bot_api::FaultRates {
        too_many_requests: 0.05,
        retry_after_secs: 1,
        server_error: 0.05,
        malformed_json: 0.05,
        malformed_update: 0.05,
        drop_connection: 0.05,
        slow: 0.05,
        slow_ms: 50,
    });
    server.inject_conflict_window(2);
    let url = server.url();
    let run_with = |token: String| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(flood())
                .args([
                    "--api-url",
                    &url,
                    "--token",
                    &token,
                    "--updates",
                    "400",
                    "--work-kib",
                    "4",
                    "--work-ms",
                    "1",
                ])
                .args(["--policy", "fixed:8", "--json"])
                .env("RUST_LOG", "trace")
                .output()
                .unwrap()
        })
    };
    let drained = run_with(token.clone()).await.unwrap();
    let wrong = run_with(format!("4242:{SECRET}-revoked")).await.unwrap();
    let stats = server.stats();
    assert!(
        stats.faults.len() >= 4,
        "faults of several kinds were injected: {:?}",
        stats.faults
    );
    for (name, out) in [("drained", &drained), ("rejected", &wrong)] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.len() > 1000, "{name}: trace logging was on, there must be output");
        assert!(!text.contains(SECRET), "{name}: the token leaked");
        assert!(
            text.contains("starting new connection"),
            "{name}: the HTTP client's own log records were captured"
        );
    }
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let v: serde_json::Value = serde_json::from_slice(&drained.stdout).unwrap();
    assert_eq!(
        v["handled"].as_u64().unwrap() + v["undecodable"].as_u64().unwrap(),
        400,
        "{v}"
    );
    assert!(!wrong.status.success());
}
