//! The fetch loop's edges, found by an adversarial review: a gate closed from outside, a
//! transport that shortens its own request, a re-poll interval of zero, and the run's
//! future dropped mid-flight. Each test is named for what must hold; each failed on the
//! code before its fix, except the two `*_holds_*` checks of suspicions that did not
//! reproduce.
//!
//! Paused tokio time and an in-memory transport that records its requests; a busy loop
//! trips a counter that cancels the shutdown token, so a test fails instead of hanging.

mod common;

use common::{timed_handler, update};

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pollgate_admission::{AdmissionPolicy, ByteBudget, Fixed};
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, InMemoryTransport, Transport, Update};
use pollgate_runtime::{Delivery, Runtime};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// (1) A wait on `progress` that never ends: the gate closed while given-up updates fill
// the at-least-once window.
// ---------------------------------------------------------------------------------------

/// `Runtime::gate()` documents that the caller may close the gate; a closed gate makes
/// `fetch_room` return `None` and the run end. But when the updates given up because the
/// gate is closed fill the at-least-once window (they stay unfinished for ever: given-up
/// ids are never `finished`), `fetch_room` waits on `ctx.progress` (room_window == 0)
/// and never looks at the gate again: nothing will ever notify, and `run` never returns.
/// With 99 updates (room_window == 1) the same run ends at once.
#[tokio::test(start_paused = true)]
async fn a_closed_gate_ends_the_run_even_with_a_full_window_of_given_up_updates() {
    let mut outcomes = Vec::new();
    for n in [99_i64, 100] {
        let transport = Arc::new(InMemoryTransport::new());
        let (_done, handler) = timed_handler(Instant::now(), |_| Duration::ZERO);
        let runtime = Runtime::builder(Arc::clone(&transport), handler)
            .policy(Fixed::new(100))
            .delivery(Delivery::AtLeastOnce)
            .build();
        let gate = runtime.gate().clone();
        let stats = runtime.stats();
        let run = tokio::spawn(runtime.run());
        // The dispatcher is in a long poll (nothing pending yet).
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.close();
        transport.push((1..=n).map(|id| update(id, id)));
        let ended = tokio::time::timeout(Duration::from_secs(600), run).await;
        let s = stats.snapshot();
        outcomes.push(format!(
            "{n} updates: run {} (fetched {}, fetches {})",
            if ended.is_ok() {
                "ended"
            } else {
                "still running after 600 s"
            },
            s.fetched,
            s.fetches
        ));
    }
    assert!(
        outcomes.iter().all(|o| o.contains("run ended")),
        "closing the gate must end the run: {outcomes:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// (2) A busy loop: `repoll_interval(Duration::ZERO)` is accepted and is the busy poll the
// interval exists to prevent.
// ---------------------------------------------------------------------------------------

/// `repoll_interval` of zero would make every fetch that brings back only repeats be
/// followed at once by the next one (a busy poll while a handler is slow): it is refused
/// as a configuration error.
#[test]
#[should_panic(expected = "repoll_interval must be above zero")]
fn a_zero_repoll_interval_is_refused() {
    let transport = InMemoryTransport::new();
    let _ =
        Runtime::builder(transport, |_u: Update| async { Ok::<(), Infallible>(()) }).repoll_interval(Duration::ZERO);
}

// ---------------------------------------------------------------------------------------
// (4) A fetch that could bring new updates is delayed: a response cut short by the
// transport (TelegramTransport halves `limit` on BodyTooLarge) is taken for "the server
// is caught up".
// ---------------------------------------------------------------------------------------

/// A `InMemoryTransport` seen through `TelegramTransport::get_updates`' BodyTooLarge
/// handling: a response of more than `max_items` updates is refused and the limit halved
/// (`(limit.min(100) / 2).max(1)`) until it fits. Uniform update sizes, so "the body
/// fits" is "at most `max_items` updates".
#[derive(Debug)]
struct BodyCapped {
    inner: Arc<InMemoryTransport>,
    max_items: usize,
    refused: AtomicUsize,
}

impl Transport for BodyCapped {
    type Error = Infallible;

    fn ack_model(&self) -> AckModel {
        self.inner.ack_model()
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        // A busy poll fails the test (the run panics) instead of hanging paused time.
        assert!(self.inner.requests().len() < 500, "busy poll: 500 fetches");
        let mut limit = request.limit;
        while self.inner.pending().min(limit.clamp(1, 100)) > self.max_items {
            self.refused.fetch_add(1, Ordering::Relaxed);
            limit = (limit.min(100) / 2).max(1);
        }
        let mut batch = self.inner.fetch(FetchRequest { limit, ..request }).await?;
        batch.truncated = limit < request.limit.clamp(1, 100);
        Ok(batch)
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
        self.inner.ack(ack).await
    }

    async fn flush(&self) -> Result<(), Infallible> {
        self.inner.flush().await
    }
}

/// Update 50 is slow (3 s), the others take 100 ms; the transport's body cap lets 60
/// updates through (100 asked → halved to 50). The second fetch asks 50 repeats + 50
/// new, gets only the 50 repeats (cut by the cap, not because the server is caught up)
/// and the loop paused for `repoll_interval` before the transport said so
/// (`Batch::truncated`). At 100 ms updates 1..=49 are done, the
/// policy has 99 free slots, the window has room for 99, the server holds 150 updates,
/// and yet nothing is fetched until t = 1 s. Without the cap update 51 is handled at
/// 100 ms.
#[tokio::test(start_paused = true)]
async fn a_response_cut_short_by_the_transport_is_not_taken_for_caught_up() {
    let mut handled_51 = Vec::new();
    for max_items in [1000, 60] {
        let start = Instant::now();
        let inner = Arc::new(InMemoryTransport::with_updates((1..=200).map(|id| update(id, id))));
        let transport = BodyCapped {
            inner: Arc::clone(&inner),
            max_items,
            refused: AtomicUsize::new(0),
        };
        let (done, handler) = timed_handler(start, |id| match id {
            50 => Duration::from_secs(3),
            _ => Duration::from_millis(100),
        });
        let runtime = Runtime::builder(transport, handler)
            .policy(Fixed::new(100))
            .delivery(Delivery::AtLeastOnce)
            .build();
        let shutdown = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.cancel();
        run.await.unwrap().unwrap();
        let at = done.lock().iter().find(|(id, _)| *id == 51).map(|(_, t)| *t);
        let requests: Vec<usize> = inner.requests().iter().map(|r| r.limit).take(6).collect();
        handled_51.push((max_items, at, requests));
    }
    let (_, uncapped, _) = &handled_51[0];
    let (_, capped, _) = &handled_51[1];
    assert!(
        uncapped.is_some_and(|t| t <= Duration::from_millis(200)),
        "control: {handled_51:?}"
    );
    assert!(
        capped.is_some_and(|t| t <= Duration::from_millis(500)),
        "update 51 was available at 100 ms with room to run it, but was handled at {capped:?} \
         ((body cap, when 51 was handled, first fetch limits): {handled_51:?})"
    );
}

/// A transport that keeps cutting its request so short that the repeats alone fill it
/// (51 repeats due, at most 40 updates per response: 100 → 50 → 25 asked) must not be
/// polled in a loop: the dispatcher waits for the window to move (or the re-poll
/// interval), then goes on.
#[tokio::test(start_paused = true)]
async fn a_transport_whose_short_requests_hold_only_repeats_is_not_busy_polled() {
    let start = Instant::now();
    let inner = Arc::new(InMemoryTransport::with_updates((1..=200).map(|id| update(id, id))));
    let transport = BodyCapped {
        inner: Arc::clone(&inner),
        max_items: 40,
        refused: AtomicUsize::new(0),
    };
    let (done, handler) = timed_handler(start, |id| match id {
        50 => Duration::from_secs(3),
        _ => Duration::from_millis(100),
    });
    let runtime = Runtime::builder(transport, handler)
        .policy(Fixed::new(100))
        .delivery(Delivery::AtLeastOnce)
        .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    run.await.expect("no busy poll").unwrap();
    let fetches = inner.requests().len();
    assert!(fetches < 100, "{fetches} fetches in 10 s");
    assert_eq!(done.lock().len(), 200, "the backlog is still drained");
}

/// The same with the real `TelegramTransport` (BodyTooLarge → limit halved) against the
/// mock Bot API, real time: 200 updates of ~2.1 KB, `max_body_bytes` 160 000 (100 updates
/// do not fit, 50 do). The 50th update takes 3 s, the others 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_response_over_the_body_cap_is_not_taken_for_caught_up() {
    use mock_bot_api::{MockConfig, MockServer};
    let mut results = Vec::new();
    for cap in [8 << 20, 160_000] {
        let server = MockServer::start(MockConfig::default()).await.unwrap();
        let text = "x".repeat(2000);
        let ids = server.push_updates((1..=200).map(|i| {
            serde_json::json!({"message": {"message_id": i, "date": 1_735_689_600,
                "chat": {"id": i, "type": "private"}, "text": text}})
        }));
        let (slow, probe) = (ids[49], ids[50]);
        let transport = common::telegram_builder(&server).max_body_bytes(cap).build().unwrap();
        let start = Instant::now();
        let (done, handler) = timed_handler(start, move |id| {
            if id == slow {
                Duration::from_secs(3)
            } else {
                Duration::from_millis(100)
            }
        });
        let runtime = Runtime::builder(transport, handler)
            .policy(Fixed::new(100))
            .delivery(Delivery::AtLeastOnce)
            .build();
        let shutdown = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.cancel();
        run.await.unwrap().unwrap();
        let at = done.lock().iter().find(|(id, _)| *id == probe).map(|(_, t)| *t);
        results.push((cap, at, server.stats().get_updates_calls));
    }
    let ok = |at: Option<Duration>| at.is_some_and(|t| t <= Duration::from_millis(600));
    assert!(ok(results[0].1), "control: {results:?}");
    assert!(
        ok(results[1].1),
        "(max_body_bytes, when the 51st update was handled, getUpdates calls): {results:?}"
    );
}

/// Related (pre-existing, eager mode): the dispatcher notices a closed gate only in
/// `fetch_ready`, never during a fetch. Closed while a long poll is open, it keeps
/// polling; updates that arrive are fetched, given up (the gate is closed) and, eager,
/// confirmed past: lost.
#[tokio::test(start_paused = true)]
async fn a_closed_gate_stops_the_long_poll_in_eager_mode() {
    let transport = Arc::new(InMemoryTransport::new());
    let (done, handler) = timed_handler(Instant::now(), |_| Duration::ZERO);
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(Fixed::new(100))
        .build();
    let gate = runtime.gate().clone();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.close();
    tokio::time::sleep(Duration::from_secs(1)).await;
    transport.push((1..=5).map(|id| update(id, id)));
    let summary = run.await.unwrap().unwrap();
    assert!(
        summary.unfinished.is_empty(),
        "fetched after the gate was closed and never handled (handled: {:?}): unfinished {:?}, \
         confirmed offset {:?}, transport offset {:?}",
        done.lock(),
        summary.unfinished,
        summary.confirmed_offset,
        transport.offset()
    );
}

// ---------------------------------------------------------------------------------------
// (3) `again + new` within what the policy admitted: suspicion NOT confirmed.
// ---------------------------------------------------------------------------------------

/// `Fixed`, counting refusals: with `Fixed` nothing but the dispatcher acquires, so a
/// fetch that brought more new updates than `fetch_limit` admitted shows up as a refused
/// `admits` (the dispatcher then waits in the gate).
#[derive(Debug)]
struct Refusals {
    inner: Fixed,
    refused: AtomicUsize,
}

impl AdmissionPolicy for Refusals {
    fn fetch_limit(&self, load: &pollgate_admission::Load) -> usize {
        self.inner.fetch_limit(load)
    }

    fn admits(&self, load: &pollgate_admission::Load, cost: u64) -> bool {
        let ok = self.inner.admits(load, cost);
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

#[tokio::test(start_paused = true)]
async fn at_least_once_never_fetches_more_new_updates_than_admitted_holds() {
    let transport = Arc::new(InMemoryTransport::with_updates((1..=600).map(|id| update(id, id))));
    let policy = Arc::new(Refusals {
        inner: Fixed::new(10),
        refused: AtomicUsize::new(0),
    });
    let (done, handler) = timed_handler(Instant::now(), |id| match id % 37 {
        0 => Duration::from_millis(2500),
        n => Duration::from_millis((n as u64 * 7919) % 300),
    });
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(Arc::clone(&policy) as Arc<dyn AdmissionPolicy>)
        .delivery(Delivery::AtLeastOnce)
        .fetch_batching(4, Duration::from_millis(5))
        .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(120)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(done.lock().len(), 600);
    assert!(transport.requests().iter().all(|r| r.limit <= 100));
    assert!(
        stats.snapshot().redelivered > 100,
        "repeats were in play: {:?}",
        stats.snapshot()
    );
    assert_eq!(policy.refused.load(Ordering::Relaxed), 0, "over-fetched");
}

// ---------------------------------------------------------------------------------------
// (5) Dropping `run` with parked (reserved) and waiting updates: suspicion NOT confirmed.
// ---------------------------------------------------------------------------------------

/// Drops `run`'s future while handlers run, updates are parked behind busy keys (holding
/// reservations) and the dispatcher waits in the gate for a permit: every permit and
/// reservation must come back and every task end.
#[tokio::test(start_paused = true)]
async fn dropping_run_returns_every_permit_and_reservation_holds() {
    // Updates 1..=20 in chats 1..=3: with ByteBudget(30) and cost 10, three run and the
    // rest park behind their chat; update 21 (a new chat) makes the dispatcher wait in
    // `acquire`.
    let updates = (1..=40).map(|id| update(id, if id <= 20 { (id - 1) % 3 + 1 } else { id }));
    let transport = Arc::new(InMemoryTransport::with_updates(updates));
    let policy: Arc<dyn AdmissionPolicy> = Arc::new(ByteBudget::new(30).expected_cost(1));
    let (_done, handler) = timed_handler(Instant::now(), |_| Duration::from_secs(3600));
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(Arc::clone(&policy))
        .cost_fn(|_| 10)
        .ordered(true)
        .max_queued(100)
        .build();
    let gate = runtime.gate().clone();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = gate.stats();
    assert!(
        before.in_flight == 3 && before.reserved == 17 && before.waiting == 1,
        "{before:?}"
    );
    run.abort();
    let _ = run.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gate.stats();
    drop(gate);
    assert_eq!(
        (after.in_flight, after.reserved, after.bytes, after.waiting),
        (0, 0, 0, 0),
        "{after:?}"
    );
    assert_eq!(Arc::strong_count(&policy), 1, "a task still holds the runtime");
}

// ---------------------------------------------------------------------------------------
// (6) The RSS controller: probing from any budget while RSS is high and flat.
// ---------------------------------------------------------------------------------------
