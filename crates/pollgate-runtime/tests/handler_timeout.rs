//! `handler_timeout`: a handler past it is cancelled, its permit released and reported to
//! the policy as overload, it is counted in `Stats::timed_out`, and its update counts as
//! finished (the next update of its key runs; at-least-once acknowledges past it). A
//! handler that ends in time is an ordinary success. All on paused time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Completion, Load, Outcome};
use pollgate_core::{InMemoryTransport, Update};
use pollgate_runtime::{Delivery, Runtime};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(5);

/// At most `max` at once; records every completion as (update id, outcome): the tests
/// declare each update's cost as its id.
#[derive(Debug)]
struct Recording {
    max: usize,
    completions: Mutex<Vec<(u64, Outcome)>>,
}

impl Recording {
    fn new(max: usize) -> Arc<Recording> {
        Arc::new(Recording {
            max,
            completions: Mutex::new(Vec::new()),
        })
    }

    fn completions(&self) -> Vec<(u64, Outcome)> {
        self.completions.lock().clone()
    }
}

impl AdmissionPolicy for Recording {
    fn fetch_limit(&self, load: &Load) -> usize {
        self.max.saturating_sub(load.in_flight + load.waiting)
    }

    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < self.max
    }

    fn on_complete(&self, c: &Completion) {
        self.completions.lock().push((c.cost, c.outcome));
    }
}

fn update(id: i64, chat: i64) -> Update {
    Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap()
}

/// When each update's handler started, which ones returned, and how many completions the
/// policy had seen when a stuck handler was dropped.
#[derive(Debug, Default)]
struct Seen {
    started: HashMap<i64, Instant>,
    returned: Vec<i64>,
    completions_at_drop: HashMap<i64, usize>,
}

/// Records, when a stuck handler is dropped, how many completions the policy had seen.
struct OnDrop(i64, Arc<Mutex<Seen>>, Arc<Recording>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let seen = self.2.completions().len();
        self.1.lock().completions_at_drop.insert(self.0, seen);
    }
}

