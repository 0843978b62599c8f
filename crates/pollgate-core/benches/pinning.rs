//! What one update held by a slow handler keeps alive: a 100-update `getUpdates` body of
//! ~8 MiB (80 KiB per update, near the transport's 8 MiB body cap) is decoded, 99 updates
//! are dropped (their handlers finished) and one is kept (its handler is slow). Resident
//! memory is read from `/proc/self/statm` (Linux) before the body exists, with the body and
//! its updates, and after the 99 are gone.
//!
//! Two layouts side by side in one run: the envelope as it is (each update owns its JSON),
//! and the layout it replaced, rebuilt here (every update a range of one shared `Arc<str>`
//! body), to show what a kept update pinned. `docs/benchmarks.md` ("Update bodies") has the
//! figures. Run: `cargo bench -p pollgate-core --bench pinning`.

#![allow(missing_docs)]

use std::sync::Arc;

use pollgate_core::{GetUpdatesResponse, Update};

const UPDATES: usize = 100;
const TEXT_BYTES: usize = 80 << 10;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn body() -> String {
    let text = "x".repeat(TEXT_BYTES);
    let updates: Vec<String> = (0..UPDATES)
        .map(|i| {
            format!(
                r#"{{"update_id":{},"message":{{"chat":{{"id":{i}}},"text":"{text}"}}}}"#,
                1000 + i
            )
        })
        .collect();
    format!(r#"{{"ok":true,"result":[{}]}}"#, updates.join(","))
}

/// The layout before: each update a range of one shared body.
struct Shared {
    _body: Arc<str>,
    _range: std::ops::Range<usize>,
}

fn shared_layout(body: &str) -> Vec<Shared> {
    let body: Arc<str> = Arc::from(body);
    let GetUpdatesResponse::Updates(batch) = GetUpdatesResponse::decode(&body, None).unwrap() else {
        unreachable!()
    };
    batch
        .updates
        .iter()
        .map(|u| {
            let start = body.find(u.raw()).expect("each update is in the body");
            Shared {
                _body: Arc::clone(&body),
                _range: start..start + u.raw().len(),
            }
        })
        .collect()
}

fn own_layout(body: &str) -> Vec<Update> {
    let GetUpdatesResponse::Updates(batch) = GetUpdatesResponse::decode(body, None).unwrap() else {
        unreachable!()
    };
    batch.updates
}

fn measure<T>(name: &str, decode: impl Fn(&str) -> Vec<T>) {
    let before = rss_bytes();
    let body = body();
    let mut updates = decode(&body);
    drop(body);
    let with_all = rss_bytes();
    let kept = updates.swap_remove(0);
    drop(updates);
    let after = rss_bytes();
    println!(
        "{name:>14}: body {:.2} MiB; with the batch +{:.2} MiB; one update kept: +{:.2} MiB",
        (UPDATES * TEXT_BYTES) as f64 / (1 << 20) as f64,
        with_all.saturating_sub(before) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
    );
    drop(kept);
}

fn main() {
    // glibc raises its mmap threshold after the first large free, after which freed
    // memory stays in the heap and RSS no longer follows what is alive: re-run with the
    // threshold fixed at 64 KiB, so every allocation of an update or a body is its own
    // mapping, returned to the system when freed.
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .status()
            .expect("re-run the bench");
        std::process::exit(status.code().unwrap_or(1));
    }
    // Each layout runs three times, alternating.
    for _ in 0..3 {
        measure("owned (now)", own_layout);
        measure("shared (was)", shared_layout);
    }
}
