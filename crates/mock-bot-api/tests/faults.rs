//! Fault injection: each kind produces its response, is counted, and confirms nothing.

mod common;

use common::{call, client, get_ids, method_url, push_n, start};
use mock_bot_api::{Fault, FaultRates};
use serde_json::Value;

async fn raw(server: &mock_bot_api::MockServer, query: &[(&str, &str)]) -> reqwest::Result<(u16, String, String)> {
    let response = client()
        .get(method_url(server, "getUpdates"))
        .query(query)
        .send()
        .await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = response.text().await?;
    Ok((status, content_type, body))
}

fn fault_count(server: &mock_bot_api::MockServer, kind: &str) -> u64 {
    server.stats().faults.get(kind).copied().unwrap_or(0)
}

#[tokio::test]
async fn too_many_requests_carries_retry_after_and_confirms_nothing() {
    let server = start().await;
    push_n(&server, 5);
    server.inject(Fault::TooManyRequests { retry_after: 7 });
    let (status, body) = call(&server, "getUpdates", &[("offset", "3")]).await;
    assert_eq!(status, 429);
    assert_eq!(body["ok"], false);
    assert_eq!(body["error_code"], 429);
    assert_eq!(body["description"], "Too Many Requests: retry after 7");
    assert_eq!(body["parameters"]["retry_after"], 7);
    assert_eq!(server.pending(), 5, "a faulted call must not confirm");
    assert_eq!(fault_count(&server, "too_many_requests"), 1);
    assert_eq!(get_ids(&server, &[("offset", "3")]).await, [3, 4, 5]);
}

#[tokio::test]
async fn server_errors_are_html_pages() {
    let server = start().await;
    server.inject(Fault::ServerError { status: 502 });
    server.inject(Fault::ServerError { status: 500 });
    let (status, content_type, body) = raw(&server, &[]).await.unwrap();
    assert_eq!(status, 502);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("<title>502 Bad Gateway</title>"), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let (status, _, body) = raw(&server, &[]).await.unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("500 Internal Server Error"), "{body}");
    assert_eq!(fault_count(&server, "server_error"), 2);
}

#[tokio::test]
async fn malformed_json_does_not_parse_and_confirms_nothing() {
    let server = start().await;
    push_n(&server, 10);
    server.inject(Fault::MalformedJson);
    let (status, content_type, body) = raw(&server, &[("offset", "4")]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    assert!(body.starts_with(r#"{"ok":true,"result":[{"update_id":4"#), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    assert_eq!(server.pending(), 10);
    let stats = server.stats();
    assert_eq!(stats.updates_served, 0);
    assert_eq!(fault_count(&server, "malformed_json"), 1);
    assert_eq!(get_ids(&server, &[("offset", "4")]).await, (4..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn malformed_update_breaks_the_middle_one_but_keeps_its_id() {
    let server = start().await;
    push_n(&server, 5);
    server.inject(Fault::MalformedUpdate);
    let (status, body) = call(&server, "getUpdates", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(common::ids(&body), [1, 2, 3, 4, 5]);
    let middle = &body["result"][2];
    assert_eq!(middle["update_id"], 3);
    assert!(middle["message"]["chat"]["id"].is_string(), "{middle}");
    assert!(middle["message"]["text"].is_null());
    assert_eq!(body["result"][1]["message"]["text"], "m1");
    assert_eq!(fault_count(&server, "malformed_update"), 1);
    // Only that response was broken.
    let (_, again) = call(&server, "getUpdates", &[]).await;
    assert_eq!(again["result"][2]["message"]["text"], "m2");
}

#[tokio::test]
async fn dropped_connection_is_a_client_error() {
    let server = start().await;
    push_n(&server, 20);
    server.inject(Fault::DropConnection);
    let result = raw(&server, &[]).await;
    assert!(result.is_err(), "expected a network error, got {result:?}");
    assert_eq!(fault_count(&server, "drop_connection"), 1);
    assert_eq!(server.stats().updates_served, 0);
    assert_eq!(get_ids(&server, &[("limit", "2")]).await, [1, 2]);
}

#[tokio::test]
async fn slow_answers_normally() {
    let server = start().await;
    push_n(&server, 2);
    server.inject(Fault::Slow { ms: 50 });
    assert_eq!(get_ids(&server, &[("offset", "2")]).await, [2]);
    assert_eq!(server.pending(), 1);
    assert_eq!(fault_count(&server, "slow"), 1);
}

#[tokio::test]
async fn conflict_window_and_injected_faults_in_order() {
    let server = start().await;
    push_n(&server, 1);
    server.inject(Fault::Unauthorized);
    server.inject_conflict_window(2);
    for _ in 0..2 {
        let (status, body) = call(&server, "getUpdates", &[]).await;
        assert_eq!(status, 409);
        assert_eq!(body["error_code"], 409);
    }
    let (status, body) = call(&server, "getUpdates", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["description"], "Unauthorized");
    assert_eq!(get_ids(&server, &[]).await, [1]);
    let stats = server.stats();
    assert_eq!(stats.faults.get("conflict"), Some(&2));
    assert_eq!(stats.faults.get("unauthorized"), Some(&1));
    assert_eq!(stats.get_updates_calls, 4);
}

#[tokio::test]
async fn faults_apply_to_get_updates_only() {
    let server = start().await;
    server.inject(Fault::ServerError { status: 502 });
    let (status, _) = call(&server, "getMe", &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(&server, &[]).await.unwrap();
    assert_eq!(status, 502);
}

#[tokio::test]
async fn random_rates_apply_and_reset_clears_them() {
    let server = start().await;
    server.set_fault_rates(FaultRates {
        too_many_requests: 1.0,
        retry_after_secs: 3,
        ..FaultRates::default()
    });
    for _ in 0..3 {
        let (status, body) = call(&server, "getUpdates", &[]).await;
        assert_eq!(status, 429);
        assert_eq!(body["parameters"]["retry_after"], 3);
    }
    assert_eq!(fault_count(&server, "too_many_requests"), 3);
    server.reset();
    assert_eq!(get_ids(&server, &[]).await, Vec::<i64>::new());
    assert!(server.stats().faults.is_empty());
}

#[tokio::test]
async fn control_endpoints_inject_and_set_rates() {
    let server = start().await;
    let http = client();
    let response = http
        .post(format!("{}/control/inject", server.url()))
        .body(r#"[{"kind":"too_many_requests","retry_after":2},{"kind":"server_error","status":502}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = call(&server, "getUpdates", &[]).await;
    assert_eq!(status, 429);
    let (status, _, _) = raw(&server, &[]).await.unwrap();
    assert_eq!(status, 502);
    let response = http
        .post(format!("{}/control/faults", server.url()))
        .body(r#"{"malformed_json":1.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, _, body) = raw(&server, &[]).await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let response = http
        .post(format!("{}/control/inject", server.url()))
        .body(r#"{"kind":"no_such_fault"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