/// A handler that never returns for the ids in `stuck` and takes 10 ms for the others.
fn handler(
    stuck: &'static [i64],
    seen: &Arc<Mutex<Seen>>,
    policy: &Arc<Recording>,
) -> impl Fn(Update) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>> + Send + Sync + 'static {
    let (seen, policy) = (Arc::clone(seen), Arc::clone(policy));
    move |u: Update| {
        let (seen, policy) = (Arc::clone(&seen), Arc::clone(&policy));
        Box::pin(async move {
            seen.lock().started.insert(u.id(), Instant::now());
            if stuck.contains(&u.id()) {
                let _guard = OnDrop(u.id(), Arc::clone(&seen), policy);
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen.lock().returned.push(u.id());
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_the_timeout_is_cancelled_and_its_permit_admits_the_next_update() {
    let transport = Arc::new(InMemoryTransport::with_updates([update(1, 1), update(2, 2)]));
    let policy = Recording::new(1);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let runtime = Runtime::builder(Arc::clone(&transport), handler(&[1], &seen, &policy))
        .shared_policy(policy.clone())
        .cost_fn(|u| u.id() as u64)
        .delivery(Delivery::AtLeastOnce)
        .handler_timeout(TIMEOUT)
        .poll_timeout(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let gate = runtime.gate().clone();
    let shutdown = runtime.shutdown_token();
    let t0 = Instant::now();
    let run = tokio::spawn(runtime.run());

    // Just before the timeout: update 1 holds the only slot, update 2 waits on the server.
    tokio::time::sleep(TIMEOUT - Duration::from_millis(100)).await;
    assert_eq!(gate.load().in_flight, 1, "update 1 holds its permit");
    assert!(!seen.lock().started.contains_key(&2), "update 2 cannot start yet");
    assert_eq!(stats.snapshot().timed_out, 0);
    assert!(policy.completions().is_empty());
    assert_eq!(
        transport.offset(),
        None,
        "at-least-once: nothing confirmed past update 1"
    );

    // Just after: update 1 was cancelled, its permit went back and admitted update 2.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = stats.snapshot();
    assert_eq!(s.timed_out, 1);
    assert_eq!(s.failed + s.panicked + s.aborted, 0);
    assert_eq!(policy.completions().first(), Some(&(1, Outcome::Overload)));
    let started_2 = seen.lock().started.get(&2).copied().expect("update 2 was admitted");
    assert!(started_2 >= t0 + TIMEOUT, "update 2 started after the timeout");
    assert!(started_2 < t0 + TIMEOUT + Duration::from_millis(10), "and at once");
    assert_eq!(seen.lock().returned, vec![2], "update 1 never returned");
    assert_eq!(
        seen.lock().completions_at_drop.get(&1),
        Some(&0),
        "the handler was dropped before its permit was released"
    );
    assert_eq!(gate.load().in_flight, 0, "both permits were released");
    assert_eq!(
        policy.completions(),
        vec![(1, Outcome::Overload), (2, Outcome::Success)]
    );

    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.drained);
    assert!(summary.unfinished.is_empty(), "{:?}", summary.unfinished);
    assert_eq!(summary.stats.timed_out, 1);
    assert_eq!(summary.stats.completed, 1);
    assert_eq!(summary.stats.finished(), 2, "a timed-out update counts as finished");
    assert_eq!(
        summary.confirmed_offset,
        Some(3),
        "the offset moved past the timed-out update"
    );
    assert_eq!(transport.offset(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn ordered_the_next_update_of_the_key_runs_after_the_timeout() {
    // Updates 1 and 2 share chat 7; 3 is another chat.
    let transport = Arc::new(InMemoryTransport::with_updates([
        update(1, 7),
        update(2, 7),
        update(3, 8),
    ]));
    let policy = Recording::new(4);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let runtime = Runtime::builder(Arc::clone(&transport), handler(&[1], &seen, &policy))
        .shared_policy(policy.clone())
        .cost_fn(|u| u.id() as u64)
        .ordered(true)
        .handler_timeout(TIMEOUT)
        .poll_timeout(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let t0 = Instant::now();
    let run = tokio::spawn(runtime.run());

    tokio::time::sleep(TIMEOUT - Duration::from_millis(100)).await;
    assert_eq!(seen.lock().returned, vec![3], "the other chat is not held up");
    assert!(!seen.lock().started.contains_key(&2), "update 2 waits behind update 1");
    assert_eq!(stats.snapshot().reserved, 1);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let started_2 = seen
        .lock()
        .started
        .get(&2)
        .copied()
        .expect("update 2 ran after the timeout");
    assert!(started_2 >= t0 + TIMEOUT);
    assert_eq!(seen.lock().returned, vec![3, 2]);
    let s = stats.snapshot();
    assert_eq!((s.timed_out, s.completed, s.reserved), (1, 2, 0));
    assert!(policy.completions().contains(&(1, Outcome::Overload)));

    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.drained);
    assert!(summary.unfinished.is_empty());
    assert_eq!(summary.confirmed_offset, Some(4));
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_ends_before_the_timeout_is_an_ordinary_success() {
    let transport = Arc::new(InMemoryTransport::with_updates([update(1, 1)]));
    let policy = Recording::new(1);
    let handler = |_u: Update| async {
        // Waits (so the timer is armed), and ends just before it fires.
        tokio::time::sleep(TIMEOUT - Duration::from_millis(1)).await;
        Ok::<(), Infallible>(())
    };
    let runtime = Runtime::builder(Arc::clone(&transport), handler)
        .shared_policy(policy.clone())
        .cost_fn(|u| u.id() as u64)
        .delivery(Delivery::AtLeastOnce)
        .handler_timeout(TIMEOUT)
        .poll_timeout(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());

    tokio::time::sleep(TIMEOUT * 2).await;
    let s = stats.snapshot();
    assert_eq!((s.completed, s.timed_out, s.in_flight), (1, 0, 0));
    assert_eq!(policy.completions(), vec![(1, Outcome::Success)]);

    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.stats.timed_out, 0);
    assert_eq!(summary.confirmed_offset, Some(2));
}

#[test]
#[should_panic(expected = "handler_timeout must be greater than zero")]
fn a_zero_handler_timeout_is_refused() {
    let _ = Runtime::builder(InMemoryTransport::new(), |_u: Update| async {
        Ok::<(), Infallible>(())
    })
    .handler_timeout(Duration::ZERO);
}
