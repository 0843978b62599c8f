//! Helpers shared by the integration tests: a started server and a small client.

#![allow(dead_code, unreachable_pub, missing_docs)] // each test file uses a different subset

use std::time::Duration;

use mock_bot_api::{MockConfig, MockServer};
use serde_json::{Value, json};

pub async fn start() -> MockServer {
    start_with(MockConfig::default()).await
}

pub async fn start_with(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("bind loopback")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub fn method_url(server: &MockServer, method: &str) -> String {
    format!("{}/bot{}/{method}", server.url(), server.token())
}

/// GET `method` with query parameters; returns the status and the parsed body.
pub async fn call(server: &MockServer, method: &str, query: &[(&str, &str)]) -> (u16, Value) {
    call_at(&method_url(server, method), query).await
}

/// GET `url` with query parameters; returns the status and the parsed body.
pub async fn call_at(url: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let response = client().get(url).query(query).send().await.expect("send");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

/// `getUpdates` expecting success; returns the update ids.
pub async fn get_ids(server: &MockServer, query: &[(&str, &str)]) -> Vec<i64> {
    let (status, body) = call(server, "getUpdates", query).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    ids(&body)
}

pub fn ids(body: &Value) -> Vec<i64> {
    body["result"]
        .as_array()
        .expect("result array")
        .iter()
        .map(|u| u["update_id"].as_i64().expect("update_id"))
        .collect()
}

/// Pushes `n` small text messages.
pub fn push_n(server: &MockServer, n: usize) -> Vec<i64> {
    server.push_updates((0..n).map(|i| {
        json!({"message": {"message_id": i + 1, "date": 1_700_000_000, "chat": {"id": 42, "type": "private"}, "text": format!("m{i}")}})
    }))
}

/// Waits (bounded) until `n` long polls are waiting on the server.
pub async fn wait_for_polls(server: &MockServer, n: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.stats().in_flight_polls != n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("long poll did not start waiting");
}
