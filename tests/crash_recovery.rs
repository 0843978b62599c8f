//! Crash recovery, the way trusted queue consumers prove it: kill the consumer.
//!
//! The mock Bot API server runs as its own process. The flood demo drains it in
//! at-least-once mode with a ledger (each handled update_id written before the update
//! counts as finished) and is killed with SIGKILL at random (seeded) moments, then
//! restarted, until the backlog is drained. For every built-in policy:
//! - after every kill, the offset the server saw confirmed never passed an update missing
//!   from the ledger (nothing acknowledged was lost);
//! - in the end every update is in the ledger at least once;
//! - duplicates stay within the acknowledgement window per kill (100 ids for Telegram).
//!
//! And the polite kill, SIGTERM, as Docker, Kubernetes and systemd send it: the parent
//! forwards it to the child, which drains, confirms the offset and still prints its
//! result; the ledger then holds exactly the ids below the confirmed offset.
//!
//! `scripts/crash-recovery.sh` runs the same with larger N, more kills and a chosen seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WINDOW: usize = 100;

/// Backlog size, kills per policy and seed: small for CI, overridden by
/// `scripts/crash-recovery.sh` through `CRASH_N`, `CRASH_KILLS` and `CRASH_SEED`.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
/// The mode under test (with `eager` the first assertion fails: that mode loses updates).
const DELIVERY: &str = "at-least-once";

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let sub = if name == "flood" {
        profile_dir.join("examples")
    } else {
        profile_dir.to_path_buf()
    };
    let path = sub.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "not built: {}", path.display());
    path
}

