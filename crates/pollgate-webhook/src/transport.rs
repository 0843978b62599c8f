//! [`WebhookTransport`]: the listener as a [`Transport`] the runtime drives.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use parking_lot::Mutex;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::builder::WebhookBuilder;
use crate::queue::Shared;
use crate::receive::receive;
use crate::stats::WebhookStats;

/// A webhook listener that the runtime drives as a [`Transport`]: each fetch takes the
/// requests waiting for admission, each acknowledgement answers its request 200.
///
/// Acknowledgements are individual ([`AckModel::Individual`]): under eager delivery the
/// runtime acknowledges an update when it takes it, so Telegram gets its 200 once the
/// update is admitted; under at-least-once, when the handler finished. Dropping the
/// transport (the runtime does at the end of `run`) answers every request still waiting,
/// or taken and not acknowledged, with 503 and `Retry-After` — Telegram delivers those
/// again — and stops the listener.
///
/// `fetch` never fails: a listener cannot lose its server. `Error` is therefore
/// [`Infallible`].
///
/// # Examples
///
/// ## Listen where Telegram posts
///
/// ```no_run
/// use pollgate_webhook::WebhookTransport;
///
/// # async fn demo() -> std::io::Result<()> {
/// let transport = WebhookTransport::builder()
///     .secret("s3cr3t-token")
///     .bind("0.0.0.0:8443".parse().unwrap())
///     .await?;
/// let handle = transport.handle(); // stats after the runtime took the transport
/// # let _ = (transport, handle);
/// # Ok(()) }
/// ```
///
/// ## One request, from Telegram's side and the runtime's
///
/// Telegram's POST is answered only once the runtime has taken its update and
/// acknowledged it:
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Ack, FetchRequest, Transport};
/// use pollgate_webhook::{SECRET_HEADER, WebhookTransport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = WebhookTransport::builder().secret("s3cr3t-token").bind("127.0.0.1:0".parse()?).await?;
/// let url = format!("http://{}/", transport.local_addr());
/// let telegram = tokio::spawn(async move {
///     let post = reqwest::Client::new().post(url).header(SECRET_HEADER, "s3cr3t-token");
///     let answer = post.body(r#"{"update_id":1,"message":{"chat":{"id":7}}}"#).send().await;
///     answer.map(|answer| answer.status().as_u16())
/// });
/// let request = FetchRequest { limit: 10, timeout: Duration::from_secs(5) };
/// let batch = transport.fetch(request).await?; // the runtime admits it
/// assert_eq!(batch.updates[0].id(), 1);
/// let receipts: Vec<_> = batch.updates.iter().filter_map(|u| u.receipt().cloned()).collect();
/// transport.ack(Ack { below: None, receipts: &receipts, failed: &[] }).await?;
/// assert_eq!(telegram.await??, 200);
/// assert_eq!(transport.handle().stats().answered, 1);
/// # Ok(()) }
/// ```
pub struct WebhookTransport {
    handle: WebhookHandle,
    /// The listener's task: awaited (boundedly) by `flush`, so that the 503s of the close
    /// are written before `run` returns.
    server: Mutex<Option<JoinHandle<()>>>,
}

/// How long [`Transport::flush`] waits for the listener to write its last answers.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A handle on a [`WebhookTransport`]'s listener that outlives the runtime's ownership of
/// the transport: its address, its counters, and a way to close it.
///
/// # Examples
///
/// Closing answers the requests still waiting 503 with `Retry-After`: Telegram delivers
/// their updates again later, to whichever instance listens then.
///
/// ```
/// use std::time::Duration;
/// use pollgate_webhook::WebhookTransport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = WebhookTransport::builder().bind("127.0.0.1:0".parse()?).await?;
/// let handle = transport.handle();
/// let url = format!("http://{}/", handle.local_addr());
/// let post = reqwest::Client::new().post(url).body(r#"{"update_id":1}"#).send();
/// let telegram = tokio::spawn(post);
/// while handle.waiting() == 0 {
///     tokio::time::sleep(Duration::from_millis(1)).await; // until the update waits
/// }
/// handle.close(); // the runtime stopped without taking it
/// let answer = telegram.await??;
/// assert_eq!(answer.status().as_u16(), 503);
/// assert!(answer.headers().contains_key("retry-after"));
/// assert_eq!((handle.stats().closed, handle.waiting()), (1, 0));
/// # drop(transport);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WebhookHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<Notify>,
}

