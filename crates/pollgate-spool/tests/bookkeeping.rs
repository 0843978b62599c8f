//! The spool's bookkeeping under the orders a running bot produces, each found in review
//! and failing before its fix: an acknowledgement dropped by its caller, a replay or purge
//! racing an acknowledgement, a dead letter the source delivers again, and `close` with a
//! transaction still queued.

mod common;

use common::{server_with, telegram, temp_dir, until};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use pollgate_core::{Ack, FetchRequest, HandlerFailure, TelegramTransport, Transport, Update};

use pollgate_spool::{SpoolTransport, Which};

/// Polls `fut` exactly once.
async fn poll_once<F: Future + ?Sized>(fut: &mut Pin<Box<F>>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// Leases every ready entry (at most 100) and returns the batch's ids in order.
async fn lease_all<T: Transport>(spool: &SpoolTransport<T>) -> Vec<i64> {
    let batch = spool
        .fetch(FetchRequest {
            limit: 100,
            timeout: Duration::from_millis(200),
        })
        .await
        .unwrap();
    batch.updates.iter().map(Update::id).collect()
}

fn receipts(ids: &[i64]) -> Vec<Arc<str>> {
    ids.iter().map(|id| Arc::from(id.to_string())).collect()
}

fn failure(id: i64) -> HandlerFailure {
    HandlerFailure::new(id, id.to_string().into(), 3, format!("broken {id}"))
}

/// Three entries spooled and leased; an ack of all three, the middle one failed, is
/// polled once (its transaction goes to the writer thread) and returns the spool and the
/// pinned ack future.
async fn spool_with_ack_in_flight(
    name: &str,
) -> (
    mock_bot_api::MockServer,
    std::path::PathBuf,
    Arc<SpoolTransport<TelegramTransport>>,
    Vec<i64>,
) {
    let server = server_with(3, 64).await;
    let dir = temp_dir(name);
    let spool = Arc::new(SpoolTransport::builder(&dir).open(telegram(&server)).unwrap());
    until("3 spooled", || spool.stats().entries == 3).await;
    let ids = lease_all(&spool).await;
    assert_eq!(ids.len(), 3);
    (server, dir, spool, ids)
}

/// `SpoolTransport::ack` says "Cancel safe in effect: a dropped call's transaction still
/// completes; only its error is lost". The transaction does complete, but the
/// bookkeeping after it (`forget`) is lost with the future: the deleted and dead-lettered
/// entries stay counted (and leased) for ever, and the dead letter is never counted. The
/// runtime drops acks (`dispatch_loop`'s `select!` against `stop`, then
/// `restore_receipts`; `ack_loop`'s give-up; the final flush's timeout) and sends the
/// same receipts again, which finds nothing left to move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_ack_then_the_same_ack_again_keeps_the_counters_in_step() {
    let (_server, dir, spool, ids) = spool_with_ack_in_flight("dropped-ack").await;
    let all = receipts(&ids);
    let failed = [failure(ids[1])];
    {
        let mut ack = Box::pin(spool.ack(Ack {
            below: None,
            receipts: &all,
            failed: &failed,
        }));
        assert!(poll_once(&mut ack).await.is_pending(), "the writer answered at once");
    } // dropped, as `select!` does
    until("the dropped ack's transaction committed", || {
        spool.dead_letters().unwrap().len() == 1
    })
    .await;
    // The runtime restores the receipts and acknowledges them again.
    spool
        .ack(Ack {
            below: None,
            receipts: &all,
            failed: &failed,
        })
        .await
        .unwrap();
    let st = spool.stats();
    let on_disk = spool.dead_letters().unwrap().len() as u64;
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(
        (st.entries, st.bytes, st.dead_letters),
        (0, 0, on_disk),
        "nothing is left in the spool and one dead letter is on disk: {st:?}"
    );
}

/// Same cause: after a dropped ack the dead letter is on disk but not counted, and
/// purging it then subtracts from a zero `dead_letters`: an overflow panic in debug
/// builds (a wrap to u64::MAX in release, after which the spool's `room()` is 0 for ever:
/// the filler stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_after_a_dropped_ack_does_not_underflow() {
    let (_server, dir, spool, ids) = spool_with_ack_in_flight("dropped-purge").await;
    let all = receipts(&ids);
    let failed = [failure(ids[1])];
    {
        let mut ack = Box::pin(spool.ack(Ack {
            below: None,
            receipts: &all,
            failed: &failed,
        }));
        assert!(poll_once(&mut ack).await.is_pending());
    }
    until("committed", || spool.dead_letters().unwrap().len() == 1).await;
    let purged = spool.purge_dead_letters(Which::All).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(purged, Ok(1)),
        "purging the one dead letter on disk: {purged:?}"
    );
    assert_eq!(spool.stats().dead_letters, 0);
}

