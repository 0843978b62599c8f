//! One deadline bounds the whole stop: from the shutdown, the drain, the acknowledgement
//! still in flight and the final flush together take at most the drain deadline plus the
//! confirmation's 2 s grace, whichever of them waits. Each step used to get the whole drain
//! deadline of its own, so a supervisor's grace period sized by the docs (the deadline and
//! a margin) could SIGKILL a stop that was only slow: up to 2× the deadline with a hanging
//! flush, 3× with a hanging acknowledgement too.
//!
//! Then the edges two reviews found, each a test that failed on the code before its fix: a
//! run not polled right after the cancellation, a ready confirmation thrown away once the
//! budget was spent, a zero deadline, the abort's grace counted per step, `drained` after a
//! last handler that ended at the deadline's tick, a second copy of an id dropped at the
//! deadline, and an acknowledgement given up at shutdown that left a clean summary.
//!
//! On paused time: the elapsed times asserted are the tokio clock's, exact and instant. The
//! signal test signals this very process: no other test in this binary may listen for
//! signals.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::{AdmissionPolicy, Fixed};
use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport, Update};
use pollgate_runtime::{Delivery, FlushError, RunError, Runtime, RuntimeBuilder, Summary};
use tokio::sync::Notify;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(2);

/// Update `id` (its own chat), with a delivery receipt when given one.
fn update(id: i64, receipt: Option<&str>) -> Update {
    let update = Update::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{id},"type":"private"}},"text":"x"}}}}"#
    ))
    .unwrap();
    match receipt {
        Some(receipt) => update.with_receipt(receipt.to_owned()),
        None => update,
    }
}

/// How a call of the scripted server answers.
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

/// Serves its updates once, then long-polls nothing (or, with `fail_fetch`, fails for
/// good). How its acknowledgements that carry receipts and its flush answer is set per
/// test: `Never` is the server that went away at shutdown.
#[derive(Debug)]
struct Srv {
    updates: Mutex<Vec<Update>>,
    individual: bool,
    receipts_ack: Answer,
    flush: Answer,
    fail_fetch: bool,
    /// Acknowledgements that carried receipts, started.
    receipt_acks: AtomicU64,
    receipt_ack_started: Notify,
    /// Receipts whose acknowledgement completed.
    acked: Mutex<Vec<String>>,
    /// Flushes that completed.
    flushes: AtomicU64,
}

impl Srv {
    /// Serves update 1 (with a receipt when `individual`).
    fn new(individual: bool, receipts_ack: Answer, flush: Answer) -> Srv {
        let receipt = individual.then_some("1-0");
        Srv::serving(vec![update(1, receipt)], individual, receipts_ack, flush)
    }

