//! The echo bot example against the mock Bot API: every text message gets its reply via
//! `sendMessage`, in order per chat, and non-text messages get none.

#[path = "../examples/echo_bot.rs"]
#[allow(dead_code, unreachable_pub)] // only `bot` is used here
mod echo_bot;

use std::time::Duration;

use mock_bot_api::{MockConfig, MockServer};
use pollgate::CancellationToken;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_replies_to_each_text_message_in_order() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let mut texts = Vec::new();
    for i in 0..20 {
        let chat = 100 + i % 3;
        let text = format!("hello {i}");
        texts.push((chat, text.clone()));
        server.push_updates([json!({"message": {"message_id": i, "date": 0,
            "chat": {"id": chat, "type": "private"}, "from": {"id": chat, "is_bot": false, "first_name": "A"},
            "text": text}})]);
    }
    server.push_updates([
        json!({"message": {"message_id": 99, "date": 0, "chat": {"id": 7, "type": "private"},
        "photo": [{"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1}]}}),
    ]);

    let shutdown = CancellationToken::new();
    let bot = tokio::spawn({
        let (url, token, shutdown) = (server.url(), server.token().to_owned(), shutdown.clone());
        async move {
            let runtime = echo_bot::bot(&url, &token).map_err(|e| e.to_string())?;
            runtime
                .shutdown(shutdown)
                .build()
                .run()
                .await
                .map_err(|e| e.to_string())
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.sent_messages().len() < texts.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    let summary = bot.await.unwrap().unwrap();

    let sent = server.sent_messages();
    assert_eq!(
        sent.len(),
        texts.len(),
        "one reply per text message, none for the photo"
    );
    for chat in 100..103 {
        let expected: Vec<&str> = texts
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t.as_str())
            .collect();
        let got: Vec<&str> = sent
            .iter()
            .filter(|m| m["chat_id"].as_i64() == Some(chat) || m["chat_id"].as_str() == Some(&chat.to_string()))
            .map(|m| m["text"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(got, expected, "chat {chat}: replies in order");
    }
    assert_eq!(summary.stats.completed, 21);
    assert_eq!(server.pending(), 0, "the final offset was confirmed");
}
