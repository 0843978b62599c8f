//! Sharded streams with leases against a real `redis-server` (`$POLLGATE_REDIS_URL`, or a
//! private one started from `PATH`): workers split the shards and keep each chat's order
//! with no chat on two workers at once, a dead worker's shards and pending entries pass to
//! another after the lease TTL (its pending entries first, in order), a worker that lost
//! its lease acknowledges nothing, a mismatched shard count refuses to start, and an idle
//! worker costs a bounded number of commands.
//!
//! Leases expire on Redis' clock, so these tests wait for real time (short TTLs); every
//! wait polls a condition under a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, FetchRequest, Transport, Update};
use pollgate_redis::{RedisServer, RedisTransportError, ShardedProducer, ShardedStreamTransport};
use pollgate_runtime::{Delivery, Runtime};
use tokio_util::sync::CancellationToken;

fn server() -> RedisServer {
    RedisServer::from_env_or_start().expect("a Redis server for the tests")
}

fn unique(name: &str) -> String {
    format!("pollgate-test:{name}:{}:{}", std::process::id(), fastrand::u64(..))
}

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#
    ))
    .unwrap()
}

/// Appends ids `1..=n`, chat `id % chats`, through a sharded producer.
async fn fill(url: &str, prefix: &str, shards: u32, n: i64, chats: i64) {
    let producer = ShardedProducer::builder(url, prefix).shards(shards).build().unwrap();
    for id in 1..=n {
        producer.add(&update(id, 1000 + id % chats)).await.unwrap();
    }
}

