//! The `pollgate-spool` command against a real spool file: list, replay, purge, and a
//! clear error where there is no spool.

mod common;

use common::{finish_with_failures, server_with, telegram, temp_dir, until};
use std::process::Command;
use std::time::Duration;

use pollgate_core::{FetchRequest, Transport};
use pollgate_spool::{DeadLetters, SpoolTransport};

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate-spool"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_replays_and_purges_dead_letters() {
    let server = server_with(6, 64).await;
    let dir = temp_dir("cli");
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    until("6 spooled", || spool.stats().entries == 6).await;
    finish_with_failures(&spool, &[2, 4]).await;
    spool.close().await;
    let d = dir.to_str().unwrap();

    let (ok, out, err) = cli(&["dead", "list", d]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!((rows[0][0], rows[0][1], rows[0][3]), ("2", "3", "broken 2"));
    assert_eq!((rows[1][0], rows[1][3]), ("4", "broken 4"));
    assert!(err.contains("2 dead letter(s)"), "{err}");

    let (ok, out, _) = cli(&["dead", "list", d, "--json"]);
    assert!(ok);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["update_id"], 2);
    assert_eq!(first["update"]["update_id"], 2, "the update itself is shown");

    let (ok, out, _) = cli(&["dead", "replay", d, "4"]);
    assert!(ok);
    assert_eq!(out.trim(), "replayed 1");
    let (ok, out, _) = cli(&["dead", "purge", d, "--all"]);
    assert!(ok);
    assert_eq!(out.trim(), "purged 1");
    assert!(DeadLetters::open(&dir).unwrap().list().unwrap().is_empty());
    // The replayed one is an entry again: the next start delivers it first.
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    let batch = spool
        .fetch(FetchRequest {
            limit: 1,
            timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
    assert_eq!(batch.updates[0].id(), 4);
    spool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_spool_or_a_bare_replay_is_a_clear_error() {
    let dir = temp_dir("cli-none");
    let (ok, _, err) = cli(&["dead", "list", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.starts_with("pollgate-spool: cannot open the spool at"), "{err}");
    let (ok, _, err) = cli(&["dead", "replay", dir.to_str().unwrap()]);
    assert!(!ok, "neither --all nor ids");
    assert!(err.contains("--all"), "{err}");
}
