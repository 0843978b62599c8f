//! Edges of `ShardedStreamTransport` found in review, kept as regression tests against a
//! real `redis-server`: each states the behaviour the design promises (and failed on the
//! code before its fix): lost read replies, reads that outlive a lease or a drain, a
//! cancelled fetch, a Redis that lost its data, small fetch limits, lost script replies,
//! trimming.
//!
//! Some tests put a small TCP proxy between a worker and Redis, to lose one reply (the
//! server executed the command, the client never saw the answer) or to cut a worker off
//! (a partition) and let it back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, FetchRequest, Transport, Update};
use pollgate_redis::{LocalRedis, Persistence, RedisServer, ShardedProducer, ShardedStreamTransport, shard_of};
use pollgate_runtime::{Delivery, Runtime};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Helpers (as in tests/sharded.rs)

fn server() -> RedisServer {
    RedisServer::from_env_or_start().expect("a Redis server for the tests")
}

fn unique(name: &str) -> String {
    format!("pollgate-review:{name}:{}:{}", std::process::id(), fastrand::u64(..))
}

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#
    ))
    .unwrap()
}

/// A chat whose updates go to `shard` of `shards`.
fn chat_on(shard: u32, shards: u32) -> i64 {
    (1000..).find(|c| shard_of(&update(1, *c), shards) == shard).unwrap()
}

fn transport(url: &str, prefix: &str, shards: u32, worker: &str, ttl_ms: u64, block_ms: u64) -> ShardedStreamTransport {
    ShardedStreamTransport::builder(url, prefix, "workers")
        .shards(shards)
        .worker(worker)
        .lease_ttl(Duration::from_millis(ttl_ms))
        .max_block(Duration::from_millis(block_ms))
        .build()
        .unwrap()
}

fn req(limit: usize, timeout_ms: u64) -> FetchRequest {
    FetchRequest {
        limit,
        timeout: Duration::from_millis(timeout_ms),
    }
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Entries pending in the group of a shard stream (XPENDING summary count).
async fn pending(url: &str, prefix: &str, shard: u32) -> i64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(format!("{prefix}:shard:{shard}"))
        .arg("workers")
        .query_async(&mut conn(url).await)
        .await
        .unwrap();
    match v {
        redis::Value::Array(v) => match v.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

async fn lease_value(url: &str, prefix: &str, shard: u32) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("{prefix}:lease:{shard}"))
        .query_async(&mut conn(url).await)
        .await
        .unwrap()
}

async fn pttl(url: &str, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn(url).await)
        .await
        .unwrap()
}

async fn xlen(url: &str, key: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut conn(url).await)
        .await
        .unwrap()
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fetches for `during`, collecting the update ids (and acking nothing).
async fn collect(t: &ShardedStreamTransport, during: Duration, timeout_ms: u64) -> Vec<i64> {
    let until = Instant::now() + during;
    let mut ids = Vec::new();
    while Instant::now() < until {
        let b = t.fetch(req(50, timeout_ms)).await.unwrap();
        ids.extend(b.updates.iter().map(Update::id));
    }
    ids
}

// ---------------------------------------------------------------------------------------
// A TCP proxy that can lose one reply or cut everything (std threads: no extra features).

