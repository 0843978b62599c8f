//! The webhook sender against a receiving bot: a small axum server on loopback that
//! records every request it gets and answers as each test tells it.
//!
//! Waits are bounded polls of a condition (`eventually`), never sleeps, except where a test
//! counts what happens in a stretch of time; timing assertions are lower bounds only (a
//! retry waits at least its backoff, a probe its interval), never speed limits.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{call, get_ids, start_with};
use mock_bot_api::{MockConfig, MockServer, WebhookSpec, WebhookTiming};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

/// Fast retries, so that tests of failures finish in milliseconds. The receiver counts as
/// down after the real server's 10 s without a delivery, longer than any test here waits
/// for one; a refused connection is probed again every 20 ms.
const FAST: WebhookTiming = WebhookTiming {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(50),
    request_timeout: Duration::from_secs(10),
    down_after: Duration::from_secs(10),
    probe_interval: Duration::from_millis(20),
};

/// One request the bot received.
#[derive(Clone, Debug)]
struct Hit {
    id: i64,
    chat: Option<i64>,
    body: Value,
    secret: Option<String>,
    content_type: Option<String>,
    at: Instant,
    /// 1 for the first request for this update, 2 for its first retry, ...
    attempt: usize,
}

/// How the bot answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Status(u16),
    TooManyRequests { retry_after: u64 },
}

type Respond = Box<dyn Fn(Hit, Arc<BotState>) -> Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync>;

/// What the bot saw, shared with its handler.
struct BotState {
    hits: Mutex<Vec<Hit>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    chats_in_flight: Mutex<HashSet<i64>>,
    /// Requests that arrived while another of their chat was in flight.
    overlaps: AtomicUsize,
    /// Notified after every arrival.
    arrived: Notify,
    respond: Respond,
}

impl BotState {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().clone()
    }

    fn ids(&self) -> Vec<i64> {
        self.hits.lock().iter().map(|h| h.id).collect()
    }

    fn has(&self, pred: impl Fn(&Hit) -> bool) -> bool {
        self.hits.lock().iter().any(pred)
    }

    /// Waits (bounded) until a request matching `pred` has arrived.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Hit) -> bool) {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.has(&pred) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("the bot never received {what}"));
    }
}

/// The receiving bot.
struct Bot {
    url: String,
    state: Arc<BotState>,
}

impl Bot {
    async fn start<F, Fut>(respond: F) -> Bot
    where
        F: Fn(Hit, Arc<BotState>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Bot::start_on(listener, respond)
    }

    /// A bot on `listener`.
    fn start_on<F, Fut>(listener: tokio::net::TcpListener, respond: F) -> Bot
    where
        F: Fn(Hit, Arc<BotState>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let state = Arc::new(BotState {
            hits: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            chats_in_flight: Mutex::new(HashSet::new()),
            overlaps: AtomicUsize::new(0),
            arrived: Notify::new(),
            respond: Box::new(move |hit, state| Box::pin(respond(hit, state))),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("bot server") });
        Bot { url, state }
    }

    /// A bot that answers 200 to everything.
    async fn ok() -> Bot {
        Bot::start(|_, _| async { Answer::Ok }).await
    }
}

/// Leaves the in-flight gauges however the handler ends (answered, or dropped when the
/// sender goes away).
struct Leaving<'a> {
    state: &'a BotState,
    chat: Option<i64>,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if let Some(chat) = self.chat {
            self.state.chats_in_flight.lock().remove(&chat);
        }
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(State(state): State<Arc<BotState>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).expect("the body is JSON");
    let id = body["update_id"].as_i64().expect("an update_id");
    let chat = body["message"]["chat"]["id"].as_i64();
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(now, Ordering::SeqCst);
    if let Some(chat) = chat
        && !state.chats_in_flight.lock().insert(chat)
    {
        state.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    let _leaving = Leaving { state: &state, chat };
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let hit = {
        let mut hits = state.hits.lock();
        let hit = Hit {
            id,
            chat,
            secret: header("x-telegram-bot-api-secret-token"),
            content_type: header(CONTENT_TYPE.as_str()),
            body,
            at: Instant::now(),
            attempt: hits.iter().filter(|h| h.id == id).count() + 1,
        };
        hits.push(hit.clone());
        hit
    };
    state.arrived.notify_waiters();
    let answer = (state.respond)(hit, Arc::clone(&state)).await;
    match answer {
        Answer::Ok => (StatusCode::OK, "").into_response(),
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(RETRY_AFTER, retry_after.to_string())],
            r#"{"ok":false}"#,
        )
            .into_response(),
    }
}

