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

use std::future::Future;
use std::pin::Pin;
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

/// The gauges and counters, moved by one [`Stats`] snapshot per interval.
///
/// Counters are incremented by what changed since the last snapshot, never set: two
/// runtimes in one process (a bot that builds a new one after a transport failure, or two
/// bots side by side) add up, and a count read a moment early (`completed` is derived
/// from the gate's releases and may lag a failure by a moment) never goes backwards. The
/// gauges of what a runtime holds (in flight, reserved, waiting, declared bytes, limits)
/// move by differences too, so they sum over the process's runtimes and fall back when a
/// run ends; the process's memory and the server's backlog are set.
struct Exported {
    in_flight: Additive,
    reserved: Additive,
    waiting: Additive,
    declared_bytes: Additive,
    /// Registered when first known: a policy that sets no such limit (or reads no memory)
    /// exports no series, rather than a misleading 0.
    limit_slots: Lazy<Additive>,
    limit_bytes: Lazy<Additive>,
    resident: Lazy<Gauge>,
    target: Lazy<Gauge>,
    backlog: Lazy<Gauge>,
    fetches: Delta,
    fetched: Delta,
    admitted: Delta,
    handled: Delta,
    errors: Delta,
    panics: Delta,
    timeouts: Delta,
    retries: Delta,
    exhausted: Delta,
    undecodable: Delta,
    paced: Delta,
    revoked: Delta,
    aborted: Delta,
    redelivered: Delta,
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
        describe_gauge!(BACKLOG_UPDATES, "Updates waiting on the server.");
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
            in_flight: Additive::new(metrics::gauge!(IN_FLIGHT)),
            reserved: Additive::new(metrics::gauge!(RESERVED)),
            waiting: Additive::new(metrics::gauge!(WAITING)),
            declared_bytes: Additive::new(metrics::gauge!(DECLARED_BYTES)),
            limit_slots: Lazy::new(|| Additive::new(metrics::gauge!(LIMIT_SLOTS))),
            limit_bytes: Lazy::new(|| Additive::new(metrics::gauge!(LIMIT_BYTES))),
            resident: Lazy::new(|| metrics::gauge!(RESIDENT_MEMORY_BYTES)),
            target: Lazy::new(|| metrics::gauge!(MEMORY_TARGET_BYTES)),
            backlog: Lazy::new(|| metrics::gauge!(BACKLOG_UPDATES)),
            fetches: Delta::new(metrics::counter!(FETCHES)),
            fetched: Delta::new(metrics::counter!(FETCHED)),
            admitted: Delta::new(metrics::counter!(ADMITTED)),
            handled: Delta::new(metrics::counter!(HANDLED)),
            errors: Delta::new(metrics::counter!(HANDLER_FAILURES, "kind" => "error")),
            panics: Delta::new(metrics::counter!(HANDLER_FAILURES, "kind" => "panic")),
            timeouts: Delta::new(metrics::counter!(HANDLER_FAILURES, "kind" => "timeout")),
            retries: Delta::new(metrics::counter!(HANDLER_RETRIES)),
            exhausted: Delta::new(metrics::counter!(EXHAUSTED)),
            undecodable: Delta::new(metrics::counter!(UNDECODABLE)),
            paced: Delta::new(metrics::counter!(PACED)),
            revoked: Delta::new(metrics::counter!(REVOKED)),
            aborted: Delta::new(metrics::counter!(ABORTED)),
            redelivered: Delta::new(metrics::counter!(REDELIVERED)),
        }
    }

    fn set(&mut self, s: &Stats) {
        self.in_flight.set(s.in_flight as f64);
        self.reserved.set(s.reserved as f64);
        self.waiting.set(s.waiting as f64);
        self.declared_bytes.set(s.bytes as f64);
        if let Some(n) = s.limit.slots {
            self.limit_slots.get().set(n as f64);
        }
        if let Some(n) = s.limit.bytes {
            self.limit_bytes.get().set(n as f64);
        }
        if let Some(m) = s.memory {
            self.resident.get().set(m.rss_bytes as f64);
        }
        if let Some(n) = s.memory_target {
            self.target.get().set(n as f64);
        }
        self.fetches.to(s.fetches);
        self.fetched.to(s.fetched);
        self.admitted.to(s.admitted);
        self.handled.to(s.completed);
        self.errors.to(s.failed);
        self.panics.to(s.panicked);
        self.timeouts.to(s.timed_out);
        self.retries.to(s.retried);
        self.exhausted.to(s.exhausted);
        self.undecodable.to(s.undecodable);
        self.paced.to(s.paced);
        self.revoked.to(s.revoked);
        self.aborted.to(s.aborted);
        self.redelivered.to(s.redelivered);
    }

    /// Takes back what this runtime added to the gauges that sum over runtimes.
    fn retire(&mut self) {
        for g in [
            &mut self.in_flight,
            &mut self.reserved,
            &mut self.waiting,
            &mut self.declared_bytes,
        ] {
            g.set(0.0);
        }
        for g in [&mut self.limit_slots, &mut self.limit_bytes] {
            if let Some(g) = g.0.as_mut() {
                g.set(0.0);
            }
        }
    }
}