mod proxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    use parking_lot::Mutex;

    #[derive(Default)]
    struct Ctl {
        cut: AtomicBool,
        /// (bytes a client command contains, bytes its reply contains): the first such
        /// reply is not forwarded; the connection is closed instead.
        rule: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
        dropped: AtomicUsize,
        socks: Mutex<Vec<TcpStream>>,
    }

    pub(crate) struct Proxy {
        port: u16,
        ctl: Arc<Ctl>,
    }

    fn contains(h: &[u8], n: &[u8]) -> bool {
        n.is_empty() || h.windows(n.len()).any(|w| w == n)
    }

    fn pump(mut from: TcpStream, mut to: TcpStream, ctl: Arc<Ctl>, armed: Arc<AtomicBool>, upstream: bool) {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if upstream {
                if let Some((cmd, _)) = &*ctl.rule.lock()
                    && contains(&buf[..n], cmd)
                {
                    armed.store(true, SeqCst);
                }
            } else if armed.load(SeqCst) {
                let mut rule = ctl.rule.lock();
                if rule.as_ref().is_some_and(|(_, reply)| contains(&buf[..n], reply)) {
                    *rule = None;
                    ctl.dropped.fetch_add(1, SeqCst);
                    break; // the reply is lost with the connection
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }

    impl Proxy {
        pub(crate) fn start(upstream_url: &str) -> Proxy {
            let addr = upstream_url
                .trim_start_matches("redis://")
                .split('/')
                .next()
                .unwrap()
                .to_string();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let ctl = Arc::new(Ctl::default());
            let c = Arc::clone(&ctl);
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    if c.cut.load(SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&addr) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    c.socks.lock().push(client.try_clone().unwrap());
                    c.socks.lock().push(server.try_clone().unwrap());
                    let armed = Arc::new(AtomicBool::new(false));
                    for (from, to, up) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap(), true),
                        (server, client, false),
                    ] {
                        let (c, armed) = (Arc::clone(&c), Arc::clone(&armed));
                        std::thread::spawn(move || pump(from, to, c, armed, up));
                    }
                }
            });
            Proxy { port, ctl }
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Loses the first reply containing `reply_has` (empty: any) to a command
        /// containing `cmd`: the server executed it, the client sees the connection drop.
        pub(crate) fn lose_reply(&self, cmd: &[u8], reply_has: &[u8]) {
            *self.ctl.rule.lock() = Some((cmd.to_vec(), reply_has.to_vec()));
        }

        pub(crate) fn lost(&self) -> usize {
            self.ctl.dropped.load(SeqCst)
        }

        /// A partition: every connection closed, new ones refused, until `heal`.
        pub(crate) fn cut(&self) {
            self.ctl.cut.store(true, SeqCst);
            for s in self.ctl.socks.lock().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }

        pub(crate) fn heal(&self) {
            self.ctl.cut.store(false, SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Before the fix: Cancel safety: `Transport::fetch` "must be cancel safe: dropping the future loses no
//    update". A dropped blocking XREADGROUP is still served by Redis; the entry goes into
//    the PEL of `owner`, the shard stays `Phase::Reading` (no guard like transport.rs's
//    FetchGuard) and `>` never returns it again: lost for the whole tenure.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_blocking_fetch_loses_its_entry_for_the_whole_tenure() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("cancel");
    let a = transport(&url, &prefix, 1, "a", 6000, 1500);
    assert!(a.fetch(req(10, 10)).await.unwrap().updates.is_empty());
    assert_eq!(a.shards_held(), vec![0]);
    // A blocking fetch, dropped (as the runtime's shutdown select, or any caller's timeout).
    let blocked = a.fetch(req(10, 1500));
    assert!(tokio::time::timeout(Duration::from_millis(200), blocked).await.is_err());
    let producer = ShardedProducer::builder(&url, &prefix).shards(1).build().unwrap();
    producer.add(&update(42, 7)).await.unwrap();
    wait_for(
        "the entry served to the dropped read",
        Duration::from_secs(3),
        async || pending(&url, &prefix, 0).await == 1,
    )
    .await;
    let got = collect(&a, Duration::from_secs(2), 200).await;
    assert_eq!(
        got,
        vec![42],
        "the entry read into the cancelled fetch's reply must be delivered by a later fetch \
         (it stays pending to `owner`, {} pending, and this tenure never looks there again)",
        pending(&url, &prefix, 0).await
    );
}

// ---------------------------------------------------------------------------------------
// 2. Before the fix: Draining releases a shard while a blocking XREADGROUP covering it is still blocked on
//    the server. The new owner recovers (nothing pending yet) and reads `>`; the next entry
//    is served to the old owner's older blocked read (Redis serves blocked clients FIFO),
//    which drops it (`held.get(&shard)` is None: `let Some(token) = token else { continue }`).
//    The entry sits in the PEL of `owner` and its new owner, already past recovery, never
//    delivers it. This is the normal rebalance path (a worker joins).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_drained_under_a_blocked_read_loses_the_next_entry() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("drain");
    let (shards, ttl) = (2u32, 3000u64); // renewals every 1 s, usable 1.5 s, max_block 750 ms
    let a = Arc::new(transport(&url, &prefix, shards, "a", ttl, 750));
    let b = Arc::new(transport(&url, &prefix, shards, "b", ttl, 750));
    assert!(a.fetch(req(10, 10)).await.unwrap().updates.is_empty());
    assert_eq!(a.shards_held(), vec![0, 1], "alone, A takes every shard");
    // Find A's lease rounds: a renewal resets the lease's PTTL.
    let lease0 = format!("{prefix}:lease:0");
    let mut last = pttl(&url, &lease0).await;
    let renewed = loop {
        let now = pttl(&url, &lease0).await;
        if now > last + 200 {
            break Instant::now();
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // B starts 50 ms after this round: it registers now, so A's next round (at +1 s)
    // sees two workers and drains a shard; B's first round runs after its 1 s settle,
    // just after A released it.
    tokio::time::sleep_until((renewed + Duration::from_millis(50)).into()).await;
    let b_first = tokio::spawn({
        let b = Arc::clone(&b);
        async move { b.fetch(req(10, 10)).await.unwrap() }
    });
    // A's blocking read, issued shortly before its next round, on both shards.
    tokio::time::sleep_until((renewed + Duration::from_millis(880)).into()).await;
    let a_read = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.fetch(req(10, 750)).await.unwrap() }
    });
    assert!(b_first.await.unwrap().updates.is_empty());
    // A releases the drained shard only once its blocked read is over; B takes it then.
    let mut moved = Vec::new();
    wait_for("B took the shard A drained", Duration::from_secs(5), async || {
        moved = b.shards_held();
        moved.len() == 1
    })
    .await;
    let shard = moved[0];
    assert!(!a.shards_held().contains(&shard));
    // B has recovered the shard (nothing pending) and reads new entries. One arrives.
    let producer = ShardedProducer::builder(&url, &prefix).shards(shards).build().unwrap();
    producer.add(&update(100, chat_on(shard, shards))).await.unwrap();
    let a_got: Vec<i64> = a_read.await.unwrap().updates.iter().map(Update::id).collect();
    let b_got = collect(&b, Duration::from_secs(2), 200).await;
    assert!(
        b_got.contains(&100),
        "the entry appended to shard {shard} after B took it must reach B: B got {b_got:?}, \
         A's blocked read got {a_got:?}; pending on the shard: {}",
        pending(&url, &prefix, shard).await
    );
}

