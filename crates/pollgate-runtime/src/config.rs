//! The runtime's knobs and their defaults, gathered by [`RuntimeBuilder`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pollgate_admission::{AdmissionPolicy, RssAdaptive};
use pollgate_core::{Transport, Update};
use tokio_util::sync::CancellationToken;

use crate::handler::Handler;
use crate::pace::{Pacer, SharedPacer};
use crate::retry::Retry;
use crate::runtime::Runtime;

/// When an update is acknowledged; `docs/architecture.md` ("Delivery modes and Telegram's
/// offset") compares the two modes.
///
/// # Examples
///
/// ```
/// use pollgate_core::{InMemoryTransport, Update};
/// use pollgate_runtime::{Delivery, Runtime};
///
/// assert_eq!(Delivery::default(), Delivery::Eager);
/// // Confirm an update to the server only once its handler finished:
/// let runtime = Runtime::builder(InMemoryTransport::new(), |_u: Update| async { Ok::<(), std::io::Error>(()) })
///     .delivery(Delivery::AtLeastOnce)
///     .build();
/// # drop(runtime);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Acknowledged as soon as it is fetched (Telegram: offset = last fetched + 1), as the
    /// common Bot API libraries do. Fetches pipeline freely; a crash loses the updates that
    /// were in flight.
    #[default]
    Eager,
    /// Acknowledged only once handled (Telegram: offset = the lowest update not yet
    /// finished). A crash loses nothing; updates in flight at the crash are handled again
    /// after the restart. With Telegram, concurrency is limited to the 100 ids from the
    /// oldest unfinished update on, so one very slow update limits the window.
    AtLeastOnce,
}

/// How the memory cost of an update is declared.
#[derive(Clone)]
pub(crate) enum Cost {
    Factor(f64),
    Fn(Arc<dyn Fn(&Update) -> u64 + Send + Sync>),
}

impl Cost {
    pub(crate) fn of(&self, update: &Update) -> u64 {
        match self {
            Cost::Factor(f) => ((update.size() as f64) * f).ceil() as u64,
            Cost::Fn(f) => f(update),
        }
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cost::Factor(x) => write!(f, "payload size × {x}"),
            Cost::Fn(_) => f.write_str("custom cost function"),
        }
    }
}

/// The default memory cost factor: an update's handler is assumed to hold 32 times the
/// update's JSON size.
pub const DEFAULT_COST_FACTOR: f64 = 32.0;
/// The default [`RuntimeBuilder::repoll_interval`]: one `getUpdates` a second while a
/// slow update holds the at-least-once offset back and the server has nothing new.
pub const DEFAULT_REPOLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) delivery: Delivery,
    pub(crate) ordered: bool,
    pub(crate) max_queued: usize,
    pub(crate) cost: Cost,
    pub(crate) poll_timeout: Duration,
    pub(crate) min_fetch: usize,
    pub(crate) fetch_coalesce: Duration,
    pub(crate) repoll_interval: Duration,
    pub(crate) drain_deadline: Duration,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) retry: Retry,
    pub(crate) pacer: Option<SharedPacer>,
    #[cfg(feature = "signal")]
    pub(crate) on_signals: bool,
    pub(crate) summary_every: Option<Duration>,
    pub(crate) metrics_every: Option<Duration>,
    pub(crate) backlog_every: Duration,
}

/// Builds a [`Runtime`]: see [`Runtime::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_admission::ByteBudget;
/// use pollgate_core::{InMemoryTransport, Update};
/// use pollgate_runtime::{Delivery, Retry, Runtime};
///
/// let transport = InMemoryTransport::new();
/// let runtime = Runtime::builder(transport, |_update: Update| async { Ok::<(), std::io::Error>(()) })
///     .policy(ByteBudget::new(64 << 20)) // 64 MiB of handlers at once
///     .cost_fn(|update| 4 * update.raw().len() as u64 + (256 << 10))
///     .delivery(Delivery::AtLeastOnce)
///     .ordered(true) // one update per chat at a time, in order
///     .retry(Retry::attempts(3))
///     .handler_timeout(Duration::from_secs(30))
///     .drain_deadline(Duration::from_secs(20))
///     .build();
/// assert_eq!(runtime.stats().snapshot().in_flight, 0);
/// ```
#[must_use]
pub struct RuntimeBuilder<T, H> {
    pub(crate) transport: T,
    pub(crate) handler: H,
    pub(crate) policy: Option<Arc<dyn AdmissionPolicy>>,
    pub(crate) shutdown: Option<CancellationToken>,
    pub(crate) config: Config,
}

