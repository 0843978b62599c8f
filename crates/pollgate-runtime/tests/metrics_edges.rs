//! Edges found in review: the metrics export loop (termination, spinning, per-tick cost, what a
//! slow backlog holds back), histogram observations against real events, and what the
//! exported counters show across snapshots and runtimes. Paused time, deterministic mocks;
//! every wait is bounded so a hang is a failure.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::update;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Completion, Fixed, Limit, LimitSignal, Load};
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, InMemoryTransport, Transport, Update};
use pollgate_runtime::{Retry, Runtime, StatsHandle, metrics as names};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// A recorder that keeps every call, with the (paused) time it was made.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    CounterAbsolute(u64),
    CounterIncrement(u64),
    GaugeSet(f64),
    GaugeOther,
    Histogram(f64),
}

#[derive(Default)]
struct Log {
    registrations: AtomicUsize,
    events: Mutex<Vec<(String, Op, Instant)>>,
}

impl Log {
    fn registrations(&self) -> usize {
        self.registrations.load(Ordering::SeqCst)
    }

    fn ops(&self, series: &str) -> Vec<(Op, Instant)> {
        self.events
            .lock()
            .iter()
            .filter(|(n, _, _)| n == series)
            .map(|(_, op, at)| (*op, *at))
            .collect()
    }

    fn histogram_count(&self, name: &str) -> usize {
        self.ops(name)
            .iter()
            .filter(|(op, _)| matches!(op, Op::Histogram(_)))
            .count()
    }
}

struct Rec(Arc<Log>);

struct Handle {
    series: String,
    log: Arc<Log>,
}

impl Handle {
    fn push(&self, op: Op) {
        self.log.events.lock().push((self.series.clone(), op, Instant::now()));
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(Op::CounterIncrement(value));
    }
    fn absolute(&self, value: u64) {
        self.push(Op::CounterAbsolute(value));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, _value: f64) {
        self.push(Op::GaugeOther);
    }
    fn decrement(&self, _value: f64) {
        self.push(Op::GaugeOther);
    }
    fn set(&self, value: f64) {
        self.push(Op::GaugeSet(value));
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.push(Op::Histogram(value));
    }
}

impl Rec {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        self.0.registrations.fetch_add(1, Ordering::SeqCst);
        let mut series = key.name().to_string();
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        if !labels.is_empty() {
            series = format!("{series}{{{}}}", labels.join(","));
        }
        Arc::new(Handle {
            series,
            log: Arc::clone(&self.0),
        })
    }
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

// ---------------------------------------------------------------------------------------
// A transport over an in-memory backlog whose `backlog()` never answers (a server that
// accepts the request and never replies), and which reports retries of three kinds.

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct HangingBacklog {
    inner: InMemoryTransport,
    backlog_calls: Arc<AtomicUsize>,
    backlog_dropped: Arc<AtomicUsize>,
}

impl HangingBacklog {
    fn with(updates: impl IntoIterator<Item = Update>) -> Arc<HangingBacklog> {
        Arc::new(HangingBacklog {
            inner: InMemoryTransport::with_updates(updates),
            ..HangingBacklog::default()
        })
    }
}

impl Transport for HangingBacklog {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        self.inner.ack_model()
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        self.inner.fetch(request).await
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        self.inner.ack(ack).await
    }

    async fn flush(&self) -> Result<(), Infallible> {
        self.inner.flush().await
    }

    fn retries(&self) -> Vec<(&'static str, u64)> {
        vec![("network", 1), ("server_error", 2), ("rate_limited", 3)]
    }

    fn backlog(&self) -> impl Future<Output = Option<u64>> + Send {
        self.backlog_calls.fetch_add(1, Ordering::SeqCst);
        let guard = DropCount(Arc::clone(&self.backlog_dropped));
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            None
        }
    }
}

fn ok_handler() -> impl Fn(Update) -> std::future::Ready<Result<(), Infallible>> + Send + Sync + 'static {
    |_u: Update| std::future::ready(Ok(()))
}

// ---------------------------------------------------------------------------------------
// Intervals at their extremes.

