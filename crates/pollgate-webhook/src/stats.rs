//! What the webhook listener saw: every answer it gave, counted by reason.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of the webhook listener (a snapshot from [`WebhookHandle::stats`](crate::WebhookHandle::stats)).
///
/// # Examples
///
/// A request without the secret is refused before its body is read, and counted:
///
/// ```
/// use pollgate_webhook::WebhookTransport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = WebhookTransport::builder().secret("s3cr3t-token").bind("127.0.0.1:0".parse()?).await?;
/// let url = format!("http://{}/", transport.local_addr());
/// let answer = reqwest::Client::new().post(url).body(r#"{"update_id":1}"#).send().await?;
/// assert_eq!(answer.status().as_u16(), 401);
/// let stats = transport.handle().stats();
/// assert_eq!((stats.requests, stats.rejected_secret, stats.taken), (1, 1, 0));
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Requests that reached the webhook path with POST.
    pub requests: u64,
    /// Updates the runtime took (handed out by a fetch).
    pub taken: u64,
    /// Requests answered 200 after their update was acknowledged.
    pub answered: u64,
    /// Refused with 401: the secret header was missing or wrong.
    pub rejected_secret: u64,
    /// Answered 429 because [`max_waiting`](crate::WebhookBuilder::max_waiting) requests
    /// were already waiting.
    pub rejected_full: u64,
    /// Answered 429 after waiting [`max_wait`](crate::WebhookBuilder::max_wait) without
    /// being taken.
    pub expired: u64,
    /// Answered 413: the body was over the limit.
    pub too_large: u64,
    /// Answered 400: the body was not JSON with an integer `update_id`.
    pub bad_request: u64,
    /// Updates with a readable `update_id` whose envelope could not be decoded: answered
    /// 200 after an error log.
    pub undecodable: u64,
    /// Requests the client gave up (closed the connection) while they waited; their
    /// update was never taken.
    pub abandoned: u64,
    /// Answered 503: the transport closed (the runtime stopped) before the update was
    /// taken or acknowledged.
    pub closed: u64,
    /// The most requests waiting for admission at once.
    pub waiting_peak: u64,
}

/// The live counters behind [`WebhookStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) taken: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) rejected_secret: AtomicU64,
    pub(crate) rejected_full: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) bad_request: AtomicU64,
    pub(crate) undecodable: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) waiting_peak: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WebhookStats {
        let get = |c: &AtomicU64| c.load(Relaxed);
        WebhookStats {
            requests: get(&self.requests),
            taken: get(&self.taken),
            answered: get(&self.answered),
            rejected_secret: get(&self.rejected_secret),
            rejected_full: get(&self.rejected_full),
            expired: get(&self.expired),
            too_large: get(&self.too_large),
            bad_request: get(&self.bad_request),
            undecodable: get(&self.undecodable),
            abandoned: get(&self.abandoned),
            closed: get(&self.closed),
            waiting_peak: get(&self.waiting_peak),
        }
    }
}
