//! The Redis Streams transport against a real `redis-server` (`$POLLGATE_REDIS_URL`, or a
//! private one started from `PATH`): workers drain a stream with nothing lost, a dead
//! worker's entries are claimed and finished by the others, poison entries land in the
//! dead-letter stream with their reason, and a slow handler keeps its entries.
//!
//! Redis measures idle time on its own clock, so these tests wait for real time to pass
//! (with short `claim_idle` settings); every wait polls a condition under a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_admission::ByteBudget;
use pollgate_core::{Backoff, FetchRequest, Transport, Update};
use pollgate_redis::{RedisServer, RedisStreamTransport, StreamProducer};
use pollgate_runtime::{Delivery, Runtime};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

fn server() -> RedisServer {
    RedisServer::from_env_or_start().expect("a Redis server for the tests")
}

/// A stream name no other test (or earlier run against a shared server) uses.
fn unique(name: &str) -> String {
    format!("pollgate-test:{name}:{}:{}", std::process::id(), fastrand::u64(..))
}

fn update_json(id: i64) -> String {
    format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":{},"type":"private"}},"text":"hi"}}}}"#,
        id % 17
    )
}

async fn fill(url: &str, stream: &str, ids: std::ops::Range<i64>) {
    let producer = StreamProducer::builder(url, stream).build().unwrap();
    for id in ids {
        producer
            .add(&Update::from_json(&update_json(id)).unwrap())
            .await
            .unwrap();
    }
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Entries pending in the group (delivered, not acknowledged).
async fn pending(url: &str, stream: &str, group: &str) -> i64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn(url).await)
        .await
        .unwrap();
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING summary {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn transport(url: &str, stream: &str, consumer: &str) -> pollgate_redis::RedisStreamTransportBuilder {
    RedisStreamTransport::builder(url, stream, "workers")
        .consumer(consumer)
        .claim_idle(Duration::from_millis(300))
        .max_block(Duration::from_millis(100))
}

/// Handled ids, per worker.
type Seen = Arc<Mutex<HashMap<i64, Vec<usize>>>>;

/// Runs one worker until `stop`, recording which ids it handled.
fn worker(
    t: Arc<RedisStreamTransport>,
    index: usize,
    seen: Seen,
    hold: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<pollgate_runtime::Summary> {
    let runtime = Runtime::builder(t, move |u: Update| {
        let seen = Arc::clone(&seen);
        async move {
            tokio::time::sleep(hold).await;
            seen.lock().entry(u.id()).or_default().push(index);
            Ok::<(), std::io::Error>(())
        }
    })
    .policy(ByteBudget::new(64 << 10))
    .cost_fn(|_| 1 << 10)
    .delivery(Delivery::AtLeastOnce)
    .poll_timeout(Duration::from_millis(100))
    .shutdown(stop)
    .build();
    tokio::spawn(async move { runtime.run().await.expect("worker run") })
}

/// Waits until `n` distinct updates were handled and nothing is pending, then stops the
/// workers and returns their summaries.
async fn drain(
    url: &str,
    stream: &str,
    seen: &Seen,
    n: i64,
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<pollgate_runtime::Summary>>,
) -> Vec<pollgate_runtime::Summary> {
    wait_for("every update handled", Duration::from_secs(60), async || {
        seen.lock().len() as i64 == n
    })
    .await;
    wait_for("nothing pending", Duration::from_secs(10), async || {
        pending(url, stream, "workers").await == 0
    })
    .await;
    stop.cancel();
    let mut summaries = Vec::new();
    for w in workers {
        summaries.push(w.await.unwrap());
    }
    summaries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_drain_a_stream_with_nothing_lost_or_duplicated() {
    let redis = server();
    let url = redis.url();
    let stream = unique("drain");
    const N: i64 = 3000;
    fill(&url, &stream, 0..N).await;

    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let t = Arc::new(transport(&url, &stream, &format!("w{i}")).build().unwrap());
            worker(t, i, Arc::clone(&seen), Duration::from_millis(2), stop.clone())
        })
        .collect();
    for summary in drain(&url, &stream, &seen, N, stop, workers).await {
        assert!(summary.unfinished.is_empty(), "{:?}", summary.unfinished);
    }
    // Workers that left cleanly removed themselves from the group.
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg("workers")
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]), "consumers left behind");
    let seen = seen.lock();
    let duplicates: Vec<_> = seen.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(duplicates.is_empty(), "handled twice: {duplicates:?}");
    for i in 0..3 {
        let n = seen.values().filter(|by| by[0] == i).count();
        assert!(n > 0, "worker {i} handled nothing: the stream was not shared");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_entries_are_claimed_and_finished_by_the_others() {
    let redis = server();
    let url = redis.url();
    let stream = unique("claim");
    const N: i64 = 200;
    fill(&url, &stream, 0..N).await;

    // A worker takes 50 entries and dies without acknowledging them (no heartbeat either:
    // its transport is gone).
    let doomed = transport(&url, &stream, "doomed").build().unwrap();
    let taken = doomed
        .fetch(FetchRequest {
            limit: 50,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(taken.updates.len(), 50);
    drop(doomed);
    assert_eq!(pending(&url, &stream, "workers").await, 50);

    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    let transports: Vec<_> = (0..2)
        .map(|i| Arc::new(transport(&url, &stream, &format!("w{i}")).build().unwrap()))
        .collect();
    let workers: Vec<_> = transports
        .iter()
        .enumerate()
        .map(|(i, t)| worker(Arc::clone(t), i, Arc::clone(&seen), Duration::ZERO, stop.clone()))
        .collect();
    drain(&url, &stream, &seen, N, stop, workers).await;
    let claimed: u64 = transports.iter().map(|t| t.stats().claimed).sum();
    assert_eq!(claimed, 50, "the dead worker's entries were claimed");
    for u in &taken.updates {
        assert!(
            seen.lock().contains_key(&u.id()),
            "update {} of the dead worker was lost",
            u.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_land_in_the_dead_letter_stream_with_their_reason() {
    let redis = server();
    let url = redis.url();
    let stream = unique("poison");
    let mut c = conn(&url).await;
    // Not an update at all, and an update whose handler "kills" every worker.
    let _: String = c.xadd(&stream, "*", &[("update", "<html>502</html>")]).await.unwrap();
    let _: String = c.xadd(&stream, "*", &[("other", "x")]).await.unwrap();
    fill(&url, &stream, 7..8).await;

    let build = |name: &str| {
        transport(&url, &stream, name)
            .max_deliveries(2)
            .claim_idle(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let req = FetchRequest {
        limit: 10,
        timeout: Duration::ZERO,
    };
    // Delivery 1: the malformed entries are dead-lettered at once; the update is
    // delivered and its worker dies.
    let first = build("a");
    let batch = first.fetch(req).await.unwrap();
    assert_eq!(batch.updates.iter().map(Update::id).collect::<Vec<_>>(), vec![7]);
    assert_eq!(first.stats().dead_lettered, 2);
    drop(first);
    // Delivery 2: claimed by the next worker, which dies too.
    let mut deliveries = 1;
    let mut last = None;
    for name in ["b", "c", "d"] {
        let t = build(name);
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while got.is_empty() && t.stats().dead_lettered == 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            got = t.fetch(req).await.unwrap().updates;
        }
        if t.stats().dead_lettered == 1 {
            last = Some(t);
            break;
        }
        assert_eq!(got.len(), 1, "delivered again to {name}");
        deliveries += 1;
    }
    assert_eq!(deliveries, 2, "max_deliveries = 2");
    let last = last.expect("the third delivery dead-letters the entry");
    let dead: redis::streams::StreamRangeReply = c.xrange_all(last.dead_letter_stream()).await.unwrap();
    assert_eq!(dead.ids.len(), 3);
    let reasons: Vec<String> = dead.ids.iter().map(|e| e.get("pollgate_reason").unwrap()).collect();
    assert!(
        reasons[0].starts_with("not a Telegram update: undecodable update"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("line 1"),
        "the parser's reason is kept, through the chain: {reasons:?}"
    );
    assert!(reasons[1].contains("no `update` field"), "{reasons:?}");
    assert!(reasons[2].contains("delivered 3 times"), "{reasons:?}");
    let original: String = dead.ids[2].get("update").unwrap();
    assert_eq!(original, update_json(7), "the dead letter keeps the entry's fields");
    assert_eq!(
        pending(&url, &stream, "workers").await,
        0,
        "dead-lettered entries are acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_its_entries_through_heartbeats() {
    let redis = server();
    let url = redis.url();
    let stream = unique("slow");
    fill(&url, &stream, 0..4).await;
    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    // Handlers take 5× claim_idle; a second, idle worker looks for entries to claim.
    let slow = Arc::new(transport(&url, &stream, "slow").build().unwrap());
    let slow = worker(slow, 0, Arc::clone(&seen), Duration::from_millis(1500), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let thief = Arc::new(transport(&url, &stream, "thief").build().unwrap());
    let other = worker(Arc::clone(&thief), 1, Arc::clone(&seen), Duration::ZERO, stop.clone());
    wait_for("all handled", Duration::from_secs(20), async || seen.lock().len() == 4).await;
    stop.cancel();
    slow.await.unwrap();
    other.await.unwrap();
    assert_eq!(thief.stats().claimed, 0, "a live worker's entries were claimed");
    assert!(seen.lock().values().all(|by| by == &vec![0]), "{:?}", seen.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_read_is_recovered_from_the_own_pending_list() {
    let redis = server();
    let url = redis.url();
    let stream = unique("own");
    fill(&url, &stream, 0..5).await;
    // A consumer read 5 entries and restarted under the same (stable) name before
    // handling them: the new incarnation gets them back at once, without waiting for
    // claim_idle.
    let before = transport(&url, &stream, "stable")
        .claim_idle(Duration::from_secs(3600))
        .build()
        .unwrap();
    let req = FetchRequest {
        limit: 10,
        timeout: Duration::ZERO,
    };
    assert_eq!(before.fetch(req).await.unwrap().updates.len(), 5);
    drop(before);
    let after = transport(&url, &stream, "stable")
        .claim_idle(Duration::from_secs(3600))
        .build()
        .unwrap();
    let again = after.fetch(req).await.unwrap().updates;
    assert_eq!(
        again.iter().map(Update::id).collect::<Vec<_>>(),
        (0..5).collect::<Vec<_>>()
    );
    assert_eq!(after.stats().recovered, 5);
    // And not a second time while they are in flight.
    assert!(after.fetch(req).await.unwrap().updates.is_empty());
    let receipts: Vec<Arc<str>> = again.iter().map(|u| Arc::clone(u.receipt().unwrap())).collect();
    after
        .ack(pollgate_core::Ack {
            below: None,
            receipts: &receipts,
            failed: &[],
        })
        .await
        .unwrap();
    assert_eq!(pending(&url, &stream, "workers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_retried_and_then_a_typed_error() {
    // Nothing listens on this port: with bounded retries the fetch gives up with a
    // transient error that names the command; the URL's password is not in it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = RedisStreamTransport::builder(format!("redis://:hunter2@127.0.0.1:{port}"), "s", "g")
        .backoff(Backoff {
            initial: Duration::from_millis(1),
            factor: 1.0,
            max: Duration::from_millis(1),
            max_retries: Some(2),
        })
        .build()
        .unwrap();
    let e = t
        .fetch(FetchRequest {
            limit: 1,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("XGROUP CREATE"), "{e}");
    assert!(
        !e.to_string().contains("hunter2") && !format!("{t:?}").contains("hunter2"),
        "{e} / {t:?}"
    );
    assert_eq!(t.stats().retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_written_leaves_the_entry_pending() {
    let redis = server();
    let url = redis.url();
    let stream = unique("dlq-broken");
    let mut c = conn(&url).await;
    let _: String = c.xadd(&stream, "*", &[("update", "not json")]).await.unwrap();
    // The dead-letter key holds a string: the XADD to it fails with WRONGTYPE.
    let _: () = c.set(format!("{stream}:dead"), "in the way").await.unwrap();
    let t = transport(&url, &stream, "a").build().unwrap();
    let req = FetchRequest {
        limit: 10,
        timeout: Duration::ZERO,
    };
    let e = t.fetch(req).await.unwrap_err();
    let chain = pollgate_core::ErrorChain(&e).to_string();
    assert!(chain.contains("WRONGTYPE"), "{chain}");
    assert_eq!(t.stats().dead_lettered, 0);
    assert_eq!(
        pending(&url, &stream, "workers").await,
        1,
        "not acknowledged, so not lost"
    );
    // Once the key is out of the way, the next fetch (re-reading its own pending list)
    // dead-letters it.
    let _: () = c.del(format!("{stream}:dead")).await.unwrap();
    assert!(t.fetch(req).await.unwrap().updates.is_empty());
    assert_eq!(t.stats().dead_lettered, 1);
    assert_eq!(pending(&url, &stream, "workers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_disappears_is_recreated_from_the_start_of_the_stream() {
    let redis = server();
    let url = redis.url();
    let stream = unique("regroup");
    let t = transport(&url, &stream, "a")
        .start_from(pollgate_redis::StartFrom::NewEntries)
        .build()
        .unwrap();
    let req = FetchRequest {
        limit: 10,
        timeout: Duration::ZERO,
    };
    assert!(
        t.fetch(req).await.unwrap().updates.is_empty(),
        "the group starts at `$`"
    );
    fill(&url, &stream, 0..3).await;
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg("workers")
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    fill(&url, &stream, 3..5).await;
    // The first command to hit NOGROUP re-creates the group from 0, not from `$`: nothing
    // appended while it was gone is skipped.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(t.fetch(req).await.unwrap().updates.iter().map(Update::id));
    }
    assert_eq!(ids, (0..5).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_final_error_not_retried_forever() {
    // A private server (a password on a shared one would break the other tests).
    let local = pollgate_redis::LocalRedis::start().expect("redis-server on PATH");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right")
        .query_async(&mut conn(&local.url()).await)
        .await
        .unwrap();
    let url = local.url().replace("redis://", "redis://:wrong@");
    let t = RedisStreamTransport::builder(url, "s", "g").build().unwrap();
    let req = FetchRequest {
        limit: 1,
        timeout: Duration::ZERO,
    };
    let e = tokio::time::timeout(Duration::from_secs(20), t.fetch(req))
        .await
        .expect("a wrong password must not be retried forever")
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(
        !e.to_string().contains("wrong") && !format!("{t:?}").contains("wrong"),
        "{e} / {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_blocking_fetch_loses_nothing_and_counts_no_delivery() {
    let redis = server();
    let url = redis.url();
    let stream = unique("cancelled");
    let t = transport(&url, &stream, "a")
        .max_block(Duration::from_secs(2))
        .build()
        .unwrap();
    // The fetch blocks on an empty stream and is dropped; Redis still serves the blocked
    // read when an entry arrives, into a reply nobody reads.
    let blocked = t.fetch(FetchRequest {
        limit: 10,
        timeout: Duration::from_secs(2),
    });
    assert!(tokio::time::timeout(Duration::from_millis(200), blocked).await.is_err());
    fill(&url, &stream, 42..43).await;
    wait_for(
        "the entry delivered into the lost reply",
        Duration::from_secs(10),
        async || pending(&url, &stream, "workers").await == 1,
    )
    .await;
    let got = t
        .fetch(FetchRequest {
            limit: 10,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap()
        .updates;
    assert_eq!(got.iter().map(Update::id).collect::<Vec<_>>(), vec![42]);
    assert_eq!(t.stats().recovered, 1);
    let rows: redis::Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    let redis::Value::Array(rows) = rows else {
        panic!("{rows:?}")
    };
    let redis::Value::Array(row) = &rows[0] else {
        panic!("{rows:?}")
    };
    assert_eq!(
        row[3],
        redis::Value::Int(1),
        "recovering a lost reply is not a second delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_never_take_an_entry_back_from_the_worker_that_claimed_it() {
    let redis = server();
    let url = redis.url();
    let stream = unique("no-steal");
    fill(&url, &stream, 0..2).await;
    let a = transport(&url, &stream, "a")
        .claim_idle(Duration::from_millis(200))
        .build()
        .unwrap();
    let batch = a
        .fetch(FetchRequest {
            limit: 2,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(batch.updates.len(), 2);
    // Another worker takes the first entry (as it would after `a` was cut off).
    let taken = batch.updates[0].receipt().unwrap().to_string();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("workers")
        .arg("b")
        .arg(0)
        .arg(&taken)
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    // `a` keeps heart-beating the entry it still owns...
    wait_for("a few heartbeats", Duration::from_secs(10), async || {
        a.stats().heartbeats >= 3
    })
    .await;
    // ...and never took the other one back.
    let owner: redis::Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .arg(&taken)
        .arg(&taken)
        .arg(1)
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    let redis::Value::Array(rows) = owner else {
        panic!("{owner:?}")
    };
    let redis::Value::Array(row) = &rows[0] else {
        panic!("{rows:?}")
    };
    assert_eq!(
        row[1],
        redis::Value::BulkString(b"b".to_vec()),
        "the entry went back to `a`"
    );
}

/// The backlog the runtime exports (`pollgate_backlog_updates`) is the group's lag: entries
/// not yet delivered to any worker. Delivered-but-unacknowledged entries are not counted,
/// and an acknowledgement does not change it.
#[tokio::test]
async fn the_backlog_is_what_the_group_has_not_delivered() {
    let server = server();
    let url = server.url().to_string();
    let stream = unique("backlog");
    fill(&url, &stream, 1..6).await;
    let t = RedisStreamTransport::builder(&url, &stream, "workers")
        .consumer("a")
        .build()
        .unwrap();
    let req = |limit| FetchRequest {
        limit,
        timeout: Duration::ZERO,
    };
    let first = t.fetch(req(2)).await.unwrap();
    assert_eq!(first.updates.len(), 2);
    assert_eq!(t.backlog().await, Some(3), "5 added, 2 delivered");
    let receipts: Vec<std::sync::Arc<str>> = first.updates.iter().filter_map(|u| u.receipt().cloned()).collect();
    t.ack(pollgate_core::Ack {
        below: None,
        receipts: &receipts,
        failed: &[],
    })
    .await
    .unwrap();
    assert_eq!(
        t.backlog().await,
        Some(3),
        "acknowledging moves nothing out of the backlog"
    );
    assert_eq!(t.fetch(req(10)).await.unwrap().updates.len(), 3);
    assert_eq!(t.backlog().await, Some(0));
    // Another group on the same stream has its own backlog.
    let other = RedisStreamTransport::builder(&url, &stream, "others").build().unwrap();
    assert!(other.fetch(req(1)).await.unwrap().updates.len() == 1);
    assert_eq!(other.backlog().await, Some(4));
}
