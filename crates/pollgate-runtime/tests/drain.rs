//! Every policy drains a backlog from the mock Bot API over real HTTP, under injected
//! faults, with zero lost and zero duplicated updates, while the handler itself checks
//! that no more than the policy's limit ever run at once.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Probe, run_until, server_with, telegram};
use mock_bot_api::FaultRates;
use pollgate_admission::{AdmissionPolicy, Barrier, ByteBudget, Fixed, Load, RssAdaptive, all_of};
use pollgate_runtime::{Delivery, Runtime};

const COST: u64 = 10_000;
const LIMIT: usize = 12;

/// A user's own policy, written against the public trait only: at most `max` at once,
/// and never fetch more than half of the free room at a time.
#[derive(Debug)]
struct HalfRoom {
    max: usize,
}

impl AdmissionPolicy for HalfRoom {
    fn fetch_limit(&self, load: &Load) -> usize {
        let free = self.max.saturating_sub(load.in_flight + load.waiting);
        if free == 0 { 0 } else { free.div_ceil(2) }
    }

    fn admits(&self, load: &Load, _cost: u64) -> bool {
        load.in_flight < self.max
    }
}

fn policies() -> Vec<(&'static str, Arc<dyn AdmissionPolicy>)> {
    vec![
        ("fixed", Arc::new(Fixed::new(LIMIT))),
        ("barrier", Arc::new(Barrier::new(LIMIT))),
        ("bytes", Arc::new(ByteBudget::new(LIMIT as u64 * COST))),
        (
            "rss",
            Arc::new(
                RssAdaptive::builder(u64::MAX / 4)
                    .min_budget(COST)
                    .max_budget(LIMIT as u64 * COST)
                    .build_manual(),
            ),
        ),
        ("all_of", Arc::new(all_of(Fixed::new(LIMIT), ByteBudget::new(1 << 30)))),
        ("custom", Arc::new(HalfRoom { max: LIMIT })),
    ]
}

async fn drain_with_faults(name: &str, policy: Arc<dyn AdmissionPolicy>, faults: FaultRates) {
    const N: usize = 1200;
    let (server, _) = server_with(N, 30).await;
    server.set_fault_rates(faults);
    let probe = Probe::new(LIMIT, Duration::from_millis(1));
    let runtime = Runtime::builder(telegram(&server), probe.handler())
        .shared_policy(policy)
        .cost_fn(|_| COST)
        .poll_timeout(Duration::from_secs(1))
        .build();
    let stats = runtime.stats();
    let (done, summary) = run_until(runtime, || {
        let s = stats.snapshot();
        s.finished() + s.undecodable >= N as u64
    })
    .await;
    assert!(done, "{name}: not drained: {:?}", stats.snapshot());

    let handled = probe.handled.lock().clone();
    let unique: BTreeSet<i64> = handled.iter().copied().collect();
    assert_eq!(unique.len(), handled.len(), "{name}: an update was handled twice");
    let undecodable = summary.stats.undecodable as usize;
    assert_eq!(handled.len() + undecodable, N, "{name}: lost updates; {summary:?}");
    let injected = server.stats().faults.get("malformed_update").copied().unwrap_or(0) as usize;
    assert!(
        undecodable <= injected,
        "{name}: {undecodable} undecodable but {injected} injected"
    );
    assert_eq!(
        probe.over_limit.load(Ordering::SeqCst),
        0,
        "{name}: in-flight limit exceeded"
    );
    assert!(probe.max_in_flight.load(Ordering::SeqCst) <= LIMIT);
    assert!(summary.drained && summary.unfinished.is_empty(), "{name}: {summary:?}");
    assert_eq!(server.pending(), 0, "{name}: the final offset was not confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_drains_without_loss_or_duplicates_under_faults() {
    let faults = FaultRates {
        too_many_requests: 0.04,
        retry_after_secs: 1,
        server_error: 0.04,
        malformed_json: 0.03,
        malformed_update: 0.04,
        drop_connection: 0.04,
        ..FaultRates::default()
    };
    for (name, policy) in policies() {
        drain_with_faults(name, policy, faults.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_keeps_the_in_flight_limit_at_every_instant_in_at_least_once_mode() {
    for (name, policy) in policies() {
        const N: usize = 600;
        let (server, _) = server_with(N, 10).await;
        let probe = Probe::new(LIMIT, Duration::from_millis(2));
        let runtime = Runtime::builder(telegram(&server), probe.handler())
            .shared_policy(policy)
            .cost_fn(|_| COST)
            .delivery(Delivery::AtLeastOnce)
            .poll_timeout(Duration::from_secs(1))
            .build();
        let (done, summary) = run_until(runtime, || probe.count() >= N).await;
        assert!(done, "{name}: stuck at {}", probe.count());
        assert_eq!(probe.over_limit.load(Ordering::SeqCst), 0, "{name}");
        let unique: BTreeSet<i64> = probe.handled.lock().iter().copied().collect();
        assert_eq!(unique.len(), N, "{name}");
        assert_eq!(summary.stats.finished(), N as u64, "{name}");
    }
}