struct Server {
    process: Child,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let mut process = Command::new(binary("mock-bot-api"))
            .args(["--port", "0", "--updates", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let (mut url, mut token) = (None, None);
        while url.is_none() || token.is_none() {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the server printed its url and token");
            if let Some(u) = line.strip_prefix("url: ") {
                url = Some(u.to_owned());
            } else if let Some(t) = line.strip_prefix("token: ") {
                token = Some(t.to_owned());
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            process,
            url: url.unwrap(),
            token: token.unwrap(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Resets the server and generates `n` updates; the first and last id.
    async fn fresh_backlog(&self, n: u64, seed: u64) -> (i64, i64) {
        self.post("/control/reset", serde_json::json!({})).await;
        let range = self
            .post(
                "/control/backlog",
                serde_json::json!({"updates": n, "text_bytes": 64, "chats": 20, "seed": seed}),
            )
            .await;
        (range["first"].as_i64().unwrap(), range["last"].as_i64().unwrap())
    }

    async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/stats", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn flood(server: &Server, policy: &str, updates: u64, ledger: &Path) -> Command {
    flood_with(server, policy, updates, ledger, None)
}

fn flood_with(server: &Server, policy: &str, updates: u64, ledger: &Path, spool: Option<&Path>) -> Command {
    let mut cmd = Command::new(binary("flood"));
    if let Some(dir) = spool {
        cmd.arg("--spool").arg(dir);
    }
    cmd.args(["--api-url", &server.url, "--policy", policy, "--delivery", DELIVERY])
        .args([
            "--updates",
            &updates.to_string(),
            "--work-kib",
            "16",
            "--work-ms",
            "10",
            // Stragglers spread the handlers' durations, so a kill always finds some
            // updates running while later ones are already fetched.
            "--slow-frac",
            "0.1",
            "--slow-x",
            "20",
            "--json",
        ])
        .arg("--ledger")
        .arg(ledger)
        .env("TELEGRAM_BOT_TOKEN", &server.token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The process that fetches, handles and holds the spool itself (`flood --child`), so that
/// a SIGKILL lands on it, not on a parent that it would outlive for a moment. Its stdin
/// stays open while the returned child lives (it exits when stdin closes).
fn killable(mut cmd: Command) -> tokio::process::Child {
    cmd.arg("--child").stdin(Stdio::piped()).spawn().unwrap()
}

/// Runs a `--child` to its end, its stdin open until then.
async fn run_child(cmd: Command) -> std::process::Output {
    let mut child = killable(cmd);
    let stdin = child.stdin.take();
    let output = child.wait_with_output().await.unwrap();
    drop(stdin);
    output
}

fn ledger_counts(path: &Path) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts
            .entry(line.trim().parse::<i64>().expect("a whole ledger line"))
            .or_default() += 1;
    }
    counts
}

async fn crash_and_recover(server: &Server, policy: &str, seed: u64) {
    let n = knob("CRASH_N", 1200);
    let kills = knob("CRASH_KILLS", 3) as usize;
    let (first, last) = server.fresh_backlog(n, seed).await;
    let ledger =
        std::env::temp_dir().join(format!("pollgate-crash-{}-{policy}.ledger", std::process::id()).replace(':', "_"));
    let _ = std::fs::remove_file(&ledger);
    let mut rng = fastrand::Rng::with_seed(seed);
    let duplicates_of = |counts: &BTreeMap<i64, usize>| counts.values().map(|n| n - 1).sum::<usize>();
    let mut duplicates_before = 0;
    for kill in 0..kills {
        let mut child = killable(flood(server, policy, n, &ledger));
        tokio::time::sleep(Duration::from_millis(rng.u64(150..500))).await;
        child.start_kill().unwrap(); // SIGKILL: no shutdown, no flush
        child.wait().await.unwrap();
        let confirmed = server.stats().await["highest_confirmed_offset"].as_i64().unwrap();
        let handled = ledger_counts(&ledger);
        // What this run handled again of what the previous one had already handled: at
        // most the acknowledgement window at the previous crash.
        let duplicates_now = duplicates_of(&handled);
        assert!(
            duplicates_now - duplicates_before <= WINDOW,
            "{policy}, run {kill}: {} duplicates after one crash",
            duplicates_now - duplicates_before
        );
        duplicates_before = duplicates_now;
        let missing: Vec<i64> = (first..confirmed.min(last + 1))
            .filter(|id| !handled.contains_key(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{policy}, kill {kill}: offset {confirmed} passed unhandled {missing:?}"
        );
    }
    let pending = server.stats().await["pending"].as_u64().unwrap();
    if pending > 0 {
        let status = run_child(flood(server, policy, pending, &ledger)).await.status;
        assert!(status.success(), "{policy}: the final run failed: {status}");
    }
    assert_eq!(
        server.stats().await["pending"].as_u64(),
        Some(0),
        "{policy}: drained and confirmed"
    );
    let handled = ledger_counts(&ledger);
    assert!(
        duplicates_of(&handled) - duplicates_before <= WINDOW,
        "{policy}: the final run after the last crash"
    );
    let all: BTreeSet<i64> = (first..=last).collect();
    let seen: BTreeSet<i64> = handled.keys().copied().collect();
    assert_eq!(seen, all, "{policy}: an update was never handled");
    let duplicates: usize = handled.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= kills * WINDOW,
        "{policy}: {duplicates} duplicates for {kills} kills"
    );
    println!("{policy}: {n} updates, {kills} kills, {duplicates} duplicates, 0 lost");
    let _ = std::fs::remove_file(&ledger);
}

/// With a spool the offset runs ahead of the handlers (an update is confirmed once it is
/// durable in the spool), so the check is the end result: after every kill and a final
/// run on the same spool, every update was handled, and each kill cost at most what was
/// in flight (`in_flight`: the policy's concurrency) as duplicates.
async fn crash_and_recover_spooled(server: &Server, policy: &str, in_flight: usize, seed: u64) {
    let n = knob("CRASH_N", 1200);
    let kills = knob("CRASH_KILLS", 3) as usize;
    let (first, last) = server.fresh_backlog(n, seed).await;
    let name = format!("pollgate-crash-spool-{}-{policy}", std::process::id()).replace(':', "_");
    let ledger = std::env::temp_dir().join(format!("{name}.ledger"));
    let spool = std::env::temp_dir().join(format!("{name}.spool"));
    let _ = std::fs::remove_file(&ledger);
    let _ = std::fs::remove_dir_all(&spool);
    let mut rng = fastrand::Rng::with_seed(seed);
    let duplicates_of = |counts: &BTreeMap<i64, usize>| counts.values().map(|n| n - 1).sum::<usize>();
    // Duplicates after each run: each run handles again at most what the kill before it
    // found in flight.
    let mut after_each = vec![0];
    // Handled (distinct ids) when each kill landed: shows where in the backlog it hit.
    let mut handled_at_kill = Vec::new();
    for _ in 0..kills {
        let mut child = killable(flood_with(server, policy, n, &ledger, Some(&spool)));
        // A random moment while handlers run: once another 2-15% of the backlog was handled
        // (a fixed delay would land after the drain for a fast policy).
        let target = ledger_counts(&ledger).len() as u64 + rng.u64(n / 50..n / 7 + 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        while (ledger_counts(&ledger).len() as u64) < target.min(n) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.start_kill().unwrap(); // SIGKILL: no shutdown, no flush
        child.wait().await.unwrap();
        let counts = ledger_counts(&ledger);
        handled_at_kill.push(counts.len());
        after_each.push(duplicates_of(&counts));
    }
    // The final run drains the spool and the rest of the server's backlog; it stops after
    // n handled or 5 s with nothing new.
    let mut cmd = flood_with(server, policy, n, &ledger, Some(&spool));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = run_child(cmd).await;
    assert!(
        output.status.success(),
        "{policy}: the final run failed: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        server.stats().await["pending"].as_u64(),
        Some(0),
        "{policy}: server drained"
    );
    let handled = ledger_counts(&ledger);
    let all: BTreeSet<i64> = (first..=last).collect();
    let seen: BTreeSet<i64> = handled.keys().copied().collect();
    let lost: Vec<_> = all.difference(&seen).collect();
    assert!(lost.is_empty(), "{policy}: never handled {lost:?}");
    let duplicates = duplicates_of(&handled);
    after_each.push(duplicates);
    let per_kill: Vec<usize> = after_each.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        per_kill.iter().all(|&d| d <= in_flight),
        "{policy}: duplicates run by run {per_kill:?}, at most {in_flight} in flight at a kill"
    );
    println!(
        "{policy} with a spool: {n} updates, {kills} kills, {duplicates} duplicates (run by run {per_kill:?}, handled at each kill {handled_at_kill:?}), 0 lost"
    );
    let _ = std::fs::remove_file(&ledger);
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_spool_loses_nothing_for_every_built_in_policy() {
    let mut server = Server::start().await;
    // In flight at most: the policy's concurrency (16 KiB handlers), plus one
    // acknowledgement batch finished and not yet deleted, bounded by the same.
    for (i, (policy, in_flight)) in [
        ("fixed:16", 2 * 16),
        ("barrier:50", 2 * 50),
        ("bytes:256KiB", 2 * 16),
        ("rss:48MiB", 2 * 3072),
        ("custom:256KiB:2000", 2 * 16),
    ]
    .iter()
    .enumerate()
    {
        crash_and_recover_spooled(&server, policy, *in_flight, knob("CRASH_SEED", 200) + i as u64).await;
    }
    server.process.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_for_every_built_in_policy() {
    let mut server = Server::start().await;
    for (i, policy) in [
        "fixed:16",
        "barrier:50",
        "bytes:256KiB",
        "rss:48MiB",
        "custom:256KiB:2000",
    ]
    .iter()
    .enumerate()
    {
        crash_and_recover(&server, policy, knob("CRASH_SEED", 100) + i as u64).await;
    }
    server.process.start_kill().unwrap();
}

/// The flood child's drain deadline (the runtime's default).
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_confirms_and_still_prints_the_result() {
    use rustix::process::{Pid, Signal, kill_process};

    // Far more than a few seconds of work: the signal always lands mid-run.
    const N: u64 = 20_000;
    let mut server = Server::start().await;
    let range = server
        .post(
            "/control/backlog",
            serde_json::json!({"updates": N, "text_bytes": 64, "chats": 20, "seed": 7}),
        )
        .await;
    let first = range["first"].as_i64().unwrap();
    let ledger = std::env::temp_dir().join(format!("pollgate-sigterm-{}.ledger", std::process::id()));
    let _ = std::fs::remove_file(&ledger);
    let mut cmd = flood(&server, "fixed:16", N, &ledger);
    cmd.stdout(Stdio::piped());
    let parent = cmd.spawn().unwrap();
    // Once the child handles updates, and a moment more: updates are running then.
    let started = Instant::now();
    while ledger_counts(&ledger).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the child never handled anything"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    kill_process(Pid::from_raw(parent.id().unwrap() as i32).unwrap(), Signal::TERM).unwrap();
    let out = tokio::time::timeout(DRAIN_DEADLINE + Duration::from_secs(10), parent.wait_with_output())
        .await
        .expect("the parent exits within the drain deadline")
        .unwrap();
    let took = signalled.elapsed();
    assert!(out.status.success(), "{}", out.status);

    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON result for the run that was stopped: {stdout}");
    let result: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let handled = result["handled"].as_u64().unwrap();
    assert!(0 < handled && handled < N, "stopped mid-run: {result}");

    let confirmed = server.stats().await["highest_confirmed_offset"].as_i64().unwrap();
    let in_ledger: BTreeSet<i64> = ledger_counts(&ledger).keys().copied().collect();
    let missing: Vec<i64> = (first..confirmed).filter(|id| !in_ledger.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "offset {confirmed} confirmed past unhandled {missing:?}"
    );
    // A drain finishes everything fetched: the ledger holds exactly the ids below the
    // offset, so a restart neither loses nor repeats one.
    assert_eq!(in_ledger, (first..confirmed).collect(), "handled beyond the offset");
    assert_eq!(handled, in_ledger.len() as u64);
    println!(
        "SIGTERM: exited {:.2} s after the signal; handled {handled} of {N}; confirmed offset {confirmed} \
         (first id {first}); 0 confirmed but not handled",
        took.as_secs_f64()
    );
    let _ = std::fs::remove_file(&ledger);
    server.process.start_kill().unwrap();
}
