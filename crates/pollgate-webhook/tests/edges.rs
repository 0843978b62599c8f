//! The webhook transport at its edges: slot accounting, close vs. the runtime's fetch loop,
//! idle cost, take/withdraw races, answers at the end of a run.

mod common;

use common::{until, update};
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Runtime, StatsHandle};
use pollgate_webhook::{WebhookHandle, WebhookTransport};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

type Boxed = std::pin::Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

/// A handler that records the ids it ran and returns at once.
fn instant(started: Arc<Mutex<Vec<i64>>>) -> impl Fn(Update) -> Boxed + Send + Sync + 'static {
    move |u: Update| {
        started.lock().push(u.id());
        Box::pin(async { Ok(()) })
    }
}

/// A handler that waits for a permit.
fn gated(release: Arc<Semaphore>) -> impl Fn(Update) -> Boxed + Send + Sync + 'static {
    move |_u: Update| {
        let release = Arc::clone(&release);
        Box::pin(async move {
            release.acquire().await.expect("open").forget();
            Ok(())
        })
    }
}

async fn post(url: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .expect("answered")
}

struct Running {
    handle: WebhookHandle,
    url: String,
    stats: StatsHandle,
    stop: tokio_util::sync::CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

async fn run_instant(
    max_waiting: usize,
    max_wait: Duration,
    poll_timeout: Duration,
) -> (Running, Arc<Mutex<Vec<i64>>>) {
    let transport = WebhookTransport::builder()
        .max_waiting(max_waiting)
        .max_wait(max_wait)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let handle = transport.handle();
    let url = format!("http://{}/", handle.local_addr());
    let started = Arc::new(Mutex::new(Vec::new()));
    let runtime = Runtime::builder(transport, instant(Arc::clone(&started)))
        .policy(Fixed::new(8))
        .poll_timeout(poll_timeout)
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(async move {
        runtime.run().await.expect("runs");
    });
    (
        Running {
            handle,
            url,
            stats,
            stop,
            run,
        },
        started,
    )
}

/// A client that sends the head and part of the body, then disconnects: the slot reserved
/// before the body read must come back (hyper's HTTP/1 server fails the body, so
/// `to_bytes` errs and `release` runs; no guard would cover a dropped future). Passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_gives_its_slot_back() {
    let (r, started) = run_instant(1, Duration::from_millis(200), Duration::from_secs(30)).await;
    let mut stream = tokio::net::TcpStream::connect(r.handle.local_addr()).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"upd",
        )
        .await
        .unwrap();
    until("the request reached the handler", || r.handle.stats().requests == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    // Longer than max_wait, so nothing legitimate can still hold the slot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut statuses = Vec::new();
    for id in 1..=3 {
        statuses.push(post(&r.url, update(id, id)).await.status());
    }
    let stats = r.handle.stats();
    r.stop.cancel();
    r.run.await.unwrap();
    assert_eq!(stats.bad_request, 1, "the aborted body took the error path: {stats:?}");
    assert_eq!(
        statuses,
        [StatusCode::OK; 3],
        "slot leaked by the aborted body read; stats: {stats:?}; ran: {:?}",
        started.lock()
    );
}

/// A client that sends the head and never the body holds its slot with no time limit:
/// `max_wait` only starts after the body is read. `max_waiting` such connections refuse
/// every real request with 429 for as long as they stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_holds_a_slot_past_max_wait() {
    let (r, _started) = run_instant(1, Duration::from_millis(100), Duration::from_secs(30)).await;
    let mut stream = tokio::net::TcpStream::connect(r.handle.local_addr()).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    until("the request reached the handler", || r.handle.stats().requests == 1).await;
    // Ten times max_wait.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = post(&r.url, update(1, 1)).await.status();
    let stats = r.handle.stats();
    drop(stream);
    r.stop.cancel();
    r.run.await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "a request that never sent its body still holds the only slot 10 x max_wait later; stats: {stats:?}"
    );
}

