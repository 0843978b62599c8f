//! Redis restarts against a private `redis-server` that the tests SIGKILL and start again
//! on the same port and data directory: a producer appends again, in order, what a
//! restarted server lost; sharded workers ride out the outage and finish the backlog.
//! These always start their own server (an external one cannot be killed).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_redis::{LocalRedis, Persistence, ShardedProducer, ShardedStreamTransport, StreamProducer};
use pollgate_runtime::{Delivery, Runtime};
use tokio_util::sync::CancellationToken;

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#
    ))
    .unwrap()
}

async fn ids_in(url: &str, stream: &str) -> Vec<i64> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.ids.iter().filter_map(|e| e.get::<i64>("update_id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_appends_again_in_order_what_a_restarted_redis_lost() {
    // No persistence: the restart loses everything, so what comes back is exactly what
    // the producer remembered.
    let mut redis = LocalRedis::start_with(Persistence::None).unwrap();
    let url = redis.url();
    let producer = StreamProducer::builder(&url, "updates").build().unwrap();
    for id in 1..=50 {
        producer.add(&update(id, id % 5)).await.unwrap();
    }
    redis.kill().unwrap();
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        redis.restart().unwrap();
        redis
    });
    // Appended during the outage: it waits, then goes after the 50 appended again.
    producer.add(&update(51, 1)).await.unwrap();
    let _redis = restart.await.unwrap();
    assert_eq!(ids_in(&url, "updates").await, (1..=51).collect::<Vec<_>>());
    assert_eq!(producer.reappended(), 50);

    // Appends older than the window are not remembered.
    let producer = StreamProducer::builder(&url, "other")
        .durability_window(Duration::ZERO)
        .build()
        .unwrap();
    producer.add(&update(1, 1)).await.unwrap();
    assert_eq!(producer.reappended(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_workers_ride_out_a_redis_restart_and_finish_the_backlog_in_order() {
    let mut redis = LocalRedis::start_with(Persistence::AofAlways).unwrap();
    let url = redis.url();
    let (n, shards) = (600i64, 4);
    let producer = ShardedProducer::builder(&url, "bot").shards(shards).build().unwrap();
    for id in 1..=n {
        producer.add(&update(id, 100 + id % 20)).await.unwrap();
    }
    let seen: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for w in 0..2 {
        let t = ShardedStreamTransport::builder(&url, "bot", "workers")
            .shards(shards)
            .worker(format!("w{w}"))
            .lease_ttl(Duration::from_millis(1500))
            .max_block(Duration::from_millis(100))
            .build()
            .unwrap();
        let seen = Arc::clone(&seen);
        let runtime = Runtime::builder(t, move |u: Update| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                seen.lock().push((u.ordering_key().unwrap(), u.id()));
                Ok::<(), std::io::Error>(())
            }
        })
        .policy(Fixed::new(8))
        .ordered(true)
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(100))
        .shutdown(stop.clone())
        .build();
        handles.push(tokio::spawn(async move { runtime.run().await.expect("worker run") }));
    }
    let until = Instant::now() + Duration::from_secs(10);
    while seen.lock().len() < 100 {
        assert!(Instant::now() < until, "no progress before the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart().unwrap();
        redis
    })
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let unique: HashSet<i64> = seen.lock().iter().map(|(_, id)| *id).collect();
        if unique.len() as i64 == n {
            break;
        }
        assert!(
            Instant::now() < until,
            "{} of {n} handled 30 s after the restart",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    // Each chat's first handlings in id order.
    let seen = seen.lock().clone();
    let mut first = HashSet::new();
    let mut highest = std::collections::HashMap::new();
    for (chat, id) in seen {
        if first.insert(id) {
            let h = highest.entry(chat).or_insert(i64::MIN);
            assert!(id > *h, "chat {chat}: {id} after {h}");
            *h = id;
        }
    }
}
