//! What the summary says about a stop, found by the second review of the stop's one
//! deadline (7556445): reproducers on paused time.
//!
//! The `r*` tests failed on 7556445: a second copy of an id dropped at the deadline was
//! reported drained (at-least-once keeps one tracker entry per id), and an acknowledgement
//! given up at shutdown left a clean summary. The `ok_*` tests record what was tried and
//! found sound.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Fixed};
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport, Update};
use pollgate_runtime::{Delivery, Runtime};
use tokio::sync::Notify;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);

fn update(id: i64, receipt: &str) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{id},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap()
    .with_receipt(receipt.to_string())
}

/// A queue-like transport (individual acks): serves its updates once, then long-polls
/// nothing. Records every receipt whose acknowledgement completed.
#[derive(Debug)]
struct Queue {
    updates: Mutex<Vec<Update>>,
    /// Acknowledgements that carry receipts never answer (the server went away).
    receipts_hang: bool,
    acked: Mutex<Vec<String>>,
    receipt_ack_started: Notify,
    flushes: AtomicU64,
}

impl Queue {
    fn new(updates: Vec<Update>, receipts_hang: bool) -> Arc<Queue> {
        Arc::new(Queue {
            updates: Mutex::new(updates),
            receipts_hang,
            acked: Mutex::new(Vec::new()),
            receipt_ack_started: Notify::new(),
            flushes: AtomicU64::new(0),
        })
    }
}