/// A counter moved to a cumulative count by increments: never backwards.
struct Delta {
    counter: Counter,
    last: u64,
}

impl Delta {
    fn new(counter: Counter) -> Delta {
        Delta { counter, last: 0 }
    }

    fn to(&mut self, now: u64) {
        if now > self.last {
            self.counter.increment(now - self.last);
            self.last = now;
        }
    }
}

/// This runtime's share of a gauge that sums over the process's runtimes.
struct Additive {
    gauge: Gauge,
    last: f64,
}

impl Additive {
    fn new(gauge: Gauge) -> Additive {
        Additive { gauge, last: 0.0 }
    }

    fn set(&mut self, now: f64) {
        if now != self.last {
            self.gauge.increment(now - self.last);
            self.last = now;
        }
    }
}

/// A series registered the first time it has a value.
struct Lazy<G>(Option<G>, fn() -> G);

impl<G> Lazy<G> {
    fn new(make: fn() -> G) -> Lazy<G> {
        Lazy(None, make)
    }

    fn get(&mut self) -> &mut G {
        let make = self.1;
        self.0.get_or_insert_with(make)
    }
}

/// Exports the runtime's counts every `every` and asks the transport for its backlog
/// every `backlog_every` until `done`, then once more (the final counts), and takes back
/// its share of the summed gauges. A backlog request runs beside the ticks, one at a time,
/// for at most `backlog_every`: a slow server delays no other metric.
pub(crate) async fn export_loop<T: Transport, H>(
    transport: &T,
    ctx: &Ctx<H>,
    every: Duration,
    backlog_every: Duration,
    done: &CancellationToken,
) {
    let mut exported = Exported::register();
    let mut transport_retries: Vec<(&'static str, Delta)> = Vec::new();
    let mut export = |exported: &mut Exported| {
        exported.set(&ctx.stats_handle().snapshot());
        for (kind, n) in transport.retries() {
            let i = match transport_retries.iter().position(|(k, _)| *k == kind) {
                Some(i) => i,
                None => {
                    let counter = metrics::counter!(TRANSPORT_RETRIES, "kind" => kind);
                    transport_retries.push((kind, Delta::new(counter)));
                    transport_retries.len() - 1
                }
            };
            transport_retries[i].1.to(n);
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_backlog = Instant::now();
    let mut backlog: Option<Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                export(&mut exported);
                let now = Instant::now();
                if backlog.is_none() && now >= next_backlog {
                    // Far enough to mean never, for an interval too large to add.
                    next_backlog = now.checked_add(backlog_every).unwrap_or(now + FAR);
                    let limit = backlog_every.min(FAR);
                    backlog = Some(Box::pin(async move {
                        tokio::time::timeout(limit, transport.backlog()).await.ok().flatten()
                    }));
                }
            }
            n = async { backlog.as_mut().expect("polled only when set").await }, if backlog.is_some() => {
                backlog = None;
                if let Some(n) = n {
                    exported.backlog.get().set(n as f64);
                }
            }
            () = done.cancelled() => break,
        }
    }
    export(&mut exported);
    exported.retire();
}

/// What "never" is here: about thirty years.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
