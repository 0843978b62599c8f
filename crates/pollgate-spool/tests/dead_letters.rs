//! Retries and dead letters through the spool: a flaky update is handled on a later
//! attempt, one that always fails ends in the dead-letter table with its error and
//! attempt count (and only those), per-chat order holds through the retries, and dead
//! letters are listed, replayed and purged, in process and offline.

mod common;

use common::{finish_with_failures, server_with, telegram, temp_dir, until};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Retry, Runtime};
use pollgate_spool::{DeadLetters, SpoolTransport, Which};

/// What the handlers saw: every attempt's (chat, id) in start order, and the ids handled.
#[derive(Debug, Default)]
struct Seen {
    starts: Vec<(i64, i64)>,
    attempts: HashMap<i64, u32>,
    handled: BTreeSet<i64>,
}

type Boxed = std::pin::Pin<Box<dyn Future<Output = Result<(), std::io::Error>> + Send>>;

/// Fails the first attempt of every id `flaky` says, and every attempt of `poison` ids.
fn handler(
    seen: Arc<Mutex<Seen>>,
    flaky: fn(i64) -> bool,
    poison: fn(i64) -> bool,
) -> impl Fn(Update) -> Boxed + Send + Sync + 'static {
    move |u: Update| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let attempt = {
                let mut s = seen.lock();
                s.starts.push((u.ordering_key().unwrap_or(0), u.id()));
                let n = s.attempts.entry(u.id()).or_default();
                *n += 1;
                *n
            };
            tokio::task::yield_now().await;
            if poison(u.id()) || (flaky(u.id()) && attempt == 1) {
                return Err(std::io::Error::other(format!("no luck with {}", u.id())));
            }
            seen.lock().handled.insert(u.id());
            Ok(())
        })
    }
}

fn flaky(id: i64) -> bool {
    id % 10 == 3
}

