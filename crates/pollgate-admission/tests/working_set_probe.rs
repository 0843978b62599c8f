//! The cgroup working-set probe over time, on fixture trees (as in `cgroup_fixtures.rs`):
//! it reads the cgroup whose limit applies, never reports an inconsistent reading as
//! "nothing in use", falls back to RSS when its cgroup goes away, and keeps no file
//! descriptor per sample. Each case was found by review and failed before its fix.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use pollgate_admission::rss::CgroupMemory;
use pollgate_admission::{MemoryProbe, RssAdaptive, WorkingSetProbe};

const MIB: u64 = 1 << 20;

/// A v2 host whose process is in `/bot.slice/bot.service`; the slice has the limit.
fn slice_host(case: &str, slice_current: u64, service_current: u64) -> Fixture {
    Fixture::new(case)
        .file("proc/self/cgroup", "0::/bot.slice/bot.service\n")
        .file("proc/self/mountinfo", V2_MOUNTS)
        .file("sys/fs/cgroup/cgroup.controllers", "memory pids\n")
        .file("sys/fs/cgroup/bot.slice/cgroup.controllers", "memory pids\n")
        .file("sys/fs/cgroup/bot.slice/memory.max", &format!("{}\n", 1024 * MIB))
        .file("sys/fs/cgroup/bot.slice/memory.high", "max\n")
        .file("sys/fs/cgroup/bot.slice/memory.current", &format!("{slice_current}\n"))
        .file("sys/fs/cgroup/bot.slice/memory.stat", "anon 0\ninactive_file 0\n")
        .file(
            "sys/fs/cgroup/bot.slice/bot.service/cgroup.controllers",
            "memory pids\n",
        )
        .file("sys/fs/cgroup/bot.slice/bot.service/memory.max", "max\n")
        .file("sys/fs/cgroup/bot.slice/bot.service/memory.high", "max\n")
        .file(
            "sys/fs/cgroup/bot.slice/bot.service/memory.current",
            &format!("{service_current}\n"),
        )
        .file(
            "sys/fs/cgroup/bot.slice/bot.service/memory.stat",
            "anon 0\ninactive_file 0\n",
        )
}

/// `RssAdaptive::auto` takes the ceiling from the most restrictive ancestor
/// (`limited_by` = the slice) but builds its probe with `WorkingSetProbe::for_cgroup(cgroup)`
/// on the process's own cgroup. The kernel enforces the slice's limit on the slice's charge,
/// which includes siblings: here the slice is at 1000 of 1024 MiB (above auto's 921.6 MiB
/// target) while the probe reports 200 MiB, so the controller sees 720 MiB of headroom
/// that does not exist.
#[test]
fn the_probe_reads_the_cgroup_that_set_the_limit() {
    let fixture = slice_host("ancestor", 1000 * MIB, 200 * MIB);
    let cgroup = CgroupMemory::detect_in(&fixture.root).expect("a memory cgroup");
    let limit = cgroup.limit();
    assert_eq!(limit.effective(), Some(1024 * MIB));
    assert_eq!(
        limit.limited_by.as_deref(),
        Some(fixture.path("sys/fs/cgroup/bot.slice").as_path())
    );
    let target = (1024.0 * MIB as f64 * pollgate_admission::rss::AUTO_LIMIT_FRACTION) as u64;
    // What auto() does: a probe for the cgroup whose limit applies.
    let mut probe = WorkingSetProbe::for_cgroup(&cgroup.limiting()).unwrap();
    let seen = probe.sample().unwrap();
    println!(
        "limit {} MiB set on {:?}; auto target {} MiB; limited cgroup's charge 1000 MiB; probe reads {} MiB",
        limit.effective().unwrap() / MIB,
        limit.limited_by,
        target / MIB,
        seen / MIB
    );
    assert!(
        seen >= 1000 * MIB,
        "the probe must read the charge the limit is enforced on (the slice: 1000 MiB), read {} MiB",
        seen / MIB
    );
}

/// `usage - inactive_file` saturates to 0 when the two reads disagree (v1's usage is
/// batched per CPU; the two files are read at different moments): the sampler then feeds
/// the controller `rss_bytes = 0`, "no memory used at all".
#[test]
fn an_inconsistent_reading_reports_the_usage_not_zero() {
    let fixture = slice_host("zero", 0, 100 * MIB).file(
        "sys/fs/cgroup/bot.slice/bot.service/memory.stat",
        &format!("anon 0\ninactive_file {}\n", 200 * MIB),
    );
    let cgroup = CgroupMemory::detect_in(&fixture.root).unwrap();
    let mut probe = WorkingSetProbe::for_cgroup(&cgroup).unwrap();
    let sample = probe.sample();
    println!("usage 100 MiB, inactive_file 200 MiB -> sample {sample:?}");
    assert_ne!(
        sample,
        Some(0),
        "an impossible 0 working set is passed on as a measurement"
    );
}

/// Once the cgroup files stop reading (the cgroup was removed: ENODEV; the process moved;
/// here: a value that no longer parses), every sample is `None` for ever: the probe never
/// re-detects nor falls back to RSS, the sampler silently skips `core.apply`, and the budget
/// stays frozen at its last value with nothing logged.
#[test]
fn a_probe_that_cannot_read_its_cgroup_any_more_reads_rss() {
    let fixture = slice_host("vanish", 0, 100 * MIB);
    let cgroup = CgroupMemory::detect_in(&fixture.root).unwrap();
    let probe = WorkingSetProbe::for_cgroup(&cgroup).unwrap();
    let policy = RssAdaptive::builder(512 * MIB)
        .probe(probe)
        .sample_every(Duration::from_millis(1))
        .build();
    let deadline = Instant::now() + Duration::from_secs(2);
    while policy.last_sample().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = policy.last_sample().expect("a first sample");
    // Same inode, new content: the open fd now reads something that is not a number.
    fs::write(
        fixture.path("sys/fs/cgroup/bot.slice/bot.service/memory.current"),
        "gone\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after = policy.last_sample().unwrap();
    println!(
        "last sample before: {} ms ({} MiB); 200 ms later: {} ms ({} MiB); budget {} MiB",
        before.at_ms,
        before.rss_bytes / MIB,
        after.at_ms,
        after.rss_bytes / MIB,
        policy.budget() / MIB
    );
    assert!(
        after.at_ms > before.at_ms + 100,
        "the policy stopped seeing memory at {} ms and keeps its budget for ever",
        after.at_ms
    );
}

/// Sanity (expected to pass): the probe keeps its two files open; no fd per sample.
#[test]
fn no_file_descriptor_is_opened_per_sample() {
    let fixture = slice_host("fds", 0, 100 * MIB);
    let cgroup = CgroupMemory::detect_in(&fixture.root).unwrap();
    let mut probe = WorkingSetProbe::for_cgroup(&cgroup).unwrap();
    let fds = || fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    for _ in 0..2000 {
        probe.sample();
    }
    let _ = cgroup.limit();
    assert!(fds() <= before + 2, "{before} -> {}", fds());
}
