//! Edges found in review: error messages no longer carry their cause (`Display` is the error's
//! own sentence; the cause only through `source()`), so a log line that prints an error
//! with `%e` instead of `ErrorChain` loses the reason. The webhook's 400 path for a body
//! that is not an update logs `%e` of an `EnvelopeError`.
//!
//! Paused time, one thread: the server and the raw client run on the test's runtime, and
//! the log is captured by a thread-local subscriber.

mod common;

use std::time::Duration;

use common::Capture;
use pollgate_webhook::WebhookTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Posts `body` over a raw connection (no client-side timers), returns the status line.
async fn post_raw(addr: std::net::SocketAddr, body: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A POST whose body is JSON but not an update (`{}`: no `update_id`) is answered 400 and
/// logged as "webhook request without an update" with `error = %e`. The `EnvelopeError`'s
/// Display is now just "undecodable update": the parser's reason (missing field
/// `update_id`, or where the JSON broke) is gone from the log line. The 200 path for an
/// undecodable update two lines above uses `ErrorChain`.
/// Failed before its fix (the logged error is `undecodable update`).
#[tokio::test(start_paused = true)]
async fn the_400_log_for_a_non_update_keeps_the_parsers_reason() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let transport = WebhookTransport::builder()
        .max_wait(Duration::from_secs(3600))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), post_raw(transport.local_addr(), "{}"))
        .await
        .expect("answered");
    assert!(status.contains("400"), "{status}");
    let lines = capture.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("webhook request without an update"))
        .unwrap_or_else(|| panic!("no 400 log line: {lines:?}"));
    assert!(
        line.contains("update_id") || line.contains("missing field"),
        "the logged error lost its cause: {line}"
    );
}

/// For comparison, the 200 path (an undecodable update whose id is readable) logs the
/// whole chain.
#[tokio::test(start_paused = true)]
async fn the_200_log_for_an_undecodable_update_keeps_the_chain() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let transport = WebhookTransport::builder()
        .max_wait(Duration::from_secs(3600))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let body = r#"{"update_id":5,"message":{"chat":{"id":"x"}}}"#;
    let status = tokio::time::timeout(Duration::from_secs(60), post_raw(transport.local_addr(), body))
        .await
        .expect("answered");
    assert!(status.contains("200"), "{status}");
    let lines = capture.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("undecodable update from the webhook"))
        .unwrap_or_else(|| panic!("no log line: {lines:?}"));
    assert!(line.contains("undecodable update 5: "), "{line}");
}
