//! Metrics through the [`metrics`] facade: one dependency here, any exporter in the
//! application (Prometheus, StatsD, OpenTelemetry, ...).
//!
//! # Why this way
//!
//! The runtime already counts everything an operator needs ([`Stats`]); the
//! exporter turns those counts into metrics every [`export_metrics`] interval, rather than
//! touching the recorder on every update: an idle bot costs one timer per interval, a busy
//! one costs the same. Only the two latency distributions are recorded as they happen
//! (a histogram cannot be rebuilt from counts): the handler's duration and the wait for
//! admission. The backlog on the server is asked of the transport
//! ([`Transport::backlog`]) at its own, slower
//! interval, since it costs a request.
//!
//! Install the recorder (the exporter) before building the runtime: the histograms'
//! handles are taken at build time. Names follow Prometheus' conventions; every name is a
//! constant below, and `docs/operations.md` lists them with the panels and alerts worth
//! setting. Labels: `kind` on failures and transport retries; add per-process labels
//! (worker, bot) in the exporter (`PrometheusBuilder::add_global_label`).
//!
//! [`export_metrics`]: crate::RuntimeBuilder::export_metrics
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use pollgate_core::TelegramTransport;
//! use pollgate_runtime::Runtime;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Install an exporter first, e.g. metrics-exporter-prometheus (with buckets, or its
//! // histograms render as summaries):
//! // PrometheusBuilder::new()
//! //     .with_http_listener(([0, 0, 0, 0], 9000))
//! //     .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &[0.001, 0.01, 0.1, 1.0, 10.0])?
//! //     .install()?;
//! let transport = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?;
//! let runtime = Runtime::builder(transport, |_update| async { Ok::<(), std::io::Error>(()) })
//!     .export_metrics(Duration::from_secs(1))
//!     .build();
//! runtime.run().await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use pollgate_core::Transport;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::runtime::Ctx;
use crate::stats::Stats;

/// Gauge: handlers running now.
pub const IN_FLIGHT: &str = "pollgate_in_flight";
/// Gauge: updates in memory holding a reservation and no slot (parked behind their key,
/// held by the pacer, waiting for a retry).
pub const RESERVED: &str = "pollgate_reserved";
/// Gauge: updates waiting in the gate's queue for a permit.
pub const WAITING: &str = "pollgate_waiting";
/// Gauge: the policy's limit on running handlers (absent when it sets none).
pub const LIMIT_SLOTS: &str = "pollgate_limit_slots";
/// Gauge: the policy's limit on declared bytes (absent when it sets none).
pub const LIMIT_BYTES: &str = "pollgate_limit_bytes";
/// Gauge: declared bytes in use (running and reserved updates).
pub const DECLARED_BYTES: &str = "pollgate_declared_bytes";
/// Gauge: the process's resident memory (or the cgroup's working set) as the policy last
/// read it (only with a memory-steering policy).
pub const RESIDENT_MEMORY_BYTES: &str = "pollgate_resident_memory_bytes";
/// Gauge: the resident memory the policy steers toward.
pub const MEMORY_TARGET_BYTES: &str = "pollgate_memory_target_bytes";
/// Gauge: updates waiting on the server ([`Transport::backlog`]; Telegram counts what is
/// not yet confirmed, so in at-least-once mode it includes updates running now). Keeps
/// its last reading while the transport cannot tell.
pub const BACKLOG_UPDATES: &str = "pollgate_backlog_updates";
/// Counter: fetch requests sent.
pub const FETCHES: &str = "pollgate_fetches_total";
/// Counter: updates fetched (first deliveries).
pub const FETCHED: &str = "pollgate_updates_fetched_total";
/// Counter: updates admitted to run.
pub const ADMITTED: &str = "pollgate_updates_admitted_total";
/// Counter: updates whose handler returned `Ok`.
pub const HANDLED: &str = "pollgate_updates_handled_total";
/// Counter: handler runs that did not succeed, by `kind`: `error`, `panic`, `timeout`.
pub const HANDLER_FAILURES: &str = "pollgate_handler_failures_total";
/// Counter: failed runs followed by another attempt.
pub const HANDLER_RETRIES: &str = "pollgate_handler_retries_total";
/// Counter: updates given up after their last attempt failed.
pub const EXHAUSTED: &str = "pollgate_updates_exhausted_total";
/// Counter: updates that could not be decoded and were skipped.
pub const UNDECODABLE: &str = "pollgate_updates_undecodable_total";
/// Counter: updates held back by the pacer before they started.
pub const PACED: &str = "pollgate_updates_paced_total";
/// Counter: updates the transport took back before they started.
pub const REVOKED: &str = "pollgate_updates_revoked_total";
/// Counter: handlers dropped at the drain deadline (they did not finish).
pub const ABORTED: &str = "pollgate_updates_aborted_total";
/// Counter: updates the transport delivered again (fetched before, not confirmed).
pub const REDELIVERED: &str = "pollgate_updates_redelivered_total";
/// Counter: the transport's retries after transient failures, by `kind`
/// ([`Transport::retries`]).
pub const TRANSPORT_RETRIES: &str = "pollgate_transport_retries_total";
/// Histogram: how long each handler run took.
pub const HANDLER_DURATION_SECONDS: &str = "pollgate_handler_duration_seconds";
/// Histogram: how long an update waited in the gate for its permit.
pub const ADMISSION_WAIT_SECONDS: &str = "pollgate_admission_wait_seconds";

