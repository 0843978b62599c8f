//! The bot token never appears in an error's Display, Debug or source chain, nor in the
//! transport's Debug output: not for a 401, not for a refused connection (reqwest's
//! errors carry the URL, which holds the token), not for an HTML page echoing the path.

use std::error::Error as _;
use std::time::Duration;

use mock_bot_api::{MockConfig, MockServer};
use pollgate_core::{Backoff, FetchRequest, TelegramError, TelegramTransport, Transport};

const SECRET: &str = "AAHsuper-secret-token-material";

fn token() -> String {
    format!("424242:{SECRET}")
}

fn full_text(e: &TelegramError) -> String {
    let mut text = format!("{e} | {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" | {s} | {s:?}"));
        source = s.source();
    }
    text
}

fn assert_clean(text: &str) {
    assert!(!text.contains(SECRET), "token leaked: {text}");
    assert!(!text.contains(&token()), "token leaked: {text}");
}

fn quick(url: &str) -> TelegramTransport {
    TelegramTransport::builder(token())
        .api_url(url)
        .backoff(Backoff {
            initial: Duration::from_millis(1),
            factor: 1.0,
            max: Duration::from_millis(1),
            max_retries: Some(2),
        })
        .build()
        .unwrap()
}

const REQ: FetchRequest = FetchRequest {
    limit: 10,
    timeout: Duration::ZERO,
};

#[tokio::test]
async fn debug_of_the_transport_hides_the_token() {
    let t = quick("http://127.0.0.1:9");
    let debug = format!("{t:?} {:?}", t.token());
    assert_clean(&debug);
    assert!(debug.contains("424242"), "the bot id is public and useful: {debug}");
}

#[tokio::test]
async fn a_rejected_token_error_hides_it() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let err = quick(&server.url()).fetch(REQ).await.unwrap_err();
    assert!(matches!(err, TelegramError::Unauthorized { .. }), "{err:?}");
    assert_clean(&full_text(&err));
}

#[tokio::test]
async fn a_refused_connection_error_hides_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = quick(&format!("http://{addr}")).fetch(REQ).await.unwrap_err();
    assert!(
        matches!(&err, TelegramError::RetriesExhausted { last, .. } if matches!(**last, TelegramError::Network(_))),
        "{err:?}"
    );
    assert_clean(&full_text(&err));
}

#[tokio::test]
async fn an_html_page_that_echoes_the_path_is_redacted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let request_line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let body = format!("<html><body>404: {request_line} was not found</body></html>");
            let reply = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    let err = quick(&format!("http://{addr}")).fetch(REQ).await.unwrap_err();
    assert!(matches!(err, TelegramError::NotFound { .. }), "{err:?}");
    let text = full_text(&err);
    assert!(
        text.contains("<redacted>"),
        "the echoed path should be kept, redacted: {text}"
    );
    assert_clean(&text);
}

#[tokio::test]
async fn a_captive_portal_page_with_status_200_is_an_invalid_response_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let body = "<!DOCTYPE html><html><body><h1>Welcome to Airport Wi-Fi</h1><form>Accept</form></body></html>";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    // Retried like any transient failure, then reported with the page's start kept.
    let err = quick(&format!("http://{addr}")).fetch(REQ).await.unwrap_err();
    let TelegramError::RetriesExhausted { last, attempts } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*attempts, 3);
    assert!(matches!(**last, TelegramError::InvalidJson { .. }), "{last:?}");
    let text = full_text(&err);
    assert!(
        text.contains("Airport Wi-Fi"),
        "the body excerpt helps debugging: {text}"
    );
    assert_clean(&text);
}