/// `WebhookHandle::close` while the runtime runs: `fetch` returns an empty batch at once
/// for a closed transport, and the runtime fetches again at once: a busy loop until the
/// shutdown token is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_handle_makes_the_runtime_spin() {
    let (r, _started) = run_instant(10, Duration::from_secs(30), Duration::from_secs(30)).await;
    assert_eq!(post(&r.url, update(1, 1)).await.status(), StatusCode::OK);
    let before = r.stats.snapshot().fetches;
    r.handle.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = r.stats.snapshot().fetches;
    r.stop.cancel();
    r.run.await.unwrap();
    assert!(
        after - before <= 2,
        "{} fetches in 300 ms after close (poll_timeout 30 s)",
        after - before
    );
}

/// Idle cost: nothing arrives, so one fetch per poll_timeout; also after a burst of
/// traffic (stale `arrived` permits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_fetches_once_per_poll_timeout() {
    let (r, _started) = run_instant(100, Duration::from_secs(30), Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = r.stats.snapshot().fetches;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let idle = r.stats.snapshot().fetches - before;
    let burst: Vec<_> = (1..=50)
        .map(|id| {
            let url = r.url.clone();
            tokio::spawn(async move { post(&url, update(id, id)).await.status() })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), StatusCode::OK);
    }
    let before = r.stats.snapshot().fetches;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_burst = r.stats.snapshot().fetches - before;
    r.stop.cancel();
    r.run.await.unwrap();
    eprintln!("idle fetches/s: {idle}, after a burst: {after_burst}");
    assert!(
        (8..=12).contains(&idle),
        "{idle} fetches in 1 s idle, poll_timeout 100 ms"
    );
    assert!(
        (8..=12).contains(&after_burst),
        "{after_burst} fetches in 1 s idle after a burst"
    );
}

/// Sequential requests to an idle runtime with a long poll: each must be answered at
/// once (a lost `arrived` wake-up would leave one waiting until poll_timeout/max_wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_wakeups_between_enqueue_and_fetch() {
    let (r, started) = run_instant(100, Duration::from_secs(5), Duration::from_secs(30)).await;
    let mut slowest = Duration::ZERO;
    for id in 1..=300 {
        let t = Instant::now();
        assert_eq!(post(&r.url, update(id, id)).await.status(), StatusCode::OK);
        slowest = slowest.max(t.elapsed());
    }
    r.stop.cancel();
    r.run.await.unwrap();
    assert_eq!(started.lock().len(), 300);
    assert!(slowest < Duration::from_secs(1), "slowest answer {slowest:?}");
}

/// Take vs. withdraw at the max_wait boundary: many requests expiring while a small
/// policy takes them. A request answered 429 must never have run (else a duplicate), and
/// every request answered 200 must have run (eager: taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_and_withdraw_never_both_happen() {
    let transport = WebhookTransport::builder()
        .max_waiting(1000)
        .max_wait(Duration::from_millis(3))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let handle = transport.handle();
    let url = format!("http://{}/", handle.local_addr());
    let started = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let started = Arc::clone(&started);
        move |u: Update| -> Boxed {
            started.lock().push(u.id());
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            })
        }
    };
    let runtime = Runtime::builder(transport, handler).policy(Fixed::new(2)).build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    let requests: Vec<_> = (1..=400)
        .map(|id| {
            let url = url.clone();
            tokio::spawn(async move { (id, post(&url, update(id, id)).await.status()) })
        })
        .collect();
    let mut ok = HashSet::new();
    let mut refused = HashSet::new();
    for r in requests {
        let (id, status) = r.await.unwrap();
        match status {
            StatusCode::OK => ok.insert(id),
            StatusCode::TOO_MANY_REQUESTS => refused.insert(id),
            other => panic!("{id}: {other}"),
        };
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    let ran: HashSet<i64> = started.lock().iter().copied().collect();
    eprintln!(
        "ok {}, 429 {}, ran {}, stats {:?}",
        ok.len(),
        refused.len(),
        ran.len(),
        handle.stats()
    );
    assert!(
        ok.is_subset(&ran),
        "answered 200 but never ran: {:?}",
        ok.difference(&ran)
    );
    assert!(
        ran.is_disjoint(&refused),
        "ran and answered 429: {:?}",
        ran.intersection(&refused)
    );
}

