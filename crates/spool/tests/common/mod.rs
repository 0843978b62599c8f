//! Shared pieces of the spool tests: a temp directory, the mock server with a backlog, a
//! Telegram transport with fast retries, and waiting on a state.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use pollgate_core::{Backoff, TelegramTransport};

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