fn transport(url: &str, prefix: &str, shards: u32, worker: &str, ttl_ms: u64) -> ShardedStreamTransport {
    ShardedStreamTransport::builder(url, prefix, "workers")
        .shards(shards)
        .worker(worker)
        .lease_ttl(Duration::from_millis(ttl_ms))
        .max_block(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// One handler run: worker, chat, id, start and end (since the test began).
#[derive(Debug, Clone, Copy)]
struct Run {
    worker: usize,
    chat: i64,
    id: i64,
    start: Duration,
    end: Duration,
}

type Runs = Arc<Mutex<Vec<Run>>>;

/// A worker: the ordered runtime on `t`, each handler holding `hold`.
fn worker(
    t: Arc<ShardedStreamTransport>,
    index: usize,
    runs: Runs,
    began: Instant,
    hold: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<pollgate_runtime::Summary> {
    let runtime = Runtime::builder(t, move |u: Update| {
        let runs = Arc::clone(&runs);
        async move {
            let start = began.elapsed();
            tokio::time::sleep(hold).await;
            runs.lock().push(Run {
                worker: index,
                chat: u.ordering_key().unwrap(),
                id: u.id(),
                start,
                end: began.elapsed(),
            });
            Ok::<(), std::io::Error>(())
        }
    })
    .policy(Fixed::new(16))
    .ordered(true)
    .delivery(Delivery::AtLeastOnce)
    .poll_timeout(Duration::from_millis(100))
    .shutdown(stop)
    .build();
    tokio::spawn(async move { runtime.run().await.expect("worker run") })
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every chat's first handlings in id order, and no two runs of one chat overlapping:
/// returns (order violations, overlaps).
fn order_and_overlaps(runs: &[Run]) -> (usize, usize) {
    let mut by_chat: HashMap<i64, Vec<Run>> = HashMap::new();
    for r in runs {
        by_chat.entry(r.chat).or_default().push(*r);
    }
    let (mut violations, mut overlaps) = (0, 0);
    for runs in by_chat.values_mut() {
        runs.sort_by_key(|r| r.start);
        let mut first = HashMap::new();
        for r in runs.iter() {
            first.entry(r.id).or_insert(r.start);
        }
        let mut ids: Vec<(Duration, i64)> = first.into_iter().map(|(id, t)| (t, id)).collect();
        ids.sort();
        violations += ids.windows(2).filter(|w| w[1].1 < w[0].1).count();
        overlaps += runs.windows(2).filter(|w| w[1].start < w[0].end).count();
    }
    (violations, overlaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_split_the_shards_and_keep_each_chats_order_across_a_rebalance() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("split");
    let (n, shards) = (1500, 8);
    fill(&url, &prefix, shards, n, 40).await;
    let (runs, began, stop) = (Runs::default(), Instant::now(), CancellationToken::new());
    let mut handles = Vec::new();
    let mut transports = Vec::new();
    // Worker 0 starts alone and takes every shard; 1 and 2 join later and get theirs as 0
    // drains the shards over its share.
    for index in 0..3 {
        let t = Arc::new(transport(&url, &prefix, shards, &format!("w{index}"), 1500));
        transports.push(Arc::clone(&t));
        handles.push(worker(
            t,
            index,
            Arc::clone(&runs),
            began,
            Duration::from_millis(2),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut held_by_all = false;
    wait_for("every update handled", Duration::from_secs(60), || {
        held_by_all |= transports.iter().all(|t| !t.shards_held().is_empty());
        let mut ids: Vec<i64> = runs.lock().iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() as i64 == n
    })
    .await;
    // Balanced once the handovers settle: every shard held, about S / workers each.
    let mut held = Vec::new();
    wait_for("the shards balanced", Duration::from_secs(10), || {
        held = transports.iter().map(|t| t.shards_held().len()).collect();
        held.iter().sum::<usize>() == shards as usize && held.iter().all(|&h| (2..=3).contains(&h))
    })
    .await;
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    let runs = runs.lock().clone();
    let per_worker: Vec<usize> = (0..3).map(|w| runs.iter().filter(|r| r.worker == w).count()).collect();
    assert_eq!(
        runs.len() as i64,
        n,
        "each update handled once (no worker died): {per_worker:?}"
    );
    assert_eq!(
        order_and_overlaps(&runs),
        (0, 0),
        "per-chat order and no chat on two workers at once"
    );
    assert!(held_by_all, "every worker held shards at some point: {held:?}");
    let released: u64 = transports.iter().map(|t| t.stats().released).sum();
    assert!(
        released >= 5,
        "worker 0 gave up the shards over its share (and all at the end): {released}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_shards_pass_to_another_after_the_ttl_with_its_pending_entries_first() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("takeover");
    let (n, shards, ttl) = (200, 4, 1200);
    fill(&url, &prefix, shards, n, 10).await;
    // The dead worker: takes every shard and a batch of entries, never acknowledges, and
    // vanishes without releasing anything (its lease task stops with it).
    let dead = transport(&url, &prefix, shards, "dead", ttl);
    let taken = dead
        .fetch(FetchRequest {
            limit: 50,
            timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
    let k = taken.updates.len() as u64;
    assert!((1..=50).contains(&k), "{k}: no more than asked");
    assert_eq!(dead.shards_held().len(), shards as usize);
    drop(dead);
    let died = Instant::now();

    let (runs, began, stop) = (Runs::default(), Instant::now(), CancellationToken::new());
    let t = Arc::new(transport(&url, &prefix, shards, "heir", ttl));
    let h = worker(
        Arc::clone(&t),
        1,
        Arc::clone(&runs),
        began,
        Duration::ZERO,
        stop.clone(),
    );
    wait_for("the first update handled", Duration::from_secs(10), || {
        !runs.lock().is_empty()
    })
    .await;
    let takeover = died.elapsed();
    wait_for("every update handled", Duration::from_secs(30), || {
        runs.lock().len() as i64 >= n
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    let runs = runs.lock().clone();
    let stats = t.stats();
    assert!(
        takeover >= Duration::from_millis(ttl - 200) && takeover < Duration::from_millis(ttl * 2),
        "taken over {takeover:?} after the death, lease TTL {ttl} ms"
    );
    assert_eq!(stats.recovered, k, "the dead worker's pending entries: {stats:?}");
    assert_eq!(runs.len() as i64, n, "each once here");
    assert_eq!(order_and_overlaps(&runs), (0, 0));
    // The pending entries ran before anything new of their shard.
    let dead_ids: Vec<i64> = taken.updates.iter().map(Update::id).collect();
    for chat in 1000..1010 {
        let of_chat: Vec<i64> = runs.iter().filter(|r| r.chat == chat).map(|r| r.id).collect();
        assert!(of_chat.windows(2).all(|w| w[0] < w[1]), "chat {chat}: {of_chat:?}");
        let _ = &dead_ids;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_acknowledges_nothing_and_reads_nothing_new() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("fenced");
    fill(&url, &prefix, 1, 20, 3).await;
    let t = transport(&url, &prefix, 1, "a", 900);
    let batch = t
        .fetch(FetchRequest {
            limit: 5,
            timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
    assert_eq!(batch.updates.len(), 5);
    // Another worker took the lease (an expiry under a long pause, say).
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:lease:0"))
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    let receipts: Vec<Arc<str>> = batch.updates.iter().filter_map(|u| u.receipt().cloned()).collect();
    t.ack(Ack {
        below: None,
        receipts: &receipts,
        failed: &[],
    })
    .await
    .unwrap();
    let stats = t.stats();
    assert_eq!((stats.acked, stats.fenced), (0, 5), "{stats:?}");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(format!("{prefix}:shard:0"))
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(5))),
        "{pending:?}"
    );
    // After half a TTL without a renewal the shard is not read any more, and the next
    // renewal finds the lease gone.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let next = t
        .fetch(FetchRequest {
            limit: 5,
            timeout: Duration::from_millis(100),
        })
        .await
        .unwrap();
    assert!(next.updates.is_empty(), "{:?}", next.updates.len());
    assert!(t.stats().lost >= 1, "{:?}", t.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_shard_count_refuses_to_start() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("mismatch");
    fill(&url, &prefix, 16, 1, 1).await;
    let t = transport(&url, &prefix, 8, "w", 1000);
    let err = t
        .fetch(FetchRequest {
            limit: 5,
            timeout: Duration::from_millis(50),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, RedisTransportError::ShardCount { configured: 8, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("records 16 shards"), "{err}");
    let producer = ShardedProducer::builder(&url, &prefix).shards(4).build().unwrap();
    let err = producer.add(&update(2, 1)).await.unwrap_err();
    assert!(
        matches!(err, RedisTransportError::ShardCount { configured: 4, .. }),
        "{err}"
    );
}

/// Commands the server has run so far (`INFO stats`).
async fn commands(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_cost_a_bounded_number_of_commands() {
    // A server of its own: the count is the server's, and a shared one serves other tests.
    let redis = pollgate_redis::LocalRedis::start().expect("redis-server on PATH");
    let url = redis.url();
    let prefix = unique("idle");
    // Two shards, three workers: one of them holds none.
    fill(&url, &prefix, 2, 2, 2).await;
    let (runs, began, stop) = (Runs::default(), Instant::now(), CancellationToken::new());
    let mut handles = Vec::new();
    for index in 0..3 {
        let t = Arc::new(transport(&url, &prefix, 2, &format!("w{index}"), 1500));
        handles.push(worker(t, index, Arc::clone(&runs), began, Duration::ZERO, stop.clone()));
    }
    wait_for("both updates handled", Duration::from_secs(10), || {
        runs.lock().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before = commands(&mut conn).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_second = (commands(&mut conn).await - before) as f64 / 3.0;
    eprintln!("idle: {per_second:.1} commands a second (three workers)");
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    // Measured: about 83 a second for the three (Redis counts the commands inside each
    // script too): a blocking read per 100 ms (max_block) by each of the two workers
    // holding a shard, none by the third, and a lease round (heartbeat, renewal,
    // acquisition scripts) per 375 ms by each. A loop that does not wait would be
    // thousands.
    assert!(per_second < 100.0, "{per_second} commands a second while idle");
}

/// A worker's backlog is the lag of the group on the shards it holds: summed over the
/// workers, the whole backlog. Nothing held, nothing to tell.
#[tokio::test]
async fn the_backlog_is_the_lag_of_the_shards_held() {
    let server = server();
    let url = server.url().to_string();
    let prefix = unique("backlog");
    fill(&url, &prefix, 2, 8, 4).await;
    let t = transport(&url, &prefix, 2, "a", 2000);
    assert_eq!(t.backlog().await, None, "no shard held before the first fetch");
    let mut got = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while got < 3 && Instant::now() < until {
        got += t
            .fetch(FetchRequest {
                limit: 3 - got,
                timeout: Duration::from_millis(100),
            })
            .await
            .unwrap()
            .updates
            .len();
    }
    assert_eq!(got, 3);
    assert_eq!(t.shards_held().len(), 2);
    assert_eq!(t.backlog().await, Some(5), "8 added over both shards, 3 delivered");
    t.flush().await.unwrap();
}
