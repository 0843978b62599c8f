//! The stop's one deadline at its edges, found by review of 2b2d0c0 (where the drain
//! watchdog was a branch of `run`'s `join!`): reproducers on paused time.
//!
//! The `f*` tests failed on 2b2d0c0, each a finding: a run not polled right after the
//! cancellation, a ready confirmation thrown away when the budget was spent, a zero
//! deadline, the abort's grace counted per step, and `drained` after a last handler that
//! ended at the deadline's tick. The `ok_*` tests record what was tried and found sound.
//! The signal test signals this very process: no other test in this binary may listen for
//! signals.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport, Update};
use pollgate_runtime::{Delivery, FlushError, RunError, Runtime, Summary};
use tokio::sync::Notify;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(2);

fn update(id: i64, receipt: bool) -> Update {
    let update = Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{id},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap();
    if receipt {
        update.with_receipt(format!("{id}-0"))
    } else {
        update
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Ready on the first poll (no timer, no await).
    Now,
    After(Duration),
    Never,
    /// The first call never answers, every later one at once (acknowledgements only).
    FirstNeverThenNow,
}

impl Answer {
    async fn wait(self) {
        match self {
            Answer::Now => {}
            Answer::After(d) => tokio::time::sleep(d).await,
            Answer::Never | Answer::FirstNeverThenNow => std::future::pending().await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("server down")]
struct Down;

/// Serves one update, then long-polls nothing (or fails, with `fail_fetch`).
#[derive(Debug)]
struct Srv {
    updates: Mutex<Vec<Update>>,
    individual: bool,
    /// How an acknowledgement that carries receipts answers (one without: at once).
    receipts_ack: Answer,
    flush: Answer,
    /// The second fetch fails for good (a transport failure).
    fail_fetch: bool,
    fetches: AtomicU64,
    receipt_acks: AtomicU64,
    receipt_ack_started: Notify,
    flushed: AtomicBool,
}

impl Srv {
    fn new(individual: bool, receipts_ack: Answer, flush: Answer) -> Srv {
        Srv {
            updates: Mutex::new(vec![update(1, individual)]),
            individual,
            receipts_ack,
            flush,
            fail_fetch: false,
            fetches: AtomicU64::new(0),
            receipt_acks: AtomicU64::new(0),
            receipt_ack_started: Notify::new(),
            flushed: AtomicBool::new(false),
        }
    }
}

impl Transport for Srv {
    type Error = Down;

    fn ack_model(&self) -> AckModel {
        if self.individual {
            AckModel::Individual { window: 10 }
        } else {
            AckModel::Cumulative { window: 10 }
        }
    }

    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Down> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        let updates = std::mem::take(&mut *self.updates.lock());
        if updates.is_empty() {
            if self.fail_fetch && n > 0 {
                return Err(Down);
            }
            tokio::time::sleep(request.timeout).await;
        }
        Ok(Batch {
            updates,
            ..Batch::default()
        })
    }

    async fn ack(&self, ack: Ack<'_>) -> Result<(), Down> {
        if !ack.receipts.is_empty() {
            let earlier = self.receipt_acks.fetch_add(1, Ordering::SeqCst);
            self.receipt_ack_started.notify_one();
            match self.receipts_ack {
                Answer::FirstNeverThenNow if earlier > 0 => {}
                answer => answer.wait().await,
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Down> {
        self.flush.wait().await;
        self.flushed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Records when the handler's future was dropped (aborted).
struct DropClock(Arc<Mutex<Option<Instant>>>);
impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock() = Some(Instant::now());
    }
}

fn builder<F, Fut>(srv: &Arc<Srv>, handler: F, deadline: Duration) -> pollgate_runtime::RuntimeBuilder<Arc<Srv>, F>
where
    F: Fn(Update) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Infallible>> + Send + 'static,
{
    Runtime::builder(Arc::clone(srv), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .drain_deadline(deadline)
        .poll_timeout(Duration::from_secs(10))
}

/// F1. The watchdog used to be a spawned task: the deadline came 30 s after the cancel
/// whatever the caller did with the run future. Now it is a branch of `run`'s `join!`, so
/// it only starts counting when the run future is next polled. A caller that cancels the
/// token and does its own clean-up before awaiting the run (the usual `select!` on a
/// signal) leaves handlers running past the deadline, and the stop takes deadline + 2 s
/// from *that* poll, not from the cancellation.
#[tokio::test(start_paused = true)]
async fn f1_a_run_not_polled_right_after_the_cancel_still_aborts_its_handlers_at_the_deadline() {
    let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Now));
    let started = Arc::new(Notify::new());
    let dropped_at = Arc::new(Mutex::new(None));
    let runtime = builder(
        &srv,
        {
            let (started, dropped_at) = (Arc::clone(&started), Arc::clone(&dropped_at));
            move |_u: Update| {
                let (started, dropped_at) = (Arc::clone(&started), Arc::clone(&dropped_at));
                async move {
                    let _clock = DropClock(dropped_at);
                    started.notify_one();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
            }
        },
        DEADLINE,
    )
    .build();
    let shutdown = runtime.shutdown_token();
    let run = runtime.run();
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => panic!("the run ended by itself"),
        () = started.notified() => {}
    }
    let cancelled = Instant::now();
    shutdown.cancel();
    // The caller's own clean-up (closing a database, ...) before it awaits the run.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let summary = (&mut run).await.unwrap();
    let took = cancelled.elapsed();
    let dropped = dropped_at.lock().map(|t| t - cancelled);
    println!(
        "handler dropped {dropped:?} after the cancel; run ended {took:?} after it; drained {}",
        summary.drained
    );
    assert_eq!(
        dropped,
        Some(DEADLINE),
        "the handler must be aborted at the drain deadline counted from the cancellation"
    );
    assert!(
        took <= Duration::from_secs(60) + GRACE,
        "the stop took {took:?} from the cancel"
    );
}

/// F2. When the acknowledgement still in flight (`ack_loop`) used the whole budget, the
/// final ack + flush get 0 s left. They are ready on their first poll, so they fit in
/// 0 s, but `finish` races them against `confirmation_over` in an unbiased `select!`:
/// about half the runs throw the confirmation away as `TimedOut(0ns)` (the old code
/// polled the flush first inside `timeout`). The acknowledgement in flight hangs; the
/// final one carries its receipts again (given back when it was given up) and, like the
/// flush, answers at once.
#[tokio::test(start_paused = true)]
async fn f2_a_final_confirmation_that_is_ready_at_once_is_never_thrown_away() {
    let mut outcomes = Vec::new();
    for _ in 0..32 {
        let srv = Arc::new(Srv::new(true, Answer::FirstNeverThenNow, Answer::Now));
        let runtime = builder(&srv, |_u: Update| async { Ok::<(), Infallible>(()) }, DEADLINE).build();
        let shutdown = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        srv.receipt_ack_started.notified().await;
        let cancelled = Instant::now();
        shutdown.cancel();
        let summary = run.await.unwrap().unwrap();
        assert_eq!(
            cancelled.elapsed(),
            DEADLINE,
            "the hanging receipt ack is given up at confirm_by"
        );
        assert_eq!(
            srv.receipt_acks.load(Ordering::SeqCst),
            2,
            "the receipts were sent again"
        );
        outcomes.push(summary.flush_error.map(|e| e.to_string()));
    }
    let lost = outcomes.iter().filter(|o| o.is_some()).count();
    println!(
        "{lost}/32 runs lost a confirmation that was ready at once: {:?}",
        outcomes.iter().flatten().next()
    );
    assert_eq!(lost, 0);
}

/// F2b. The same with `drain_deadline(0)`: `confirm_by` is "now" (the grace is capped by
/// the deadline), so even an in-memory flush that is ready at once is a coin toss.
#[tokio::test(start_paused = true)]
async fn f2b_a_zero_deadline_does_not_make_an_instant_flush_a_coin_toss() {
    let mut lost = 0;
    let mut example = None;
    for _ in 0..32 {
        let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Now));
        let done = Arc::new(Notify::new());
        let runtime = builder(
            &srv,
            {
                let done = Arc::clone(&done);
                move |_u: Update| {
                    let done = Arc::clone(&done);
                    async move {
                        done.notify_one();
                        Ok::<(), Infallible>(())
                    }
                }
            },
            Duration::ZERO,
        )
        .build();
        let shutdown = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        done.notified().await;
        shutdown.cancel();
        let summary: Summary = run.await.unwrap().unwrap();
        if let Some(e) = summary.flush_error {
            lost += 1;
            example = Some(e.to_string());
        }
    }
    println!("{lost}/32 runs lost an instant flush with drain_deadline(0): {example:?}");
    assert_eq!(lost, 0);
}

/// F3. "After an abort the confirmation gets only 2 s": `confirmation_over` starts a new
/// 2 s sleep each time it is called after the abort, and it is called once by `ack_loop`
/// (the acknowledgement still in flight) and once more by `finish`. A second signal during
/// the confirmation thus gives it 2 s + 2 s.
#[cfg(all(unix, feature = "signal"))]
#[tokio::test(start_paused = true)]
async fn f3_after_a_second_signal_the_whole_confirmation_gets_2_s() {
    use rustix::process::{Signal, getpid, kill_process};
    let srv = Arc::new(Srv::new(true, Answer::Never, Answer::Never));
    let runtime = builder(&srv, |_u: Update| async { Ok::<(), Infallible>(()) }, DEADLINE)
        .shutdown_on_signals()
        .build();
    let shutdown = runtime.shutdown_token();
    let gate = runtime.gate().clone();
    let run = tokio::spawn(runtime.run());
    // The run was polled (its signal handlers are installed) and the receipt ack hangs.
    srv.receipt_ack_started.notified().await;
    // The signal may be handled on another thread of this test binary: wait for its
    // effect, 1 ms of paused time at a time (a timer that near keeps the clock from
    // jumping to the next deadline before the signal is read).
    kill_process(getpid(), Signal::TERM).unwrap();
    while !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    kill_process(getpid(), Signal::INT).unwrap();
    // The second signal cancels the abort token and closes the gate.
    while !gate.is_closed() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = Instant::now();
    let summary = run.await.unwrap().unwrap();
    let took = second.elapsed();
    println!(
        "ended {took:?} after the second signal; flush_error {:?}",
        summary.flush_error
    );
    assert!(
        matches!(summary.flush_error, Some(FlushError::Aborted(_))),
        "{:?}",
        summary.flush_error
    );
    assert!(took <= GRACE, "ended {took:?} after the second signal");
}

/// Tried, sound: a transport failure during a long drain, a receipt ack that hangs, then
/// the failure path's ack: deadline + 2 s from the failure.
#[tokio::test(start_paused = true)]
async fn ok_transport_failure_path_is_bounded_from_the_failure() {
    let mut srv = Srv::new(true, Answer::Never, Answer::Never);
    srv.fail_fetch = true;
    let srv = Arc::new(srv);
    let started = Instant::now();
    let runtime = builder(
        &srv,
        |_u: Update| async {
            tokio::time::sleep(DEADLINE - Duration::from_secs(1)).await;
            Ok::<(), Infallible>(())
        },
        DEADLINE,
    )
    .build();
    let r = runtime.run().await;
    let took = started.elapsed();
    assert!(matches!(r, Err(RunError::Transport { .. })), "{r:?}");
    assert!(took <= DEADLINE + GRACE, "{took:?}");
}

/// Tried, sound: nothing left running or hanging: the run ends at the cancel, no timer
/// (watchdog, grace) keeps the `join!` alive; same with `Duration::MAX`.
#[tokio::test(start_paused = true)]
async fn ok_an_early_finish_ends_at_once_whatever_the_deadline() {
    for deadline in [DEADLINE, Duration::ZERO, Duration::MAX] {
        for individual in [false, true] {
            let srv = Arc::new(Srv::new(individual, Answer::Now, Answer::Now));
            let done = Arc::new(Notify::new());
            let runtime = builder(
                &srv,
                {
                    let done = Arc::clone(&done);
                    move |_u: Update| {
                        let done = Arc::clone(&done);
                        async move {
                            done.notify_one();
                            Ok::<(), Infallible>(())
                        }
                    }
                },
                deadline,
            )
            .build();
            let shutdown = runtime.shutdown_token();
            let run = tokio::spawn(runtime.run());
            done.notified().await;
            tokio::task::yield_now().await;
            let at = Instant::now();
            shutdown.cancel();
            let _ = run.await.unwrap().unwrap();
            assert_eq!(
                at.elapsed(),
                Duration::ZERO,
                "deadline {deadline:?}, individual {individual}"
            );
        }
    }
}

/// Tried, sound: `Duration::MAX` with a handler that never ends and a flush that hangs:
/// no overflow panic; the run just waits (there is no bound to respect).
#[tokio::test(start_paused = true)]
async fn ok_a_huge_deadline_does_not_panic() {
    let srv = Arc::new(Srv::new(
        false,
        Answer::Now,
        Answer::After(Duration::from_secs(86_400 * 400)),
    ));
    let runtime = builder(&srv, |_u: Update| async { Ok::<(), Infallible>(()) }, Duration::MAX).build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    println!("{:?} {:?}", at.elapsed(), summary.flush_error);
    assert_eq!(at.elapsed(), Duration::from_secs(365 * 86_400), "the 1-year stand-in");
}

/// Tried, sound: the dispatcher blocked admitting the rest of a batch (one permit, the
/// first handler never ends) while the stop comes: `stopped_at` is still the cancel (the
/// `join!` polls every branch on every wake-up), the gate closes at the deadline.
#[tokio::test(start_paused = true)]
async fn ok_a_dispatcher_blocked_admitting_does_not_delay_the_deadline() {
    let srv = Srv::new(false, Answer::Now, Answer::Never);
    *srv.updates.lock() = vec![update(1, false), update(2, false), update(3, false)];
    let srv = Arc::new(srv);
    let started = Arc::new(Notify::new());
    let runtime = builder(
        &srv,
        {
            let started = Arc::clone(&started);
            move |_u: Update| {
                let started = Arc::clone(&started);
                async move {
                    started.notify_one();
                    std::future::pending::<()>().await;
                    Ok::<(), Infallible>(())
                }
            }
        },
        DEADLINE,
    )
    .policy(Fixed::new(1))
    .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    started.notified().await;
    let at = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.unfinished, vec![1, 2, 3]);
    assert_eq!(at.elapsed(), DEADLINE + GRACE, "{:?}", summary.flush_error);
}

/// F4 (minor). A handler that ends at the very tick of the deadline: `work` sees every
/// handler ended and computes `confirm_by` as a drained run, then the watchdog's unbiased
/// `select!` between its (due) sleep and the (cancelled) `done` may still abort and close
/// the gate: the summary then says `drained: false` with nothing unfinished.
#[tokio::test(start_paused = true)]
async fn f4_a_run_whose_handlers_all_finished_is_reported_drained() {
    let mut inconsistent = 0;
    for _ in 0..32 {
        let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Now));
        let started = Arc::new(Notify::new());
        let runtime = builder(
            &srv,
            {
                let started = Arc::clone(&started);
                move |_u: Update| {
                    let started = Arc::clone(&started);
                    async move {
                        started.notify_one();
                        tokio::time::sleep(DEADLINE).await;
                        Ok::<(), Infallible>(())
                    }
                }
            },
            DEADLINE,
        )
        .build();
        let shutdown = runtime.shutdown_token();
        let stats = runtime.stats();
        let run = tokio::spawn(runtime.run());
        started.notified().await;
        shutdown.cancel();
        let summary = run.await.unwrap().unwrap();
        if !summary.drained && summary.unfinished.is_empty() && stats.snapshot().aborted == 0 {
            inconsistent += 1;
        }
    }
    println!("{inconsistent}/32 runs: every handler finished, yet drained = false");
    assert_eq!(inconsistent, 0);
}