async fn server(timing: WebhookTiming) -> MockServer {
    start_with(MockConfig {
        webhook_timing: timing,
        ..MockConfig::default()
    })
    .await
}

/// Pushes one text message per entry, in the chat given.
fn push_chats(server: &MockServer, chats: impl IntoIterator<Item = i64>) -> Vec<i64> {
    server.push_updates(chats.into_iter().map(|chat| {
        json!({"message": {"message_id": 1, "date": 1_700_000_000, "chat": {"id": chat, "type": "private"}, "text": "hi"}})
    }))
}

/// Waits (bounded) until `cond` holds, checking every few milliseconds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// Update ids per chat, in arrival order.
fn per_chat(hits: &[Hit]) -> BTreeMap<i64, Vec<i64>> {
    let mut chats: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for hit in hits {
        chats.entry(hit.chat.expect("a chat")).or_default().push(hit.id);
    }
    chats
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_backlog_is_pushed_once_each_as_get_updates_would_return_it() {
    let server = server(FAST).await;
    let bot = Bot::ok().await;
    let mut ids = push_chats(&server, (0..97).map(|i| i % 7));
    ids.extend(server.push_updates((0..3).map(|i| json!({"poll": {"id": i.to_string(), "question": "?"}}))));
    // What getUpdates returns for each update, before the webhook blocks it.
    let (_, polled) = call(&server, "getUpdates", &[("limit", "100")]).await;
    let polled: BTreeMap<i64, Value> = polled["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["update_id"].as_i64().unwrap(), u.clone()))
        .collect();
    assert_eq!(polled.len(), 100);

    let url = bot.url.clone();
    let (status, set) = call(&server, "setWebhook", &[("url", &url), ("max_connections", "10")]).await;
    assert_eq!((status, &set["result"]), (200, &json!(true)), "{set}");
    eventually("every update is delivered", || server.pending() == 0).await;

    let hits = bot.state.hits();
    assert_eq!(sorted(bot.state.ids()), ids, "every update exactly once");
    for hit in &hits {
        assert_eq!(
            hit.body, polled[&hit.id],
            "the body is the update as getUpdates returns it"
        );
        assert_eq!(hit.content_type.as_deref(), Some("application/json"));
        assert_eq!(hit.secret, None, "no secret was set");
    }
    let stats = server.stats();
    assert_eq!(stats.webhook_posts, 100);
    assert_eq!(stats.webhook_delivered, 100);
    assert_eq!((stats.webhook_failed, stats.webhook_429), (0, 0));
    assert_eq!((stats.pending, stats.webhook_in_flight), (0, 0));
    assert!((1..=10).contains(&stats.webhook_in_flight_peak), "{stats:?}");
    let (_, info) = call(&server, "getWebhookInfo", &[]).await;
    assert_eq!(info["result"]["pending_update_count"], 0);
    assert_eq!(info["result"]["max_connections"], 10);
    assert_eq!(info["result"]["url"], json!(bot.url));

    // Updates pushed while the webhook is set follow.
    let more = push_chats(&server, [3, 4]);
    bot.state.wait_for("the later updates", |h| h.id == more[1]).await;
    eventually("the later updates are delivered", || server.pending() == 0).await;
    assert_eq!(bot.state.ids().len(), 102);
}

#[tokio::test]
async fn at_most_max_connections_requests_are_in_flight() {
    let server = server(FAST).await;
    let (open, gate) = watch::channel(false);
    let bot = Bot::start(move |_, _| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            // A slow bot: requests overlap while the backlog drains.
            tokio::time::sleep(Duration::from_millis(2)).await;
            Answer::Ok
        }
    })
    .await;
    push_chats(&server, 0..30);
    let url = bot.url.clone();
    let (status, _) = call(&server, "setWebhook", &[("url", &url), ("max_connections", "3")]).await;
    assert_eq!(status, 200);

    eventually("three requests wait at the bot", || {
        bot.state.in_flight.load(Ordering::SeqCst) == 3
    })
    .await;
    // Full: the sender started no fourth request.
    let stats = server.stats();
    assert_eq!((stats.webhook_posts, stats.webhook_in_flight), (3, 3), "{stats:?}");
    assert_eq!(stats.pending, 30);

    open.send(true).unwrap();
    eventually("every update is delivered", || server.pending() == 0).await;
    assert_eq!(
        bot.state.peak.load(Ordering::SeqCst),
        3,
        "the bot never saw more than 3"
    );
    let stats = server.stats();
    assert_eq!(stats.webhook_in_flight_peak, 3);
    assert_eq!((stats.webhook_posts, stats.webhook_delivered), (30, 30));
    assert_eq!(sorted(bot.state.ids()), (1..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn one_request_per_chat_at_a_time_in_id_order_while_other_chats_go_on() {
    let server = server(FAST).await;
    // The first update of chat 0 is answered only once every other chat has had one
    // delivered: a sender that waited for it would never get there.
    let bot = Bot::start(|hit, bot: Arc<BotState>| async move {
        if hit.id == 1 {
            for chat in 1..4 {
                bot.wait_for("an update of another chat", |h| h.chat == Some(chat))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
        Answer::Ok
    })
    .await;
    push_chats(&server, (0..60).map(|i| i % 4));
    server.set_webhook_spec(WebhookSpec {
        max_connections: 10,
        ..WebhookSpec::new(&bot.url)
    });
    eventually("every update is delivered", || server.pending() == 0).await;

    assert_eq!(
        bot.state.overlaps.load(Ordering::SeqCst),
        0,
        "two requests of one chat overlapped"
    );
    let chats = per_chat(&bot.state.hits());
    assert_eq!(chats.len(), 4);
    for (chat, ids) in &chats {
        let expected: Vec<i64> = (1..=60).filter(|id| (id - 1) % 4 == *chat).collect();
        assert_eq!(ids, &expected, "chat {chat}: each once, in id order");
    }
    assert!(bot.state.peak.load(Ordering::SeqCst) >= 2, "chats went on in parallel");
    assert_eq!(server.stats().webhook_posts, 60);
}

#[tokio::test]
async fn a_429_holds_back_only_its_chat_for_retry_after() {
    let server = server(FAST).await;
    // Chat 1 gets 429 with an hour to wait (FAST backoff would retry within 20 ms).
    let bot = Bot::start(|hit, _| async move {
        if hit.id == 1 && hit.attempt == 1 {
            Answer::TooManyRequests { retry_after: 3600 }
        } else {
            Answer::Ok
        }
    })
    .await;
    // Ids 1, 3, 5 in chat 1; 2, 4, 6, ... 20 in chat 2.
    push_chats(&server, [1, 2, 1, 2, 1].into_iter().chain([2; 15]));
    server.set_webhook(&bot.url);
    eventually("chat 2 is delivered", || server.pending() == 3).await;

    let chats = per_chat(&bot.state.hits());
    assert_eq!(
        chats[&1],
        [1],
        "chat 1 waits for Retry-After, its later updates behind it"
    );
    assert_eq!(chats[&2].len(), 17, "chat 2 went on");
    let stats = server.stats();
    assert_eq!((stats.webhook_429, stats.webhook_failed), (1, 1));
    assert_eq!(stats.webhook_posts, 18);
    let (_, info) = call(&server, "getWebhookInfo", &[]).await;
    assert_eq!(info["result"]["pending_update_count"], 3);
    assert_eq!(
        info["result"]["last_error_message"],
        "Wrong response from the webhook: 429 Too Many Requests"
    );
    assert!(info["result"]["last_error_date"].as_u64().unwrap() > 1_700_000_000);

    // Setting the webhook again starts over: the retry is due at once, order is kept.
    server.set_webhook(&bot.url);
    eventually("chat 1 is delivered", || server.pending() == 0).await;
    assert_eq!(per_chat(&bot.state.hits())[&1], [1, 1, 3, 5]);
    assert_eq!(server.stats().webhook_delivered, 20);
}

#[tokio::test]
async fn retry_after_delays_the_retry_by_at_least_that_many_seconds() {
    let server = server(FAST).await;
    let bot = Bot::start(|hit, _| async move {
        if hit.attempt == 1 {
            Answer::TooManyRequests { retry_after: 1 }
        } else {
            Answer::Ok
        }
    })
    .await;
    push_chats(&server, [7]);
    server.set_webhook(&bot.url);
    bot.state.wait_for("the retry", |h| h.attempt == 2).await;
    let hits = bot.state.hits();
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, not the 20 ms backoff"
    );
    eventually("the update is delivered", || server.pending() == 0).await;
    let stats = server.stats();
    assert_eq!(
        (stats.webhook_posts, stats.webhook_429, stats.webhook_delivered),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn a_500_is_retried_with_exponential_backoff_up_to_the_cap() {
    let server = server(FAST).await;
    let bot = Bot::start(|hit, _| async move {
        if hit.id == 1 && hit.attempt <= 4 {
            Answer::Status(500)
        } else {
            Answer::Ok
        }
    })
    .await;
    push_chats(&server, [5, 5, 5]);
    server.set_webhook(&bot.url);
    eventually("every update is delivered", || server.pending() == 0).await;

    let hits = bot.state.hits();
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        [1, 1, 1, 1, 1, 2, 3],
        "the same update again, its chat's next ones after it"
    );
    // 20 ms doubling, capped at 50 ms: 20, 40, 50, 50.
    let gaps: Vec<Duration> = hits[..5].windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, least) in gaps.iter().zip([20, 40, 50, 50]) {
        assert!(*gap >= Duration::from_millis(least), "{gaps:?}");
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.webhook_posts,
            stats.webhook_failed,
            stats.webhook_delivered,
            stats.webhook_429
        ),
        (7, 4, 3, 0)
    );
    let (_, info) = call(&server, "getWebhookInfo", &[]).await;
    assert_eq!(
        info["result"]["last_error_message"],
        "Wrong response from the webhook: 500 Internal Server Error"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_the_update_kept() {
    let server = server(FAST).await;
    // A port nothing listens on: bound, then closed.
    let url = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    push_chats(&server, [1, 2]);
    server.set_webhook(url);
    eventually("several attempts failed", || server.stats().webhook_failed >= 6).await;
    let stats = server.stats();
    assert_eq!(stats.pending, 2);
    assert_eq!(stats.webhook_delivered, 0);
    let (_, info) = call(&server, "getWebhookInfo", &[]).await;
    let message = info["result"]["last_error_message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("Connection failed: "), "{message}");
    assert!(!message.contains("127.0.0.1"), "no URL in the message: {message}");
}

#[tokio::test]
async fn a_refused_connection_holds_back_every_chat_and_a_receiver_that_comes_back_gets_all() {
    let server = server(WebhookTiming {
        probe_interval: Duration::from_millis(100),
        ..FAST
    })
    .await;
    // A port nothing listens on yet.
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    // 30 chats, two updates each: ids 1..=30, then 31..=60 in the same chats.
    push_chats(&server, (0..60).map(|i| i % 30));
    server.set_webhook_spec(WebhookSpec {
        max_connections: 5,
        ..WebhookSpec::new(format!("http://{addr}/hook"))
    });
    eventually("the first requests were refused", || server.stats().webhook_failed >= 5).await;
    let before = server.stats().webhook_posts;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let probes = server.stats().webhook_posts - before;
    assert!(
        probes <= 3,
        "{probes} requests in 250 ms after a refusal: one per 100 ms, not one per chat"
    );

    let listener = tokio::net::TcpListener::bind(addr).await.expect("the port again");
    let bot = Bot::start_on(listener, |_, _| async { Answer::Ok });
    eventually("every update is delivered", || server.pending() == 0).await;
    assert_eq!(
        sorted(bot.state.ids()),
        (1..=60).collect::<Vec<_>>(),
        "each exactly once"
    );
    for (chat, ids) in per_chat(&bot.state.hits()) {
        assert_eq!(ids, [chat + 1, chat + 31], "chat {chat} in id order");
    }
    assert_eq!(bot.state.overlaps.load(Ordering::SeqCst), 0);
    let stats = server.stats();
    assert_eq!(stats.webhook_delivered, 60);
    assert_eq!(
        stats.webhook_posts,
        stats.webhook_failed + 60,
        "every refusal was counted"
    );
}

#[tokio::test]
async fn nothing_delivered_for_down_after_leaves_one_request_per_probe_interval() {
    const DOWN_AFTER: Duration = Duration::from_millis(300);
    const PROBE: Duration = Duration::from_millis(100);
    let server = server(WebhookTiming {
        base: Duration::from_millis(5),
        cap: Duration::from_millis(10),
        down_after: DOWN_AFTER,
        probe_interval: PROBE,
        ..FAST
    })
    .await;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bot = Bot::start({
        let healthy = Arc::clone(&healthy);
        move |_, _| {
            let healthy = healthy.load(Ordering::SeqCst);
            async move { if healthy { Answer::Ok } else { Answer::Status(500) } }
        }
    })
    .await;
    push_chats(&server, (0..40).map(|i| i % 20));
    let set_at = Instant::now();
    server.set_webhook_spec(WebhookSpec {
        max_connections: 10,
        ..WebhookSpec::new(&bot.url)
    });
    tokio::time::sleep(DOWN_AFTER + Duration::from_millis(700)).await;
    let down_from = set_at + DOWN_AFTER + Duration::from_millis(50);
    let hits = bot.state.hits();
    let (up, down): (Vec<&Hit>, Vec<&Hit>) = hits.iter().partition(|h| h.at < down_from);
    assert!(up.len() > 20, "at full speed while up: {} requests", up.len());
    assert!(
        (3..=8).contains(&down.len()),
        "{} requests in the 650 ms after down_after, one per 100 ms expected",
        down.len()
    );
    for pair in down.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // Half the interval: arrivals at the bot jitter around the sender's starts.
        assert!(gap >= PROBE / 2, "{gap:?} between two requests");
    }

    // The next request is delivered, and the rest follows at full speed.
    healthy.store(true, Ordering::SeqCst);
    eventually("every update is delivered", || server.pending() == 0).await;
    for (chat, ids) in per_chat(&bot.state.hits()) {
        let mut delivered = ids.clone();
        delivered.dedup();
        assert_eq!(delivered, [chat + 1, chat + 21], "chat {chat} in id order: {ids:?}");
    }
}

#[tokio::test]
async fn the_secret_token_is_sent_when_set() {
    let server = server(FAST).await;
    let bot = Bot::ok().await;
    let url = bot.url.clone();
    let (status, body) = call(&server, "setWebhook", &[("url", &url), ("secret_token", "bad token!")]).await;
    assert_eq!(
        (status, &body["description"]),
        (400, &json!("Bad Request: secret token contains unallowed characters"))
    );
    assert_eq!(server.webhook_url(), "");

    push_chats(&server, [1, 2, 3]);
    let secret = "s3cr3t_Token-1";
    let (status, _) = call(&server, "setWebhook", &[("url", &url), ("secret_token", secret)]).await;
    assert_eq!(status, 200);
    eventually("the first updates are delivered", || server.pending() == 0).await;
    let hits = bot.state.hits();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.secret.as_deref() == Some(secret)), "{hits:?}");

    // Without a secret, no header.
    server.set_webhook(&bot.url);
    push_chats(&server, [4]);
    eventually("the later update is delivered", || server.pending() == 0).await;
    let hits = bot.state.hits();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[3].secret, None);
}

#[tokio::test]
async fn delete_webhook_stops_sending_and_leaves_the_rest_to_get_updates() {
    let server = server(FAST).await;
    let release = Arc::new(Notify::new());
    let held = Arc::clone(&release);
    // Update 6 is held at the bot and then refused; every other request is accepted.
    let bot = Bot::start(move |hit, _| {
        let held = Arc::clone(&held);
        async move {
            if hit.id == 6 && hit.attempt == 1 {
                held.notified().await;
                Answer::Status(500)
            } else {
                Answer::Ok
            }
        }
    })
    .await;
    push_chats(&server, [9; 20]);
    let url = bot.url.clone();
    call(&server, "setWebhook", &[("url", &url)]).await;
    bot.state.wait_for("update 6", |h| h.id == 6).await;

    let (status, deleted) = call(&server, "deleteWebhook", &[]).await;
    assert_eq!((status, &deleted["result"]), (200, &json!(true)));
    release.notify_one();
    eventually("the request in flight ended", || {
        let stats = server.stats();
        stats.webhook_failed == 1 && stats.webhook_in_flight == 0
    })
    .await;
    // Had the sender gone on, the 20 ms retry would have delivered update 6 by now or soon;
    // instead the rest is left for getUpdates.
    assert_eq!(get_ids(&server, &[]).await, (6..=20).collect::<Vec<_>>());
    assert_eq!(bot.state.ids(), [1, 2, 3, 4, 5, 6]);
    let stats = server.stats();
    assert_eq!(
        (stats.webhook_posts, stats.webhook_delivered, stats.pending),
        (6, 5, 15)
    );

    // A new webhook picks up where the old one stopped.
    server.set_webhook(&bot.url);
    eventually("the rest is delivered", || server.pending() == 0).await;
    assert_eq!(
        per_chat(&bot.state.hits())[&9],
        [1, 2, 3, 4, 5, 6].into_iter().chain(6..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn drop_pending_updates_drops_the_backlog_before_sending() {
    let server = server(FAST).await;
    let bot = Bot::ok().await;
    push_chats(&server, [1, 2, 3]);
    let url = bot.url.clone();
    call(
        &server,
        "setWebhook",
        &[("url", &url), ("drop_pending_updates", "true")],
    )
    .await;
    let later = push_chats(&server, [4]);
    bot.state
        .wait_for("the update pushed after", |h| h.id == later[0])
        .await;
    eventually("it is delivered", || server.pending() == 0).await;
    assert_eq!(bot.state.ids(), later);
}

#[tokio::test]
async fn set_webhook_takes_plain_http_only_on_loopback_and_clamps_connections() {
    let server = server(FAST).await;
    for (url, max, reported) in [
        ("http://localhost:1/hook", "1000", 100),
        ("http://127.0.0.1:1/hook", "0", 1),
        ("https://bot.example/hook", "", 40),
    ] {
        let (status, body) = call(&server, "setWebhook", &[("url", url), ("max_connections", max)]).await;
        assert_eq!(status, 200, "{url}: {body}");
        let (_, info) = call(&server, "getWebhookInfo", &[]).await;
        assert_eq!(info["result"]["url"], url);
        assert_eq!(info["result"]["max_connections"], reported, "{url}");
    }
    let (status, _) = call(&server, "setWebhook", &[("url", "http://bot.example/hook")]).await;
    assert_eq!(status, 400);
    assert_eq!(server.webhook_url(), "https://bot.example/hook");
}

#[tokio::test]
async fn shutdown_stops_the_sender_and_its_requests() {
    let server = server(FAST).await;
    // A bot that never answers.
    let bot = Bot::start(|_, _| std::future::pending()).await;
    push_chats(&server, 0..5);
    server.set_webhook(&bot.url);
    eventually("five requests wait at the bot", || {
        bot.state.in_flight.load(Ordering::SeqCst) == 5
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not wait for the webhook");
    eventually("the requests were dropped", || {
        bot.state.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_webhook_in_the_config_is_pushed_to_from_the_start() {
    let bot = Bot::ok().await;
    let server = start_with(MockConfig {
        backlog: Some(mock_bot_api::BacklogSpec {
            updates: 300,
            chats: 20,
            ..mock_bot_api::BacklogSpec::default()
        }),
        webhook: Some(WebhookSpec {
            secret_token: Some("abc".to_owned()),
            max_connections: 4,
            ..WebhookSpec::new(&bot.url)
        }),
        webhook_timing: FAST,
        ..MockConfig::default()
    })
    .await;
    eventually("the generated backlog is delivered", || server.pending() == 0).await;
    let hits = bot.state.hits();
    assert_eq!(
        sorted(hits.iter().map(|h| h.id).collect()),
        (1..=300).collect::<Vec<_>>()
    );
    assert!(hits.iter().all(|h| h.secret.as_deref() == Some("abc")));
    let stats = server.stats();
    assert!(stats.webhook_in_flight_peak <= 4, "{stats:?}");
    assert_eq!(stats.webhook_delivered, 300);
    assert_eq!(
        call(&server, "getUpdates", &[]).await.0,
        409,
        "polling is refused meanwhile"
    );
}
