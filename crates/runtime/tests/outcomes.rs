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
            7 => Err(Box::new(Overloaded {
                reason: "db pool".into(),
            }) as pollgate_runtime::BoxError),
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
