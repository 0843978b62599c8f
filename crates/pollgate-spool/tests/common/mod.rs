//! Shared pieces of the spool tests: a temp directory, the mock server with a backlog, a
//! Telegram transport with fast retries, and waiting on a state.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use pollgate_core::{Ack, Backoff, FetchRequest, HandlerFailure, TelegramTransport, Transport};
use pollgate_spool::SpoolTransport;

/// A fresh directory under the system's temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pollgate-spool-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A started mock server with `updates` updates of about `text_bytes` over 20 chats.
pub async fn server_with(updates: usize, text_bytes: usize) -> MockServer {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    server.generate(&BacklogSpec {
        updates,
        text_bytes,
        chats: 20,
        seed: 3,
        ..mock_bot_api::BacklogSpec::default()
    });
    server
}

/// A Telegram transport pointed at `server`, retrying fast.
pub fn telegram(server: &MockServer) -> TelegramTransport {
    TelegramTransport::builder(server.token())
        .api_url(server.url())
        .backoff(Backoff {
            initial: Duration::from_millis(1),
            factor: 2.0,
            max: Duration::from_millis(5),
            max_retries: None,
        })
        .build()
        .unwrap()
}

/// Waits (bounded) until `cond` holds; the bound only turns a hang into a failure.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Leases every spooled entry (one fetch) and acknowledges them all, the ids in `failed` as
/// failures after 3 attempts with the error `broken {id}` (so the spool keeps them as dead
/// letters). Returns the ids leased.
pub async fn finish_with_failures<T: Transport>(spool: &SpoolTransport<T>, failed: &[i64]) -> Vec<i64> {
    let batch = spool
        .fetch(FetchRequest {
            limit: 100,
            timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
    let receipts: Vec<std::sync::Arc<str>> = batch.updates.iter().filter_map(|u| u.receipt().cloned()).collect();
    let failures: Vec<HandlerFailure> = failed
        .iter()
        .map(|&id| HandlerFailure::new(id, id.to_string().into(), 3, format!("broken {id}")))
        .collect();
    spool
        .ack(Ack {
            below: None,
            receipts: &receipts,
            failed: &failures,
        })
        .await
        .unwrap();
    batch.updates.iter().map(|u| u.id()).collect()
}
