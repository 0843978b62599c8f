//! The server handle: binding, routing, live mode, the webhook sender and shutdown.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{BacklogSpec, LiveSpec, MockConfig, WebhookSpec};
use crate::faults::{Fault, FaultRates};
use crate::generator::{self, Generator};
use crate::state::Shared;
use crate::stats::Stats;
use crate::{api, control, reply, webhook};

/// How long [`MockServer::shutdown`] waits for open connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running mock Bot API server on 127.0.0.1.
///
/// Clients call `{url}/bot{token}/{method}`. The handle steers the server directly (push
/// updates, inject faults, read stats); other processes use the HTTP control endpoints
/// described in the crate docs. Share it between tasks with an `Arc`: every method but
/// [`shutdown`](Self::shutdown) takes `&self`. Dropping the handle stops the server (and
/// its webhook sender) too, without waiting.
pub struct MockServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    live: Option<JoinHandle<()>>,
    sender: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `127.0.0.1:{config.port}`, generates the configured backlog and spawns the
    /// server, the webhook sender (idle until a webhook is set; `config.webhook` sets one
    /// at once) and the live generator, if configured, on the current tokio runtime.
    ///
    /// # Errors
    /// When the port cannot be bound.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        let addr = listener.local_addr()?;
        let mut shared = Shared::new(config.token, config.max_poll_timeout, config.faults, config.seed);
        shared.send_limiter = config
            .send_limits
            .map(|limits| parking_lot::Mutex::new(crate::send_limits::SendLimiter::new(limits)));
        let shared = Arc::new(shared);
        if let Some(spec) = config.backlog {
            let shared = Arc::clone(&shared);
            tokio::task::spawn_blocking(move || generator::generate_into(&shared, &spec))
                .await
                .map_err(io::Error::other)?;
        }
        let app = router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = listener.tap_io(|tcp| {
            // Small JSON answers must not wait for Nagle's algorithm.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("mock-bot-api: cannot set TCP_NODELAY: {e}");
            }
        });
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!("mock-bot-api: server stopped: {e}");
            }
        });
        if let Some(spec) = config.webhook {
            shared.set_webhook(spec, false);
        }
        let sender = tokio::spawn(webhook::run(Arc::clone(&shared), config.webhook_timing));
        let live = config.live.and_then(|live| spawn_live(Arc::clone(&shared), live));
        tracing::debug!(%addr, "mock-bot-api: listening");
        Ok(MockServer {
            shared,
            addr,
            stop: Some(stop),
            server: Some(server),
            live,
            sender: Some(sender),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token clients must use.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Appends updates and wakes long polls. Each payload is an `Update` without
    /// `update_id` (e.g. `{"message":{...}}`); ids are assigned in order and returned.
    pub fn push_updates(&self, payloads: impl IntoIterator<Item = Value>) -> Vec<i64> {
        self.shared.push_bodies(payloads.into_iter().map(|p| p.to_string()))
    }

    /// Appends a complete update text, stored and served verbatim, under `id`.
    ///
    /// # Panics
    /// If `id` is below [`Stats::next_update_id`]: ids must increase.
    pub fn push_raw(&self, id: i64, raw: String) {
        self.shared.push_raw(id, raw);
    }

    /// Appends `spec.updates` generated updates and returns their id range (`next..=next-1`
    /// when `spec.updates` is 0). Runs on the calling thread: for large backlogs while
    /// clients poll, call it from `spawn_blocking`.
    pub fn generate(&self, spec: &BacklogSpec) -> RangeInclusive<i64> {
        generator::generate_into(&self.shared, spec)
    }

    /// Schedules `fault` for a coming `getUpdates` call: scheduled faults form a FIFO and
    /// each call takes at most one, before random rates apply.
    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault);
    }

    /// The next `calls` `getUpdates` calls get 409 (before any scheduled fault).
    pub fn inject_conflict_window(&self, calls: usize) {
        self.shared.inject_conflict_window(calls);
    }

    /// Replaces the random fault probabilities.
    pub fn set_fault_rates(&self, rates: FaultRates) {
        self.shared.set_fault_rates(rates);
    }

    /// Sets the bot's webhook URL, without secret and with 40 connections, as `setWebhook`
    /// with only `url` does; an empty `url` removes it. While a webhook is set, the pending
    /// updates are POSTed to it, `getUpdates` gets 409 and `getWebhookInfo` reports the
    /// URL, until `deleteWebhook` or `set_webhook("")`. Any URL is accepted here, HTTPS or
    /// not. See [`set_webhook_spec`](Self::set_webhook_spec) for the other parameters.
    pub fn set_webhook(&self, url: impl Into<String>) {
        self.shared.set_webhook(WebhookSpec::new(url), false);
    }

    /// Sets the bot's webhook with a secret token and a connection limit, as `setWebhook`
    /// does (`max_connections` is clamped to 1..=100); an empty `spec.url` removes it.
    /// Setting a webhook again, even the same one, restarts every waiting retry at once.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(server: mock_bot_api::MockServer) {
    /// use mock_bot_api::WebhookSpec;
    ///
    /// // Push the backlog to a bot listening on loopback, three requests at a time.
    /// server.set_webhook_spec(WebhookSpec {
    ///     secret_token: Some("s3cr3t".to_owned()),
    ///     max_connections: 3,
    ///     ..WebhookSpec::new("http://127.0.0.1:8443/hook")
    /// });
    /// # }
    /// ```
    pub fn set_webhook_spec(&self, spec: WebhookSpec) {
        self.shared.set_webhook(spec, false);
    }

    /// The webhook URL; empty when no webhook is set.
    pub fn webhook_url(&self) -> String {
        self.shared.webhook_url()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Drops the backlog and the webhook, and zeroes the confirmed offset, stats, fault
    /// rates, scheduled faults and recorded messages. Update ids keep increasing.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Updates not yet confirmed.
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }

    /// The parameters of every `sendMessage` call received (the latest 100 000), oldest first.
    pub fn sent_messages(&self) -> Vec<Value> {
        self.shared.sent_messages()
    }

    /// Stops the webhook sender (dropping its requests in flight), stops accepting
    /// connections, answers waiting long polls (with what is pending, or nothing) and waits
    /// up to 5 s for open connections to finish.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        let Some(mut server) = self.server.take() else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
            server.abort();
        }
    }

    fn signal_stop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_waiters();
        self.shared.webhook_wake.notify_one();
        if let Some(live) = self.live.take() {
            live.abort();
        }
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/stats", get(control::stats))
        .route("/control/backlog", post(control::backlog))
        .route("/control/push", post(control::push))
        .route("/control/faults", post(control::faults))
        .route("/control/inject", post(control::inject))
        .route("/control/conflict_window", post(control::conflict_window))
        .route("/control/reset", post(control::reset))
        .route("/control/sent", get(control::sent))
        .route("/{bot_token}/{method}", get(api::handle).post(api::handle))
        .fallback(|| async { reply::not_found() })
        .with_state(shared)
}

/// Pushes generated updates at `live.rate_per_sec` until `live.spec.updates` were pushed
/// (0 = forever) or the server stops.
fn spawn_live(shared: Arc<Shared>, live: LiveSpec) -> Option<JoinHandle<()>> {
    let rate = live.rate_per_sec;
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut generator = Generator::new(&live.spec);
        let limit = live.spec.updates as u64;
        let mut interval = tokio::time::interval(Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.05)));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut pushed = 0u64;
        loop {
            interval.tick().await;
            if shared.closing.load(Ordering::SeqCst) {
                break;
            }
            let mut due = (start.elapsed().as_secs_f64() * rate) as u64;
            if limit > 0 {
                due = due.min(limit);
            }
            let n = due.saturating_sub(pushed).min(100_000);
            if n > 0 {
                let bodies: Vec<String> = (0..n).map(|_| generator.next_body()).collect();
                shared.push_bodies(bodies);
                pushed += n;
            }
            if limit > 0 && pushed >= limit {
                break;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<MockServer>();
        is_send_sync::<MockConfig>();
        is_send_sync::<Stats>();
        is_send_sync::<WebhookSpec>();
    }
}
