//! The simulated handler and what it records: it touches W KiB, holds them for T ms
//! (X times longer for a fraction F of updates), and records each update exactly as a
//! careful consumer would (ledger line written before the update counts as finished).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate::Update;

/// The handler's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub(crate) bytes: usize,
    pub(crate) hold: Duration,
    pub(crate) slow_frac: f64,
    pub(crate) slow_x: f64,
    pub(crate) fail_frac: f64,
    pub(crate) poison_frac: f64,
}

/// A number in [0, 1) from the id and a salt: the same for every run and every policy.
/// (`scripts/spool-failures.py` computes it the same way to check the dead letters.)
pub(crate) fn unit(id: i64, salt: u64) -> f64 {
    let h = ((id as u64) ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    h as f64 / (1u64 << 53) as f64
}

/// The salts of the straggler, flaky and poisoned choices (independent of each other).
const SLOW: u64 = 0;
const FLAKY: u64 = 0x5851_F42D_4C95_7F2D;
const POISON: u64 = 0x1405_7B7E_F767_814F;

impl Workload {
    /// How long the update with this id holds its memory (stragglers chosen by a hash of
    /// the id, so every run and every policy gets the same ones).
    pub(crate) fn hold_for(&self, id: i64) -> Duration {
        if unit(id, SLOW) < self.slow_frac {
            self.hold.mul_f64(self.slow_x)
        } else {
            self.hold
        }
    }

    /// Whether the update's first attempt fails (`--fail-frac`).
    fn flaky(&self, id: i64) -> bool {
        unit(id, FLAKY) < self.fail_frac
    }

    /// Whether every attempt fails (`--poison-frac`).
    fn poisoned(&self, id: i64) -> bool {
        unit(id, POISON) < self.poison_frac
    }
}

/// What the handlers saw.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) workload: Workload,
    seen: Mutex<Seen>,
    handled: AtomicU64,
    ledger: Option<File>,
    ordered: bool,
    /// Flaky updates whose first attempt failed already (in this process).
    failed_once: Mutex<std::collections::HashSet<i64>>,
}

#[derive(Debug)]
struct Seen {
    ids: std::collections::HashSet<i64>,
    duplicates: u64,
    order_violations: u64,
    last_started: HashMap<i64, i64>,
    running: HashMap<i64, u32>,
    latencies_us: Vec<u32>,
    nominal_total: Duration,
}

impl Recorder {
    /// Everything is allocated up front, so the baseline RSS includes it.
    pub(crate) fn new(
        workload: Workload,
        expected: usize,
        ordered: bool,
        ledger: Option<&Path>,
    ) -> io::Result<Arc<Recorder>> {
        let ledger = match ledger {
            Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(Arc::new(Recorder {
            workload,
            seen: Mutex::new(Seen {
                ids: std::collections::HashSet::with_capacity(expected),
                duplicates: 0,
                order_violations: 0,
                last_started: HashMap::new(),
                running: HashMap::new(),
                latencies_us: Vec::with_capacity(expected),
                nominal_total: Duration::ZERO,
            }),
            handled: AtomicU64::new(0),
            ledger,
            ordered,
            failed_once: Mutex::new(std::collections::HashSet::new()),
        }))
    }

    /// Called when a handler starts: checks per-key order and exclusivity (an attempt
    /// after a failed one starts the same id again).
    pub(crate) fn start(&self, u: &Update) {
        let (true, Some(key)) = (self.ordered, u.ordering_key()) else {
            return;
        };
        let mut s = self.seen.lock();
        if s.last_started.get(&key).is_some_and(|&prev| prev > u.id()) {
            s.order_violations += 1;
        }
        s.last_started.insert(key, u.id());
        let running = s.running.entry(key).or_default();
        *running += 1;
        if *running > 1 {
            s.order_violations += 1;
        }
    }

    /// Called when a handler failed: releases its key for the order check.
    fn abandon(&self, u: &Update) {
        if let (true, Some(key)) = (self.ordered, u.ordering_key())
            && let Some(r) = self.seen.lock().running.get_mut(&key)
        {
            *r = r.saturating_sub(1);
        }
    }

    /// Whether this attempt fails: every attempt of a poisoned update, the first of a
    /// flaky one.
    fn fails(&self, id: i64) -> bool {
        let w = &self.workload;
        w.poisoned(id) || (w.flaky(id) && self.failed_once.lock().insert(id))
    }

    /// Called when a handler is done: the ledger line is written first.
    pub(crate) fn finish(&self, u: &Update, took: Duration, nominal: Duration) -> io::Result<()> {
        if let Some(mut ledger) = self.ledger.as_ref() {
            ledger.write_all(format!("{}\n", u.id()).as_bytes())?;
        }
        let mut s = self.seen.lock();
        if !s.ids.insert(u.id()) {
            s.duplicates += 1;
        }
        if let (true, Some(key)) = (self.ordered, u.ordering_key())
            && let Some(r) = s.running.get_mut(&key)
        {
            *r = r.saturating_sub(1);
        }
        s.latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32);
        s.nominal_total += nominal;
        drop(s);
        self.handled.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Updates handled so far (duplicates included).
    pub(crate) fn handled(&self) -> u64 {
        self.handled.load(Ordering::Acquire)
    }

    /// Final figures.
    pub(crate) fn summary(&self) -> RecordSummary {
        let mut s = self.seen.lock();
        s.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if s.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((s.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, s.latencies_us.len()) - 1;
            s.latencies_us[i] as f64 / 1e3
        };
        let n = s.latencies_us.len().max(1) as f64;
        RecordSummary {
            unique: s.ids.len() as u64,
            duplicates: s.duplicates,
            order_violations: s.order_violations,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            mean_nominal_ms: s.nominal_total.as_secs_f64() * 1e3 / n,
        }
    }
}

/// What [`Recorder::summary`] returns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordSummary {
    pub(crate) unique: u64,
    pub(crate) duplicates: u64,
    pub(crate) order_violations: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) mean_nominal_ms: f64,
}

/// The handler: touch, hold, record.
pub(crate) async fn handle(rec: Arc<Recorder>, u: Update) -> io::Result<()> {
    rec.start(&u);
    let started = Instant::now();
    let hold = rec.workload.hold_for(u.id());
    let buf = vec![1u8; rec.workload.bytes];
    tokio::time::sleep(hold).await;
    std::hint::black_box(&buf);
    drop(buf);
    if rec.fails(u.id()) {
        rec.abandon(&u);
        return Err(io::Error::other(format!("update {} failed (simulated)", u.id())));
    }
    rec.finish(&u, started.elapsed(), hold)
}