// ---------------------------------------------------------------------------------------
// 3. Before the fix: A lost XREADGROUP reply (the server delivered the entries into the PEL, the
//    connection dropped before the reply arrived) is a transient error that `with_retries`
//    retries at once with `>`: the lost entries are skipped. The Err arm that would move
//    the shard to Recovering (`read_new`) only runs once retries are exhausted. Result:
//    newer entries delivered first, the lost ones never (until another owner).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_read_reply_delivers_newer_entries_first_and_never_the_lost_ones() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("lostreply");
    let producer = ShardedProducer::builder(&url, &prefix).shards(1).build().unwrap();
    for id in 1..=3 {
        producer.add(&update(id, 7)).await.unwrap();
    }
    let proxy = proxy::Proxy::start(&url);
    let a = Arc::new(transport(&proxy.url(), &prefix, 1, "a", 3000, 500));
    proxy.lose_reply(b"XREADGROUP", b"update_id");
    let first = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.fetch(req(10, 500)).await.unwrap() }
    });
    wait_for("the read reply lost", Duration::from_secs(5), async || {
        proxy.lost() == 1
    })
    .await;
    // A newer update of the same chat, appended before the retry (it waits >= 50 ms).
    producer.add(&update(4, 7)).await.unwrap();
    let mut got: Vec<i64> = first.await.unwrap().updates.iter().map(Update::id).collect();
    got.extend(collect(&a, Duration::from_secs(2), 200).await);
    assert_eq!(
        got,
        vec![1, 2, 3, 4],
        "chat 7's updates in stream order, none lost ({} pending to `owner`)",
        pending(&url, &prefix, 0).await
    );
}