/// `backlog_interval(Duration::MAX)` is the natural way to say "never ask the backlog"
/// (there is no other way to turn the `getWebhookInfo` requests off). The export loop
/// computes `Instant::now() + backlog_every` at its first tick: the addition overflows
/// and `Runtime::run` itself panics (it is joined in `run`, not a detached task).
/// Failed before its fix (the run panics: "overflow when adding duration to instant").
#[tokio::test(start_paused = true)]
async fn backlog_interval_max_does_not_panic_the_run() {
    let recorder = Rec(Arc::default());
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = Arc::new(InMemoryTransport::with_updates((1..=3).map(|id| update(id, id))));
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(Duration::from_secs(1))
        .backlog_interval(Duration::MAX)
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let joined = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends after its shutdown");
    let summary = joined
        .expect("Runtime::run panicked with backlog_interval(Duration::MAX)")
        .unwrap();
    assert_eq!(summary.stats.finished(), 3);
}

/// The export interval itself at `Duration::MAX` is fine: tokio clamps an interval's
/// period (`safe_delay`), so only the export loop's own `Instant + backlog_every` above
/// overflows.
#[tokio::test(start_paused = true)]
async fn export_interval_max_does_not_panic_the_run() {
    let recorder = Rec(Arc::default());
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = Arc::new(InMemoryTransport::with_updates((1..=3).map(|id| update(id, id))));
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(Duration::MAX)
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let joined = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends after its shutdown");
    let summary = joined
        .expect("Runtime::run panicked with export_metrics(Duration::MAX)")
        .unwrap();
    assert_eq!(summary.stats.finished(), 3);
}

/// A long but finite interval (100 years) is fine: no overflow, one export at the start
/// and one at the end, and the run ends promptly.
#[tokio::test(start_paused = true)]
async fn a_century_interval_exports_at_start_and_end_only() {
    let log: Arc<Log> = Arc::default();
    let recorder = Rec(Arc::clone(&log));
    let _local = metrics::set_default_local_recorder(&recorder);
    let century = Duration::from_secs(100 * 365 * 86_400);
    let transport = Arc::new(InMemoryTransport::with_updates((1..=3).map(|id| update(id, id))));
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(century)
        .backlog_interval(century)
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_millis(10), run)
        .await
        .expect("ends at once")
        .unwrap()
        .unwrap();
    assert_eq!(summary.stats.finished(), 3);
    let sets = log.ops(names::IN_FLIGHT);
    assert_eq!(sets.len(), 2, "start and end: {sets:?}");
}

// ---------------------------------------------------------------------------------------
// A backlog request that never answers.

/// Shutdown while the export loop waits inside `backlog()` (backlog interval 10 s, so the
/// request gets 10 s): `done` breaks the wait, the run ends at once, and the backlog future
/// is dropped.
#[tokio::test(start_paused = true)]
async fn shutdown_inside_a_hanging_backlog_call_is_prompt() {
    let recorder = Rec(Arc::default());
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = HangingBacklog::with((1..=5).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(Duration::from_secs(1))
        .backlog_interval(Duration::from_secs(10))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        transport.backlog_calls.load(Ordering::SeqCst),
        1,
        "asked at the first tick"
    );
    assert_eq!(
        transport.backlog_dropped.load(Ordering::SeqCst),
        0,
        "still waiting inside it"
    );
    let asked = Instant::now();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(10),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(summary.stats.finished(), 5);
    assert_eq!(transport.backlog_dropped.load(Ordering::SeqCst), 1);
}

