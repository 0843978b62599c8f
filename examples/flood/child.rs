//! One policy run, in its own process so its peak RSS is its own.
//!
//! Prints JSON lines on stdout: `{"event":"progress",...}` every 100 ms, then
//! `{"event":"result",...}`. Dies at once when its parent does (stdin closes), as a
//! process killed with the parent would. On SIGTERM or SIGINT (forwarded by the parent)
//! it drains, confirms the offset and prints its result for what it handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pollgate::transport::{TelegramTransport, Transport};
use pollgate::{
    AdmissionPolicy, Barrier, ByteBudget, Delivery, Fixed, Retry, RssAdaptive, RunError, Runtime, Summary, all_of,
};
use pollgate_spool::SpoolTransport;

use crate::cli::{Args, DeliveryArg, PolicySpec, TransportArg};
use crate::policy_spec::Unbounded;
use crate::proc_mem::rss_and_peak;
use crate::process::{emit, on_stdin_close, run_main};
use crate::report::RunResult;
use crate::token_bucket::TokenBucket;
use crate::workload::{Recorder, Workload, handle};

/// Runs the child; returns the process exit code.
pub(crate) fn main(args: Args) -> u8 {
    // Die at once when the parent does, as a process killed with it would.
    on_stdin_close(|| std::process::exit(137));
    run_main("flood", run(args), |result| {
        let mut v = serde_json::to_value(&result).expect("serialisable");
        v["event"] = "result".into();
        emit(v);
        0
    })
}

async fn run(args: Args) -> Result<RunResult, String> {
    let spec = args.policies[0];
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr, &spec.to_string())?;
    }
    let work = args.work_bytes();
    let workload = Workload {
        bytes: work as usize,
        hold: Duration::from_millis(args.work_ms),
        slow_frac: args.slow_frac,
        slow_x: args.slow_x,
        fail_frac: args.fail_frac,
        poison_frac: args.poison_frac,
    };
    let recorder = Recorder::new(workload, args.updates, args.ordered, args.ledger.as_deref())
        .map_err(|e| format!("cannot open the ledger: {e}"))?;
    // The Bot API: polled, or told where to push (an outside sender needs neither).
    let telegram = match (&args.api_url, &args.token) {
        (Some(api_url), Some(token)) => Some(
            TelegramTransport::builder(token.clone())
                .api_url(api_url.clone())
                .build()
                .map_err(|e| format!("cannot build the transport: {}", pollgate::transport::ErrorChain(&e)))?,
        ),
        (Some(_), None) => return Err("--child needs --token".into()),
        _ => None,
    };
    let (baseline, _) = rss_and_peak();

    let (policy, bound, budget): (Arc<dyn AdmissionPolicy>, u64, Option<u64>) = match spec {
        PolicySpec::Unbounded => (Arc::new(Unbounded), args.updates as u64, None),
        PolicySpec::Fixed(c) => (Arc::new(Fixed::new(c)), c as u64, None),
        PolicySpec::Barrier(n) => (Arc::new(Barrier::new(n)), n as u64, None),
        PolicySpec::Bytes(b) => (Arc::new(ByteBudget::new(b).expected_cost(work)), b / work, Some(b)),
        PolicySpec::Rss(b) => (
            Arc::new(RssAdaptive::builder(b).expected_cost(work).build()),
            b.saturating_sub(baseline) / work,
            Some(b),
        ),
        PolicySpec::Auto => {
            let policy = RssAdaptive::auto().expected_cost(work).build();
            let target = policy.target();
            (Arc::new(policy), target.saturating_sub(baseline) / work, Some(target))
        }
        PolicySpec::Custom { budget, rate } => (
            Arc::new(all_of(
                ByteBudget::new(budget).expected_cost(work),
                TokenBucket::new(rate, (rate / 10.0).max(1.0)),
            )),
            budget / work,
            Some(budget),
        ),
    };
    let delivery = match args.delivery {
        DeliveryArg::Eager => Delivery::Eager,
        DeliveryArg::AtLeastOnce => Delivery::AtLeastOnce,
    };
    let retry = Retry::attempts(args.attempts).initial_backoff(Duration::from_millis(args.retry_ms));
    let run = Drive {
        policy,
        work,
        delivery,
        retry,
        ordered: args.ordered,
        recorder: Arc::clone(&recorder),
        target: args.updates as u64,
        metrics: args.metrics_addr.is_some(),
    };
    let mut spool_peak_bytes = None;
    let mut spool_dead_lettered = None;
    let (summary, drain, signalled, fetch_calls, webhook_429) = match args.transport {
        TransportArg::Polling if args.spool.is_some() => {
            let transport = telegram.ok_or("--child needs --api-url")?;
            let dir = args.spool.clone().unwrap_or_default();
            // The bot's id names the source, so a restart trusts the spool's offset.
            let bot = args
                .token
                .as_deref()
                .and_then(|t| t.split(':').next())
                .unwrap_or_default();
            drop(transport);
            let spool = open_spool(&dir, bot, || {
                TelegramTransport::builder(args.token.clone().unwrap_or_default())
                    .api_url(args.api_url.clone().unwrap_or_default())
                    .build()
                    .map_err(|e| format!("cannot build the transport: {}", pollgate::transport::ErrorChain(&e)))
            })
            .await?;
            let handle = spool.handle();
            let (summary, drain, signalled) = run.drive(spool).await?;
            spool_peak_bytes = Some(handle.stats().peak_bytes);
            spool_dead_lettered = Some(handle.stats().dead_lettered);
            let fetches = handle.stats().batches;
            (summary, drain, signalled, fetches, None)
        }
        TransportArg::Polling => {
            let transport = telegram.ok_or("--child needs --api-url")?;
            let (summary, drain, signalled) = run.drive(transport).await?;
            let fetches = summary.stats.fetches;
            (summary, drain, signalled, fetches, None)
        }
        TransportArg::Webhook => {
            // Shared: it sets the webhook, reads the backlog gauge and removes the webhook.
            let telegram = telegram.map(Arc::new);
            let webhook = webhook::start(&args, telegram.as_ref()).await?;
            let handle = webhook.transport.handle();
            let (summary, drain, signalled) = run.drive(webhook.transport).await?;
            webhook::finish(telegram.as_deref(), webhook.registered).await;
            let stats = handle.stats();
            (
                summary,
                drain,
                signalled,
                stats.requests,
                Some(stats.rejected_full + stats.expired),
            )
        }
    };
    let (_, peak) = rss_and_peak();
    let r = recorder.summary();
    let drain_s = drain.as_secs_f64();
    let bound = bound.max(1) as f64;
    // The ideal time for the work done: the whole backlog, or what a stopped run handled.
    let done = if signalled { r.unique } else { args.updates as u64 } as f64;
    let mut ideal_s = done * r.mean_nominal_ms / 1e3 / bound;
    if let PolicySpec::Custom { rate, .. } = spec {
        ideal_s = ideal_s.max(done / rate);
    }
    Ok(RunResult {
        policy: spec.to_string(),
        updates: args.updates as u64,
        handled: r.unique,
        duplicates: r.duplicates,
        order_violations: r.order_violations,
        drain_s,
        peak_rss_bytes: peak,
        baseline_rss_bytes: baseline,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        ideal_s,
        efficiency: if drain_s > 0.0 { ideal_s / drain_s } else { 0.0 },
        fetch_calls,
        max_in_flight: summary.stats.max_in_flight as u64,
        concurrency_bound: bound as u64,
        budget_bytes: budget,
        failed: summary.stats.failed + summary.stats.panicked,
        undecodable: summary.stats.undecodable,
        delivery: format!("{delivery:?}"),
        ordered: args.ordered,
        text_bytes: args.text_bytes as u64,
        chats: args.chats as u64,
        work_kib: args.work_kib,
        work_ms: args.work_ms,
        slow_frac: args.slow_frac,
        slow_x: args.slow_x,
        mean_handler_ms: r.mean_nominal_ms,
        webhook_429,
        retried: summary.stats.retried,
        // With a spool, what its dead-letter table took; else what failed every attempt.
        dead_lettered: spool_dead_lettered.unwrap_or(summary.stats.exhausted),
        spool_peak_bytes,
    })
}

