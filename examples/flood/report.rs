//! One run's result (the `--json` contract), and the table that compares runs.

use serde::{Deserialize, Serialize};

use crate::cli::Size;

/// One policy run. Field names are a contract: scripts read them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResult {
    pub(crate) policy: String,
    pub(crate) updates: u64,
    pub(crate) handled: u64,
    pub(crate) duplicates: u64,
    pub(crate) order_violations: u64,
    pub(crate) drain_s: f64,
    pub(crate) peak_rss_bytes: u64,
    pub(crate) baseline_rss_bytes: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) ideal_s: f64,
    pub(crate) efficiency: f64,
    pub(crate) fetch_calls: u64,
    pub(crate) max_in_flight: u64,
    // Context beyond the contract.
    pub(crate) concurrency_bound: u64,
    pub(crate) budget_bytes: Option<u64>,
    pub(crate) failed: u64,
    pub(crate) undecodable: u64,
    pub(crate) delivery: String,
    pub(crate) ordered: bool,
    pub(crate) text_bytes: u64,
    pub(crate) chats: u64,
    pub(crate) work_kib: u64,
    pub(crate) work_ms: u64,
    pub(crate) slow_frac: f64,
    pub(crate) slow_x: f64,
    pub(crate) mean_handler_ms: f64,
    /// `--transport webhook`: requests answered 429 (waiting bound or wait limit), so the
    /// sender retried them later. Absent for polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) webhook_429: Option<u64>,
    /// Failed attempts that were run again (`--attempts`).
    #[serde(default)]
    pub(crate) retried: u64,
    /// Updates that failed every attempt: with `--spool`, those its dead-letter table took.
    #[serde(default)]
    pub(crate) dead_lettered: u64,
    /// `--spool`: the most JSON bytes the spool held at once. Absent without a spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) spool_peak_bytes: Option<u64>,
}

fn mib(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// The comparison table, one line per run.
pub(crate) fn table(results: &[RunResult]) -> String {
    let mut out = format!(
        "{:<22} {:>8} {:>10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>8} {:>6}\n",
        "policy", "drain s", "peak RSS", "budget", "p50 ms", "p99 ms", "effic.", "in fl.", "fetches", "lost"
    );
    for r in results {
        let budget = r.budget_bytes.map_or("-".to_owned(), |b| Size(b).to_string());
        out.push_str(&format!(
            "{:<22} {:>8.2} {:>10} {:>10} {:>8.1} {:>8.1} {:>7.2} {:>7} {:>8} {:>6}\n",
            r.policy,
            r.drain_s,
            mib(r.peak_rss_bytes),
            budget,
            r.p50_ms,
            r.p99_ms,
            r.efficiency,
            r.max_in_flight,
            r.fetch_calls,
            r.updates.saturating_sub(r.handled),
        ));
    }
    out
}