/// How often the backlog is asked of the transport when none is configured.
pub const DEFAULT_BACKLOG_INTERVAL: Duration = Duration::from_secs(15);

/// The histograms, recorded as updates run; taken when the runtime is built.
pub(crate) struct Histograms {
    pub(crate) handler_duration: Histogram,
    pub(crate) admission_wait: Histogram,
}

impl Histograms {
    pub(crate) fn register() -> Histograms {
        metrics::describe_histogram!(
            HANDLER_DURATION_SECONDS,
            Unit::Seconds,
            "How long each handler run took."
        );
        metrics::describe_histogram!(
            ADMISSION_WAIT_SECONDS,
            Unit::Seconds,
            "How long an update waited in the gate for its permit."
        );
        Histograms {
            handler_duration: metrics::histogram!(HANDLER_DURATION_SECONDS),
            admission_wait: metrics::histogram!(ADMISSION_WAIT_SECONDS),
        }
    }
}

/// The gauges and counters, set from one [`Stats`] snapshot per interval.
struct Exported {
    in_flight: Gauge,
    reserved: Gauge,
    waiting: Gauge,
    declared_bytes: Gauge,
    /// Registered when first known: a policy that sets no such limit (or reads no memory)
    /// exports no series, rather than a misleading 0.
    limit_slots: Lazy,
    limit_bytes: Lazy,
    resident: Lazy,
    target: Lazy,
    backlog: Lazy,
    fetches: Counter,
    fetched: Counter,
    admitted: Counter,
    handled: Counter,
    errors: Counter,
    panics: Counter,
    timeouts: Counter,
    retries: Counter,
    exhausted: Counter,
    undecodable: Counter,
    paced: Counter,
    revoked: Counter,
    aborted: Counter,
    redelivered: Counter,
}

impl Exported {
    fn register() -> Exported {
        use metrics::{describe_counter, describe_gauge};
        describe_gauge!(IN_FLIGHT, "Handlers running now.");
        describe_gauge!(RESERVED, "Updates in memory holding a reservation and no slot.");
        describe_gauge!(WAITING, "Updates waiting in the gate for a permit.");
        describe_gauge!(LIMIT_SLOTS, "The policy's limit on running handlers.");
        describe_gauge!(LIMIT_BYTES, Unit::Bytes, "The policy's limit on declared bytes.");
        describe_gauge!(
            DECLARED_BYTES,
            Unit::Bytes,
            "Declared bytes of running and reserved updates."
        );
        describe_gauge!(
            RESIDENT_MEMORY_BYTES,
            Unit::Bytes,
            "Resident memory as the policy last read it."
        );
        describe_gauge!(
            MEMORY_TARGET_BYTES,
            Unit::Bytes,
            "The resident memory the policy steers toward."
        );
        describe_gauge!(BACKLOG_UPDATES, "Updates waiting on the server, not yet fetched.");
        describe_counter!(FETCHES, "Fetch requests sent.");
        describe_counter!(FETCHED, "Updates fetched (first deliveries).");
        describe_counter!(ADMITTED, "Updates admitted to run.");
        describe_counter!(HANDLED, "Updates whose handler succeeded.");
        describe_counter!(
            HANDLER_FAILURES,
            "Handler runs that failed, by kind (error, panic, timeout)."
        );
        describe_counter!(HANDLER_RETRIES, "Failed handler runs followed by another attempt.");
        describe_counter!(EXHAUSTED, "Updates given up after their last attempt failed.");
        describe_counter!(UNDECODABLE, "Updates that could not be decoded and were skipped.");
        describe_counter!(PACED, "Updates held back by the pacer before they started.");
        describe_counter!(REVOKED, "Updates the transport took back before they started.");
        describe_counter!(ABORTED, "Handlers dropped at the drain deadline.");
        describe_counter!(REDELIVERED, "Updates the transport delivered again.");
        describe_counter!(
            TRANSPORT_RETRIES,
            "The transport's retries after transient failures, by kind."
        );
        Exported {
            in_flight: metrics::gauge!(IN_FLIGHT),
            reserved: metrics::gauge!(RESERVED),
            waiting: metrics::gauge!(WAITING),
            declared_bytes: metrics::gauge!(DECLARED_BYTES),
            limit_slots: Lazy::new(LIMIT_SLOTS),
            limit_bytes: Lazy::new(LIMIT_BYTES),
            resident: Lazy::new(RESIDENT_MEMORY_BYTES),
            target: Lazy::new(MEMORY_TARGET_BYTES),
            backlog: Lazy::new(BACKLOG_UPDATES),
            fetches: metrics::counter!(FETCHES),
            fetched: metrics::counter!(FETCHED),
            admitted: metrics::counter!(ADMITTED),
            handled: metrics::counter!(HANDLED),
            errors: metrics::counter!(HANDLER_FAILURES, "kind" => "error"),
            panics: metrics::counter!(HANDLER_FAILURES, "kind" => "panic"),
            timeouts: metrics::counter!(HANDLER_FAILURES, "kind" => "timeout"),
            retries: metrics::counter!(HANDLER_RETRIES),
            exhausted: metrics::counter!(EXHAUSTED),
            undecodable: metrics::counter!(UNDECODABLE),
            paced: metrics::counter!(PACED),
            revoked: metrics::counter!(REVOKED),
            aborted: metrics::counter!(ABORTED),
            redelivered: metrics::counter!(REDELIVERED),
        }
    }