impl WebhookTransport {
    /// Starts configuring a webhook listener.
    pub fn builder() -> WebhookBuilder {
        WebhookBuilder::default()
    }

    pub(crate) fn serve(config: WebhookBuilder, listener: TcpListener) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let path = config.path.clone();
        let shared = Arc::new(Shared::new(config));
        let stop = Arc::new(Notify::new());
        let app = Router::new()
            .route(&path, post(receive))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let shutdown = async move { stop.notified().await };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    error!(error = %e, "webhook listener stopped");
                }
            }
        });
        debug!(%addr, path, "webhook listener started");
        Ok(Self {
            handle: WebhookHandle { shared, addr, stop },
            server: Mutex::new(Some(server)),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// A handle for the listener's counters and address.
    pub fn handle(&self) -> WebhookHandle {
        self.handle.clone()
    }
}

impl WebhookHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the listener's counters.
    pub fn stats(&self) -> WebhookStats {
        self.shared.counters.snapshot()
    }

    /// Requests waiting for admission now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// Answers every open request 503 with `Retry-After` and stops the listener: it
    /// accepts no new connection, a request that still reaches it on an open one is
    /// answered 503 the same way, and its task ends once the open requests are answered.
    /// Idempotent; dropping the transport does the same.
    pub fn close(&self) {
        self.shared.close();
        self.stop.notify_one();
    }
}

impl Transport for WebhookTransport {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        AckModel::Individual {
            window: self.handle.shared.config.window,
        }
    }

    /// Waits up to `request.timeout` for a request, then takes every waiting one up to
    /// `request.limit`. Once the listener is closed ([`WebhookHandle::close`]) nothing
    /// arrives any more: each fetch waits its whole timeout and returns nothing, like a
    /// long poll of an empty queue (stop the runtime with its shutdown token).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: requests leave the queue only in the synchronous step that returns
    /// them.
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        let shared = &self.handle.shared;
        let limit = request.limit.clamp(1, shared.config.window);
        let deadline = tokio::time::Instant::now() + request.timeout;
        loop {
            let arrived = shared.arrived.notified();
            if shared.is_closed() {
                tokio::time::sleep_until(deadline).await;
                return Ok(Batch::default());
            }
            let updates = shared.take(limit);
            if !updates.is_empty() {
                return Ok(Batch {
                    updates,
                    ..Batch::default()
                });
            }
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Batch::default()),
            }
        }
    }

    /// What the source given to [`WebhookBuilder::backlog_from`] reads (for Telegram,
    /// `getWebhookInfo`'s `pending_update_count`); `None` without one.
    ///
    /// # Cancel safety
    ///
    /// As the source's `backlog`: the built-in transports' are cancel safe.
    async fn backlog(&self) -> Option<u64> {
        match &self.handle.shared.config.backlog {
            Some(source) => source.read().await,
            None => None,
        }
    }

    /// Answers the requests of `ack.receipts` with 200.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it completes without awaiting.
    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        self.handle.shared.acknowledge(ack.receipts);
        Ok(())
    }

    /// Nothing to make durable: Telegram keeps every update it was not answered 200 for.
    /// The runtime flushes once, at the end of `run`: the listener closes (what still waits
    /// is answered 503 with `Retry-After`) and `flush` waits up to 2 s for those answers to
    /// be written, so a program that exits right after `run` does not reset them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the listener is closed either way; only the wait is cut short.
    async fn flush(&self) -> Result<(), Infallible> {
        self.handle.close();
        let server = self.server.lock().take();
        if let Some(server) = server
            && tokio::time::timeout(CLOSE_GRACE, server).await.is_err()
        {
            tracing::warn!("webhook listener still had open requests 2 s after closing");
        }
        Ok(())
    }
}

impl Drop for WebhookTransport {
    fn drop(&mut self) {
        // The server task ends by itself once the open requests are answered.
        self.handle.close();
    }
}

impl fmt::Debug for WebhookTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTransport")
            .field("addr", &self.handle.addr)
            .field("config", &self.handle.shared.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WebhookHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookHandle")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
