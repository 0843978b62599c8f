//! The webhook transport under the runtime: when each request is answered, what is
//! refused, and what a stop answers. Real sockets (the listener is axum on loopback); the
//! tests wait on states (a request waiting, a handler running), never on sleeps.

mod common;

use common::{until, update};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_admission::Fixed;
use pollgate_core::Update;
use pollgate_runtime::{Delivery, Runtime, Summary};
use pollgate_webhook::{SECRET_HEADER, WebhookHandle, WebhookTransport};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const SECRET: &str = "test-secret_123";

/// Handlers that run until the test lets them finish (one permit per handler).
#[derive(Clone)]
struct Gatekeeper {
    release: Arc<Semaphore>,
    started: Arc<Mutex<Vec<i64>>>,
    finished: Arc<Mutex<Vec<i64>>>,
}

impl Default for Gatekeeper {
    fn default() -> Self {
        Self {
            release: Arc::new(Semaphore::new(0)),
            started: Arc::default(),
            finished: Arc::default(),
        }
    }
}

impl Gatekeeper {
    fn handler(
        &self,
    ) -> impl Fn(Update) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>> + Send + Sync + 'static
    {
        let this = self.clone();
        move |u: Update| {
            let this = this.clone();
            Box::pin(async move {
                this.started.lock().push(u.id());
                this.release.acquire().await.expect("open").forget();
                this.finished.lock().push(u.id());
                Ok(())
            })
        }
    }
}

struct Setup {
    handle: WebhookHandle,
    url: String,
    stop: tokio_util::sync::CancellationToken,
    run: JoinHandle<Summary>,
    keeper: Gatekeeper,
}

async fn start(delivery: Delivery, concurrency: usize, max_waiting: usize) -> Setup {
    let transport = WebhookTransport::builder()
        .secret(SECRET)
        .max_waiting(max_waiting)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let handle = transport.handle();
    let url = format!("http://{}/", handle.local_addr());
    let keeper = Gatekeeper::default();
    let runtime = Runtime::builder(transport, keeper.handler())
        .policy(Fixed::new(concurrency))
        .delivery(delivery)
        .poll_timeout(Duration::from_secs(30))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(async move { runtime.run().await.expect("runs") });
    Setup {
        handle,
        url,
        stop,
        run,
        keeper,
    }
}

