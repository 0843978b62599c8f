//! The spool at its edges, each found in review (the test failed before its fix): stale
//! offsets, undecodable updates across a crash, closing mid-commit, the size limits, the
//! refill rhythm. The mock Bot API server over real sockets; waits on states, not sleeps.

mod common;

use common::{server_with, telegram, temp_dir, until};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use mock_bot_api::Fault;
use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport, Update};
use pollgate_runtime::{Delivery, Runtime};
use pollgate_spool::SpoolTransport;
use tokio::sync::Notify;

/// Waits up to `limit` for `cond`; returns whether it held.
async fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cond()
}

fn counting(
    seen: Arc<Mutex<HashMap<i64, u32>>>,
) -> impl Fn(Update) -> std::future::Ready<Result<(), Infallible>> + Send + Sync {
    move |u: Update| {
        *seen.lock().entry(u.id()).or_default() += 1;
        std::future::ready(Ok(()))
    }
}

/// A source that says when one of its fetches returned updates (the filler is then
/// about to commit them).
struct Signalling<T> {
    inner: T,
    fetched: Arc<Notify>,
}

impl<T: Transport> Transport for Signalling<T> {
    type Error = T::Error;

    fn ack_model(&self) -> AckModel {
        self.inner.ack_model()
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, T::Error> {
        let batch = self.inner.fetch(request).await?;
        if !batch.is_empty() {
            self.fetched.notify_one();
        }
        Ok(batch)
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), T::Error> {
        self.inner.ack(ack).await
    }

    async fn flush(&self) -> Result<(), T::Error> {
        self.inner.flush().await
    }
}

/// Guarantee: "An update is confirmed to Telegram only once it is durable in the spool."
/// An undecodable update is kept only in memory (`State::failures`) while its id is
/// confirmed with the batch: a crash before the runtime's next fetch loses it without a
/// trace (not reported, not on the server any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_update_survives_a_crash_until_it_is_reported() {
    let server = server_with(10, 64).await;
    server.inject(Fault::MalformedUpdate); // the first batch's middle update is broken
    let dir = temp_dir("undecodable");
    {
        let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
        until("the batch spooled and confirmed", || {
            spool.stats().spooled == 10 && server.pending() == 0
        })
        .await;
        spool.close().await; // a crash: the runtime never fetched
    }
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let runtime = Runtime::builder(spool, counting(Arc::clone(&seen)))
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(100))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    until("the 9 decodable updates handled", || seen.lock().len() == 9).await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(server.pending(), 0, "the server no longer has it");
    assert_eq!(
        summary.stats.undecodable, 1,
        "the undecodable update was confirmed to the server but never reached the runtime \
         after the restart: lost without a report"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `SpoolHandle` is documented to outlive the runtime's ownership of the spool (to read
/// the counters afterwards), and `close` to let the spool be opened again in this process.
/// But the handle holds `Arc<Shared>`, hence the `redb::Database`: while any handle
/// lives, the file stays open and locked, and a restart in the same process fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_handle_does_not_keep_the_file_locked() {
    let server = server_with(50, 64).await;
    let dir = temp_dir("handle");
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    let handle = spool.handle();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let runtime = Runtime::builder(spool, counting(Arc::clone(&seen)))
        .policy(Fixed::new(8))
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(100))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    until("50 handled", || seen.lock().len() == 50).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    // The runtime (and with it the transport) is gone; a supervisor restarts it, still
    // holding the handle it reads the counters from.
    let reopened = SpoolTransport::builder(&dir).open(telegram(&server));
    let stats = handle.stats();
    assert!(
        reopened.is_ok(),
        "reopening after the run ended failed while a SpoolHandle lives ({stats:?}): {:?}",
        reopened.err()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `close` promises that the spool "can be opened again in this process once this
/// returns". It aborts the filler, but a commit already handed to `spawn_blocking` keeps
/// running (abort does not stop a blocking task) and holds a clone of the database: the
/// reopen fails with `DatabaseAlreadyOpen`, and the batch lands on disk after `close`
/// returned (after `flush` had confirmed the previous offset, in the runtime's case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_during_a_commit_closes_the_file() {
    // Large updates so that a commit takes a while.
    let server = server_with(2_000, 16_000).await;
    let dir = temp_dir("mid-commit");
    let mut failures = Vec::new();
    for attempt in 0..10 {
        let fetched = Arc::new(Notify::new());
        // Wait out the stray commit of the previous attempt (see below) before opening.
        let mut spool = None;
        for _ in 0..5000 {
            let source = Signalling {
                inner: telegram(&server),
                fetched: Arc::clone(&fetched),
            };
            match SpoolTransport::builder(&dir).open(source) {
                Ok(s) => {
                    spool = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        let spool = spool.expect("the previous attempt's stray commit ended");
        fetched.notified().await; // the filler now commits what it fetched
        let counted = spool.stats().entries;
        spool.close().await;
        match SpoolTransport::builder(&dir).open(telegram(&server)) {
            Ok(reopened) => reopened.close().await,
            Err(e) => {
                let mut on_disk = None;
                for _ in 0..5000 {
                    if let Ok(reopened) = SpoolTransport::builder(&dir).open(telegram(&server)) {
                        on_disk = Some(reopened.stats().entries);
                        reopened.close().await;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failures.push(format!(
                    "attempt {attempt}: {e:?}; {counted} entries at close, {on_disk:?} on disk after"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "reopen right after close failed {} of 10 times: {failures:#?}",
        failures.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `max_bytes`: "The most JSON bytes the spool holds". The filler checks only
/// `bytes >= max_bytes` and then asks for `room` entries, so one fetch can add a whole
/// window (100 updates, each up to tens of KiB) past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_holds_within_about_one_entry() {
    let server = server_with(100, 2_000).await;
    let dir = temp_dir("max-bytes");
    let max_bytes = 8_192;
    let spool = SpoolTransport::builder(&dir)
        .max_bytes(max_bytes)
        .open(telegram(&server))
        .unwrap();
    until("something spooled", || spool.stats().entries > 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = spool.stats();
    spool.close().await;
    // One update past the limit is the most a size check before each entry allows.
    assert!(
        stats.bytes <= max_bytes + 2_500,
        "max_bytes({max_bytes}) but the spool holds {} bytes in {} entries",
        stats.bytes,
        stats.entries
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `high` (the highest id committed) is trusted for whatever source the spool is opened
/// with: the filler's very first `getUpdates` sends `offset = high + 1`, which confirms
/// (deletes on the server) every pending update of a source whose ids are lower. Here: the
/// same spool directory reopened within 24 h for another bot (a new token after a
/// BotFather re-creation, a staging spool reused, a restored backup). The same offset is
/// what a long-running process keeps sending after Telegram restarts ids at a random lower
/// number following a week without updates: `high` is only forgotten at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_offset_of_another_source_is_not_confirmed() {
    let first = server_with(300, 64).await;
    let dir = temp_dir("high");
    {
        let spool = SpoolTransport::builder(&dir).open(telegram(&first)).unwrap();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let runtime = Runtime::builder(spool, counting(Arc::clone(&seen)))
            .policy(Fixed::new(16))
            .delivery(Delivery::AtLeastOnce)
            .poll_timeout(Duration::from_millis(100))
            .build();
        let stop = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        until("300 handled", || seen.lock().len() == 300).await;
        stop.cancel();
        run.await.unwrap().unwrap();
    }
    // Ids 1..=50 on the other source.
    let second = server_with(50, 64).await;
    let spool = SpoolTransport::builder(&dir).open(telegram(&second)).unwrap();
    let handle = spool.handle();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let runtime = Runtime::builder(spool, counting(Arc::clone(&seen)))
        .policy(Fixed::new(16))
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(100))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    let handled = within(Duration::from_secs(3), || seen.lock().len() == 50).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let server = second.stats();
    assert!(
        handled,
        "{} of 50 new updates handled; the server confirmed up to {} and holds {} pending; spool {:?}",
        seen.lock().len(),
        server.highest_confirmed_offset,
        second.pending(),
        handle.stats()
    );
    drop(handle);
    let _ = std::fs::remove_dir_all(dir);
}

/// Accounting: an acknowledgement for an entry that is spooled but not leased (a receipt
/// sent twice across a restart by another driver, or acked before it was fetched) deletes
/// the row but leaves the id in `ready`; the next fetch leases it, finds no row, returns
/// nothing for it, and the lease is never released: `entries`/`bytes` stay counted for
/// good and the filler has one slot less, for the life of the process. (No underflow: acks
/// for unknown receipts are ignored.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_for_a_waiting_entry_keeps_the_accounting() {
    let server = server_with(10, 64).await;
    let dir = temp_dir("ack-waiting");
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    until("10 spooled", || spool.stats().entries == 10).await;
    let early: Vec<Arc<str>> = vec!["3".into()];
    spool
        .ack(Ack {
            below: None,
            receipts: &early,
            failed: &[],
        })
        .await
        .unwrap();
    let batch = spool
        .fetch(FetchRequest {
            limit: 100,
            timeout: Duration::from_millis(10),
        })
        .await
        .unwrap();
    let receipts: Vec<Arc<str>> = batch.updates.iter().filter_map(|u| u.receipt().cloned()).collect();
    spool
        .ack(Ack {
            below: None,
            receipts: &receipts,
            failed: &[],
        })
        .await
        .unwrap();
    let stats = spool.stats();
    spool.close().await;
    let reopened = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    let on_disk = reopened.stats().entries;
    reopened.close().await;
    assert_eq!(
        stats.entries, on_disk,
        "the spool counts {} entries ({} bytes) but holds {on_disk} on disk",
        stats.entries, stats.bytes
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Once the spool is full, every acknowledgement wakes the filler, which fetches exactly
/// the room freed (often 1–10 updates), commits it with its own fsync, and repeats: one
/// `getUpdates` round trip and one fsync'd transaction per handful of updates, for as long
/// as the backlog lasts (the state the spool exists for). Refilling only when a useful
/// batch fits (a low-water mark) keeps batches near the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refills_in_whole_batches() {
    let server = server_with(1_500, 64).await;
    let dir = temp_dir("refill");
    let spool = SpoolTransport::builder(&dir)
        .max_entries(200)
        .open(telegram(&server))
        .unwrap();
    let handle = spool.handle();
    let seen = Arc::new(Mutex::new(HashMap::<i64, u32>::new()));
    let handler = {
        let seen = Arc::clone(&seen);
        move |u: Update| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                *seen.lock().entry(u.id()).or_default() += 1;
                Ok::<(), Infallible>(())
            }
        }
    };
    let runtime = Runtime::builder(spool, handler)
        .policy(Fixed::new(16))
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(200))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    until("all handled", || seen.lock().len() == 1_500).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let stats = handle.stats();
    drop(handle);
    let average = stats.spooled as f64 / stats.batches as f64;
    assert!(
        average >= 25.0,
        "{} batches (getUpdates round trips and fsync'd commits) for {} updates: {average:.1} per batch",
        stats.batches,
        stats.spooled
    );
    let _ = std::fs::remove_dir_all(dir);
}
