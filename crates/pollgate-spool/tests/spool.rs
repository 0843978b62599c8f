//! The spool between the mock Bot API server and the runtime: full speed past a stuck
//! handler, nothing re-fetched after a crash, the size limit leaving the backlog on the
//! server, a corrupt file refused. Real sockets; the tests wait on states, not on sleeps.

mod common;

use common::{server_with, telegram, temp_dir, until};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use mock_bot_api::MockServer;
use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Runtime};
use pollgate_spool::{SpoolError, SpoolTransport};
use tokio::sync::Semaphore;

async fn server(updates: usize) -> MockServer {
    server_with(updates, 64).await
}

type Boxed = std::pin::Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

/// Counts each id handled; the update `stuck` (if any) waits for a permit.
fn counting(
    seen: Arc<Mutex<HashMap<i64, u32>>>,
    stuck: Option<(i64, Arc<Semaphore>)>,
) -> impl Fn(Update) -> Boxed + Send + Sync {
    move |u: Update| {
        let seen = Arc::clone(&seen);
        let stuck = stuck.clone();
        Box::pin(async move {
            if let Some((id, gate)) = stuck
                && u.id() == id
            {
                gate.acquire().await.expect("open").forget();
            }
            *seen.lock().entry(u.id()).or_default() += 1;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stuck_handler_does_not_hold_the_rest_and_everything_is_confirmed_once() {
    let server = server(600).await;
    let first = 1; // the mock's ids start at 1
    let dir = temp_dir("stuck");
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let release = Arc::new(Semaphore::new(0));
    let runtime = Runtime::builder(spool, counting(Arc::clone(&seen), Some((first, Arc::clone(&release)))))
        .policy(Fixed::new(50))
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(200))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    // Without a spool, at-least-once stops 100 ids past the stuck update.
    until("every other update handled", || seen.lock().len() == 599).await;
    release.add_permits(1);
    until("the stuck one too", || seen.lock().len() == 600).await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(seen.lock().values().all(|&n| n == 1), "each handled once");
    assert_eq!(summary.stats.failed, 0);
    let stats = server.stats();
    assert_eq!(
        stats.highest_confirmed_offset, 601,
        "the flush confirmed every spooled batch"
    );
    assert_eq!(stats.duplicates_served, 0, "nothing fetched twice");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_spool_is_handled_first_and_nothing_is_fetched_again() {
    let server = server(300).await;
    let dir = temp_dir("crash");
    {
        // Fill the spool, then stop as a crash would: nothing handled, nothing flushed.
        let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
        until("300 spooled", || spool.stats().spooled == 300).await;
        until("the server saw the last batch confirmed", || server.pending() == 0).await;
        spool.close().await;
    }
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    assert_eq!(spool.stats().entries, 300, "the spool survived");
    let seen = Arc::new(Mutex::new(HashMap::<i64, u32>::new()));
    let order = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let (seen, order) = (Arc::clone(&seen), Arc::clone(&order));
        move |u: Update| {
            *seen.lock().entry(u.id()).or_default() += 1;
            order.lock().push(u.id());
            async { Ok::<(), Infallible>(()) }
        }
    };
    let runtime = Runtime::builder(spool, handler)
        .policy(Fixed::new(1))
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(200))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    until("300 handled", || seen.lock().len() == 300).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let order = order.lock().clone();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in id order, one at a time");
    assert_eq!(server.stats().duplicates_served, 0, "nothing fetched again");
    let reopened = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    assert_eq!(reopened.stats().entries, 0, "finished entries are deleted for good");
    reopened.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_leaves_the_backlog_on_the_server() {
    let server = server(500).await;
    let dir = temp_dir("full");
    let spool = SpoolTransport::builder(&dir)
        .max_entries(120)
        .open(telegram(&server))
        .unwrap();
    // It refills in batches: it waits once less than a quarter (30) is free.
    until("the spool full", || spool.stats().entries > 120 - 30).await;
    // The filler waits for room instead of fetching: the rest stays on the server.
    let calls = server.stats().get_updates_calls;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = spool.stats().entries;
    assert!((91..=120).contains(&held), "{held} entries for max_entries 120");
    assert!(
        server.stats().get_updates_calls <= calls + 1,
        "a full spool polls no more: {} calls after {calls}",
        server.stats().get_updates_calls
    );
    assert!(
        server.pending() >= 380,
        "{} still pending on the server",
        server.pending()
    );
    assert_eq!(spool.stats().entries, held, "no more fetched while full");
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_is_an_error_at_open_and_is_left_alone() {
    let server = server(1).await;
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("spool.redb");
    let garbage = b"this is not a redb file, and must not be emptied".repeat(200);
    std::fs::write(&file, &garbage).unwrap();
    let error = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap_err();
    assert!(matches!(error, SpoolError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("spool.redb"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "the file is untouched");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_held_by_another_instance_is_locked_not_corrupt() {
    let server = server(1).await;
    let dir = temp_dir("locked");
    let first = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    let error = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap_err();
    assert!(error.is_locked(), "{error:?}");
    first.close().await;
    let again = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    again.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_the_spool_was_created_leaves_nothing_to_refuse() {
    // What a kill during the first start leaves: a half-written file under the
    // temporary name, and no spool.redb. The next start creates the spool anew.
    let server = server(5).await;
    let dir = temp_dir("created");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spool.redb.new"), b"half a header").unwrap();
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    until("5 spooled", || spool.stats().spooled == 5).await;
    spool.close().await;
    assert!(!dir.join("spool.redb.new").exists());
    let _ = std::fs::remove_dir_all(dir);
}
