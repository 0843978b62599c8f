//! The contract of admission-sized fetching, asserted as the sequence of `FetchRequest`
//! limits the runtime sends, for each built-in policy, on paused time with an in-memory
//! transport that records what it was asked. Each test also asserts both sides of a
//! release, tower-style: no fetch while the policy has no room (pending), the next fetch
//! as soon as it has (ready) — a regression then fails on a count, never as a hang.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::update;
use pollgate_admission::{AdmissionPolicy, Barrier, ByteBudget, Fixed};
use pollgate_core::{InMemoryTransport, Update};
use pollgate_runtime::Runtime;

/// `n` updates (one chat each), a handler of 100 ms, and the policy; fetches as soon as
/// anything fits (`fetch_batching(1, 0)`), each update declared at `cost` bytes.
fn start(
    n: i64,
    policy: impl AdmissionPolicy,
    cost: u64,
) -> (
    Arc<InMemoryTransport>,
    pollgate_runtime::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let transport = Arc::new(InMemoryTransport::with_updates((1..=n).map(|id| update(id, id))));
    let runtime = Runtime::builder(Arc::clone(&transport), |_u: Update| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<(), std::io::Error>(())
    })
    .policy(policy)
    .cost_fn(move |_| cost)
    .fetch_batching(1, Duration::ZERO)
    .poll_timeout(Duration::from_secs(1))
    .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(async move {
        runtime.run().await.unwrap();
    });
    (transport, shutdown, run)
}

/// The limits of the requests sent so far.
fn limits(t: &InMemoryTransport) -> Vec<usize> {
    t.requests().iter().map(|r| r.limit).collect()
}

/// Lets the runtime run `ms` of paused time.
async fn advance(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_fetches_its_free_slots_and_nothing_while_they_are_taken() {
    let (t, shutdown, run) = start(10, Fixed::new(4), 1);
    advance(50).await;
    // Pending: 4 running, no slot free, so no second fetch.
    assert_eq!(limits(&t), vec![4], "one fetch of the 4 free slots");
    advance(100).await;
    // Ready: the 4 finished at 100 ms, and one fetch asked for their 4 slots.
    assert_eq!(limits(&t), vec![4, 4]);
    advance(100).await;
    // The third batch: 4 slots free, 2 updates left; the server sends 2, and the long
    // poll for more that follows at once asks for the 2 slots still free, no more.
    assert_eq!(limits(&t), vec![4, 4, 4, 2]);
    assert_eq!(t.pending(), 0);
    advance(50).await;
    assert_eq!(
        limits(&t),
        vec![4, 4, 4, 2],
        "that poll is still waiting: no new request"
    );
    shutdown.cancel();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_byte_budget_fetches_what_its_bytes_admit() {
    // 1000 bytes, 300 per update: 3 fit (900), the 4th would not.
    let (t, shutdown, run) = start(7, ByteBudget::new(1000).expected_cost(300), 300);
    advance(50).await;
    assert_eq!(limits(&t), vec![3], "pending: the budget is spent");
    advance(100).await;
    assert_eq!(limits(&t), vec![3, 3], "ready: three released, three fetched");
    advance(100).await;
    // The last update came with the third fetch; the poll after it asks for the 2
    // updates' worth of bytes still free.
    assert_eq!(limits(&t), vec![3, 3, 3, 2]);
    assert_eq!(t.pending(), 0);
    shutdown.cancel();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_barrier_fetches_one_batch_and_the_next_only_when_all_finished() {
    let (t, shutdown, run) = start(6, Barrier::new(3), 1);
    advance(50).await;
    assert_eq!(limits(&t), vec![3]);
    advance(100).await;
    // The whole batch finished at 100 ms: the next one opens.
    assert_eq!(limits(&t), vec![3, 3]);
    advance(40).await;
    assert_eq!(
        limits(&t),
        vec![3, 3],
        "pending: the second batch runs, the barrier is shut"
    );
    advance(60).await;
    // The second batch finished at 200 ms: the third opens (a long poll; nothing is left).
    assert_eq!(t.pending(), 0);
    assert_eq!(limits(&t), vec![3, 3, 3]);
    shutdown.cancel();
    run.await.unwrap();
}
