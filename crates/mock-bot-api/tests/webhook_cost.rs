//! What the webhook sender costs when the receiver misbehaves: gone (connections refused),
//! every chat blocked by a long `Retry-After`, hanging without an answer. Each test counts
//! the requests and measures the process's CPU time, with the real server's timing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::IntoResponse;
use axum::routing::post;
use common::start_with;
use mock_bot_api::{MockConfig, MockServer, WebhookSpec, WebhookTiming};
use serde_json::json;

/// The tests measure the process's CPU time: one at a time. An async lock, as the guard is
/// held across awaits (each test has its own runtime; the lock needs none).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// CPU time (user + system) of this process so far, in clock ticks (1/100 s).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime), counted after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn push_chats(server: &MockServer, chats: impl IntoIterator<Item = i64>) -> Vec<i64> {
    server.push_updates(chats.into_iter().map(|chat| {
        json!({"message": {"message_id": 1, "date": 1_700_000_000, "chat": {"id": chat, "type": "private"}, "text": "hi"}})
    }))
}

async fn server() -> MockServer {
    // The real server's timing: 1 s doubling to 60 s; down after 10 s, then one request per 2 s.
    start_with(MockConfig {
        webhook_timing: WebhookTiming::default(),
        ..MockConfig::default()
    })
    .await
}

/// The receiver is gone (connection refused) and the backlog spans 2000 chats. The
/// real server loads at most `2 * max_connections` chats and, once it cannot deliver, opens
/// at most one new connection per 2 s (`WebhookActor::create_new_connections`), so a dead
/// receiver costs it next to nothing. The mock: one burst of at most `max_connections`
/// requests (the webhook is new, so the receiver counts as up), then one request per 2 s,
/// whatever the number of chats; no busy loop in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_receiver_gets_one_burst_then_one_request_per_probe_interval() {
    let _serial = serial().await;
    let server = server().await;
    let url = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    push_chats(&server, 0..2000);
    let start = cpu_ticks();
    server.set_webhook(url);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (burst, burst_cpu) = (server.stats().webhook_posts, cpu_ticks() - start);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let stats = server.stats();
    let cpu = cpu_ticks() - start;
    let (after, after_cpu) = (stats.webhook_posts - burst, cpu - burst_cpu);
    eprintln!(
        "3 s with the receiver gone: {} attempts, {} failed, cpu {} ms \
         (first second: {burst} attempts, cpu {} ms; next 2 s: {after}, cpu {} ms)",
        stats.webhook_posts,
        stats.webhook_failed,
        cpu * 10,
        burst_cpu * 10,
        after_cpu * 10
    );
    let max_connections = u64::from(mock_bot_api::DEFAULT_MAX_CONNECTIONS);
    assert!(
        (1..=max_connections).contains(&burst),
        "{burst} attempts in the first second: at most one per connection"
    );
    assert!(
        (1..=2).contains(&after),
        "{after} attempts in the 2 s after the burst, one per 2 s expected"
    );
    assert_eq!(stats.webhook_failed, stats.webhook_posts, "every attempt was refused");
    assert_eq!((stats.pending, stats.webhook_delivered), (2000, 0), "nothing is lost");
    // Ticks of 10 ms. The first second includes building the HTTP client.
    assert!(after_cpu <= 2, "cpu {} ms in the 2 s after the burst", after_cpu * 10);
    assert!(cpu <= 8, "cpu {} ms in 3 s", cpu * 10);
}

/// Every chat is blocked (one chat, a 429 with a long Retry-After): the sender reads the
/// backlog once, then sleeps: no further posts, little CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_chats_blocked_leaves_the_sender_idle() {
    let _serial = serial().await;
    let server = server().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post({
            let hits = Arc::clone(&hits);
            move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, "3600")]).into_response() }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    push_chats(&server, std::iter::repeat_n(7, 20_000));
    server.set_webhook_spec(WebhookSpec {
        max_connections: 100,
        ..WebhookSpec::new(url)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_ticks();
    // More updates for the blocked chat keep arriving.
    for _ in 0..20 {
        push_chats(&server, [7]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = cpu_ticks() - cpu;
    eprintln!(
        "blocked: {} posts, cpu {} ms in 1 s",
        hits.load(Ordering::SeqCst),
        cpu * 10
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(cpu <= 20, "cpu {} ms in 1 s", cpu * 10);
}

/// A receiver that accepts and never answers: max_connections requests hang, nothing
/// else happens until the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_costs_nothing_until_the_request_timeout() {
    let _serial = serial().await;
    let server = server().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post({
            let hits = Arc::clone(&hits);
            move || {
                hits.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<StatusCode>()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    push_chats(&server, 0..5000);
    server.set_webhook_spec(WebhookSpec {
        max_connections: 10,
        ..WebhookSpec::new(url)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_ticks();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cpu = cpu_ticks() - cpu;
    let stats = server.stats();
    eprintln!(
        "hanging: {} posts, cpu {} ms in 1 s",
        hits.load(Ordering::SeqCst),
        cpu * 10
    );
    assert_eq!((stats.webhook_posts, stats.webhook_in_flight), (10, 10));
    assert!(cpu <= 20, "cpu {} ms in 1 s", cpu * 10);
}
