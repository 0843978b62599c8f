//! The short CI version of the fault soak (`examples/soak.rs`; `scripts/soak.sh` runs it
//! for minutes): live traffic, faults on 10% of calls, handlers failing and panicking on
//! 1% each. Nothing is lost or handled twice, memory stays within the budget, and every
//! 429 was waited exactly as long as the server asked.

use std::process::Command;

#[test]
fn a_short_soak_loses_nothing_and_honours_every_retry_after() {
    let exe = std::env::current_exe().unwrap();
    let soak = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("soak{}", std::env::consts::EXE_SUFFIX));
    let out = Command::new(soak)
        .args(["--seconds", "5", "--rate", "300", "--faults", "0.2", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["generated"], 1500);
    assert_eq!(
        r["handled"].as_u64().unwrap() + r["undecodable"].as_u64().unwrap(),
        1500,
        "{r}"
    );
    assert!(
        r["failed"].as_u64().unwrap() > 0 && r["panicked"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert_eq!(r["rss_within_budget"], true, "{r}");
    assert_eq!(r["retry_after_honoured"], true, "{r}");
    let retries: u64 = r["retries"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(retries >= 5, "faults were met and retried: {r}");
}