/// One run of the runtime over some transport, watched until the backlog is handled, the
/// source went quiet for 5 s, or a signal stopped it.
struct Drive {
    policy: Arc<dyn AdmissionPolicy>,
    work: u64,
    delivery: Delivery,
    retry: Retry,
    ordered: bool,
    recorder: Arc<Recorder>,
    target: u64,
    metrics: bool,
}

/// Installs the Prometheus exporter: the text format at `http://{addr}/metrics`, histograms
/// with buckets (not summaries), each series labelled with the policy.
fn serve_metrics(addr: std::net::SocketAddr, policy: &str) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const SECONDS: &[f64] = &[
        0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .add_global_label("policy", policy)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.install())
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}

impl Drive {
    /// The summary, the drain time, and whether a signal ended the run.
    async fn drive<T: Transport>(self, transport: T) -> Result<(Summary, Duration, bool), String> {
        let Drive {
            policy,
            work,
            delivery,
            retry,
            ordered,
            recorder,
            target,
            metrics,
        } = self;
        let rec = Arc::clone(&recorder);
        let runtime = Runtime::builder(transport, move |u| handle(Arc::clone(&rec), u))
            .shared_policy(policy)
            .cost_fn(move |_| work)
            .delivery(delivery)
            .ordered(ordered)
            .retry(retry)
            .poll_timeout(Duration::from_secs(1))
            .shutdown_on_signals();
        let runtime = if metrics {
            runtime
                .export_metrics(Duration::from_millis(500))
                .backlog_interval(Duration::from_secs(2))
        } else {
            runtime
        };
        let runtime = runtime.build();
        let stats = runtime.stats();
        let shutdown = runtime.shutdown_token();

        let started = Instant::now();
        let mut run = tokio::spawn(runtime.run());
        let (mut last_fetched, mut last_arrival) = (0, Instant::now());
        let mut last_progress = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut ended = None;
        let drain = loop {
            tokio::select! {
                _ = tick.tick() => {}
                result = &mut run => {
                    ended = Some(result);
                    break started.elapsed();
                }
            }
            let handled = recorder.handled();
            let s = stats.snapshot();
            // Done: every update handled, or failed on every attempt.
            if handled + s.exhausted >= target {
                break started.elapsed();
            }
            if s.fetched != last_fetched {
                (last_fetched, last_arrival) = (s.fetched, Instant::now());
            } else if last_arrival.elapsed() >= Duration::from_secs(5) && s.in_flight == 0 && s.reserved == 0 {
                break started.elapsed();
            }
            if last_progress.elapsed() >= Duration::from_millis(100) {
                last_progress = Instant::now();
                emit(serde_json::json!({
                    "event": "progress",
                    "handled": handled,
                    "in_flight": s.in_flight,
                    "rss_bytes": rss_and_peak().0,
                }));
            }
        };
        shutdown.cancel();
        let signalled = ended.is_some();
        let result = match ended {
            Some(result) => result,
            None => run.await,
        };
        match result {
            Ok(Ok(summary)) => Ok((summary, drain, signalled)),
            Ok(Err(RunError::Transport { source, .. })) => Err(format!(
                "transport failed: {}",
                pollgate::transport::ErrorChain(&source)
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the runtime task failed: {e}")),
        }
    }
}

/// `--transport webhook`: the listener, and the embedded server told to push to it.
mod webhook {
    use std::sync::Arc;

    use pollgate::transport::{SetWebhook, TelegramTransport};
    use pollgate_webhook::WebhookTransport;

    use crate::cli::Args;

    /// The listener of one run, and whether this run registered it with the server.
    pub(super) struct Listener {
        pub(super) transport: WebhookTransport,
        pub(super) registered: bool,
    }

    /// Binds the listener (`--webhook-listen`, else a free loopback port) and, with a Bot
    /// API server to talk to, sets the webhook there: max_connections 100, a fresh secret,
    /// and the backlog gauge read from its `getWebhookInfo`.
    pub(super) async fn start(args: &Args, telegram: Option<&Arc<TelegramTransport>>) -> Result<Listener, String> {
        let addr = args
            .webhook_listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let secret = match (std::env::var("TELEGRAM_WEBHOOK_SECRET"), telegram) {
            (Ok(secret), _) => Some(secret),
            (Err(_), Some(_)) => Some(std::iter::repeat_with(fastrand::alphanumeric).take(32).collect()),
            (Err(_), None) => None,
        };
        let mut builder = WebhookTransport::builder().path("/");
        if let Some(secret) = &secret {
            builder = builder.secret(secret.clone());
        }
        if let Some(telegram) = telegram {
            builder = builder.backlog_from(Arc::clone(telegram));
        }
        let transport = builder
            .bind(addr)
            .await
            .map_err(|e| format!("cannot listen for the webhook on {addr}: {e}"))?;
        let Some(telegram) = telegram else {
            return Ok(Listener {
                transport,
                registered: false,
            });
        };
        let mut params = SetWebhook::new(format!("http://{}/", transport.local_addr())).max_connections(100);
        if let Some(secret) = secret {
            params = params.secret_token(secret);
        }
        telegram
            .set_webhook(&params)
            .await
            .map_err(|e| format!("setWebhook failed: {}", pollgate::transport::ErrorChain(&e)))?;
        Ok(Listener {
            transport,
            registered: true,
        })
    }

    /// Removes a webhook this run set, keeping what is pending.
    pub(super) async fn finish(telegram: Option<&TelegramTransport>, registered: bool) {
        if let (Some(telegram), true) = (telegram, registered)
            && let Err(e) = telegram.delete_webhook(false).await
        {
            tracing::warn!(error = %pollgate::transport::ErrorChain(&e), "deleteWebhook failed");
        }
    }
}

/// Opens the spool, waiting up to 10 s for a previous instance (killed, still exiting) to
/// let go of the file. `source` builds the transport for each attempt (a failed open
/// drops the one it was given).
async fn open_spool(
    dir: &std::path::Path,
    bot: &str,
    source: impl Fn() -> Result<TelegramTransport, String>,
) -> Result<SpoolTransport<TelegramTransport>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SpoolTransport::builder(dir).source(bot).open(source()?) {
            Ok(spool) => return Ok(spool),
            Err(e) if e.is_locked() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                // The whole chain: the store's own reason is the part that helps.
                let mut message = format!("cannot open the spool: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                return Err(message);
            }
        }
    }
}