/// At-least-once, a handler aborted at the drain deadline: its request is answered 503
/// when the run ends (the transport is dropped), not left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_aborted_at_the_deadline_gets_503() {
    let transport = WebhookTransport::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let handle = transport.handle();
    let url = format!("http://{}/", handle.local_addr());
    let release = Arc::new(Semaphore::new(0));
    let runtime = Runtime::builder(transport, gated(release))
        .policy(Fixed::new(1))
        .delivery(Delivery::AtLeastOnce)
        .drain_deadline(Duration::from_millis(100))
        .build();
    let stats = runtime.stats();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    let request = tokio::spawn({
        let url = url.clone();
        async move { post(&url, update(1, 1)).await }
    });
    until("running", || stats.snapshot().in_flight == 1).await;
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.unfinished, [1]);
    let response = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(handle.stats().closed, 1);
}

/// `run` returns before the 503s of the close are written: a program whose `main` ends
/// right after `run` (the tokio runtime is dropped) resets the waiting requests instead of
/// answering them 503 + Retry-After. Telegram then counts a failure and backs off
/// exponentially instead of retrying after Retry-After. (A current-thread runtime makes
/// it deterministic; on a multi-thread one it is a race.)
#[test]
fn run_returns_before_the_close_answers_are_written() {
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let release = Arc::new(Semaphore::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn({
        let (release, stop) = (Arc::clone(&release), stop.clone());
        move || {
            // What `#[tokio::main(flavor = "current_thread")] async fn main` does.
            // (WEBHOOK_TEST_MT=1: a two-worker runtime, as `#[tokio::main]`; fails ~4 runs in 5.)
            let rt = if std::env::var("WEBHOOK_TEST_MT").is_ok() {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            rt.block_on(async move {
                let transport = WebhookTransport::builder()
                    .bind("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                let handle = transport.handle();
                let runtime = Runtime::builder(transport, gated(release))
                    .policy(Fixed::new(1))
                    .shutdown(stop)
                    .build();
                tx.send((handle, runtime.stats())).unwrap();
                runtime.run().await.unwrap();
            });
            // main returns: the runtime is dropped with the connection tasks.
            drop(rt);
        }
    });
    let (handle, rstats) = rx.recv().unwrap();
    let url = format!("http://{}/", handle.local_addr());
    // One running (eager: answered 200), four waiting for admission.
    let first = client_rt.spawn({
        let url = url.clone();
        async move { post(&url, update(1, 1)).await.status() }
    });
    assert_eq!(client_rt.block_on(first).unwrap(), StatusCode::OK);
    client_rt.block_on(until("running", || rstats.snapshot().in_flight == 1));
    let waiting: Vec<_> = (2..=5)
        .map(|id| {
            let url = url.clone();
            client_rt.spawn(async move {
                reqwest::Client::new()
                    .post(&url)
                    .body(update(id, id))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map(|r| r.status())
                    .map_err(|e| format!("{e:?}"))
            })
        })
        .collect();
    client_rt.block_on(until("four waiting", || handle.waiting() == 4));
    stop.cancel();
    release.add_permits(1);
    server.join().unwrap();
    let answers: Vec<_> = waiting.into_iter().map(|w| client_rt.block_on(w).unwrap()).collect();
    assert!(
        answers.iter().all(|a| *a == Ok(StatusCode::SERVICE_UNAVAILABLE)),
        "waiting requests at the end of run: {answers:?}; listener stats {:?}",
        handle.stats()
    );
}
