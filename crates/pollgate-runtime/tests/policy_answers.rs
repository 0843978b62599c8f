//! The runtime takes any answer a policy may give: 0, 1, huge, `usize::MAX` ("as many as
//! you like", as the trait docs allow), changing from one call to the next. It never
//! panics (no overflow in its arithmetic), never asks the transport for more than its
//! window, and handles every update.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Load};
use pollgate_core::{InMemoryTransport, Update};
use pollgate_runtime::{Delivery, Runtime};
use proptest::prelude::*;

/// Answers `fetch_limit` and `admits` from scripted sequences, cycling. It still lets
/// one update in when nothing runs, so a run can always finish (a policy that says 0
/// with nothing in flight stalls by its own choice, which is not what is tested here).
#[derive(Debug)]
struct Scripted {
    limits: Vec<usize>,
    admits: Vec<bool>,
    calls: AtomicUsize,
}

impl Scripted {
    fn next(&self) -> usize {
        self.calls.fetch_add(1, Ordering::Relaxed)
    }
}

impl AdmissionPolicy for Scripted {
    fn fetch_limit(&self, load: &Load) -> usize {
        let n = self.limits[self.next() % self.limits.len()];
        if load.in_flight == 0 && load.waiting == 0 {
            n.max(1)
        } else {
            n
        }
    }

    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight == 0 || self.admits[self.next() % self.admits.len()]
    }
}

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"chat":{{"id":{chat},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap()
}

fn answer() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        Just(usize::MAX),
        Just(usize::MAX - 1),
        Just(usize::MAX / 2),
        0usize..200,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_policy_answer_is_taken_without_panic_or_overfetch(
        limits in proptest::collection::vec(answer(), 1..8),
        admits in proptest::collection::vec(any::<bool>(), 1..8),
        n in 1i64..120,
        ordered in any::<bool>(),
        at_least_once in any::<bool>(),
        min_fetch in prop_oneof![Just(1usize), Just(64), Just(usize::MAX)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (handled, requests) = rt.block_on(async move {
            let transport = Arc::new(InMemoryTransport::with_updates((1..=n).map(|id| update(id, id % 5))));
            let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
            let h = Arc::clone(&handled);
            let handler = move |u: Update| {
                let h = Arc::clone(&h);
                async move {
                    tokio::time::sleep(Duration::from_millis(u.id() as u64 % 7)).await;
                    h.lock().push(u.id());
                    Ok::<(), Infallible>(())
                }
            };
            let policy = Scripted { limits, admits, calls: AtomicUsize::new(0) };
            let runtime = Runtime::builder(Arc::clone(&transport), handler)
                .policy(policy)
                .ordered(ordered)
                .delivery(if at_least_once { Delivery::AtLeastOnce } else { Delivery::Eager })
                .fetch_batching(min_fetch, Duration::from_millis(1))
                .poll_timeout(Duration::from_millis(50))
                .build();
            let shutdown = runtime.shutdown_token();
            let run = tokio::spawn(runtime.run());
            for _ in 0..2000 {
                if handled.lock().len() as i64 >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shutdown.cancel();
            run.await.expect("the runtime must not panic").unwrap();
            let handled = handled.lock().clone();
            (handled, transport.requests())
        });
        let mut sorted = handled.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (1..=n).collect::<Vec<_>>(), "every update handled exactly once");
        for r in &requests {
            prop_assert!((1..=100).contains(&r.limit), "fetch limit {} outside 1..=window", r.limit);
        }
    }
}
