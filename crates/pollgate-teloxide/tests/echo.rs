//! A teloxide handler tree under the pollgate runtime, against the mock Bot API server:
//! typed updates reach their branches, replies go out through the same `Bot`, and
//! Telegram's 429s reach the admission policy as overload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mock_bot_api::{BacklogSpec, MockConfig, MockServer, SendLimits};
use pollgate_admission::{AdmissionPolicy, Completion, Fixed, Load, Outcome};
use pollgate_core::TelegramTransport;
use pollgate_runtime::Runtime;
use pollgate_teloxide::TeloxideHandler;
use teloxide::RequestError;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;

fn echo_tree() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        if let Some(text) = msg.text() {
            bot.send_message(
                msg.chat.id,
                format!("echo: {}", text.chars().take(20).collect::<String>()),
            )
            .await?;
        }
        Ok(())
    })
}

async fn server(config: MockConfig, updates: usize) -> MockServer {
    let server = MockServer::start(config).await.unwrap();
    server.generate(&BacklogSpec {
        updates,
        text_bytes: 32,
        chats: 10,
        seed: 5,
        ..mock_bot_api::BacklogSpec::default()
    });
    server
}

fn bot(server: &MockServer) -> Bot {
    Bot::new(server.token()).set_api_url(server.url().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_update_is_answered_through_the_tree() {
    let server = server(MockConfig::default(), 200).await;
    let handler = TeloxideHandler::new(bot(&server), echo_tree(), dptree::deps![])
        .await
        .unwrap();
    let transport = TelegramTransport::builder(server.token())
        .api_url(server.url())
        .build()
        .unwrap();
    let runtime = Runtime::builder(transport, handler)
        .policy(Fixed::new(16))
        .ordered(true)
        .poll_timeout(Duration::from_millis(100))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    for _ in 0..3000 {
        if stats.snapshot().finished() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.stats.finished(), 200);
    assert_eq!(summary.stats.failed, 0);
    let texts: Vec<_> = server.sent_messages();
    let messages = server.stats().sent_messages;
    assert!(
        messages > 0 && messages <= 200,
        "one reply per text message: {messages}"
    );
    assert!(
        texts
            .iter()
            .all(|m| m["text"].as_str().unwrap_or("").starts_with("echo: "))
    );
}

/// Counts what the runtime reports.
#[derive(Debug, Default)]
struct Counting {
    overload: AtomicU64,
}

impl AdmissionPolicy for Counting {
    fn fetch_limit(&self, load: &Load) -> usize {
        8usize.saturating_sub(load.in_flight + load.waiting)
    }
    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < 8
    }
    fn on_complete(&self, c: &Completion) {
        if c.outcome == Outcome::Overload {
            self.overload.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegrams_429_reaches_the_policy_as_overload() {
    let config = MockConfig {
        send_limits: Some(SendLimits::default()),
        ..MockConfig::default()
    };
    let server = server(config, 100).await;
    let handler = TeloxideHandler::new(bot(&server), echo_tree(), dptree::deps![])
        .await
        .unwrap();
    let transport = TelegramTransport::builder(server.token())
        .api_url(server.url())
        .build()
        .unwrap();
    let policy = Arc::new(Counting::default());
    // Unordered: several replies into one chat at once, past its one a second.
    let runtime = Runtime::builder(transport, handler)
        .shared_policy(policy.clone())
        .poll_timeout(Duration::from_millis(100))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    for _ in 0..3000 {
        if stats.snapshot().finished() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    let refused = server.stats().send_429;
    assert!(refused > 0, "the burst passed Telegram's limits");
    assert_eq!(summary.stats.failed, refused, "each 429 failed its handler");
    assert_eq!(
        policy.overload.load(Ordering::Relaxed),
        refused,
        "and reached the policy as overload"
    );
}
