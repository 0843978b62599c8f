//! `getUpdates` semantics: offsets, limits, long polls and competing polls.

mod common;

use std::time::Duration;

use common::{call, get_ids, push_n, start, start_with, wait_for_polls};
use mock_bot_api::MockConfig;

#[tokio::test]
async fn offset_confirms_and_limit_bounds_the_batch() {
    let server = start().await;
    assert_eq!(push_n(&server, 250), (1..=250).collect::<Vec<_>>());
    assert_eq!(get_ids(&server, &[]).await, (1..=100).collect::<Vec<_>>());
    assert_eq!(server.pending(), 250, "no offset confirms nothing");
    assert_eq!(
        get_ids(&server, &[("offset", "101"), ("limit", "10")]).await,
        (101..=110).collect::<Vec<_>>()
    );
    assert_eq!(server.pending(), 150);
    let stats = server.stats();
    assert_eq!(stats.highest_confirmed_offset, 101);
    assert_eq!(stats.updates_served, 110);
    assert_eq!(stats.last_offset, Some(101));
    assert_eq!(stats.last_limit, Some(10));
    assert_eq!(get_ids(&server, &[("offset", "251")]).await, Vec::<i64>::new());
    assert_eq!(server.pending(), 0);
}

#[tokio::test]
async fn limit_is_clamped_to_1_through_100() {
    let server = start().await;
    push_n(&server, 150);
    assert_eq!(get_ids(&server, &[("limit", "0")]).await, [1]);
    assert_eq!(get_ids(&server, &[("limit", "-5")]).await, [1]);
    assert_eq!(get_ids(&server, &[("limit", "1000")]).await.len(), 100);
    let stats = server.stats();
    assert_eq!(stats.max_limit_seen, 1000);
    assert_eq!(stats.limits_seen.get(&1), Some(&2));
    assert_eq!(stats.limits_seen.get(&100), Some(&1));
}

#[tokio::test]
async fn negative_offset_keeps_only_the_last_n() {
    let server = start().await;
    push_n(&server, 10);
    assert_eq!(get_ids(&server, &[("offset", "-3")]).await, [8, 9, 10]);
    assert_eq!(server.pending(), 3);
    assert_eq!(server.stats().highest_confirmed_offset, 8);
    assert_eq!(get_ids(&server, &[("offset", "-30")]).await, [8, 9, 10]);
}

#[tokio::test]
async fn serving_again_without_confirming_counts_duplicates() {
    let server = start().await;
    push_n(&server, 5);
    assert_eq!(get_ids(&server, &[]).await, [1, 2, 3, 4, 5]);
    assert_eq!(get_ids(&server, &[("offset", "4")]).await, [4, 5]);
    let stats = server.stats();
    assert_eq!(stats.updates_served, 7);
    assert_eq!(stats.duplicates_served, 2);
    assert_eq!(get_ids(&server, &[("offset", "6")]).await, Vec::<i64>::new());
    push_n(&server, 1);
    assert_eq!(get_ids(&server, &[("offset", "6")]).await, [6]);
    assert_eq!(server.stats().duplicates_served, 2);
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_updates_arrive() {
    let server = std::sync::Arc::new(start().await);
    let poller = {
        let server = server.clone();
        tokio::spawn(async move { get_ids(&server, &[("timeout", "30")]).await })
    };
    wait_for_polls(&server, 1).await;
    let pushed = push_n(&server, 3);
    let got = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("long poll did not return early")
        .expect("join");
    assert_eq!(got, pushed);
    assert_eq!(server.stats().in_flight_polls, 0);
}

#[tokio::test]
async fn long_poll_times_out_with_an_empty_result() {
    let server = start().await;
    assert_eq!(get_ids(&server, &[("timeout", "1")]).await, Vec::<i64>::new());
    assert_eq!(server.stats().last_timeout, Some(1));
}

#[tokio::test]
async fn long_poll_wait_is_capped_by_max_poll_timeout() {
    let server = start_with(MockConfig {
        max_poll_timeout: Duration::from_millis(200),
        ..MockConfig::default()
    })
    .await;
    let got = tokio::time::timeout(Duration::from_secs(10), get_ids(&server, &[("timeout", "3600")]))
        .await
        .expect("the cap did not apply");
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_second_poll_terminates_the_waiting_one_with_409() {
    let server = std::sync::Arc::new(start().await);
    let first = {
        let server = server.clone();
        tokio::spawn(async move { call(&server, "getUpdates", &[("timeout", "30")]).await })
    };
    wait_for_polls(&server, 1).await;
    assert_eq!(get_ids(&server, &[("timeout", "0")]).await, Vec::<i64>::new());
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("first poll was not terminated")
        .expect("join");
    assert_eq!(status, 409);
    assert_eq!(body["error_code"], 409);
    assert_eq!(
        body["description"],
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    );
    let stats = server.stats();
    assert_eq!(stats.terminated_polls, 1);
    assert_eq!(stats.in_flight_polls, 0);
}

#[tokio::test]
async fn shutdown_answers_a_waiting_poll() {
    let server = start().await;
    let url = common::method_url(&server, "getUpdates");
    let poller = tokio::spawn(async move { common::call_at(&url, &[("timeout", "30")]).await });
    wait_for_polls(&server, 1).await;
    server.shutdown().await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("shutdown left the poll waiting")
        .expect("join");
    assert_eq!(status, 200);
    assert_eq!(common::ids(&body), Vec::<i64>::new());
}