impl Transport for Queue {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        AckModel::Individual { window: 10 }
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        let updates = std::mem::take(&mut *self.updates.lock());
        if updates.is_empty() {
            tokio::time::sleep(request.timeout).await;
        }
        Ok(Batch {
            updates,
            ..Batch::default()
        })
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        if !ack.receipts.is_empty() {
            self.receipt_ack_started.notify_one();
            if self.receipts_hang {
                std::future::pending::<()>().await;
            }
            self.acked.lock().extend(ack.receipts.iter().map(|r| r.to_string()));
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Infallible> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// R1. `Summary::drained` is now `unfinished.is_empty()`, and in at-least-once mode
/// `unfinished` is the ack tracker's set of *ids*. A transport with individual acks may
/// deliver the same update id twice with two receipts: the webhook does whenever Telegram
/// resends an update whose request timed out on its side (lib.rs: "webhooks are
/// at-least-once"), a stream when a producer pushed the same update twice. The first copy
/// finishing removes the id, so the second copy, dropped at the drain deadline, leaves
/// nothing in `unfinished`: the summary says `drained: true, unfinished: []` although a
/// handler was aborted and its receipt is not acknowledged (it will be delivered again).
/// Eager mode reports the same run as not drained (`given_up`), and 2b2d0c0 reported
/// `drained: false` in both modes (the deadline's abort fired): a regression of 7556445.
#[tokio::test(start_paused = true)]
async fn r1_an_aborted_duplicate_is_not_reported_as_drained() {
    let mut seen = Vec::new();
    for delivery in [Delivery::Eager, Delivery::AtLeastOnce] {
        let queue = Queue::new(vec![update(1, "a"), update(1, "b")], false);
        let (a_done, b_started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let runtime = Runtime::builder(Arc::clone(&queue), {
            let (a_done, b_started) = (Arc::clone(&a_done), Arc::clone(&b_started));
            move |u: Update| {
                let (a_done, b_started) = (Arc::clone(&a_done), Arc::clone(&b_started));
                async move {
                    if u.receipt().map(|r| &**r) == Some("b") {
                        b_started.notify_one();
                        std::future::pending::<()>().await;
                    }
                    a_done.notify_one();
                    Ok::<(), Infallible>(())
                }
            }
        })
        .policy(Fixed::new(4))
        .delivery(delivery)
        .drain_deadline(DEADLINE)
        .poll_timeout(Duration::from_secs(10))
        .build();
        let shutdown = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        a_done.notified().await;
        b_started.notified().await;
        let at = Instant::now();
        shutdown.cancel();
        let summary = run.await.unwrap().unwrap();
        assert_eq!(at.elapsed(), DEADLINE, "the second copy is aborted at the deadline");
        assert_eq!(summary.stats.aborted, 1, "{delivery:?}: one handler was dropped");
        println!(
            "{delivery:?}: drained {}, unfinished {:?}, aborted {}, receipts acked {:?}",
            summary.drained,
            summary.unfinished,
            summary.stats.aborted,
            queue.acked.lock()
        );
        seen.push((delivery, summary.drained, summary.unfinished.clone()));
    }
    for (delivery, drained, unfinished) in &seen {
        assert!(
            !drained && unfinished == &[1],
            "{delivery:?}: a handler was dropped at the deadline, yet drained = {drained}, unfinished = {unfinished:?} (all runs: {seen:?})"
        );
    }
}

/// R2. The final confirmation is "the acknowledgement still in flight and the last
/// acknowledgement and flush" (shutdown.rs), but only the last two are reported. When
/// `ack_loop` gives up the acknowledgement in flight at `confirm_by` (or 2 s after an
/// abort), its receipts are dropped from the tracker (never restored), a warning is
/// logged, and `finish` then confirms nothing of them: the summary says `flush_error:
/// None` (a clean confirmation) and `drained: true`, while no receipt was acknowledged and
/// every finished update will be delivered again.
#[tokio::test(start_paused = true)]
async fn r2_an_acknowledgement_given_up_at_shutdown_is_reported() {
    let queue = Queue::new(vec![update(1, "a"), update(2, "b")], true);
    let runtime = Runtime::builder(Arc::clone(&queue), |_u: Update| async { Ok::<(), Infallible>(()) })
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .drain_deadline(DEADLINE)
        .poll_timeout(Duration::from_secs(10))
        .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    queue.receipt_ack_started.notified().await;
    let at = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    println!(
        "ended after {:?}: drained {}, flush_error {:?}, confirmed_offset {:?}, receipts acked {:?}, flushes {}",
        at.elapsed(),
        summary.drained,
        summary.flush_error,
        summary.confirmed_offset,
        queue.acked.lock(),
        queue.flushes.load(Ordering::SeqCst)
    );
    assert!(queue.acked.lock().is_empty(), "the server never answered");
    assert!(
        summary.flush_error.is_some(),
        "no receipt was acknowledged, yet the summary reports a clean confirmation"
    );
}

/// Tried: the spawned watchdog outliving `run`. It is aborted when `run` drops its handle
/// (before `finish`), but an aborted task's future is dropped only at the scheduler's next
/// turn, so right after `run` returns it still holds its clones (the gate, and with it the
/// policy; the tokens). One yield later they are gone: bounded, not a leak.
#[tokio::test(start_paused = true)]
async fn ok_the_watchdog_is_gone_one_scheduler_turn_after_run() {
    let policy: Arc<dyn AdmissionPolicy> = Arc::new(Fixed::new(4));
    let weak = Arc::downgrade(&policy);
    let queue = Queue::new(vec![update(1, "a")], false);
    let done = Arc::new(Notify::new());
    let runtime = Runtime::builder(Arc::clone(&queue), {
        let done = Arc::clone(&done);
        move |_u: Update| {
            let done = Arc::clone(&done);
            async move {
                done.notify_one();
                Ok::<(), Infallible>(())
            }
        }
    })
    .shared_policy(policy)
    .drain_deadline(DEADLINE)
    .poll_timeout(Duration::from_secs(10))
    .build();
    let shutdown = runtime.shutdown_token();
    tokio::spawn(async move {
        done.notified().await;
        shutdown.cancel();
    });
    let summary = runtime.run().await.unwrap();
    let right_after = weak.strong_count();
    let mut turns = 0;
    while weak.strong_count() > 0 && turns < 10 {
        tokio::task::yield_now().await;
        turns += 1;
    }
    println!(
        "drained {}; policy holders right after run: {right_after}; after {turns} yield(s): {}",
        summary.drained,
        weak.strong_count()
    );
    assert_eq!(weak.strong_count(), 0, "something still holds the gate");
}

/// Tried: a hanging receipt ack followed by a second abort source (the deadline) while the
/// confirmation already runs: the grace is shared (the run ends at confirm_by at most).
#[tokio::test(start_paused = true)]
async fn ok_a_hanging_ack_after_a_deadline_abort_ends_within_deadline_plus_grace() {
    let queue = Queue::new(vec![update(1, "a"), update(2, "b")], true);
    let runtime = Runtime::builder(Arc::clone(&queue), |u: Update| async move {
        if u.id() == 2 {
            std::future::pending::<()>().await;
        }
        Ok::<(), Infallible>(())
    })
    .policy(Fixed::new(4))
    .delivery(Delivery::AtLeastOnce)
    .drain_deadline(DEADLINE)
    .poll_timeout(Duration::from_secs(10))
    .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    queue.receipt_ack_started.notified().await;
    let at = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    println!(
        "ended after {:?}; unfinished {:?}; flush_error {:?}",
        at.elapsed(),
        summary.unfinished,
        summary.flush_error
    );
    assert_eq!(at.elapsed(), DEADLINE + Duration::from_secs(2));
    assert_eq!(summary.unfinished, vec![2]);
}

#[derive(Debug, thiserror::Error)]
#[error("server down")]
struct Down;

/// Serves `1` and `2`, then fails for good.
#[derive(Debug)]
struct Failing {
    individual: bool,
    fetches: AtomicU64,
}

impl Transport for Failing {
    type Error = Down;
    fn ack_model(&self) -> AckModel {
        if self.individual {
            AckModel::Individual { window: 10 }
        } else {
            AckModel::Cumulative { window: 10 }
        }
    }
    async fn fetch(&self, _request: FetchRequest) -> Result<Batch, Down> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) > 0 {
            return Err(Down);
        }
        let mut updates = vec![update(1, "a"), update(2, "b")];
        if !self.individual {
            updates = updates
                .into_iter()
                .map(|u| Update::from_json(u.raw()).unwrap())
                .collect();
        }
        Ok(Batch {
            updates,
            ..Batch::default()
        })
    }
    async fn ack(&self, _ack: Ack<'_>) -> Result<(), Down> {
        Ok(())
    }
    async fn flush(&self) -> Result<(), Down> {
        Ok(())
    }
}

/// Tried: `drained` after a transport failure, in both modes and both ack models: a
/// handler still running at the deadline is aborted and reported (drained false), the
/// one that finished is not.
#[tokio::test(start_paused = true)]
async fn ok_drained_after_a_transport_failure() {
    for delivery in [Delivery::Eager, Delivery::AtLeastOnce] {
        for individual in [false, true] {
            let transport = Failing {
                individual,
                fetches: AtomicU64::new(0),
            };
            let at = Instant::now();
            let r = Runtime::builder(transport, |u: Update| async move {
                if u.id() == 1 {
                    std::future::pending::<()>().await;
                }
                Ok::<(), Infallible>(())
            })
            .policy(Fixed::new(4))
            .delivery(delivery)
            .drain_deadline(DEADLINE)
            .build()
            .run()
            .await;
            let Err(pollgate_runtime::RunError::Transport { summary, .. }) = r else {
                panic!("{r:?}")
            };
            println!(
                "{delivery:?} individual {individual}: after {:?} drained {} unfinished {:?} aborted {}",
                at.elapsed(),
                summary.drained,
                summary.unfinished,
                summary.stats.aborted
            );
            assert!(!summary.drained);
            assert_eq!(summary.unfinished, vec![1]);
            assert!(at.elapsed() <= DEADLINE + Duration::from_secs(2));
        }
    }
}
