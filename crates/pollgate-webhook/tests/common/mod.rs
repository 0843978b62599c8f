//! Shared pieces of the webhook tests: update bodies, and waiting on a state.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::time::Duration;

/// A message update of `chat`, as Telegram posts it.
pub fn update(id: i64, chat: i64) -> String {
    format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#
    )
}

/// Waits (yielding, bounded) until `cond` holds; the bound only turns a hang into a failure.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for: {what}");
}