/// Dropping `Runtime::run`'s future while the export loop waits in `backlog()` drops the
/// backlog future with it (nothing detached keeps running or keeps the transport).
#[tokio::test(start_paused = true)]
async fn dropping_the_run_drops_a_hanging_backlog_call() {
    let recorder = Rec(Arc::default());
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = HangingBacklog::with((1..=5).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(Duration::from_secs(10))
        .build();
    let run = runtime.run();
    tokio::select! {
        _ = run => panic!("the run does not end by itself"),
        () = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
    assert_eq!(transport.backlog_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        transport.backlog_dropped.load(Ordering::SeqCst),
        1,
        "dropped with the run"
    );
    assert_eq!(Arc::strong_count(&transport), 1, "nothing else holds the transport");
}

/// The loop does not spin while a backlog hangs: with every = 1 s, backlog every 1 s, a
/// backlog that never answers costs one request per timeout, and exports stay about one
/// per second (no catch-up burst after each timeout).
#[tokio::test(start_paused = true)]
async fn a_hanging_backlog_does_not_make_the_loop_spin() {
    let log: Arc<Log> = Arc::default();
    let recorder = Rec(Arc::clone(&log));
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = HangingBacklog::with((1..=5).map(|id| update(id, id)));
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(Duration::from_secs(1))
        .backlog_interval(Duration::from_secs(1))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let calls = transport.backlog_calls.load(Ordering::SeqCst);
    let exports = log.ops(names::IN_FLIGHT).len();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!((25..=61).contains(&calls), "backlog requests in 60 s: {calls}");
    // Gauges move only when their value changes: the in-flight gauge went up and down
    // with the 5 updates, and not once per export.
    assert!(exports <= 12, "in-flight gauge operations in 60 s: {exports}");
}

/// The comment in `export_loop` says a slow backlog answer "gets one interval" so that it
/// does not hold back the other metrics; the timeout is `every.max(1 s)`. With a 100 ms
/// interval, a backlog that hangs freezes every gauge and counter for a full second
/// (ten intervals) at each backlog interval.
/// Failed before its fix (no export between t = 0 and t = 1 s).
#[tokio::test(start_paused = true)]
async fn a_hanging_backlog_holds_back_at_most_one_interval() {
    let log: Arc<Log> = Arc::default();
    let recorder = Rec(Arc::clone(&log));
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = HangingBacklog::with((1..=5).map(|id| update(id, id)));
    let start = Instant::now();
    let every = Duration::from_millis(100);
    let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(every)
        .backlog_interval(Duration::from_secs(30))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exports: Vec<Duration> = log
        .ops(names::IN_FLIGHT)
        .into_iter()
        .map(|(_, at)| at - start)
        .collect();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let largest_gap = exports.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    assert!(
        largest_gap <= 2 * every,
        "exports froze for {largest_gap:?} behind a hanging backlog request (interval {every:?}): {exports:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Per-tick cost.

/// Registrations with the recorder do not grow with the ticks: gauges, counters, the
/// lazily registered gauges and the per-kind transport-retry counters are registered once.
///
#[tokio::test(start_paused = true)]
async fn registrations_do_not_grow_per_tick_or_per_retry_kind() {
    let log: Arc<Log> = Arc::default();
    let recorder = Rec(Arc::clone(&log));
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = Arc::new(InMemoryTransport::with_updates((1..=5).map(|id| update(id, id))));
    struct Kinds(Arc<InMemoryTransport>);
    impl Transport for Kinds {
        type Error = Infallible;
        fn ack_model(&self) -> AckModel {
            self.0.ack_model()
        }
        async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
            self.0.fetch(request).await
        }
        async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
            self.0.ack(ack).await
        }
        async fn flush(&self) -> Result<(), Infallible> {
            self.0.flush().await
        }
        fn retries(&self) -> Vec<(&'static str, u64)> {
            vec![("a", 1), ("b", 2), ("c", 3)]
        }
        async fn backlog(&self) -> Option<u64> {
            self.0.backlog().await
        }
    }
    let runtime = Runtime::builder(Kinds(Arc::clone(&transport)), ok_handler())
        .policy(Fixed::new(2))
        .export_metrics(Duration::from_millis(10))
        .backlog_interval(Duration::from_millis(10))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = log.registrations();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let late = log.registrations();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(early, late, "registrations grew with the ticks");
    // Counters move by what changed: one increment to 2, none for the ticks after.
    assert_eq!(log.ops("pollgate_transport_retries_total{kind=b}").len(), 1);
}

// ---------------------------------------------------------------------------------------
// Histograms against real events.

/// Every admission-wait observation is one permit (the gate's `admitted`), and every
/// handler-duration observation is one handler run: with per-chat ordering (parked
/// updates), a pacer (held updates) and retries (each attempt takes a permit again). No
/// double recording.
#[tokio::test(start_paused = true)]
async fn histogram_observations_match_permits_and_runs() {
    let log: Arc<Log> = Arc::default();
    let recorder = Rec(Arc::clone(&log));
    let _local = metrics::set_default_local_recorder(&recorder);
    let transport = Arc::new(InMemoryTransport::with_updates((1..=60).map(|id| update(id, id % 5))));
    let runs = Arc::new(AtomicUsize::new(0));
    let attempts: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let handler = {
        let (runs, attempts) = (Arc::clone(&runs), Arc::clone(&attempts));
        move |u: Update| {
            let (runs, attempts) = (Arc::clone(&runs), Arc::clone(&attempts));
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let attempt = {
                    let mut a = attempts.lock();
                    let n = a.entry(u.id()).or_default();
                    *n += 1;
                    *n
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
                if u.id() % 3 == 0 && attempt < 3 {
                    return Err(std::io::Error::other("fails twice"));
                }
                Ok(())
            }
        }
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(Fixed::new(3))
        .ordered(true)
        .retry(Retry::attempts(3).initial_backoff(Duration::from_millis(30)))
        .pacer(|u: &Update| (u.id() % 4 == 0).then(|| Instant::now() + Duration::from_millis(25)))
        .export_metrics(Duration::from_millis(50))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let s = &summary.stats;
    assert_eq!(s.finished(), 60, "{s:?}");
    assert_eq!(s.retried, 40, "ids divisible by 3 fail twice: {s:?}");
    assert!(s.paced > 0, "{s:?}");
    let runs = runs.load(Ordering::SeqCst);
    assert_eq!(runs, 100);
    assert_eq!(s.admitted as usize, runs, "{s:?}");
    assert_eq!(log.histogram_count(names::HANDLER_DURATION_SECONDS), runs);
    assert_eq!(log.histogram_count(names::ADMISSION_WAIT_SECONDS), s.admitted as usize);
}

// ---------------------------------------------------------------------------------------
// What the exported counters can show.

/// A policy that snapshots the runtime's stats whenever a permit reports (as an exporter
/// on another worker thread may at that instant): `on_complete` runs after the runtime
/// counted the failure and before the gate counted the release.
#[derive(Debug)]
struct Snooping {
    inner: Fixed,
    stats: OnceLock<StatsHandle>,
    seen: Mutex<Vec<u64>>,
}

impl AdmissionPolicy for Snooping {
    fn fetch_limit(&self, load: &Load) -> usize {
        self.inner.fetch_limit(load)
    }
    fn admits(&self, load: &Load, cost: u64) -> bool {
        self.inner.admits(load, cost)
    }
    fn limit(&self) -> Limit {
        self.inner.limit()
    }
    fn on_complete(&self, completion: &Completion) {
        self.inner.on_complete(completion);
        if let Some(stats) = self.stats.get() {
            self.seen.lock().push(stats.snapshot().completed);
        }
    }
    fn attach(&self, signal: LimitSignal) {
        self.inner.attach(signal);
    }
}

/// `pollgate_updates_handled_total` is set with `Counter::absolute` from
/// `Stats::completed`, which is derived (`gate.completed - failed - ...`) from values read
/// at different instants. Between a failure's `bump(failed)` and its permit's release,
/// a snapshot shows one success fewer than the snapshot before: the exported counter
/// goes backwards (masked by Prometheus' `fetch_max`, not by a recorder that stores).
/// The export loop can take its snapshot in that window on a multi-threaded runtime;
/// here the window is reached deterministically from the policy's `on_complete`.
/// Failed before its fix.
#[tokio::test(start_paused = true)]
async fn stats_completed_never_goes_backwards() {
    let policy = Arc::new(Snooping {
        inner: Fixed::new(1),
        stats: OnceLock::new(),
        seen: Mutex::new(Vec::new()),
    });
    let transport = Arc::new(InMemoryTransport::with_updates((1..=4).map(|id| update(id, id))));
    let handler = |u: Update| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if u.id() % 2 == 0 {
            return Err(std::io::Error::other("even ids fail"));
        }
        Ok(())
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(Arc::clone(&policy) as Arc<dyn AdmissionPolicy>)
        .build();
    policy.stats.set(runtime.stats()).unwrap();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    // One timeline: the test's polls (every millisecond) and the policy's snapshots at the
    // completions, in the order they were taken.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let c = stats.snapshot().completed;
        policy.seen.lock().push(c);
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let timeline = policy.seen.lock().clone();
    assert_eq!(timeline.last(), Some(&2), "ids 1 and 3 succeed");
    let backwards: Vec<(usize, u64, u64)> = timeline
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] < w[0])
        .map(|(i, w)| (i + 1, w[0], w[1]))
        .collect();
    assert!(
        backwards.is_empty(),
        "Stats::completed went backwards at (index, before, after) {backwards:?}; timeline {timeline:?}"
    );
}

/// The counters are per-`Runtime` totals written with `absolute`: a second runtime in the
/// same process (a supervisor loop that builds a new one after `RunError::Transport`, or
/// two bots in one process) writes its own totals over the first's. With the documented
/// Prometheus exporter (`fetch_max`) the counter stays at the first run's total until the
/// second run exceeds it: the second run's first 10 updates are never counted.
/// Failed before its fix (handled_total reads 10 after 10 + 5 updates).
#[tokio::test(start_paused = true)]
async fn a_second_runtime_in_the_process_keeps_counting() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut handled = 0;
    for n in [10, 5] {
        let transport = Arc::new(InMemoryTransport::with_updates((1..=n).map(|id| update(id, id))));
        let runtime = Runtime::builder(Arc::clone(&transport), ok_handler())
            .policy(Fixed::new(4))
            .export_metrics(Duration::from_millis(50))
            .build();
        let stop = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        handled += summary.stats.completed;
    }
    assert_eq!(handled, 15);
    let text = handle.render();
    let exported: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{} ", names::HANDLED)))
        .expect("exported")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        exported, 15.0,
        "handled_total after two runs of 10 and 5 updates:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Errors whose Display no longer carries the cause.

/// A transport whose final flush fails with a reason.
struct FailingFlush(InMemoryTransport);

impl Transport for FailingFlush {
    type Error = std::io::Error;
    fn ack_model(&self) -> AckModel {
        self.0.ack_model()
    }
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, std::io::Error> {
        Ok(self.0.fetch(request).await.unwrap())
    }
    async fn ack(&self, ack: Ack<'_>) -> Result<(), std::io::Error> {
        self.0.ack(ack).await.unwrap();
        Ok(())
    }
    async fn flush(&self) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("connection reset by peer"))
    }
}

