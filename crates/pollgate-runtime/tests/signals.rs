//! `shutdown_on_signals`: the first SIGTERM/SIGINT drains and confirms, a second one during
//! the drain aborts it at once. The test signals its own process, so it is alone in this
//! test binary (the runtime's listener keeps the signal from killing the process).
#![cfg(all(unix, feature = "signal"))]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pollgate_core::{InMemoryTransport, Update};
use pollgate_runtime::{Delivery, Runtime, Summary};
use rustix::process::{Signal, getpid, kill_process};

fn update(id: i64) -> Update {
    Update::from_json(&format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":{id}}}}}}}"#)).unwrap()
}

/// Runs one update whose handler takes `work`, sends `signals` once it started (100 ms
/// apart), and returns the summary and how long the run took after the first signal.
async fn run_and_signal(work: Duration, signals: &[Signal]) -> (Summary, Duration, usize) {
    let transport = Arc::new(InMemoryTransport::with_updates([update(1)]));
    let (started, returned) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = {
        let (started, returned) = (Arc::clone(&started), Arc::clone(&returned));
        move |_u: Update| {
            let (started, returned) = (Arc::clone(&started), Arc::clone(&returned));
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                returned.fetch_add(1, Ordering::SeqCst);
                Ok::<(), Infallible>(())
            }
        }
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .delivery(Delivery::AtLeastOnce)
        .drain_deadline(Duration::from_secs(60))
        .poll_timeout(Duration::from_secs(1))
        .shutdown_on_signals()
        .build();
    let run = tokio::spawn(runtime.run());
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    for (i, &signal) in signals.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!run.is_finished(), "one signal does not abort the drain");
        }
        kill_process(getpid(), signal).unwrap();
    }
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends long before the drain deadline")
        .unwrap()
        .unwrap();
    (summary, signalled.elapsed(), returned.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_second_signal_aborts_the_drain() {
    // One signal: the running handler finishes, and the offset is confirmed past it.
    let (summary, took, returned) = run_and_signal(Duration::from_millis(300), &[Signal::TERM]).await;
    assert!(summary.drained);
    assert_eq!(returned, 1, "the handler was let finish");
    assert!(took >= Duration::from_millis(200), "the run waited for it: {took:?}");
    assert_eq!(summary.confirmed_offset, Some(2));
    assert!(summary.unfinished.is_empty());

    // Two: a handler that would take an hour is dropped at the second one, not at the
    // deadline; it stays unconfirmed (at-least-once: delivered again).
    let (summary, took, returned) = run_and_signal(Duration::from_secs(3600), &[Signal::INT, Signal::TERM]).await;
    assert!(!summary.drained);
    assert_eq!(returned, 0);
    assert!(took < Duration::from_secs(5), "aborted at once: {took:?}");
    assert_eq!(summary.unfinished, vec![1]);
    assert_eq!(summary.stats.aborted, 1);
    assert_eq!(summary.confirmed_offset, Some(1), "not past the aborted update");
}
