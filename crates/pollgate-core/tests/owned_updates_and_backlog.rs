//! Edges found in review: each `Update` owns its JSON (copied out of the body as it is
//! decoded); `GetUpdatesResponse::decode(&str)`; the new `Transport::retries` and
//! `Transport::backlog` (defaults, `Arc<T>` forwarding, Telegram's `getWebhookInfo`).
//! Paused time throughout; the Telegram tests talk to the in-process mock server.

use std::sync::Arc;
use std::time::Duration;

use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use pollgate_core::{
    Ack, AckModel, Batch, FetchRequest, GetUpdatesResponse, InMemoryTransport, TelegramTransport, Transport, Update,
};

fn decode(body: &str) -> Batch {
    match GetUpdatesResponse::decode(body, None).unwrap() {
        GetUpdatesResponse::Updates(b) => b,
        other => panic!("{other:?}"),
    }
}

/// The updates of one body are independent copies: each `raw()` is exactly the server's
/// text of that update (whitespace and escapes kept), `size()` is its length, none of
/// them points into the body, and the body can go while they live. Clones share.
#[tokio::test(start_paused = true)]
async fn decoded_updates_own_exactly_their_text() {
    let parts = [
        r#"{ "update_id" : 1 , "message":{"chat":{"id":5},"text":"h\u00e9 \"q\""} }"#,
        r#"{"update_\u0069d":2,"callback_query":{"id":"x","from":{"id":9}}}"#,
        "{\"update_id\":3,\n\t\"edited_message\":{\"chat\":{\"id\":-7}}}",
    ];
    let body = format!(r#"{{"ok":true,"result":[{}]}}"#, parts.join(" ,\n "));
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    let batch = decode(&body);
    drop(body);
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    assert_eq!(batch.updates.len(), 3);
    for (u, text) in batch.updates.iter().zip(parts) {
        assert_eq!(u.raw(), text);
        assert_eq!(u.size(), text.len());
        assert!(!range.contains(&(u.raw().as_ptr() as usize)), "points into the body");
        assert_eq!(u.receipt(), None);
    }
    assert_eq!(
        batch.updates.iter().map(Update::ordering_key).collect::<Vec<_>>(),
        [Some(5), Some(9), Some(-7)]
    );
    let copy = batch.updates[0].clone();
    assert!(
        std::ptr::eq(copy.raw().as_ptr(), batch.updates[0].raw().as_ptr()),
        "a clone shares"
    );
    let with = copy.with_receipt("r-1");
    assert_eq!((with.raw(), with.receipt().map(|r| &**r)), (parts[0], Some("r-1")));
    // Values parse from the owned text.
    let v = batch.updates[0].value().unwrap();
    assert_eq!(v["message"]["text"], "hé \"q\"");
}

/// A batch with an undecodable update in the middle: the others are still copied whole,
/// the failure keeps its excerpt and its id.
#[tokio::test(start_paused = true)]
async fn a_broken_update_between_good_ones() {
    let body = r#"{"ok":true,"result":[{"update_id":10,"message":{"chat":{"id":1}}},{"update_id":11,"message":{"chat":{"id":"x"}}},{"update_id":12}]}"#;
    let batch = decode(body);
    assert_eq!(batch.updates.iter().map(Update::id).collect::<Vec<_>>(), [10, 12]);
    assert_eq!(batch.failures.len(), 1);
    assert_eq!(batch.failures[0].update_id, 11);
    assert!(!batch.failures[0].id_inferred);
    assert_eq!(batch.updates[1].raw(), r#"{"update_id":12}"#);
}

/// The defaults: no retries, no backlog. `Arc<T>` forwards both.
#[tokio::test(start_paused = true)]
async fn defaults_and_arc_forwarding() {
    struct Plain;
    impl Transport for Plain {
        type Error = std::convert::Infallible;
        fn ack_model(&self) -> AckModel {
            AckModel::Cumulative { window: 1 }
        }
        async fn fetch(&self, _: FetchRequest) -> Result<Batch, Self::Error> {
            Ok(Batch::default())
        }
        async fn ack(&self, _: Ack<'_>) -> Result<(), Self::Error> {
            Ok(())
        }
        async fn flush(&self) -> Result<(), Self::Error> {
            Ok(())
        }
    }
    assert!(Plain.retries().is_empty());
    assert_eq!(Plain.backlog().await, None);
    let memory = Arc::new(InMemoryTransport::with_updates(
        (1..=4).map(|id| Update::from_json(&format!(r#"{{"update_id":{id}}}"#)).unwrap()),
    ));
    assert_eq!(Arc::clone(&memory).backlog().await, Some(4));
    assert_eq!(Transport::backlog(&memory).await, Some(4));
    assert!(Transport::retries(&memory).is_empty());
}

async fn server(updates: usize) -> MockServer {
    let s = MockServer::start(MockConfig::default()).await.unwrap();
    s.generate(&BacklogSpec {
        updates,
        text_bytes: 32,
        chats: 3,
        seed: 1,
        ..BacklogSpec::default()
    });
    s
}

/// Telegram's backlog is `getWebhookInfo`'s `pending_update_count`: everything not yet
/// confirmed (fetched or not), and it drops once the offset is confirmed. One request per
/// call, no retries counted.
#[tokio::test(start_paused = true)]
async fn telegram_backlog_counts_what_is_not_confirmed() {
    let s = server(30).await;
    let t = TelegramTransport::builder(s.token()).api_url(s.url()).build().unwrap();
    assert_eq!(t.backlog().await, Some(30));
    let batch = t
        .fetch(FetchRequest {
            limit: 10,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(batch.len(), 10);
    assert_eq!(t.backlog().await, Some(30), "fetched but not confirmed");
    t.ack(Ack {
        below: batch.last_id().map(|id| id + 1),
        receipts: &[],
        failed: &[],
    })
    .await
    .unwrap();
    t.flush().await.unwrap();
    assert_eq!(t.backlog().await, Some(20));
    assert!(t.retries().iter().all(|(_, n)| *n == 0), "{:?}", t.retries());
}

/// A one-connection-at-a-time HTTP server that reads each request and answers with
/// `answer` (or never answers, when `None`). Returns its base URL.
async fn canned(answer: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                // Read the head and the body (content-length) of one request.
                loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if seen.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                match answer {
                    Some(body) => {
                        let status = if body.contains("\"ok\":true") {
                            "200 OK"
                        } else {
                            "429 Too Many Requests"
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(response.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    url
}

const TOKEN: &str = "123456:AAEsecretsecretsecretsecretsecret";

/// A backlog request answered 429 (retry after 30 s) is `None` at once: no retry, no
/// wait, no retry counted.
#[tokio::test(start_paused = true)]
async fn telegram_backlog_failure_is_none_without_retry() {
    let url = canned(Some(
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 30","parameters":{"retry_after":30}}"#,
    ))
    .await;
    let t = TelegramTransport::builder(TOKEN).api_url(url).build().unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(t.backlog().await, None);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(t.retries().iter().all(|(_, n)| *n == 0), "{:?}", t.retries());
    assert_eq!(t.stats().requests, 1);
}

/// A `getWebhookInfo` answer without `pending_update_count` is `None`, not 0.
#[tokio::test(start_paused = true)]
async fn telegram_backlog_without_the_field_is_none() {
    let url = canned(Some(r#"{"ok":true,"result":{"url":""}}"#)).await;
    let t = TelegramTransport::builder(TOKEN).api_url(url).build().unwrap();
    assert_eq!(t.backlog().await, None);
}

/// A server that holds the backlog request: it ends at the HTTP margin, it does not hang.
///
#[tokio::test(start_paused = true)]
async fn telegram_backlog_is_bounded_by_the_http_margin() {
    let url = canned(None).await;
    let t = TelegramTransport::builder(TOKEN)
        .api_url(url)
        .http_timeout_margin(Duration::from_secs(3))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(60), t.backlog())
        .await
        .expect("bounded");
    assert_eq!(got, None);
    assert!(started.elapsed() <= Duration::from_secs(4), "{:?}", started.elapsed());
}
