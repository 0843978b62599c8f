//! One deadline bounds the whole stop: from the shutdown, the drain, the acknowledgement
//! still in flight and the final flush together take at most the drain deadline plus the
//! confirmation's 2 s grace, whichever of them waits. Each step used to get the whole drain
//! deadline of its own, so a supervisor's grace period sized by the docs (the deadline and
//! a margin) could SIGKILL a stop that was only slow: up to 2× the deadline with a hanging
//! flush, 3× with a hanging acknowledgement too.
//!
//! On paused time: the elapsed times asserted are the tokio clock's, exact and instant.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport, Update};
use pollgate_runtime::{Delivery, FlushError, Runtime, Summary};
use tokio::sync::Notify;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(2);

fn update(id: i64, receipt: bool) -> Update {
    let update = Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{id},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap();
    if receipt {
        update.with_receipt(format!("{id}-0"))
    } else {
        update
    }
}

/// Serves its updates once, then long-polls nothing. How its acknowledgements and its flush
/// answer is set per test: `None` never answers (the server went away at shutdown).
#[derive(Debug)]
struct Server {
    updates: Mutex<Vec<Update>>,
    individual: bool,
    /// How long an acknowledgement that carries receipts takes.
    receipts_ack: Option<Duration>,
    /// How long the final flush takes.
    flush: Option<Duration>,
    flushed: AtomicBool,
    acks_with_receipts: AtomicU64,
}

impl Server {
    fn new(individual: bool, receipts_ack: Option<Duration>, flush: Option<Duration>) -> Arc<Server> {
        Arc::new(Server {
            updates: Mutex::new(vec![update(1, individual)]),
            individual,
            receipts_ack,
            flush,
            flushed: AtomicBool::new(false),
            acks_with_receipts: AtomicU64::new(0),
        })
    }
}

async fn answer_after(after: Option<Duration>) {
    match after {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
}

impl Transport for Server {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        if self.individual {
            AckModel::Individual { window: 10 }
        } else {
            AckModel::Cumulative { window: 10 }
        }
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
            self.acks_with_receipts.fetch_add(1, Ordering::SeqCst);
            answer_after(self.receipts_ack).await;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Infallible> {
        answer_after(self.flush).await;
        self.flushed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Runs one update whose handler takes `handler`, cancels the shutdown token once it runs,
/// and returns the summary and how long the stop took from the cancellation.
async fn stop_while_handling(server: Arc<Server>, handler: Duration) -> (Summary, Duration) {
    let started = Arc::new(Notify::new());
    let runtime = Runtime::builder(Arc::clone(&server), {
        let started = Arc::clone(&started);
        move |_u: Update| {
            let started = Arc::clone(&started);
            async move {
                started.notify_one();
                tokio::time::sleep(handler).await;
                Ok::<(), Infallible>(())
            }
        }
    })
    .policy(Fixed::new(4))
    .delivery(Delivery::AtLeastOnce)
    .drain_deadline(DEADLINE)
    .poll_timeout(Duration::from_secs(10))
    .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    started.notified().await;
    let stopped = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    (summary, stopped.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_hanging_flush_after_a_long_drain_still_ends_within_the_deadline_and_the_grace() {
    let server = Server::new(false, Some(Duration::ZERO), None);
    let (summary, took) = stop_while_handling(Arc::clone(&server), DEADLINE - Duration::from_secs(1)).await;
    // The handler ended 29 s in: the flush got the remaining 1 s raised to the 2 s grace
    // (it used to get 30 s more: 59 s in all).
    assert!(summary.drained, "the handler ended within the deadline");
    assert_eq!(
        took,
        DEADLINE - Duration::from_secs(1) + GRACE,
        "the stop took {took:?}"
    );
    assert!(
        matches!(summary.flush_error, Some(FlushError::TimedOut(_))),
        "{:?}",
        summary.flush_error
    );
    assert_eq!(summary.confirmed_offset, None);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_acknowledgement_and_flush_still_end_within_the_deadline_and_the_grace() {
    let server = Server::new(true, None, None);
    let (summary, took) = stop_while_handling(Arc::clone(&server), DEADLINE - Duration::from_secs(1)).await;
    // The acknowledgement of the finished update hangs, then the flush: together they had
    // the same 2 s (they used to get 30 s each: 89 s in all).
    assert!(server.acks_with_receipts.load(Ordering::SeqCst) >= 1);
    assert!(summary.drained);
    assert_eq!(
        took,
        DEADLINE - Duration::from_secs(1) + GRACE,
        "the stop took {took:?}"
    );
    assert!(summary.flush_error.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_quick_drain_leaves_the_flush_the_rest_of_the_deadline() {
    // Handlers done 1 s in; a flush of 20 s fits in the 29 s that remain.
    let server = Server::new(false, Some(Duration::ZERO), Some(Duration::from_secs(20)));
    let (summary, took) = stop_while_handling(Arc::clone(&server), Duration::from_secs(1)).await;
    assert!(summary.flush_error.is_none(), "{:?}", summary.flush_error);
    assert!(server.flushed.load(Ordering::SeqCst));
    assert_eq!(summary.confirmed_offset, Some(2));
    assert_eq!(took, Duration::from_secs(21));
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_takes_nearly_the_whole_deadline_still_leaves_the_flush_its_grace() {
    // Handlers done 100 ms before the deadline; a flush of 1.5 s still gets to confirm.
    let server = Server::new(false, Some(Duration::ZERO), Some(Duration::from_millis(1500)));
    let (summary, _) = stop_while_handling(Arc::clone(&server), DEADLINE - Duration::from_millis(100)).await;
    assert!(summary.drained);
    assert!(summary.flush_error.is_none(), "{:?}", summary.flush_error);
    assert_eq!(summary.confirmed_offset, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_the_deadline_is_aborted_and_the_flush_gets_only_the_grace() {
    let server = Server::new(false, Some(Duration::ZERO), None);
    let (summary, took) = stop_while_handling(Arc::clone(&server), Duration::from_secs(3600)).await;
    assert!(!summary.drained, "the handler outlived the deadline");
    assert_eq!(summary.unfinished, vec![1]);
    assert_eq!(took, DEADLINE + GRACE, "the stop took {took:?}");
    // The deadline aborted the run: the flush was cut short by that abort.
    assert!(
        matches!(summary.flush_error, Some(FlushError::Aborted(_))),
        "{:?}",
        summary.flush_error
    );
}