    fn serving(updates: Vec<Update>, individual: bool, receipts_ack: Answer, flush: Answer) -> Srv {
        Srv {
            updates: Mutex::new(updates),
            individual,
            receipts_ack,
            flush,
            fail_fetch: false,
            receipt_acks: AtomicU64::new(0),
            receipt_ack_started: Notify::new(),
            acked: Mutex::new(Vec::new()),
            flushes: AtomicU64::new(0),
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
        let updates = std::mem::take(&mut *self.updates.lock());
        if updates.is_empty() {
            if self.fail_fetch {
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
            self.acked.lock().extend(ack.receipts.iter().map(|r| r.to_string()));
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Down> {
        self.flush.wait().await;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

type Handled = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

/// A handler that says it started, then takes `takes` (`None`: forever) for every update,
/// or only for `slow` when given one.
fn announcing(
    started: &Arc<Notify>,
    takes: Option<Duration>,
    slow: Option<i64>,
) -> impl Fn(Update) -> Handled + Send + Sync + 'static {
    let started = Arc::clone(started);
    move |u: Update| {
        let started = Arc::clone(&started);
        Box::pin(async move {
            started.notify_one();
            if slow.is_none_or(|id| id == u.id()) {
                match takes {
                    Some(takes) => tokio::time::sleep(takes).await,
                    None => std::future::pending().await,
                }
            }
            Ok(())
        })
    }
}

/// At-least-once, four slots, the given drain deadline, 10 s long polls.
fn builder<H>(srv: &Arc<Srv>, handler: H, deadline: Duration) -> RuntimeBuilder<Arc<Srv>, H>
where
    H: Fn(Update) -> Handled + Send + Sync + 'static,
{
    Runtime::builder(Arc::clone(srv), handler)
        .policy(Fixed::new(4))
        .delivery(Delivery::AtLeastOnce)
        .drain_deadline(deadline)
        .poll_timeout(Duration::from_secs(10))
}

/// Runs `srv` with a handler that takes `takes`, cancels the shutdown token once the
/// handler runs, and returns the summary and how long the stop took from the cancellation.
async fn stop_while_handling(srv: &Arc<Srv>, takes: Option<Duration>, deadline: Duration) -> (Summary, Duration) {
    let started = Arc::new(Notify::new());
    let runtime = builder(srv, announcing(&started, takes, None), deadline).build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    started.notified().await;
    let stopped = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    (summary, stopped.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_hanging_flush_after_a_long_drain_still_ends_within_the_deadline_and_the_grace() {
    let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Never));
    let (summary, took) = stop_while_handling(&srv, Some(DEADLINE - Duration::from_secs(1)), DEADLINE).await;
    // The handler ended 29 s in: the flush got the remaining 1 s raised to the 2 s grace
    // (it used to get 30 s more: 59 s in all).
    assert!(summary.drained, "the handler ended within the deadline");
    assert_eq!(
        took,
        DEADLINE - Duration::from_secs(1) + GRACE,
        "the stop took {took:?}"
    );
    assert!(
        matches!(summary.flush_error, Some(FlushError::TimedOut(_))),
        "{:?}",
        summary.flush_error
    );
    assert_eq!(summary.confirmed_offset, None);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_acknowledgement_and_flush_still_end_within_the_deadline_and_the_grace() {
    let srv = Arc::new(Srv::new(true, Answer::Never, Answer::Never));
    let (summary, took) = stop_while_handling(&srv, Some(DEADLINE - Duration::from_secs(1)), DEADLINE).await;
    // The acknowledgement of the finished update hangs, then the flush: together they had
    // the same 2 s (they used to get 30 s each: 89 s in all).
    assert!(srv.receipt_acks.load(Ordering::SeqCst) >= 1);
    assert!(summary.drained);
    assert_eq!(
        took,
        DEADLINE - Duration::from_secs(1) + GRACE,
        "the stop took {took:?}"
    );
    assert!(summary.flush_error.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_quick_drain_leaves_the_flush_the_rest_of_the_deadline() {
    // Handlers done 1 s in; a flush of 20 s fits in the 29 s that remain.
    let srv = Arc::new(Srv::new(false, Answer::Now, Answer::After(Duration::from_secs(20))));
    let (summary, took) = stop_while_handling(&srv, Some(Duration::from_secs(1)), DEADLINE).await;
    assert!(summary.flush_error.is_none(), "{:?}", summary.flush_error);
    assert_eq!(srv.flushes.load(Ordering::SeqCst), 1);
    assert_eq!(summary.confirmed_offset, Some(2));
    assert_eq!(took, Duration::from_secs(21));
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_takes_nearly_the_whole_deadline_still_leaves_the_flush_its_grace() {
    // Handlers done 100 ms before the deadline; a flush of 1.5 s still gets to confirm.
    let srv = Arc::new(Srv::new(false, Answer::Now, Answer::After(Duration::from_millis(1500))));
    let (summary, _) = stop_while_handling(&srv, Some(DEADLINE - Duration::from_millis(100)), DEADLINE).await;
    assert!(summary.drained);
    assert!(summary.flush_error.is_none(), "{:?}", summary.flush_error);
    assert_eq!(summary.confirmed_offset, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_the_deadline_is_aborted_and_the_flush_gets_only_the_grace() {
    let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Never));
    let (summary, took) = stop_while_handling(&srv, None, DEADLINE).await;
    assert!(!summary.drained, "the handler outlived the deadline");
    assert_eq!(summary.unfinished, vec![1]);
    assert_eq!(took, DEADLINE + GRACE, "the stop took {took:?}");
    // The deadline aborted the run: the flush was cut short by that abort.
    assert!(
        matches!(summary.flush_error, Some(FlushError::Aborted(_))),
        "{:?}",
        summary.flush_error
    );
}

/// Records when the handler's future was dropped (aborted).
struct DropClock(Arc<Mutex<Option<Instant>>>);
impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock() = Some(Instant::now());
    }
}

/// Review of 2b2d0c0, where the watchdog was a branch of `run`'s `join!`: the deadline
/// counted from the run's next poll. A caller that cancels the token and does its own
/// clean-up before awaiting the run (the usual `select!` on a signal) left handlers running
/// 60 s past the deadline.
#[tokio::test(start_paused = true)]
async fn a_run_not_polled_right_after_the_cancel_still_aborts_its_handlers_at_the_deadline() {
    let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Now));
    let started = Arc::new(Notify::new());
    let dropped_at = Arc::new(Mutex::new(None));
    let handler = {
        let (started, dropped_at) = (Arc::clone(&started), Arc::clone(&dropped_at));
        move |_u: Update| -> Handled {
            let (started, dropped_at) = (Arc::clone(&started), Arc::clone(&dropped_at));
            Box::pin(async move {
                let _clock = DropClock(dropped_at);
                started.notify_one();
                std::future::pending().await
            })
        }
    };
    let runtime = builder(&srv, handler, DEADLINE).build();
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
    let _summary = (&mut run).await.unwrap();
    let took = cancelled.elapsed();
    let dropped = dropped_at.lock().map(|t| t - cancelled);
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

/// Review of 2b2d0c0: when the acknowledgement in flight used the whole budget, the final
/// ack and flush had 0 s left, and an unbiased `select!` threw them away about half the
/// time although they were ready on their first poll. The acknowledgement in flight hangs
/// here; the final one carries its receipts again (given back when it was given up) and,
/// like the flush, answers at once.
#[tokio::test(start_paused = true)]
async fn a_final_confirmation_that_is_ready_at_once_is_never_thrown_away() {
    for run in 0..32 {
        let srv = Arc::new(Srv::new(true, Answer::FirstNeverThenNow, Answer::Now));
        let started = Arc::new(Notify::new());
        let runtime = builder(&srv, announcing(&started, Some(Duration::ZERO), None), DEADLINE).build();
        let shutdown = runtime.shutdown_token();
        let handle = tokio::spawn(runtime.run());
        srv.receipt_ack_started.notified().await;
        let cancelled = Instant::now();
        shutdown.cancel();
        let summary = handle.await.unwrap().unwrap();
        assert_eq!(
            cancelled.elapsed(),
            DEADLINE,
            "the hanging ack is given up at confirm_by"
        );
        assert_eq!(
            srv.receipt_acks.load(Ordering::SeqCst),
            2,
            "the receipts were sent again"
        );
        assert!(summary.flush_error.is_none(), "run {run}: {:?}", summary.flush_error);
        assert_eq!(*srv.acked.lock(), ["1-0"]);
    }
}

/// Review of 2b2d0c0: the grace was capped by the deadline, so with `drain_deadline(0)`
/// even a flush ready at once was a coin toss.
#[tokio::test(start_paused = true)]
async fn a_zero_deadline_does_not_make_an_instant_flush_a_coin_toss() {
    for run in 0..32 {
        let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Now));
        let (summary, _) = stop_while_handling(&srv, Some(Duration::ZERO), Duration::ZERO).await;
        assert!(summary.flush_error.is_none(), "run {run}: {:?}", summary.flush_error);
    }
}

/// Review of 2b2d0c0: "after an abort the confirmation gets only 2 s", but the grace
/// restarted at each step (the acknowledgement in flight, then the final flush): a second
/// signal during a hanging confirmation gave it 2 s + 2 s.
#[cfg(all(unix, feature = "signal"))]
#[tokio::test(start_paused = true)]
async fn after_a_second_signal_the_whole_confirmation_gets_2_s() {
    use rustix::process::{Signal, getpid, kill_process};
    let srv = Arc::new(Srv::new(true, Answer::Never, Answer::Never));
    let started = Arc::new(Notify::new());
    let runtime = builder(&srv, announcing(&started, Some(Duration::ZERO), None), DEADLINE)
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
    assert!(
        matches!(summary.flush_error, Some(FlushError::Aborted(_))),
        "{:?}",
        summary.flush_error
    );
    assert!(took <= GRACE, "ended {took:?} after the second signal");
}

/// Review of 2b2d0c0: a handler that ends at the very tick of the deadline finished, yet
/// the watchdog's unbiased `select!` could still abort, and the run was reported not
/// drained with nothing unfinished.
#[tokio::test(start_paused = true)]
async fn a_run_whose_handlers_all_finished_is_reported_drained() {
    for run in 0..32 {
        let srv = Arc::new(Srv::new(false, Answer::Now, Answer::Now));
        let (summary, _) = stop_while_handling(&srv, Some(DEADLINE), DEADLINE).await;
        assert_eq!(summary.stats.aborted, 0);
        assert!(summary.drained, "run {run}: every handler finished: {summary:?}");
    }
}

/// Review of 7556445: at-least-once keeps one tracker entry per id, and a transport with
/// individual acks may deliver an id twice with two receipts (a webhook request Telegram
/// sent again, a stream entry pushed twice). The first copy finishing removed the id, so
/// the second, dropped at the deadline, was reported drained and not unfinished.
#[tokio::test(start_paused = true)]
async fn an_aborted_second_copy_of_an_id_is_not_reported_as_drained() {
    for delivery in [Delivery::Eager, Delivery::AtLeastOnce] {
        let copies = vec![update(1, Some("a")), update(1, Some("b"))];
        let srv = Arc::new(Srv::serving(copies, true, Answer::Now, Answer::Now));
        let (a_done, b_started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let handler = {
            let (a_done, b_started) = (Arc::clone(&a_done), Arc::clone(&b_started));
            move |u: Update| -> Handled {
                let (a_done, b_started) = (Arc::clone(&a_done), Arc::clone(&b_started));
                Box::pin(async move {
                    if u.receipt().map(|r| &**r) == Some("b") {
                        b_started.notify_one();
                        std::future::pending::<()>().await;
                    }
                    a_done.notify_one();
                    Ok(())
                })
            }
        };
        let runtime = builder(&srv, handler, DEADLINE).delivery(delivery).build();
        let shutdown = runtime.shutdown_token();
        let run = tokio::spawn(runtime.run());
        a_done.notified().await;
        b_started.notified().await;
        let at = Instant::now();
        shutdown.cancel();
        let summary = run.await.unwrap().unwrap();
        assert_eq!(at.elapsed(), DEADLINE, "the second copy is aborted at the deadline");
        assert_eq!(summary.stats.aborted, 1, "{delivery:?}: one handler was dropped");
        assert!(!summary.drained, "{delivery:?}: {summary:?}");
        assert_eq!(summary.unfinished, vec![1], "{delivery:?}");
    }
}

/// Review of 7556445: an acknowledgement given up at shutdown was only logged; its receipts
/// were dropped, and the summary reported a clean confirmation although none was
/// acknowledged (every finished update is delivered again).
#[tokio::test(start_paused = true)]
async fn an_acknowledgement_given_up_at_shutdown_is_reported() {
    let two = vec![update(1, Some("a")), update(2, Some("b"))];
    let srv = Arc::new(Srv::serving(two, true, Answer::Never, Answer::Now));
    let started = Arc::new(Notify::new());
    let runtime = builder(&srv, announcing(&started, Some(Duration::ZERO), None), DEADLINE).build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    srv.receipt_ack_started.notified().await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(srv.acked.lock().is_empty(), "the server never answered");
    assert!(
        matches!(summary.flush_error, Some(FlushError::TimedOut(_))),
        "no receipt was acknowledged: {:?}",
        summary.flush_error
    );
}

/// A hanging receipt acknowledgement, then the deadline's abort (a handler never ends)
/// while the confirmation waits: the grace is shared, the run ends at deadline + 2 s.
#[tokio::test(start_paused = true)]
async fn a_hanging_ack_after_a_deadline_abort_ends_within_the_deadline_and_the_grace() {
    let two = vec![update(1, Some("a")), update(2, Some("b"))];
    let srv = Arc::new(Srv::serving(two, true, Answer::Never, Answer::Now));
    let started = Arc::new(Notify::new());
    let runtime = builder(&srv, announcing(&started, None, Some(2)), DEADLINE).build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    srv.receipt_ack_started.notified().await;
    let at = Instant::now();
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(at.elapsed(), DEADLINE + GRACE);
    assert_eq!(summary.unfinished, vec![2]);
}

/// The transport fails for good during a long drain, and the receipts' acknowledgement
/// hangs: the failure path's acknowledgement is bounded too, and reported.
#[tokio::test(start_paused = true)]
async fn the_failure_path_is_bounded_from_the_failure() {
    let mut srv = Srv::new(true, Answer::Never, Answer::Never);
    srv.fail_fetch = true;
    let srv = Arc::new(srv);
    let started = Instant::now();
    let runtime = builder(
        &srv,
        announcing(&Arc::new(Notify::new()), Some(DEADLINE - Duration::from_secs(1)), None),
        DEADLINE,
    )
    .build();
    let r = runtime.run().await;
    let took = started.elapsed();
    let Err(RunError::Transport { summary, .. }) = r else {
        panic!("{r:?}")
    };
    assert!(took <= DEADLINE + GRACE, "{took:?}");
    assert!(summary.flush_error.is_some(), "the receipts were never acknowledged");
}

/// `drained` after a transport failure, in both modes and both ack models: the handler
/// still running at the deadline is aborted and reported, the one that finished is not.
#[tokio::test(start_paused = true)]
async fn drained_after_a_transport_failure() {
    for delivery in [Delivery::Eager, Delivery::AtLeastOnce] {
        for individual in [false, true] {
            let receipt = |r| individual.then_some(r);
            let two = vec![update(1, receipt("a")), update(2, receipt("b"))];
            let mut srv = Srv::serving(two, individual, Answer::Now, Answer::Now);
            srv.fail_fetch = true;
            let srv = Arc::new(srv);
            let at = Instant::now();
            let started = Arc::new(Notify::new());
            let r = builder(&srv, announcing(&started, None, Some(1)), DEADLINE)
                .delivery(delivery)
                .build()
                .run()
                .await;
            let Err(RunError::Transport { summary, .. }) = r else {
                panic!("{r:?}")
            };
            let case = format!("{delivery:?}, individual {individual}");
            assert!(!summary.drained, "{case}");
            assert_eq!(summary.unfinished, vec![1], "{case}");
            assert!(at.elapsed() <= DEADLINE + GRACE, "{case}: {:?}", at.elapsed());
        }
    }
}

/// Nothing left running or hanging: the run ends at the cancellation, and no timer
/// (watchdog, grace) keeps it alive; with a zero and a `Duration::MAX` deadline too.
#[tokio::test(start_paused = true)]
async fn an_early_finish_ends_at_once_whatever_the_deadline() {
    for deadline in [DEADLINE, Duration::ZERO, Duration::MAX] {
        for individual in [false, true] {
            let srv = Arc::new(Srv::new(individual, Answer::Now, Answer::Now));
            let started = Arc::new(Notify::new());
            let runtime = builder(&srv, announcing(&started, Some(Duration::ZERO), None), deadline).build();
            let shutdown = runtime.shutdown_token();
            let run = tokio::spawn(runtime.run());
            started.notified().await;
            tokio::task::yield_now().await;
            let at = Instant::now();
            shutdown.cancel();
            run.await.unwrap().unwrap();
            assert_eq!(
                at.elapsed(),
                Duration::ZERO,
                "deadline {deadline:?}, individual {individual}"
            );
        }
    }
}

/// `Duration::MAX` with a flush that takes 400 days: no overflow panic; the confirmation
/// gets the one-year stand-in for "as long as it takes".
#[tokio::test(start_paused = true)]
async fn a_huge_deadline_does_not_panic() {
    let srv = Arc::new(Srv::new(
        false,
        Answer::Now,
        Answer::After(Duration::from_secs(86_400 * 400)),
    ));
    let (summary, took) = stop_while_handling(&srv, Some(Duration::ZERO), Duration::MAX).await;
    assert_eq!(took, Duration::from_secs(365 * 86_400), "the 1-year stand-in");
    assert!(summary.flush_error.is_some());
}

/// The dispatcher blocked admitting the rest of a batch (one permit, the first handler
/// never ends) when the stop comes: the deadline still counts from the cancellation, and
/// the gate closes at it.
#[tokio::test(start_paused = true)]
async fn a_dispatcher_blocked_admitting_does_not_delay_the_deadline() {
    let three = vec![update(1, None), update(2, None), update(3, None)];
    let srv = Arc::new(Srv::serving(three, false, Answer::Now, Answer::Never));
    let started = Arc::new(Notify::new());
    let runtime = builder(&srv, announcing(&started, None, None), DEADLINE)
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

/// The spawned watchdog does not outlive `run`: once `run` returned (and the scheduler
/// turned, for an aborted task's future to be dropped), nothing holds the gate's policy.
#[tokio::test(start_paused = true)]
async fn the_watchdog_is_gone_once_run_returned() {
    let policy: Arc<dyn AdmissionPolicy> = Arc::new(Fixed::new(4));
    let weak = Arc::downgrade(&policy);
    let srv = Arc::new(Srv::new(true, Answer::Now, Answer::Now));
    let started = Arc::new(Notify::new());
    let runtime = builder(&srv, announcing(&started, Some(Duration::ZERO), None), DEADLINE)
        .shared_policy(policy)
        .build();
    let shutdown = runtime.shutdown_token();
    tokio::spawn(async move {
        started.notified().await;
        shutdown.cancel();
    });
    runtime.run().await.unwrap();
    for _ in 0..10 {
        if weak.strong_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(weak.strong_count(), 0, "something still holds the gate");
}
