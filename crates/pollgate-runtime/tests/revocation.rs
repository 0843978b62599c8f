//! Revocation (`Transport::revocations`): an update the transport took back (its lease
//! lost) is not started, whether it waits behind its key or for a slot; it is reported
//! finished so the window moves on, and counted as revoked. Paused time, a queue
//! transport.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use common::{Queue, run_until_paused, timed_handler, update};
use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Revocations, Transport, Update};
use pollgate_runtime::{Delivery, Runtime};
use tokio::time::Instant;

/// The queue, revoking the ids in `revoked`.
#[derive(Debug)]
struct Revoking {
    queue: Arc<Queue>,
    revoked: Arc<Mutex<HashSet<i64>>>,
}

struct Set(Arc<Mutex<HashSet<i64>>>);

impl Revocations for Set {
    fn is_revoked(&self, update: &Update) -> bool {
        self.0.lock().contains(&update.id())
    }
}

impl Transport for Revoking {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        self.queue.ack_model()
    }
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        self.queue.fetch(request).await
    }
    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        self.queue.ack(ack).await
    }
    async fn flush(&self) -> Result<(), Infallible> {
        Ok(())
    }
    fn revocations(&self) -> Option<Arc<dyn Revocations>> {
        Some(Arc::new(Set(Arc::clone(&self.revoked))))
    }
}

#[tokio::test(start_paused = true)]
async fn revoked_updates_are_not_started_and_the_window_moves_on() {
    let start = Instant::now();
    let (done, handler) = timed_handler(start, |_| Duration::from_secs(1));
    // Chat 7: 1 runs; 2 and 3 wait behind it and are revoked meanwhile. Chat 8: 4 waits for
    // the one slot and is revoked too; 5 is not.
    let queue = Queue::with([(1, 7), (2, 7), (3, 7), (4, 8), (5, 9)].map(|(id, chat)| update(id, chat)));
    let revoked: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let transport = Revoking {
        queue: Arc::clone(&queue),
        revoked: Arc::clone(&revoked),
    };
    let runtime = Runtime::builder(transport, handler)
        .policy(Fixed::new(1))
        .ordered(true)
        .delivery(Delivery::AtLeastOnce)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    let revoke = {
        let revoked = Arc::clone(&revoked);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            revoked.lock().extend([2, 3, 4]);
        })
    };
    let summary = run_until_paused(runtime, || {
        let s = stats.snapshot();
        s.finished() + s.revoked == 5
    })
    .await;
    revoke.await.unwrap();
    let ran: Vec<i64> = done.lock().iter().map(|(id, _)| *id).collect();
    assert_eq!(ran, [1, 5], "the revoked ones never started");
    assert_eq!(summary.stats.revoked, 3, "{:?}", summary.stats);
    assert_eq!(summary.stats.completed, 2, "{:?}", summary.stats);
    let mut acked = queue.state.lock().acked.clone();
    acked.sort();
    assert_eq!(
        acked,
        ["1", "2", "3", "4", "5"],
        "every one handed to ack (the window moves on; a revoking transport acknowledges nothing for the revoked)"
    );
    assert!(summary.unfinished.is_empty());
}
