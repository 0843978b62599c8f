//! The bot token never appears in an error's Display, Debug or source chain, nor in the
//! transport's Debug output: not for a 401, not for a refused connection (reqwest's
//! errors carry the URL, which holds the token), not for an HTML page echoing the path.

use std::error::Error as _;
use std::time::Duration;

use mock_bot_api::{MockConfig, MockServer};
use pollgate_core::{BODY_EXCERPT_BYTES, Backoff, FetchRequest, TelegramError, TelegramTransport, Transport};

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
    let body = "<!DOCTYPE html><html><body><h1>Welcome to Airport Wi-Fi</h1><form>Accept</form></body></html>";
    let addr = serve_fixed("200 OK", "text/html", body.to_owned()).await;
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

/// A token that starts before the excerpt's cut and ends after it must not leak its start:
/// the body is redacted first, then cut.
#[tokio::test]
async fn a_token_crossing_the_excerpt_cut_leaks_no_prefix() {
    for start in [480, 490, 500, 505, 511] {
        let mut body = String::from("<html><body><pre>");
        body.push_str(&"x".repeat(start - body.len()));
        assert!(start < BODY_EXCERPT_BYTES && start + token().len() > BODY_EXCERPT_BYTES);
        body.push_str(&token());
        body.push_str(" echoed back</pre></body></html>");
        let addr = serve_fixed("502 Bad Gateway", "text/html", body).await;
        let err = quick(&format!("http://{addr}")).fetch(REQ).await.unwrap_err();
        let TelegramError::RetriesExhausted { last, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(matches!(**last, TelegramError::Http { status: 502, .. }), "{last:?}");
        let text = full_text(&err);
        assert_no_token_prefix(&text);
        assert!(text.contains("xxxxxxxx"), "the excerpt is still kept: {text}");
    }
}

/// serde's messages quote string values (`invalid type: string "..."`), so a body that puts
/// the token where another type is expected must not leak it through the parser's error.
#[tokio::test]
async fn a_parser_error_quoting_the_token_is_redacted() {
    let bodies = [
        format!(r#"{{"ok":true,"result":"{}"}}"#, token()),
        format!(r#"{{"ok":"{}"}}"#, token()),
        format!(r#"{{"ok":false,"error_code":"{}"}}"#, token()),
    ];
    for (body, everything) in bodies.iter().map(|b| (b, false)).chain([(&bodies[0], true)]) {
        // `everything`: the body answers the webhook check (`getWebhookInfo`) too.
        let addr = if everything {
            serve_everything("200 OK", "application/json", body.clone()).await
        } else {
            serve_fixed("200 OK", "application/json", body.clone()).await
        };
        let err = quick(&format!("http://{addr}")).fetch(REQ).await.unwrap_err();
        let TelegramError::RetriesExhausted { last, .. } = &err else {
            panic!("{err:?}");
        };
        let TelegramError::InvalidJson { source, .. } = &**last else {
            panic!("{body}: {last:?}");
        };
        let message = source.to_string();
        assert!(
            message.contains("invalid type") && message.contains("<redacted>"),
            "the parser's message is kept, redacted: {message}"
        );
        assert_eq!(
            message.contains("WebhookInfo"),
            everything,
            "which call failed: {message}"
        );
        assert_clean(&full_text(&err));
    }
}

/// An undecodable update is returned in the batch and logged by the runtime: its excerpt
/// (cut at a few hundred bytes) and its parser error are redacted too.
#[tokio::test]
async fn an_undecodable_update_quoting_the_token_is_redacted() {
    let server = MockServer::start(MockConfig {
        token: token(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // The excerpt of an undecodable update is cut at 256 bytes: tokens start just before.
    for start in [200_usize, 240, 250] {
        let id = server.stats().next_update_id;
        let head = format!(r#"{{"update_id":{id},"message":{{"text":""#);
        let padding = "p".repeat(start - head.len() - r#"","chat":{"id":""#.len());
        let raw = format!(r#"{head}{padding}","chat":{{"id":"{}"}}}}}}"#, token());
        assert_eq!(raw.find(&token()), Some(start));
        server.push_raw(id, raw);
    }
    let batch = quick(&server.url()).fetch(REQ).await.unwrap();
    assert_eq!(batch.failures.len(), 3, "{batch:?}");
    for failure in &batch.failures {
        let text = format!("{} {:?} {:?}", failure.error, failure.error, failure.raw);
        assert_no_token_prefix(&text);
        assert_clean(&text);
    }
}

/// Serves every `getUpdates` call (and anything but `getWebhookInfo`, which reports no
/// webhook) the same answer.
async fn serve_fixed(status: &'static str, content_type: &'static str, body: String) -> std::net::SocketAddr {
    serve(status, content_type, body, false).await
}

/// Serves every request the same answer, `getWebhookInfo` included.
async fn serve_everything(status: &'static str, content_type: &'static str, body: String) -> std::net::SocketAddr {
    serve(status, content_type, body, true).await
}

async fn serve(
    status: &'static str,
    content_type: &'static str,
    body: String,
    webhook_info_too: bool,
) -> std::net::SocketAddr {
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
            let (status, content_type, body) = if !webhook_info_too && request_line.contains("/getWebhookInfo ") {
                (
                    "200 OK",
                    "application/json",
                    r#"{"ok":true,"result":{"url":""}}"#.to_owned(),
                )
            } else {
                (status, content_type, body.clone())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    addr
}

/// Not even the first 10 characters of the token (its bot id and 3 secret characters).
fn assert_no_token_prefix(text: &str) {
    assert!(!text.contains(&token()[..10]), "a token prefix leaked: {text}");
    assert_clean(text);
}