/// `examples/shared/bridge.rs:154` reports a failed final confirmation as
/// `format!("bridge: could not confirm the final offset: {e}")` with `e` the
/// `Summary::flush_error`. Before this cycle the field was a `String` holding the
/// transport's message; now it is a `FlushError` whose Display is only "the final
/// acknowledgement failed": the bridge's exit message names no reason. (The runtime's own
/// log line uses `ErrorChain` and keeps it.) This test builds exactly that message.
/// Failed before its fix.
#[tokio::test(start_paused = true)]
async fn the_bridge_message_for_a_failed_flush_keeps_the_reason() {
    let transport = FailingFlush(InMemoryTransport::with_updates((1..=3).map(|id| update(id, id))));
    let runtime = Runtime::builder(transport, ok_handler()).policy(Fixed::new(2)).build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let e = summary.flush_error.expect("the flush fails");
    let chain = pollgate_core::ErrorChain(&e).to_string();
    assert!(chain.contains("connection reset by peer"), "{chain}");
    // The example prints the chain (it printed only `{e}`, which names no reason).
    let message = format!(
        "bridge: could not confirm the final offset: {}",
        pollgate_core::ErrorChain(&e)
    );
    assert!(
        message.contains("connection reset by peer"),
        "the example prints: {message}"
    );
}
