//! The webhook's backlog: what the server that pushes still holds, read through the source
//! given to `WebhookBuilder::backlog_from` (for Telegram, `getWebhookInfo`'s
//! `pending_update_count`), so the runtime's backlog gauge works for webhooks too.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mock_bot_api::{BacklogSpec, MockConfig, MockServer};
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, TelegramTransport, Transport, Update};
use pollgate_runtime::Runtime;
use pollgate_webhook::WebhookTransport;
use tokio::sync::Semaphore;

/// A source that only answers `backlog`, with the number of times it was asked.
#[derive(Debug, Default)]
struct Counting(AtomicU64);

impl Transport for Counting {
    type Error = Infallible;
    fn ack_model(&self) -> AckModel {
        AckModel::Cumulative { window: 1 }
    }
    async fn fetch(&self, _request: FetchRequest) -> Result<Batch, Infallible> {
        panic!("the webhook must never fetch from its backlog source");
    }
    async fn ack(&self, _ack: Ack<'_>) -> Result<(), Infallible> {
        panic!("the webhook must never acknowledge to its backlog source");
    }
    async fn flush(&self) -> Result<(), Infallible> {
        panic!("the webhook must never flush its backlog source");
    }
    async fn backlog(&self) -> Option<u64> {
        Some(self.0.fetch_add(1, Ordering::SeqCst) + 10)
    }
}

#[tokio::test]
async fn without_a_source_there_is_no_backlog() {
    let transport = WebhookTransport::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(transport.backlog().await, None);
}

#[tokio::test]
async fn each_reading_asks_the_source_once_and_nothing_else() {
    let source = Arc::new(Counting::default());
    let builder = WebhookTransport::builder().backlog_from(Arc::clone(&source));
    assert!(format!("{builder:?}").contains("backlog"));
    let transport = builder.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert_eq!(transport.backlog().await, Some(10));
    assert_eq!(transport.backlog().await, Some(11));
    assert_eq!(source.0.load(Ordering::SeqCst), 2);
}

/// Against the mock Bot API pushing to the listener: while two handlers hold the budget,
/// the rest of the backlog waits on the server and the gauge says how much; once every
/// update is handled, it reads 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_what_telegram_still_holds() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let total = 20;
    server.generate(&BacklogSpec {
        updates: total,
        text_bytes: 16,
        chats: 20,
        seed: 3,
        ..BacklogSpec::default()
    });
    let bot = Arc::new(
        TelegramTransport::builder(server.token())
            .api_url(server.url())
            .build()
            .unwrap(),
    );
    let transport = Arc::new(
        WebhookTransport::builder()
            .backlog_from(Arc::clone(&bot))
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    let release = Arc::new(Semaphore::new(0));
    let runtime = Runtime::builder(Arc::clone(&transport), {
        let release = Arc::clone(&release);
        move |_u: Update| {
            let release = Arc::clone(&release);
            async move {
                release.acquire().await.unwrap().forget();
                Ok::<(), Infallible>(())
            }
        }
    })
    .policy(Fixed::new(2))
    .poll_timeout(Duration::from_millis(200))
    .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    server.set_webhook(format!("http://{}/", transport.local_addr()));

    // Two handlers run and hold the budget; nothing more is answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stats.snapshot().in_flight < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the handlers never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let held = transport.backlog().await.expect("getWebhookInfo answers");
    assert_eq!(held, server.pending() as u64, "the gauge reads the server's own count");
    assert!(
        held >= (total - 2) as u64,
        "at most the two running updates left the server: {held}"
    );

    release.add_permits(total);
    while stats.snapshot().completed < total as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog was never handled: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while server.pending() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "answered updates stayed pending"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(transport.backlog().await, Some(0));
    shutdown.cancel();
    run.await.unwrap().unwrap();
}