// ---------------------------------------------------------------------------------------
// 4. Before the fix: A blocking XREADGROUP retried inside `with_retries` is sent again as it was, without
//    checking that the shard is still usable (half a TTL after the last renewal) and with
//    its original BLOCK. Partitioned for longer than the TTL, the worker loses the lease to
//    another; when the partition heals, its retried read takes the new owner's entries
//    (`>` on the shared consumer `owner`): delivered by a worker that no longer holds the
//    lease, or dropped, and in both cases never by the owner.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_retried_after_a_partition_takes_entries_of_a_shard_another_worker_owns() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("partition");
    let proxy = proxy::Proxy::start(&url);
    let ttl = 1200; // renewals every 400 ms, usable 600 ms, max_block 300 ms
    let a = Arc::new(transport(&proxy.url(), &prefix, 1, "a", ttl, 300));
    let b = transport(&url, &prefix, 1, "b", ttl, 300);
    assert!(a.fetch(req(10, 10)).await.unwrap().updates.is_empty());
    assert_eq!(a.shards_held(), vec![0]);
    type Batches = Arc<Mutex<Vec<(Instant, Vec<i64>, Vec<u32>)>>>;
    let a_batches: Batches = Arc::default();
    let a_loop = tokio::spawn({
        let (a, log) = (Arc::clone(&a), Arc::clone(&a_batches));
        async move {
            loop {
                let held = a.shards_held();
                let batch = a.fetch(req(10, 300)).await.unwrap();
                log.lock()
                    .push((Instant::now(), batch.updates.iter().map(Update::id).collect(), held));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut(); // A is blocked in XREADGROUP: the read fails and is retried
    wait_for("A's lease expired", Duration::from_secs(3), async || {
        lease_value(&url, &prefix, 0).await.is_none()
    })
    .await;
    assert!(b.fetch(req(10, 10)).await.unwrap().updates.is_empty());
    assert_eq!(b.shards_held(), vec![0], "B owns the shard now");
    let producer = ShardedProducer::builder(&url, &prefix).shards(1).build().unwrap();
    for id in 101..=103 {
        producer.add(&update(id, 7)).await.unwrap();
    }
    let healed = Instant::now();
    proxy.heal();
    // Give A's retries (100 ms doubling to 1 s) time to run.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b_got = collect(&b, Duration::from_secs(2), 200).await;
    a_loop.abort();
    let a_after: Vec<Vec<i64>> = a_batches
        .lock()
        .iter()
        .filter(|(t, ids, _)| *t > healed && !ids.is_empty())
        .map(|(_, ids, _)| ids.clone())
        .collect();
    assert_eq!(
        b_got,
        vec![101, 102, 103],
        "the owner of the shard (B, since the partition) must deliver its entries; \
         A, which lost the lease, returned {a_after:?} after the partition healed; {} pending",
        pending(&url, &prefix, 0).await
    );
}

// ---------------------------------------------------------------------------------------
// 5. Before the fix: Busy loop: a Recovering shard whose lease is gone (FENCED_CLAIM answers nil) returns
//    from `recover` with nothing and no phase change; `recovering` is not empty so `fetch`
//    skips its wait and returns an empty batch at once, every time, until the next
//    renewal (up to a third of the TTL) drops the shard. The runtime re-fetches at once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_shard_whose_lease_is_gone_makes_fetch_spin() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("spin");
    let producer = ShardedProducer::builder(&url, &prefix).shards(1).build().unwrap();
    for id in 1..=10 {
        producer.add(&update(id, 7)).await.unwrap();
    }
    let ttl = 1500;
    // A dead worker leaves 5 entries pending.
    let dead = transport(&url, &prefix, 1, "dead", ttl, 300);
    assert_eq!(dead.fetch(req(5, 10)).await.unwrap().updates.len(), 5);
    drop(dead);
    wait_for("the dead worker's lease expired", Duration::from_secs(3), async || {
        lease_value(&url, &prefix, 0).await.is_none()
    })
    .await;
    // The heir recovers one of them (limit 1): still Recovering.
    let a = transport(&url, &prefix, 1, "a", ttl, 300);
    assert_eq!(a.fetch(req(1, 300)).await.unwrap().updates.len(), 1);
    // The lease is lost from under it (a failover that lost the key, another worker's
    // SET after an expiry the renewal has not noticed yet).
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:lease:0"))
        .arg("someone-else")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    let began = Instant::now();
    let mut fetches = 0;
    while began.elapsed() < Duration::from_millis(250) && !a.shards_held().is_empty() {
        let b = a.fetch(req(1, 300)).await.unwrap();
        assert!(b.updates.is_empty());
        fetches += 1;
    }
    assert!(
        fetches <= 3,
        "{fetches} fetches returned at once within {:?} (each asked to wait 300 ms): a busy loop",
        began.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 6. Before the fix: Redis restarts without its data (no persistence; or AOF everysec losing a recent
//    XGROUP CREATE; or a failover to a replica without it): XREADGROUP/XPENDING/XACK answer
//    NOGROUP, which is not transient, so `fetch` fails for good and every worker's run
//    ends. (`ensure_group` runs once per tenure; RedisStreamTransport re-creates the group
//    on NOGROUP, transport.rs.) The producer re-appends what the server lost, nobody reads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_its_data_stops_the_workers() {
    let mut local = LocalRedis::start_with(Persistence::None).expect("redis-server on PATH");
    let url = local.url();
    let prefix = unique("restart");
    let producer = ShardedProducer::builder(&url, &prefix).shards(1).build().unwrap();
    for id in 1..=3 {
        producer.add(&update(id, 7)).await.unwrap();
    }
    // A long TTL: the lease round (every 10 s) does not notice the restart first.
    let t = transport(&url, &prefix, 1, "w", 30_000, 100);
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = CancellationToken::new();
    let runtime = Runtime::builder(t, {
        let seen = Arc::clone(&seen);
        move |u: Update| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().push(u.id());
                Ok::<(), std::io::Error>(())
            }
        }
    })
    .policy(Fixed::new(4))
    .ordered(true)
    .delivery(Delivery::AtLeastOnce)
    .poll_timeout(Duration::from_millis(100))
    .shutdown(stop.clone())
    .build();
    let run = tokio::spawn(runtime.run());
    wait_for("the first updates handled", Duration::from_secs(10), async || {
        seen.lock().len() >= 3
    })
    .await;
    local.kill().unwrap();
    let mut local = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        local.restart().unwrap();
        local
    })
    .await
    .unwrap();
    for id in 4..=6 {
        producer.add(&update(id, 7)).await.unwrap();
    }
    let until = Instant::now() + Duration::from_secs(8);
    while !(4..=6).all(|id| seen.lock().contains(&id)) {
        if run.is_finished() {
            let end = run.await.unwrap();
            panic!(
                "the worker's run ended after the restart: {:?}",
                end.map(|_| "ok").map_err(|e| e.to_string())
            );
        }
        assert!(
            Instant::now() < until,
            "not handled after the restart: {:?}",
            seen.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let _ = run.await;
    let _ = local.kill();
}

// ---------------------------------------------------------------------------------------
// 7. Before the fix: `read_new` reads only the first `limit` shards (`&shards[..shards.len().min(limit)]`)
//    and blocks on them when nothing was recovered, even while other held shards have
//    entries. With a small limit (a policy near capacity: `Fixed(4)` with 3 running asks
//    for 1) an entry waits up to (S - 1) x max_block.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fetch_limit_blocks_on_idle_shards_while_another_has_entries() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("limit");
    let shards = 8;
    let a = transport(&url, &prefix, shards, "a", 1200, 300);
    // Fetch #1 (rotation 1) reads shard 1 (fetch #k reads shard k % 8 with limit 1).
    assert!(a.fetch(req(1, 300)).await.unwrap().updates.is_empty());
    assert_eq!(a.shards_held().len(), 8);
    // An entry on the shard just read: the rotation comes back to it last.
    let producer = ShardedProducer::builder(&url, &prefix).shards(shards).build().unwrap();
    producer.add(&update(1, chat_on(1, shards))).await.unwrap();
    let began = Instant::now();
    let mut empty = 0;
    loop {
        let b = a.fetch(req(1, 300)).await.unwrap();
        if !b.updates.is_empty() {
            break;
        }
        empty += 1;
        assert!(began.elapsed() < Duration::from_secs(10));
    }
    assert!(
        began.elapsed() < Duration::from_millis(400),
        "an available entry waited {:?} ({empty} fetches blocked 300 ms each on idle shards)",
        began.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 8. Before the fix: Lost replies to the lease scripts: ACQUIRE retried after its reply was lost finds the
//    key set (to its own token) and answers 0, so the worker does not hold a shard that
//    Redis says it holds: nobody reads it until the lease expires (a TTL plus a round).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acquire_reply_strands_the_shard_for_a_ttl() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("acquire");
    let proxy = proxy::Proxy::start(&url);
    let a = transport(&proxy.url(), &prefix, 1, "a", 3000, 500);
    proxy.lose_reply(b"'NX', 'PX'", b"");
    let _ = a.fetch(req(10, 100)).await.unwrap();
    assert_eq!(proxy.lost(), 1, "the ACQUIRE reply was lost");
    let began = Instant::now();
    while a.shards_held().is_empty() && began.elapsed() < Duration::from_millis(1500) {
        let _ = a.fetch(req(10, 100)).await.unwrap();
    }
    let lease = lease_value(&url, &prefix, 0).await;
    assert_eq!(
        a.shards_held(),
        vec![0],
        "A must hold the shard its own token holds in Redis ({lease:?}); it waited {:?}",
        began.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 9. Before the fix: FENCED_DEAD is not idempotent: retried after a lost reply it appends the dead letter
//    again (the plain transport's DEAD_LETTER checks the PEL first).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_dead_letter_reply_writes_the_dead_letter_twice() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("dead");
    // An entry without the `update` field: the worker dead-letters it.
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}:shard:0"))
        .arg("*")
        .arg("junk")
        .arg("x")
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    let proxy = proxy::Proxy::start(&url);
    let a = transport(&proxy.url(), &prefix, 1, "a", 9000, 300);
    proxy.lose_reply(b"pollgate_reason", b"");
    let _ = collect(&a, Duration::from_millis(800), 100).await;
    assert_eq!(proxy.lost(), 1, "the dead-letter reply was lost");
    assert_eq!(
        xlen(&url, &format!("{prefix}:dead")).await,
        1,
        "one entry, one dead letter"
    );
}

// ---------------------------------------------------------------------------------------
// 10. Before the fix: Unbounded growth: nothing ever trims a shard stream (ShardedProducer has no MAXLEN,
//    and examples/bridge.rs ignores --max-len with --shards): handled and acknowledged
//    entries stay in Redis for ever.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_are_never_trimmed_from_the_shard_streams() {
    let redis = server();
    let url = redis.url();
    let prefix = unique("growth");
    let producer = ShardedProducer::builder(&url, &prefix).shards(1).build().unwrap();
    for id in 1..=200 {
        producer.add(&update(id, id % 7)).await.unwrap();
    }
    let a = transport(&url, &prefix, 1, "a", 3000, 100);
    let mut done = 0;
    while done < 200 {
        let b = a.fetch(req(100, 100)).await.unwrap();
        let receipts: Vec<Arc<str>> = b.updates.iter().map(|u| u.receipt().unwrap().clone()).collect();
        done += receipts.len();
        a.ack(Ack {
            below: None,
            receipts: &receipts,
            failed: &[],
        })
        .await
        .unwrap();
    }
    assert_eq!(pending(&url, &prefix, 0).await, 0);
    // The owner trims at its lease rounds (every quarter of the TTL).
    let stream = format!("{prefix}:shard:0");
    wait_for("the acknowledged entries trimmed", Duration::from_secs(5), async || {
        xlen(&url, &stream).await <= 1
    })
    .await;
}

/// A flush dropped while it waits out a read that may still be served (the first thing it
/// awaits) had already stopped the lease task but left the transport marked as started:
/// the next fetch did not start the lease task again, the leases went unrenewed, and the
/// worker lost its shards for good. Now a fetch after such a flush starts it again: the
/// worker keeps its shards across several TTLs and delivers what is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_after_a_dropped_flush_keeps_the_leases() {
    let server = server();
    let url = server.url().to_string();
    let prefix = unique("dropped-flush");
    let t = transport(&url, &prefix, 2, "a", 600, 400);
    assert!(t.fetch(req(10, 0)).await.unwrap().updates.is_empty());
    assert_eq!(t.shards_held().len(), 2);
    // A fetch dropped mid-read: its read may still be served until block + slack.
    let _ = tokio::time::timeout(Duration::from_millis(50), t.fetch(req(10, 400))).await;
    // A flush dropped while it waits that read out.
    let _ = tokio::time::timeout(Duration::from_millis(50), t.flush()).await;
    // Fetching again, for three TTLs.
    let until = Instant::now() + Duration::from_millis(1800);
    while Instant::now() < until {
        let _ = t.fetch(req(10, 100)).await.unwrap();
    }
    assert_eq!(
        t.shards_held().len(),
        2,
        "the lease task runs again: both shards still held"
    );
    let producer = ShardedProducer::builder(&url, &prefix).shards(2).build().unwrap();
    producer.add(&update(7, chat_on(1, 2))).await.unwrap();
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while got.is_empty() && Instant::now() < until {
        got = t.fetch(req(10, 200)).await.unwrap().updates;
    }
    assert_eq!(got.iter().map(Update::id).collect::<Vec<_>>(), vec![7]);
    t.flush().await.unwrap();
}
