//! `WebhookBuilder::backlog_from` at its edges, from its review: a hanging source never
//! piles up readings, and the source's bot token reaches no `Debug` string and no log line
//! (every event and span field at TRACE, hyper's included, against a fake API that echoes
//! the request path in every kind of answer).

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::Capture;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, TelegramTransport, Transport, Update};
use pollgate_runtime::Runtime;
use pollgate_webhook::WebhookTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backlog source whose readings never answer; counts the readings alive at once.
#[derive(Debug, Default)]
struct Hanging {
    started: AtomicU64,
    alive: Arc<AtomicUsize>,
    peak: AtomicUsize,
}

struct Alive(Arc<AtomicUsize>);
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Transport for Hanging {
    type Error = Infallible;
    fn ack_model(&self) -> AckModel {
        AckModel::Cumulative { window: 1 }
    }
    async fn fetch(&self, _request: FetchRequest) -> Result<Batch, Infallible> {
        unreachable!("only backlog is called")
    }
    async fn ack(&self, _ack: Ack<'_>) -> Result<(), Infallible> {
        unreachable!("only backlog is called")
    }
    async fn flush(&self) -> Result<(), Infallible> {
        unreachable!("only backlog is called")
    }
    async fn backlog(&self) -> Option<u64> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let _alive = Alive(Arc::clone(&self.alive));
        std::future::pending().await
    }
}

/// A source that hangs: the runtime's exporter keeps one reading at a time (each cut at
/// the backlog interval), direct callers that give up drop theirs, and nothing is left
/// once the run ended.
#[tokio::test(start_paused = true)]
async fn ok_a_hanging_source_never_piles_up_readings() {
    let source = Arc::new(Hanging::default());
    let transport = WebhookTransport::builder()
        .backlog_from(Arc::clone(&source))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Direct callers with their own timeout.
    for _ in 0..50 {
        assert!(
            tokio::time::timeout(Duration::from_millis(10), transport.backlog())
                .await
                .is_err()
        );
        assert_eq!(source.alive.load(Ordering::SeqCst), 0);
    }
    let runtime = Runtime::builder(transport, |_u: Update| async { Ok::<(), Infallible>(()) })
        .policy(Fixed::new(4))
        .export_metrics(Duration::from_secs(1))
        .backlog_interval(Duration::from_secs(5))
        .poll_timeout(Duration::from_secs(10))
        .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    // Ten minutes of paused time: the scenario's length, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let during = (source.alive.load(Ordering::SeqCst), source.peak.load(Ordering::SeqCst));
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let started = source.started.load(Ordering::SeqCst);
    println!(
        "readings started {started} (50 direct), alive during the run {}, peak {}, alive after {}",
        during.0,
        during.1,
        source.alive.load(Ordering::SeqCst)
    );
    assert_eq!(during.1, 1, "readings piled up");
    assert!((150..=175).contains(&started), "{started}");
    assert_eq!(source.alive.load(Ordering::SeqCst), 0, "a reading outlived the run");
}

const TOKEN: &str = "123456:AAE-secretSECRETsecret_0123456789";
const SECRET: &str = "AAE-secretSECRETsecret_0123456789";

/// A fake Bot API that answers `getWebhookInfo` in the way `mode` says, quoting the
/// request's path (which holds the token) wherever it can.
async fn fake_api(mode: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mode = mode.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let json = |status: &str, body: String| {
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                };
                let answer: Vec<u8> = match mode {
                    0 => json("500 Internal Server Error", format!("oops {path}")),
                    1 => json("200 OK", format!("not json {path}")),
                    2 => json(
                        "200 OK",
                        format!(r#"{{"ok":false,"error_code":400,"description":"Bad Request: {path}"}}"#),
                    ),
                    3 => json("200 OK", format!(r#"{{"ok":true,"result":"{path}"}}"#)),
                    4 => json(
                        "200 OK",
                        format!(r#"{{"ok":true,"result":{{"url":"https://h{path}","pending_update_count":"{path}"}}}}"#),
                    ),
                    5 => json(
                        "401 Unauthorized",
                        format!(r#"{{"ok":false,"error_code":401,"description":"Unauthorized {path}"}}"#),
                    ),
                    6 => format!(
                        "HTTP/1.1 302 Found\r\nlocation: http://{addr}{path}x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .into_bytes(),
                    7 => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n{{\"ok\":true,\"result\":\"{path}"
                    )
                    .into_bytes(),
                    8 => {
                        // Never answers.
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    9 => {
                        let mut body = b"\xff\xfe ".to_vec();
                        body.extend_from_slice(path.as_bytes());
                        let mut out = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        out.extend(body);
                        out
                    }
                    10 => json(
                        "429 Too Many Requests",
                        format!(
                            r#"{{"ok":false,"error_code":429,"description":"Too Many Requests {path}","parameters":{{"retry_after":3}}}}"#
                        ),
                    ),
                    11 => json("200 OK", format!(r#"{{"ok":true,"result":{{"url":"https://h{path}","pending_update_count":5}}}}"#)),
                    12 => json("200 OK", format!(r#"{{"ok":true,"result":{{"url":"","pending_update_count":{path}}}}}"#)),
                    _ => json("200 OK", "{}".into()),
                };
                let _ = conn.write_all(&answer).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// The token reaches no `Debug` output and no log line or span of a backlog reading,
/// whatever the server answers (errors quoting the URL, redirects to it, bodies that
/// echo it, a timeout, a body cut short).
#[tokio::test]
async fn ok_the_backlog_source_never_shows_the_token() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mode = Arc::new(AtomicUsize::new(0));
    let addr = fake_api(Arc::clone(&mode)).await;
    let bot = TelegramTransport::builder(TOKEN)
        .api_url(format!("http://{addr}"))
        .http_timeout_margin(Duration::from_millis(300))
        .build()
        .unwrap();
    let builder = WebhookTransport::builder().backlog_from(bot);
    let transport = builder.clone().bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut readings = Vec::new();
    for m in 0..=12 {
        mode.store(m, Ordering::SeqCst);
        readings.push((m, transport.backlog().await));
    }
    let debug = format!("{builder:?} {transport:?} {:?}", transport.handle());
    let lines = capture.lines();
    println!("readings {readings:?}");
    println!("debug: {debug}");
    for l in &lines {
        println!("log: {l}");
    }
    assert_eq!(readings[11], (11, Some(5)));
    assert!(
        readings.iter().filter(|(m, _)| *m != 11).all(|(_, r)| r.is_none()),
        "{readings:?}"
    );
    assert!(!debug.contains(SECRET), "Debug shows the token: {debug}");
    let leaks: Vec<_> = lines.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the token is logged: {leaks:#?}");
    assert!(
        lines.iter().any(|l| l.contains("getWebhookInfo failed")),
        "the failures were logged at all"
    );
}