impl<T: fmt::Debug, H> fmt::Debug for RuntimeBuilder<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("transport", &self.transport)
            .field("policy", &self.policy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: Transport, H: Handler> RuntimeBuilder<T, H> {
    pub(crate) fn new(transport: T, handler: H) -> Self {
        RuntimeBuilder {
            transport,
            handler,
            policy: None,
            shutdown: None,
            config: Config {
                delivery: Delivery::Eager,
                ordered: false,
                max_queued: 1024,
                cost: Cost::Factor(DEFAULT_COST_FACTOR),
                poll_timeout: Duration::from_secs(30),
                min_fetch: 64,
                fetch_coalesce: Duration::from_millis(1),
                repoll_interval: DEFAULT_REPOLL_INTERVAL,
                drain_deadline: Duration::from_secs(30),
                handler_timeout: None,
                retry: Retry::none(),
                pacer: None,
                #[cfg(feature = "signal")]
                on_signals: false,
                summary_every: None,
                metrics_every: None,
                backlog_every: crate::metrics::DEFAULT_BACKLOG_INTERVAL,
            },
        }
    }

    /// The admission policy (default: [`RssAdaptive::auto`], a memory budget that needs no
    /// number: its target is 90% of the cgroup memory limit where one is set, else half
    /// the machine's memory, and it logs what it found at info level).
    ///
    /// [`RssAdaptive::auto`]: pollgate_admission::RssAdaptive::auto
    pub fn policy(mut self, policy: impl AdmissionPolicy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// An admission policy shared with other runtimes or kept by the caller to resize it.
    pub fn shared_policy(mut self, policy: Arc<dyn AdmissionPolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// When updates are acknowledged (default [`Delivery::Eager`]).
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.config.delivery = delivery;
        self
    }

    /// Runs updates with the same ordering key one at a time, in update_id order
    /// (default off). Updates without a key are not ordered.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.config.ordered = ordered;
        self
    }

    /// The most updates that may wait in memory without running: behind busy keys (with
    /// [ordering](Self::ordered)), for their next [attempt](Self::retry) or for the time
    /// their [pacer](Self::pacer) gave them. Fetching
    /// pauses while that many wait (default 1024). They also count against a byte budget.
    ///
    /// # Panics
    /// If `max` is 0.
    pub fn max_queued(mut self, max: usize) -> Self {
        assert!(max > 0, "max_queued must be at least 1");
        self.config.max_queued = max;
        self
    }

    /// Declares each update's memory cost as its JSON size times `factor`
    /// (default [`DEFAULT_COST_FACTOR`]).
    ///
    /// # Panics
    /// If `factor` is negative or not finite.
    pub fn cost_factor(mut self, factor: f64) -> Self {
        assert!(
            factor.is_finite() && factor >= 0.0,
            "cost factor must be finite and >= 0"
        );
        self.config.cost = Cost::Factor(factor);
        self
    }

    /// Declares each update's memory cost with a function (bytes of working set its
    /// handler will hold).
    pub fn cost_fn(mut self, cost: impl Fn(&Update) -> u64 + Send + Sync + 'static) -> Self {
        self.config.cost = Cost::Fn(Arc::new(cost));
        self
    }

    /// The long-poll timeout of each fetch (default 30 s).
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.config.poll_timeout = timeout;
        self
    }

    /// While handlers run, do not fetch fewer than a quarter of the policy's current
    /// capacity (in flight plus admissible), capped at `min` updates, unless `coalesce`
    /// has passed since the policy first allowed a smaller fetch (defaults: 64 and 1 ms).
    /// With fast handlers this turns one fetch per completion into one fetch per batch
    /// of completions; it never lets more in than the policy admits, and never delays a
    /// fetch by more than `coalesce`. `min` 1 fetches as soon as anything fits.
    pub fn fetch_batching(mut self, min: usize, coalesce: Duration) -> Self {
        self.config.min_fetch = min.max(1);
        self.config.fetch_coalesce = coalesce;
        self
    }

    /// In at-least-once mode with cumulative acks (Telegram), how long to wait before
    /// polling again after the server showed it has nothing new while updates above the
    /// offset are unfinished (default [`DEFAULT_REPOLL_INTERVAL`]).
    ///
    /// Telegram answers a long poll at once while any update at or above the offset
    /// exists, and in at-least-once mode the unfinished updates are exactly that, so the
    /// server cannot hold the poll open: without a pause the loop would poll again
    /// immediately, with the same repeats, and look abusive. New updates that arrive
    /// meanwhile are seen within this interval; the wait ends early when nothing above
    /// the offset is unfinished any more (a real long poll is possible again). Eager
    /// delivery never waits here.
    ///
    /// # Panics
    /// If `interval` is zero (that would be the busy poll this setting exists to avoid).
    ///
    /// # Examples
    /// A bot whose handlers are often slow, that wants new updates seen within 300 ms:
    /// ```
    /// use std::time::Duration;
    /// use pollgate_core::{InMemoryTransport, Update};
    /// use pollgate_runtime::{Delivery, Runtime};
    ///
    /// let runtime = Runtime::builder(InMemoryTransport::new(), |_u: Update| async { Ok::<(), std::io::Error>(()) })
    ///     .delivery(Delivery::AtLeastOnce)
    ///     .repoll_interval(Duration::from_millis(300))
    ///     .build();
    /// # drop(runtime);
    /// ```
    pub fn repoll_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "repoll_interval must be above zero");
        self.config.repoll_interval = interval;
        self
    }

    /// The token that starts a graceful shutdown (default: a new one, see
    /// [`Runtime::shutdown_token`]).
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// How long a shutdown waits for running handlers before aborting them
    /// (default 30 s), counted from the shutdown token's cancellation.
    ///
    /// The final confirmation (an acknowledgement still in flight, the last
    /// acknowledgement and [`Transport::flush`](pollgate_core::Transport::flush)) gets
    /// what remains of the deadline once the handlers ended, but at least 2 s, and only
    /// 2 s once the run was aborted: the whole stop takes at most the deadline plus 2 s,
    /// so a supervisor's grace period above that never cuts a stop short. A confirmation
    /// cut short is reported in [`Summary::flush_error`](crate::Summary::flush_error).
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.config.drain_deadline = deadline;
        self
    }

    /// Starts the graceful shutdown on SIGTERM or SIGINT (Ctrl-C), the signals Docker,
    /// Kubernetes, systemd and a terminal stop a process with; elsewhere than on Unix, on
    /// Ctrl-C (default off). Works beside [`shutdown`](Self::shutdown): a signal cancels
    /// the same token.
    ///
    /// From the moment [`Runtime::run`] starts until it returns (or its future is dropped),
    /// the first signal cancels the shutdown token, logging `SIGTERM received: draining
    /// (deadline 30s)` at info level: fetching stops, running handlers get the
    /// [drain deadline](Self::drain_deadline), and the offset is confirmed. A second signal
    /// during the drain ends it at once, as the deadline would: running handlers are dropped
    /// and reported in [`Summary::unfinished`](crate::Summary::unfinished), and the final
    /// offset is still confirmed. So a supervisor's stop drains, and pressing Ctrl-C twice
    /// stops now.
    ///
    /// tokio never uninstalls a signal handler: once `run` has started, SIGTERM and SIGINT
    /// no longer end the process by themselves, also after `run` returns. Return from
    /// `main` when the run ends.
    ///
    /// Needs the `signal` feature (on by default). A handler that cannot be installed is
    /// logged as an error, and the runtime then stops only through its token.
    ///
    /// # Examples
    /// ```no_run
    /// use pollgate_core::{TelegramTransport, Update};
    /// use pollgate_runtime::Runtime;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let transport = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?;
    /// let summary = Runtime::builder(transport, |_update: Update| async { Ok::<(), std::io::Error>(()) })
    ///     .shutdown_on_signals()
    ///     .build()
    ///     .run()
    ///     .await?;
    /// println!("drained: {}, offset {:?} confirmed", summary.drained, summary.confirmed_offset);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "signal")]
    pub fn shutdown_on_signals(mut self) -> Self {
        self.config.on_signals = true;
        self
    }

    /// Cancels a handler that runs longer than `timeout` (default: no limit).
    ///
    /// The time counts from the moment the handler starts, with its permit granted: time
    /// spent waiting for a permit or parked behind a busy key does not count. A handler
    /// past it is dropped at once (cancelled at the point where it waits; work it spawned
    /// elsewhere goes on), its permit is released and reported to the policy as
    /// [`Outcome::Overload`](pollgate_admission::Outcome::Overload), it is counted in
    /// [`Stats::timed_out`](crate::Stats::timed_out) and logged as a warning with its
    /// update_id.
    ///
    /// The update then counts as finished, like one whose handler failed: with
    /// [ordering](Self::ordered) the next update of its key starts, and it is acknowledged
    /// past in both [`Delivery`] modes: in eager mode it was confirmed when fetched, and in
    /// at-least-once mode the offset moves past it too, so it is **not** delivered again.
    /// With [`retry`](Self::retry) a timed-out attempt is retried like a failed one, each
    /// attempt with its own timeout; after the last one the update goes to the transport
    /// as a failure (a spool keeps it as a dead letter).
    ///
    /// Without a timeout, a handler that never returns holds its permit for ever, keeps its
    /// key busy (its updates pile up to [`max_queued`](Self::max_queued)), and in
    /// at-least-once mode holds the offset, so at most the 99 updates after it can run.
    ///
    /// # Panics
    /// If `timeout` is zero.
    ///
    /// # Examples
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use pollgate_core::{InMemoryTransport, Update};
    /// use pollgate_runtime::{Delivery, Runtime};
    ///
    /// # async fn demo() {
    /// // A stuck downstream call must not hold the at-least-once offset for long.
    /// let runtime = Runtime::builder(InMemoryTransport::new(), |_update: Update| async {
    ///     std::future::pending::<()>().await; // a call that never answers
    ///     Ok::<(), std::io::Error>(())
    /// })
    /// .delivery(Delivery::AtLeastOnce)
    /// .handler_timeout(Duration::from_secs(60))
    /// .build();
    /// # }
    /// ```
    #[track_caller]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "handler_timeout must be greater than zero");
        self.config.handler_timeout = Some(timeout);
        self
    }

    /// Runs a failed handler again, up to `retry`'s attempts with backoff in between
    /// (default [`Retry::none`]: once). An error, a panic and a timeout all count as a
    /// failure; see [`Retry`] for what a waiting retry holds and how it keeps per-key
    /// order. After the last attempt the update is acknowledged past like any failed one
    /// and reported in [`Ack::failed`](pollgate_core::Ack::failed), so a transport with a
    /// dead-letter store (the spool) keeps it.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.config.retry = retry;
        self
    }

    /// Holds each update back, with only its cost reserved, until `pacer` says it may
    /// start (default: none). For work whose wait is known before it starts, such as a
    /// reply that must wait for its chat's next send slot: the update waits without a
    /// slot or a running handler, as an update parked behind its key does, counting
    /// against the byte budget and `max_queued`. See the [`pace`](crate::pace) module.
    pub fn pacer(mut self, pacer: impl Pacer) -> Self {
        self.config.pacer = Some(SharedPacer(Arc::new(pacer)));
        self
    }

    /// Logs a summary event (target `pollgate::summary`) this often (default never).
    pub fn summary_every(mut self, every: Duration) -> Self {
        self.config.summary_every = Some(every);
        self
    }

    /// Exports the runtime's gauges and counters through the [`metrics`](::metrics) facade
    /// this often, and records the handler-duration and admission-wait histograms (default
    /// off). Install the exporter's recorder before building. See the
    /// [`metrics`](crate::metrics) module for the names.
    ///
    /// # Panics
    /// If `every` is zero.
    pub fn export_metrics(mut self, every: Duration) -> Self {
        assert!(!every.is_zero(), "the metrics interval must be positive");
        self.config.metrics_every = Some(every);
        self
    }

    /// With [`export_metrics`](Self::export_metrics), how often to ask the transport for
    /// the backlog on the server ([`Transport::backlog`](pollgate_core::Transport::backlog):
    /// a `getWebhookInfo` request for Telegram); default
    /// [`DEFAULT_BACKLOG_INTERVAL`](crate::metrics::DEFAULT_BACKLOG_INTERVAL).
    ///
    /// # Panics
    /// If `every` is zero.
    pub fn backlog_interval(mut self, every: Duration) -> Self {
        assert!(!every.is_zero(), "the backlog interval must be positive");
        self.config.backlog_every = every;
        self
    }

    /// Builds the runtime.
    pub fn build(self) -> Runtime<T, H> {
        let policy = self
            .policy
            .unwrap_or_else(|| Arc::new(RssAdaptive::auto().build()) as Arc<dyn AdmissionPolicy>);
        Runtime::new(
            self.transport,
            self.handler,
            policy,
            self.shutdown.unwrap_or_default(),
            self.config,
        )
    }
}