    fn set(&mut self, s: &Stats) {
        self.in_flight.set(s.in_flight as f64);
        self.reserved.set(s.reserved as f64);
        self.waiting.set(s.waiting as f64);
        self.limit_slots.set(s.limit.slots.map(|n| n as f64));
        self.limit_bytes.set(s.limit.bytes.map(|n| n as f64));
        self.declared_bytes.set(s.bytes as f64);
        self.resident.set(s.memory.map(|m| m.rss_bytes as f64));
        self.target.set(s.memory_target.map(|n| n as f64));
        self.fetches.absolute(s.fetches);
        self.fetched.absolute(s.fetched);
        self.admitted.absolute(s.admitted);
        self.handled.absolute(s.completed);
        self.errors.absolute(s.failed);
        self.panics.absolute(s.panicked);
        self.timeouts.absolute(s.timed_out);
        self.retries.absolute(s.retried);
        self.exhausted.absolute(s.exhausted);
        self.undecodable.absolute(s.undecodable);
        self.paced.absolute(s.paced);
        self.revoked.absolute(s.revoked);
        self.aborted.absolute(s.aborted);
        self.redelivered.absolute(s.redelivered);
    }
}

/// A gauge registered the first time it has a value.
struct Lazy {
    name: &'static str,
    gauge: Option<Gauge>,
}

impl Lazy {
    fn new(name: &'static str) -> Lazy {
        Lazy { name, gauge: None }
    }

    fn set(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.gauge.get_or_insert_with(|| metrics::gauge!(self.name)).set(v);
        }
    }
}

/// Exports the runtime's counts every `every` and the transport's backlog every
/// `backlog_every` until `done`, then once more (the final counts).
pub(crate) async fn export_loop<T: Transport, H>(
    transport: &T,
    ctx: &Ctx<H>,
    every: Duration,
    backlog_every: Duration,
    done: &CancellationToken,
) {
    let mut exported = Exported::register();
    let mut transport_retries: Vec<(&'static str, Counter)> = Vec::new();
    let mut export = |exported: &mut Exported| {
        exported.set(&ctx.stats_handle().snapshot());
        for (kind, n) in transport.retries() {
            let counter = match transport_retries.iter().find(|(k, _)| *k == kind) {
                Some((_, c)) => c,
                None => {
                    transport_retries.push((kind, metrics::counter!(TRANSPORT_RETRIES, "kind" => kind)));
                    &transport_retries.last().expect("just pushed").1
                }
            };
            counter.absolute(n);
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_backlog = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.cancelled() => break,
        }
        export(&mut exported);
        if Instant::now() >= next_backlog {
            next_backlog = Instant::now() + backlog_every;
            // A slow answer must not hold back the other metrics: it gets one interval.
            let backlog = tokio::select! {
                b = tokio::time::timeout(every.max(Duration::from_secs(1)), transport.backlog()) => b.ok().flatten(),
                () = done.cancelled() => break,
            };
            exported.backlog.set(backlog.map(|n| n as f64));
        }
    }
    export(&mut exported);
}