fn post(url: &str, body: String, secret: Option<&str>) -> JoinHandle<reqwest::Response> {
    let client = reqwest::Client::new();
    let mut request = client.post(url).header("content-type", "application/json").body(body);
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    tokio::spawn(async move { request.send().await.expect("answered") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_answers_when_admitted_and_429s_past_the_waiting_bound() {
    let s = start(Delivery::Eager, 1, 1).await;
    let first = post(&s.url, update(1, 10), Some(SECRET));
    until("update 1 running", || s.keeper.started.lock().len() == 1).await;
    // Admitted: answered 200 while its handler still runs.
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    // The policy is full: the second waits, the third finds the one waiting slot taken.
    let second = post(&s.url, update(2, 20), Some(SECRET));
    until("update 2 waiting", || s.handle.waiting() == 1).await;
    let third = post(&s.url, update(3, 30), Some(SECRET)).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "1");
    assert!(!second.is_finished(), "update 2 waits for admission");
    s.keeper.release.add_permits(1);
    assert_eq!(second.await.unwrap().status(), StatusCode::OK);
    s.keeper.release.add_permits(1);
    until("both handled", || s.keeper.finished.lock().len() == 2).await;
    let stats = s.handle.stats();
    assert_eq!(
        (stats.requests, stats.taken, stats.answered, stats.rejected_full),
        (3, 2, 2, 1)
    );
    assert_eq!(
        *s.keeper.started.lock(),
        [1, 2],
        "update 3 never ran: Telegram sends it again"
    );
    s.stop.cancel();
    s.run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_answers_after_the_handler() {
    let s = start(Delivery::AtLeastOnce, 4, 10).await;
    let request = post(&s.url, update(7, 1), Some(SECRET));
    until("update 7 running", || s.keeper.started.lock().len() == 1).await;
    // Let the runtime's ack loop run: still no answer while the handler runs.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!request.is_finished(), "answered before the handler finished");
    s.keeper.release.add_permits(1);
    assert_eq!(request.await.unwrap().status(), StatusCode::OK);
    assert_eq!(*s.keeper.finished.lock(), [7]);
    s.stop.cancel();
    s.run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_secret_is_refused_and_nothing_runs() {
    let s = start(Delivery::Eager, 4, 10).await;
    let missing = post(&s.url, update(1, 1), None).await.unwrap();
    let wrong = post(&s.url, update(2, 1), Some("test-secret_124")).await.unwrap();
    let prefix = post(&s.url, update(3, 1), Some("test-secret")).await.unwrap();
    for response in [&missing, &wrong, &prefix] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let stats = s.handle.stats();
    assert_eq!((stats.requests, stats.rejected_secret, stats.taken), (3, 3, 0));
    assert!(s.keeper.started.lock().is_empty());
    s.stop.cancel();
    s.run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_typed_answers() {
    let s = start(Delivery::Eager, 4, 10).await;
    let huge = format!(r#"{{"update_id":1,"message":{{"text":"{}"}}}}"#, "x".repeat(2 << 20));
    assert_eq!(
        post(&s.url, huge, Some(SECRET)).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let html = "<html><body>502 Bad Gateway</body></html>".to_string();
    assert_eq!(
        post(&s.url, html, Some(SECRET)).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    // An update Telegram sent but whose envelope is broken (the chat id is a string):
    // retrying cannot help, so it is acknowledged, counted and logged.
    let broken = r#"{"update_id":5,"message":{"chat":{"id":"not a number"}}}"#.to_string();
    assert_eq!(
        post(&s.url, broken, Some(SECRET)).await.unwrap().status(),
        StatusCode::OK
    );
    let get = reqwest::get(&s.url).await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let other = reqwest::Client::new()
        .post(format!("{}elsewhere", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let stats = s.handle.stats();
    assert_eq!(
        (stats.too_large, stats.bad_request, stats.undecodable, stats.taken),
        (1, 1, 1, 0)
    );
    // A good one still goes through: the slots of the refused requests came back.
    s.keeper.release.add_permits(1);
    assert_eq!(
        post(&s.url, update(6, 1), Some(SECRET)).await.unwrap().status(),
        StatusCode::OK
    );
    s.stop.cancel();
    s.run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_waiting_and_unfinished_requests_503() {
    let s = start(Delivery::AtLeastOnce, 1, 10).await;
    let running = post(&s.url, update(1, 1), Some(SECRET));
    until("update 1 running", || s.keeper.started.lock().len() == 1).await;
    let waiting = post(&s.url, update(2, 2), Some(SECRET));
    until("update 2 waiting", || s.handle.waiting() == 1).await;
    s.stop.cancel();
    // The drain gives the running handler its deadline; let it finish so the run ends.
    s.keeper.release.add_permits(1);
    s.run.await.unwrap();
    let waiting = waiting.await.unwrap();
    assert_eq!(
        waiting.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "never taken: Telegram resends it"
    );
    assert_eq!(waiting.headers()["retry-after"], "1");
    assert_eq!(running.await.unwrap().status(), StatusCode::OK, "finished in the drain");
    // The listener is closed: new requests are refused or not accepted at all.
    if let Ok(late) = reqwest::Client::new()
        .post(&s.url)
        .header(SECRET_HEADER, SECRET)
        .body(update(3, 3))
        .send()
        .await
    {
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_admitted_within_max_wait_gets_429() {
    let transport = WebhookTransport::builder()
        .max_wait(Duration::from_millis(100))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let handle = transport.handle();
    let url = format!("http://{}/", handle.local_addr());
    let keeper = Gatekeeper::default();
    let runtime = Runtime::builder(transport, keeper.handler())
        .policy(Fixed::new(1))
        .build();
    let stop = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    assert_eq!(post(&url, update(1, 1), None).await.unwrap().status(), StatusCode::OK);
    let late = post(&url, update(2, 2), None).await.unwrap();
    assert_eq!(late.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(handle.stats().expired, 1);
    assert_eq!(handle.waiting(), 0, "the expired request left the queue");
    keeper.release.add_permits(2);
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(*keeper.started.lock(), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_waiting_takes_its_request_along() {
    use tokio::io::AsyncWriteExt;
    let s = start(Delivery::Eager, 1, 10).await;
    let first = post(&s.url, update(1, 1), Some(SECRET));
    until("update 1 running", || s.keeper.started.lock().len() == 1).await;
    first.await.unwrap();
    let body = update(2, 2);
    let mut stream = tokio::net::TcpStream::connect(s.handle.local_addr()).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{SECRET_HEADER}: {SECRET}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    until("update 2 waiting", || s.handle.waiting() == 1).await;
    drop(stream);
    until("update 2 withdrawn", || s.handle.waiting() == 0).await;
    assert_eq!(s.handle.stats().abandoned, 1);
    s.keeper.release.add_permits(1);
    until("update 1 finished", || s.keeper.finished.lock().len() == 1).await;
    assert_eq!(*s.keeper.started.lock(), [1], "the abandoned update never ran");
    s.stop.cancel();
    s.run.await.unwrap();
}

#[test]
fn the_secret_never_shows_in_debug_output() {
    let builder = WebhookTransport::builder().secret("very-secret-value");
    let debug = format!("{builder:?}");
    assert!(!debug.contains("very-secret-value"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}