/// In-process replay while the runtime runs: `ack` commits the move to the dead letters
/// on the writer thread and only afterwards (after the await) counts it in `forget`.
/// A `replay_dead_letters` (or `purge_dead_letters`) from another task in between finds
/// the letter on disk and subtracts it from a `dead_letters` that does not count it yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_while_an_ack_commits_does_not_underflow() {
    let (_server, dir, spool, ids) = spool_with_ack_in_flight("replay-race").await;
    let all = receipts(&ids);
    let failed = [failure(ids[1])];
    let mut ack = Box::pin(spool.ack(Ack {
        below: None,
        receipts: &all,
        failed: &failed,
    }));
    assert!(poll_once(&mut ack).await.is_pending());
    // The transaction is committed; the ack's task has not run its bookkeeping yet.
    until("committed", || spool.dead_letters().unwrap().len() == 1).await;
    let replayed = spool.replay_dead_letters(Which::All).await;
    let acked = ack.await;
    let st = spool.stats();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(replayed, Ok(1)), "replay: {replayed:?}");
    acked.unwrap();
    assert_eq!(
        (st.entries, st.dead_letters),
        (1, 0),
        "the replayed letter is an entry again: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_delivered_again_by_the_source_is_not_counted_twice() {
    let server = server_with(10, 64).await;
    let dir = temp_dir("dead-again");
    let spool = SpoolTransport::builder(&dir)
        .max_entries(10)
        .open(telegram(&server))
        .unwrap();
    until("10 spooled", || spool.stats().entries == 10).await;
    let ids = lease_all(&spool).await;
    let x = ids[5];
    spool
        .ack(Ack {
            below: None,
            receipts: &receipts(&[x]),
            failed: &[failure(x)],
        })
        .await
        .unwrap();
    assert_eq!(spool.stats().dead_letters, 1);
    spool.close().await; // a crash: the full spool never confirmed its last batch

    let spool = SpoolTransport::builder(&dir)
        .max_entries(100)
        .open(telegram(&server))
        .unwrap();
    until("the unconfirmed batch came back", || {
        spool.stats().skipped + spool.stats().spooled > 0
    })
    .await;
    let again = lease_all(&spool).await;
    let respooled = again.contains(&x);
    // It fails again.
    spool
        .ack(Ack {
            below: None,
            receipts: &receipts(&again),
            failed: &[failure(x)],
        })
        .await
        .unwrap();
    let st = spool.stats();
    let on_disk = spool.dead_letters().unwrap().len() as u64;
    spool.close().await;
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        !respooled,
        "dead letter {x} was spooled and handed out again; afterwards the counters say \
         {} dead letters, the table holds {on_disk}",
        st.dead_letters
    );
    assert_eq!(st.dead_letters, on_disk);
}

/// `close` says the spool "can be opened again in this process once this returns". It
/// waits for the filler only; a transaction already queued on the writer thread (an ack
/// whose future was dropped: "once queued, the job runs even if this future is dropped")
/// holds a clone of the database until it has run, so the reopen right after `close`
/// fails with `DatabaseAlreadyOpen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_a_queued_transaction_before_it_returns() {
    let server = server_with(100, 16_000).await;
    let dir = temp_dir("close-queued");
    let spool = SpoolTransport::builder(&dir).open(telegram(&server)).unwrap();
    until("100 spooled", || spool.stats().entries == 100).await;
    let ids = lease_all(&spool).await;
    let all = receipts(&ids);
    let failed: Vec<HandlerFailure> = ids.iter().map(|&id| failure(id)).collect();
    {
        let mut ack = Box::pin(spool.ack(Ack {
            below: None,
            receipts: &all,
            failed: &failed,
        }));
        assert!(poll_once(&mut ack).await.is_pending());
    }
    spool.close().await;
    let reopened = SpoolTransport::builder(&dir).open(telegram(&server));
    let err = reopened.as_ref().err().map(|e| format!("{e:?}"));
    if let Ok(s) = reopened {
        s.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
    assert!(err.is_none(), "reopen right after close: {err:?}");
}
