//! Handler errors and panics are caught per update, counted, fed to the policy, and never
//! stop the loop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{run_until, server_with, telegram};
use pollgate_admission::{AdmissionPolicy, Completion, Load, Outcome};
use pollgate_core::Update;
use pollgate_runtime::{Overloaded, Runtime};

/// Counts the outcomes the runtime reports, by kind.
#[derive(Debug, Default)]
struct Counting {
    success: AtomicU64,
    error: AtomicU64,
    overload: AtomicU64,
    panic: AtomicU64,
}

impl AdmissionPolicy for Counting {
    fn fetch_limit(&self, load: &Load) -> usize {
        8usize.saturating_sub(load.in_flight + load.waiting)
    }
    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < 8
    }
    fn on_complete(&self, c: &Completion) {
        let counter = match c.outcome {
            Outcome::Success => &self.success,
            Outcome::Error => &self.error,
            Outcome::Overload => &self.overload,
            Outcome::Panic => &self.panic,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_panics_are_counted_reported_and_do_not_stop_the_loop() {
    const N: usize = 300;
    let (server, ids) = server_with(N, 5).await;
    let policy = Arc::new(Counting::default());
    let handler = |u: Update| async move {
        match u.id() % 10 {
            3 => panic!("handler bug on {}", u.id()),
            5 => Err(Box::new(std::io::Error::other("downstream said no")) as pollgate_runtime::BoxError),
            7 => Err(Box::new(Overloaded::new("db pool")) as pollgate_runtime::BoxError),
            _ => Ok(()),
        }
    };
    let runtime = Runtime::builder(telegram(&server), handler)
        .shared_policy(policy.clone())
        .poll_timeout(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let (done, summary) = run_until(runtime, || stats.snapshot().finished() >= N as u64).await;
    assert!(done);
    let s = summary.stats;
    let count = |r: u64| ids.iter().filter(|id| (**id as u64) % 10 == r).count() as u64;
    assert_eq!(s.panicked, count(3));
    assert_eq!(s.failed, count(5) + count(7));
    assert_eq!(s.completed, N as u64 - count(3) - count(5) - count(7));
    assert_eq!(policy.panic.load(Ordering::Relaxed), count(3));
    assert_eq!(policy.error.load(Ordering::Relaxed), count(5));
    assert_eq!(policy.overload.load(Ordering::Relaxed), count(7));
    assert_eq!(policy.success.load(Ordering::Relaxed), s.completed);
    assert_eq!(s.in_flight, 0, "every permit came back");
}

/// A handler's own error whose cause is overload.
#[derive(Debug)]
struct Wrapped(Overloaded);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the send failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Records every completion the runtime reports.
#[derive(Debug, Default)]
struct Recording(parking_lot::Mutex<Vec<Completion>>);

impl AdmissionPolicy for Recording {
    fn fetch_limit(&self, load: &Load) -> usize {
        8usize.saturating_sub(load.in_flight + load.waiting)
    }
    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < 8
    }
    fn on_complete(&self, c: &Completion) {
        self.0.lock().push(*c);
    }
}

#[tokio::test(start_paused = true)]
async fn a_completion_carries_the_updates_key_and_the_retry_after_its_handler_reported() {
    let queue = common::Queue::with([common::update(1, 41), common::update(2, 42)]);
    let handler = |u: Update| async move {
        if u.id() == 2 {
            let cause = Overloaded::new("429").retry_after(Duration::from_secs(7));
            return Err(Wrapped(cause));
        }
        Ok(())
    };
    let policy = Arc::new(Recording::default());
    let runtime = Runtime::builder(Arc::clone(&queue), handler)
        .shared_policy(Arc::clone(&policy) as Arc<dyn AdmissionPolicy>)
        .poll_timeout(Duration::from_millis(50))
        .build();
    let stats = runtime.stats();
    common::run_until_paused(runtime, || stats.snapshot().finished() == 2).await;
    let mut seen: Vec<(Option<i64>, Outcome, Option<Duration>)> = policy
        .0
        .lock()
        .iter()
        .map(|c| (c.key, c.outcome, c.retry_after))
        .collect();
    seen.sort_by_key(|s| s.0);
    assert_eq!(
        seen,
        [
            (Some(41), Outcome::Success, None),
            (Some(42), Outcome::Overload, Some(Duration::from_secs(7))),
        ],
        "the key always; retry_after from an Overloaded anywhere in the error's chain"
    );
}
