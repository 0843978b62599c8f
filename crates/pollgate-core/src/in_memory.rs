//! An in-memory transport with `getUpdates` semantics, for tests, examples and benchmarks.
//!
//! [`InMemoryTransport`] holds a backlog of updates and serves it as Telegram would: a
//! fetch returns at most `limit` updates from the acknowledged offset on, and an
//! acknowledgement drops everything below it. When nothing is pending, a fetch waits
//! for new updates up to its timeout (on the tokio clock, so paused-time tests run
//! instantly). It records what it was asked, so tests can check the runtime's requests.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::convert::Infallible;
use tokio::sync::Notify;

use crate::transport::{Ack, AckModel, Batch, FetchRequest, Transport};
use crate::update::Update;

/// A cumulative, Telegram-like transport over an in-memory backlog.
///
/// Enabled by the `test-util` feature.
///
/// # Examples
///
/// A test that checks what a consumer asked for, and what it confirmed:
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Ack, FetchRequest, InMemoryTransport, Transport, Update};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let updates = (1..=3).map(|id| Update::from_json(&format!(r#"{{"update_id":{id}}}"#)).unwrap());
/// let transport = InMemoryTransport::with_updates(updates);
/// let request = FetchRequest { limit: 2, timeout: Duration::from_secs(30) };
/// let batch = transport.fetch(request).await.unwrap();
/// assert_eq!(batch.last_id(), Some(2));
/// transport.ack(Ack { below: Some(3), receipts: &[], failed: &[] }).await.unwrap();
/// assert_eq!((transport.offset(), transport.pending()), (Some(3), 1));
/// assert_eq!(transport.requests(), [request]);
///
/// // Nothing pending: a fetch waits its whole timeout (instantly, on paused time).
/// transport.ack(Ack { below: Some(4), receipts: &[], failed: &[] }).await.unwrap();
/// assert!(transport.fetch(request).await.unwrap().is_empty());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryTransport {
    state: Mutex<State>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<Update>,
    offset: Option<i64>,
    requests: Vec<FetchRequest>,
    served: u64,
    flushes: u64,
}

impl InMemoryTransport {
    /// An empty transport.
    pub fn new() -> InMemoryTransport {
        InMemoryTransport::default()
    }

    /// A transport whose backlog is `updates` (they must be in increasing id order).
    pub fn with_updates(updates: impl IntoIterator<Item = Update>) -> InMemoryTransport {
        let t = InMemoryTransport::new();
        t.push(updates);
        t
    }

    /// Appends updates to the backlog and wakes a waiting fetch.
    pub fn push(&self, updates: impl IntoIterator<Item = Update>) {
        self.state.lock().pending.extend(updates);
        self.arrived.notify_waiters();
    }

    /// Updates not yet acknowledged.
    pub fn pending(&self) -> usize {
        let s = self.state.lock();
        let offset = s.offset.unwrap_or(i64::MIN);
        s.pending.iter().filter(|u| u.id() >= offset).count()
    }

    /// The acknowledged offset.
    pub fn offset(&self) -> Option<i64> {
        self.state.lock().offset
    }

    /// Every fetch request received so far, in order.
    pub fn requests(&self) -> Vec<FetchRequest> {
        self.state.lock().requests.clone()
    }

    /// Updates served so far, redeliveries included.
    pub fn served(&self) -> u64 {
        self.state.lock().served
    }

    /// How many times `flush` was called.
    pub fn flushes(&self) -> u64 {
        self.state.lock().flushes
    }

    fn take(&self, limit: usize) -> Vec<Update> {
        let mut s = self.state.lock();
        let offset = s.offset.unwrap_or(i64::MIN);
        while s.pending.front().is_some_and(|u| u.id() < offset) {
            s.pending.pop_front();
        }
        let out: Vec<Update> = s.pending.iter().take(limit.clamp(1, 100)).cloned().collect();
        s.served += out.len() as u64;
        out
    }
}

impl Transport for InMemoryTransport {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        AckModel::Cumulative { window: 100 }
    }

    /// What was pushed and not yet acknowledged ([`pending`](Self::pending)).
    async fn backlog(&self) -> Option<u64> {
        Some(self.pending() as u64)
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        self.state.lock().requests.push(request);
        let deadline = tokio::time::Instant::now() + request.timeout;
        loop {
            let arrived = self.arrived.notified();
            let updates = self.take(request.limit);
            if !updates.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Batch {
                    updates,
                    ..Batch::default()
                });
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Batch::default());
            }
        }
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        if let Some(below) = ack.below {
            let mut s = self.state.lock();
            s.offset = Some(s.offset.map_or(below, |o| o.max(below)));
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Infallible> {
        self.state.lock().flushes += 1;
        Ok(())
    }
}
