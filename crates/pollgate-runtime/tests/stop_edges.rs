//! Stopping at the edges, found by review: a handler whose clean-up panics when its
//! timeout drops it, a panic at the timeout's instant, and a final confirmation that hangs
//! after a second signal. The signal test signals this very process, so no other test in
//! this binary may listen for signals.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, InMemoryTransport, Transport, Update};
use pollgate_runtime::{Delivery, Runtime};

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap()
}

/// A guard whose Drop panics: a cancelled handler's clean-up that fails.
struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("clean-up failed while the handler was cancelled");
        }
    }
}

/// The timed-out handler is dropped (`handler.set(Started::Dropped)`) inside `poll`,
/// outside any catch_unwind and before `report`/`finished`. If its drop panics, the task
/// dies: not counted (timed_out = panicked = 0), not finished; in ordered mode the key is
/// never released, so the key's next update never runs, and at-least-once never confirms
/// past it (the whole run then stalls once the window fills).
#[tokio::test(start_paused = true)]
async fn a_timed_out_handler_whose_drop_panics_still_frees_its_key_and_the_offset() {
    let transport = Arc::new(InMemoryTransport::with_updates([update(1, 7), update(2, 7)]));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let ran = Arc::clone(&ran);
        move |u: Update| {
            let ran = Arc::clone(&ran);
            async move {
                ran.lock().push(u.id());
                if u.id() == 1 {
                    let _guard = PanicsOnDrop;
                    std::future::pending::<()>().await;
                }
                Ok::<(), Infallible>(())
            }
        }
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(Fixed::new(4))
        .ordered(true)
        .delivery(Delivery::AtLeastOnce)
        .handler_timeout(Duration::from_secs(5))
        .poll_timeout(Duration::from_secs(1))
        .drain_deadline(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let s = stats.snapshot();
    println!(
        "30 s later: ran {:?}, timed_out {}, panicked {}, aborted {}, offset {:?}",
        ran.lock(),
        s.timed_out,
        s.panicked,
        s.aborted,
        transport.offset()
    );
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    println!(
        "summary: unfinished {:?}, confirmed {:?}",
        summary.unfinished, summary.confirmed_offset
    );
    assert_eq!(
        *ran.lock(),
        vec![1, 2],
        "update 2 (same key) must run after update 1 timed out"
    );
}

/// Sanity (expected to pass): a handler that panics at the very instant of its timeout
/// is counted as panicked, once, and its key goes on.
#[tokio::test(start_paused = true)]
async fn a_panic_at_the_timeout_instant_counts_once() {
    let transport = Arc::new(InMemoryTransport::with_updates([update(1, 7), update(2, 7)]));
    let handler = |u: Update| async move {
        if u.id() == 1 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            panic!("at the timeout");
        }
        Ok::<(), Infallible>(())
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .policy(Fixed::new(4))
        .ordered(true)
        .delivery(Delivery::AtLeastOnce)
        .handler_timeout(Duration::from_secs(5))
        .poll_timeout(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(10)).await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    let s = stats.snapshot();
    println!(
        "panicked {} timed_out {} completed {} confirmed {:?}",
        s.panicked, s.timed_out, s.completed, summary.confirmed_offset
    );
    assert_eq!((s.panicked, s.timed_out, s.completed), (1, 0, 1));
    assert_eq!(summary.confirmed_offset, Some(3));
}

/// InMemoryTransport whose final `flush` never answers (the server went away at shutdown).
#[derive(Debug)]
struct HangingFlush(InMemoryTransport, AtomicBool);

impl Transport for HangingFlush {
    type Error = Infallible;
    fn ack_model(&self) -> AckModel {
        self.0.ack_model()
    }
    fn fetch(&self, request: FetchRequest) -> impl Future<Output = Result<Batch, Infallible>> + Send {
        self.0.fetch(request)
    }
    fn ack(&self, ack: Ack<'_>) -> impl Future<Output = Result<(), Infallible>> + Send {
        self.0.ack(ack)
    }
    fn flush(&self) -> impl Future<Output = Result<(), Infallible>> + Send {
        self.1.store(true, Ordering::SeqCst);
        std::future::pending()
    }
}

/// The docs: "a second signal during the drain ends it at once". The final confirmation
/// used to get the full drain deadline whatever signals arrived: after SIGTERM, then
/// SIGINT (and a third), the run waited out the deadline. It now gives up shortly after
/// the abort.
#[cfg(all(unix, feature = "signal"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_a_hanging_final_confirmation_short() {
    use rustix::process::{Signal, getpid, kill_process};
    let transport = Arc::new(HangingFlush(
        InMemoryTransport::with_updates([update(1, 1)]),
        AtomicBool::new(false),
    ));
    let deadline = Duration::from_secs(60);
    let runtime = Runtime::builder(Arc::clone(&transport), |_u: Update| async { Ok::<(), Infallible>(()) })
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .drain_deadline(deadline)
        .poll_timeout(Duration::from_secs(1))
        .shutdown_on_signals()
        .build();
    let stats = runtime.stats();
    let run = tokio::spawn(runtime.run());
    while stats.snapshot().finished() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill_process(getpid(), Signal::TERM).unwrap();
    while !transport.1.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = std::time::Instant::now();
    kill_process(getpid(), Signal::INT).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill_process(getpid(), Signal::INT).unwrap();
    let summary = run.await.unwrap().unwrap();
    let took = second.elapsed();
    println!(
        "flush hanging; run ended {took:?} after the second signal; flush_error {:?}",
        summary.flush_error
    );
    // Once the run was aborted the final confirmation is given up after a short grace
    // (it used to get the whole drain deadline, 60 s here): the outcome says which, and
    // the run ends far from the deadline.
    let error = summary.flush_error.expect("the flush hangs: it cannot succeed");
    assert!(
        matches!(error, pollgate_runtime::FlushError::Aborted(_)),
        "the second signal should cut the final confirmation short: {error}"
    );
    assert!(took < deadline / 2, "ended {took:?} after the second signal");
}