fn poison(id: i64) -> bool {
    id % 50 == 7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_updates_are_retried_and_only_the_poisoned_ones_become_dead_letters() {
    let n = 300;
    let server = server_with(n, 64).await;
    let dir = temp_dir("retries");
    let spool = Arc::new(SpoolTransport::builder(&dir).open(telegram(&server)).unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let runtime = Runtime::builder(Arc::clone(&spool), handler(Arc::clone(&seen), flaky, poison))
        .policy(Fixed::new(16))
        .delivery(Delivery::AtLeastOnce)
        .ordered(true)
        .retry(Retry::attempts(3).initial_backoff(Duration::from_millis(2)))
        .poll_timeout(Duration::from_millis(100))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    until("every update finished", || stats.snapshot().finished() == n as u64).await;
    until("the last acknowledgement", || spool.stats().entries == 0).await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();

    let ids: Vec<i64> = (1..=n as i64).collect();
    let poisoned: Vec<i64> = ids.iter().copied().filter(|&id| poison(id)).collect();
    let flaky_ok = ids.iter().filter(|&&id| flaky(id) && !poison(id)).count() as u64;
    let s = seen.lock();
    let expected: BTreeSet<i64> = ids.iter().copied().filter(|&id| !poison(id)).collect();
    assert_eq!(s.handled, expected, "every update but the poisoned ones handled");
    assert_eq!(summary.stats.retried, flaky_ok + 2 * poisoned.len() as u64);
    assert_eq!(summary.stats.exhausted, poisoned.len() as u64);
    for &id in &poisoned {
        assert_eq!(s.attempts[&id], 3, "id {id}: three attempts");
    }
    // Per chat, attempts start in id order: a retry holds its chat, nobody overtakes it.
    let mut last: HashMap<i64, i64> = HashMap::new();
    for &(chat, id) in &s.starts {
        if let Some(&prev) = last.get(&chat) {
            assert!(id >= prev, "chat {chat}: {id} started after {prev}");
        }
        last.insert(chat, id);
    }
    drop(s);

    let letters = spool.dead_letters().unwrap();
    let dead: Vec<i64> = letters.iter().map(|l| l.update_id).collect();
    assert_eq!(dead, poisoned, "exactly the poisoned ids are dead letters");
    for l in &letters {
        assert_eq!(l.attempts, 3);
        assert_eq!(l.error, format!("no luck with {}", l.update_id));
        let update = Update::from_json(&l.json).expect("the update's JSON is kept");
        assert_eq!(update.id(), l.update_id);
    }
    let st = spool.stats();
    assert_eq!(
        (st.dead_letters, st.dead_lettered, st.entries),
        (poisoned.len() as u64, poisoned.len() as u64, 0)
    );
    assert_eq!(server.stats().highest_confirmed_offset, n as i64 + 1);
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_a_restart_and_are_replayed_and_purged() {
    let server = server_with(10, 64).await;
    let dir = temp_dir("replay");
    let spool = SpoolTransport::builder(&dir)
        .source("bot")
        .open(telegram(&server))
        .unwrap();
    until("10 spooled", || spool.stats().entries == 10).await;
    finish_with_failures(&spool, &[2, 5, 9]).await;
    let st = spool.stats();
    assert_eq!((st.entries, st.dead_letters, st.deleted), (0, 3, 7));
    spool.close().await;

    // Offline, while no spool runs on it.
    let offline = DeadLetters::open(&dir).unwrap();
    let listed: Vec<(i64, u32, String)> = offline
        .list()
        .unwrap()
        .into_iter()
        .map(|l| (l.update_id, l.attempts, l.error))
        .collect();
    assert_eq!(
        listed,
        [
            (2, 3, "broken 2".into()),
            (5, 3, "broken 5".into()),
            (9, 3, "broken 9".into())
        ]
    );
    assert_eq!(
        offline.purge(Which::Ids(&[5, 77])).unwrap(),
        1,
        "an unknown id is skipped"
    );
    drop(offline);

    // In process: counted at open, replayed to the runtime first.
    let spool = Arc::new(
        SpoolTransport::builder(&dir)
            .source("bot")
            .open(telegram(&server))
            .unwrap(),
    );
    assert_eq!(spool.stats().dead_letters, 2);
    assert!(
        DeadLetters::open(&dir).unwrap_err().is_locked(),
        "a running spool holds the file"
    );
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&handled);
    let runtime = Runtime::builder(Arc::clone(&spool), move |u: Update| {
        let h = Arc::clone(&h);
        async move {
            h.lock().push(u.id());
            Ok::<(), std::convert::Infallible>(())
        }
    })
    .policy(Fixed::new(4))
    .delivery(Delivery::AtLeastOnce)
    .poll_timeout(Duration::from_millis(100))
    .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    assert_eq!(spool.replay_dead_letters(Which::All).await.unwrap(), 2);
    until("both replayed letters handled", || handled.lock().len() == 2).await;
    until("and deleted", || spool.stats().entries == 0).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let mut ids = handled.lock().clone();
    ids.sort_unstable();
    assert_eq!(ids, [2, 9]);
    assert!(spool.dead_letters().unwrap().is_empty());
    assert_eq!(spool.stats().dead_letters, 0);
    assert_eq!(
        server.stats().duplicates_served,
        0,
        "nothing fetched from Telegram again"
    );
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_count_against_the_spool_limits() {
    let server = server_with(30, 64).await;
    let dir = temp_dir("dead-limit");
    let spool = SpoolTransport::builder(&dir)
        .max_entries(10)
        .open(telegram(&server))
        .unwrap();
    until("10 spooled", || spool.stats().entries == 10).await;
    let ids: Vec<i64> = (1..=10).collect();
    finish_with_failures(&spool, &ids).await;
    assert_eq!(spool.stats().dead_letters, 10);
    // The spool is full of dead letters: the filler must not fetch more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spool.stats().spooled, 10, "a spool full of dead letters stops fetching");
    assert_eq!(spool.purge_dead_letters(Which::All).await.unwrap(), 10);
    until("room again: the rest spooled", || spool.stats().spooled == 20).await;
    spool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_empty_directory_is_not_a_spool() {
    let dir = temp_dir("none");
    std::fs::create_dir_all(&dir).unwrap();
    let err = DeadLetters::open(&dir).unwrap_err();
    assert!(matches!(err, pollgate_spool::SpoolError::Open { .. }), "{err:?}");
    assert!(!dir.join("spool.redb").exists(), "nothing was created");
    let _ = std::fs::remove_dir_all(dir);
}
