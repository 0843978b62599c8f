//! The Telegram transport against the mock Bot API over real HTTP: one test per fault,
//! each asserting its defined recovery. Waits go through a recording sleeper, so the
//! exact delays are checked without spending them.

use std::collections::BTreeSet;
use std::error::Error as _;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use mock_bot_api::{BacklogSpec, Fault, MockConfig, MockServer};
use parking_lot::Mutex;
use pollgate_core::{
    Ack, Backoff, FetchRequest, Sleep, SleepFuture, TelegramError, TelegramTransport, TelegramTransportBuilder,
    Transport,
};

/// Records every requested wait and returns at once.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Duration>>>);

impl Sleep for Recorder {
    fn sleep(&self, d: Duration) -> SleepFuture {
        self.0.lock().push(d);
        Box::pin(std::future::ready(()))
    }
}

impl Recorder {
    fn waits(&self) -> Vec<Duration> {
        self.0.lock().clone()
    }
}

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    factor: 2.0,
    max: Duration::from_secs(5),
    max_retries: None,
};

async fn server(updates: usize) -> MockServer {
    let s = MockServer::start(MockConfig::default()).await.unwrap();
    s.generate(&BacklogSpec {
        updates,
        text_bytes: 32,
        chats: 3,
        seed: 1,
        ..mock_bot_api::BacklogSpec::default()
    });
    s
}

fn builder(s: &MockServer, sleep: &Recorder) -> TelegramTransportBuilder {
    TelegramTransport::builder(s.token())
        .api_url(s.url())
        .backoff(BACKOFF)
        .sleep(sleep.clone())
}

const ALL: FetchRequest = FetchRequest {
    limit: 100,
    timeout: Duration::ZERO,
};

/// Fetches until the server has nothing left, acking eagerly; returns every id received.
async fn drain(t: &TelegramTransport) -> Vec<i64> {
    let mut ids = Vec::new();
    loop {
        let batch = t.fetch(ALL).await.unwrap();
        if batch.is_empty() {
            return ids;
        }
        ids.extend(batch.updates.iter().map(|u| u.id()));
        ids.extend(batch.failures.iter().map(|f| f.update_id));
        t.ack(Ack {
            below: batch.last_id().map(|id| id + 1),
            receipts: &[],
            failed: &[],
        })
        .await
        .unwrap();
    }
}

fn assert_all_once(ids: &[i64], n: usize) {
    let set: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(set.len(), ids.len(), "an update was received twice");
    assert_eq!(set.len(), n, "an update was lost");
}

#[tokio::test]
async fn rate_limit_waits_exactly_retry_after_then_nothing_is_lost() {
    let s = server(250).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject(Fault::TooManyRequests { retry_after: 7 });
    assert_all_once(&drain(&t).await, 250);
    assert_eq!(sleep.waits(), [Duration::from_secs(7)]);
    assert_eq!(t.stats().retries_rate_limited, 1);
    assert_eq!(t.stats().rate_limit_wait_ms, 7000);
}

#[tokio::test]
async fn server_errors_with_html_bodies_back_off_exponentially_with_jitter() {
    let s = server(120).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject(Fault::ServerError { status: 502 });
    s.inject(Fault::ServerError { status: 500 });
    s.inject(Fault::ServerError { status: 502 });
    assert_all_once(&drain(&t).await, 120);
    let waits = sleep.waits();
    assert_eq!(waits.len(), 3);
    for (i, w) in waits.iter().enumerate() {
        let nominal = BACKOFF.nominal(i as u32 + 1);
        assert!(
            *w >= nominal / 2 && *w <= nominal,
            "wait {i}: {w:?} vs nominal {nominal:?}"
        );
    }
    assert_eq!(t.stats().retries_server_error, 3);
}

#[tokio::test]
async fn a_dropped_connection_is_a_network_error_and_is_retried() {
    let s = server(150).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject(Fault::DropConnection);
    assert_all_once(&drain(&t).await, 150);
    assert_eq!(t.stats().retries_network, 1);
    assert_eq!(sleep.waits().len(), 1);
}

#[tokio::test]
async fn a_malformed_response_is_retried_and_nothing_is_lost() {
    let s = server(150).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject(Fault::MalformedJson);
    assert_all_once(&drain(&t).await, 150);
    assert_eq!(t.stats().retries_invalid, 1);
}

#[tokio::test]
async fn a_malformed_update_is_reported_with_its_id_and_skipped_past() {
    let s = server(9).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject(Fault::MalformedUpdate);
    let batch = t.fetch(ALL).await.unwrap();
    assert_eq!(batch.updates.len(), 8);
    assert_eq!(batch.failures.len(), 1);
    let broken = &batch.failures[0];
    assert!(!broken.id_inferred);
    assert!(!batch.updates.iter().any(|u| u.id() == broken.update_id));
    t.ack(Ack {
        below: batch.last_id().map(|id| id + 1),
        receipts: &[],
        failed: &[],
    })
    .await
    .unwrap();
    assert!(
        t.fetch(ALL).await.unwrap().is_empty(),
        "acknowledged past the broken update"
    );
    assert!(sleep.waits().is_empty(), "nothing to retry");
}

#[tokio::test]
async fn a_slow_response_is_waited_for_and_one_past_the_http_timeout_is_retried() {
    let s = server(50).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep)
        .http_timeout_margin(Duration::from_millis(300))
        .build()
        .unwrap();
    s.inject(Fault::Slow { ms: 50 });
    let first = t
        .fetch(FetchRequest {
            limit: 10,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(first.updates.len(), 10);
    assert!(sleep.waits().is_empty());
    s.inject(Fault::Slow { ms: 5_000 });
    let second = t
        .fetch(FetchRequest {
            limit: 10,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(second.updates.len(), 10);
    assert_eq!(
        t.stats().retries_network,
        1,
        "the hung request timed out and was retried"
    );
}

#[tokio::test]
async fn a_conflict_window_is_retried_with_backoff() {
    let s = server(30).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject_conflict_window(3);
    assert_all_once(&drain(&t).await, 30);
    assert_eq!(t.stats().retries_conflict, 3);
    assert_eq!(sleep.waits().len(), 3);
}

#[tokio::test]
async fn unauthorized_is_final_and_not_retried() {
    let s = server(5).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    s.inject(Fault::Unauthorized);
    let err = t.fetch(ALL).await.unwrap_err();
    assert!(matches!(err, TelegramError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(sleep.waits().is_empty());
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_and_the_request_shrinks_until_it_fits() {
    let s = server(100).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).max_body_bytes(16 << 10).build().unwrap();
    let batch = t.fetch(ALL).await.unwrap();
    assert!(!batch.is_empty() && batch.len() < 100, "{}", batch.len());
    assert!(t.stats().retries_invalid >= 1);
    assert!(s.stats().last_limit.unwrap() < 100);
}

#[tokio::test]
async fn offset_limit_and_final_confirmation_follow_the_bot_api() {
    let s = server(30).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    let b = t
        .fetch(FetchRequest {
            limit: 500,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(
        (b.len(), s.stats().last_limit),
        (30, Some(100)),
        "limit is clamped to 100"
    );
    let b = t
        .fetch(FetchRequest {
            limit: 0,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!((b.len(), s.stats().last_limit), (1, Some(1)), "limit is clamped to 1");
    let tenth = b.updates[0].id() + 10;
    t.ack(Ack {
        below: Some(tenth),
        receipts: &[],
        failed: &[],
    })
    .await
    .unwrap();
    let b = t
        .fetch(FetchRequest {
            limit: 5,
            timeout: Duration::ZERO,
        })
        .await
        .unwrap();
    assert_eq!(
        b.updates[0].id(),
        tenth,
        "the next read starts at the acknowledged offset"
    );
    assert_eq!(s.pending(), 20);
    t.ack(Ack {
        below: Some(tenth + 15),
        receipts: &[],
        failed: &[],
    })
    .await
    .unwrap();
    t.ack(Ack {
        below: Some(tenth),
        receipts: &[],
        failed: &[],
    })
    .await
    .unwrap();
    assert_eq!(t.offset(), Some(tenth + 15), "offsets never move back");
    t.flush().await.unwrap();
    assert_eq!(s.stats().last_limit, Some(1));
    assert_eq!(s.stats().last_timeout, Some(0));
    assert_eq!(s.pending(), 5, "flush confirmed the offset");
}

#[tokio::test]
async fn a_long_poll_returns_when_updates_arrive() {
    let s = server(0).await;
    let sleep = Recorder::default();
    let t = Arc::new(builder(&s, &sleep).build().unwrap());
    let poll = tokio::spawn({
        let t = Arc::clone(&t);
        async move {
            t.fetch(FetchRequest {
                limit: 100,
                timeout: Duration::from_secs(30),
            })
            .await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.stats().in_flight_polls == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.push_updates([serde_json::json!({"message": {"message_id": 1, "chat": {"id": 5, "type": "private"}, "date": 0, "text": "hi"}})]);
    let batch = poll.await.unwrap().unwrap();
    assert_eq!(batch.updates.len(), 1);
    assert_eq!(batch.updates[0].ordering_key(), Some(5));
}

/// The error and info events of this crate, as `LEVEL field=value ...` lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Captures events on this thread (`#[tokio::test]` runs everything on it) until the
    /// guard drops.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Logs {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("pollgate_core") && *metadata.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(event.metadata().level().to_string());
        event.record(&mut fields);
        self.0.lock().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A webhook URL whose path holds the token, as many bots set it.
fn webhook_with_token(s: &MockServer) -> String {
    format!("https://hooks.example.com/bot{}/updates", s.token())
}

fn assert_no_secret(s: &MockServer, text: &str) {
    let secret = s.token().split_once(':').unwrap().1;
    assert!(!text.contains(secret), "token leaked: {text}");
    assert!(!text.contains("/updates"), "the webhook's path leaked: {text}");
}

fn error_chain(e: &TelegramError) -> String {
    let mut text = format!("{e} | {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" | {s} | {s:?}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_webhook_stops_the_first_fetch_with_a_final_error_before_any_get_updates() {
    let s = server(5).await;
    s.set_webhook(webhook_with_token(&s));
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).build().unwrap();
    // A retry loop would never end (retries are unlimited and the sleeper returns at once).
    let err = tokio::time::timeout(Duration::from_secs(10), t.fetch(ALL))
        .await
        .expect("the fetch ends instead of retrying")
        .unwrap_err();
    assert!(
        matches!(&err, TelegramError::WebhookActive { host: Some(h) } if h == "hooks.example.com"),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("deleteWebhook"), "{err}");
    assert_no_secret(&s, &error_chain(&err));
    assert_eq!(s.stats().get_updates_calls, 0, "getUpdates was never called");
    assert_eq!(s.stats().calls, 1, "one getWebhookInfo");
    assert!(sleep.waits().is_empty(), "nothing was retried");
    assert_eq!(s.webhook_url(), webhook_with_token(&s), "the webhook was left alone");
    assert_eq!(t.stats().webhooks_deleted, 0);

    // Once the webhook is removed by hand, the check runs again and polling works.
    s.set_webhook("");
    assert_eq!(t.fetch(ALL).await.unwrap().len(), 5);
}

#[tokio::test]
async fn delete_webhook_opt_in_removes_it_keeps_pending_updates_and_updates_flow() {
    let s = server(30).await;
    s.set_webhook(webhook_with_token(&s));
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).delete_webhook(true).build().unwrap();
    let logs = Logs::default();
    let ids = {
        let _capture = logs.capture();
        // Without the deletion every getUpdates gets 409 and is retried forever.
        tokio::time::timeout(Duration::from_secs(10), drain(&t))
            .await
            .expect("the webhook was removed, so polling works")
    };
    assert_all_once(&ids, 30);
    assert_eq!(s.webhook_url(), "", "the webhook was deleted");
    assert_eq!(t.stats().webhooks_deleted, 1);
    let stats = s.stats();
    assert_eq!(
        stats.calls - stats.get_updates_calls,
        2,
        "one getWebhookInfo and one deleteWebhook, however many fetches"
    );
    assert!(stats.get_updates_calls >= 2);
    assert!(sleep.waits().is_empty());
    let lines = logs.lines();
    let deleted = lines
        .iter()
        .find(|l| l.starts_with("INFO") && l.contains("deleted the bot's webhook"))
        .unwrap_or_else(|| panic!("an info line says the webhook was deleted: {lines:?}"));
    assert!(deleted.contains("hooks.example.com"), "{deleted}");
    for line in &lines {
        assert_no_secret(&s, line);
    }
}

#[tokio::test]
async fn without_a_webhook_the_check_costs_one_call_and_deletes_nothing() {
    let s = server(250).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep).delete_webhook(true).build().unwrap();
    assert_all_once(&drain(&t).await, 250);
    t.flush().await.unwrap();
    let stats = s.stats();
    assert_eq!(stats.calls - stats.get_updates_calls, 1, "only getWebhookInfo");
    assert_eq!(t.stats().webhooks_deleted, 0);
    assert_eq!(t.stats().requests, stats.calls, "every request is counted");
}

#[tokio::test]
async fn a_webhook_set_while_polling_is_a_conflict_retried_and_logged_with_what_to_do() {
    let s = server(10).await;
    let sleep = Recorder::default();
    let t = builder(&s, &sleep)
        .backoff(Backoff {
            max_retries: Some(3),
            ..BACKOFF
        })
        .build()
        .unwrap();
    assert_eq!(t.fetch(ALL).await.unwrap().len(), 10);
    s.set_webhook(webhook_with_token(&s));
    let logs = Logs::default();
    let err = {
        let _capture = logs.capture();
        t.fetch(ALL).await.unwrap_err()
    };
    let TelegramError::RetriesExhausted { attempts: 4, last } = &err else {
        panic!("{err:?}");
    };
    assert!(matches!(**last, TelegramError::Conflict { .. }), "{last:?}");
    assert_eq!(t.stats().retries_conflict, 3);
    assert_eq!(sleep.waits().len(), 3, "backed off between attempts");
    assert_no_secret(&s, &error_chain(&err));
    let lines = logs.lines();
    let advice = "another getUpdates consumer is running with this token (or a webhook was set meanwhile): stop the other instance";
    let conflicts: Vec<_> = lines.iter().filter(|l| l.contains(advice)).collect();
    assert_eq!(conflicts.len(), 3, "each retry says what to do: {lines:?}");
    assert!(conflicts.iter().all(|l| l.starts_with("ERROR")), "{conflicts:?}");
    for line in &lines {
        assert_no_secret(&s, line);
    }
}

/// A base URL that does not parse is a configuration error found at build time (it was
/// reported as a 404 `NotFound`), final, and its message does not carry the token.
#[test]
fn an_invalid_api_url_is_a_configuration_error() {
    let token = "123456:AAEsecretsecretsecretsecretsecret";
    let e = TelegramTransport::builder(token)
        .api_url("http://[not a host")
        .build()
        .unwrap_err();
    assert!(matches!(e, TelegramError::InvalidApiUrl { .. }), "{e:?}");
    assert!(!e.is_transient());
    assert_eq!(e.kind(), "invalid_api_url");
    let shown = format!("{} {:?}", pollgate_core::ErrorChain(&e), e);
    assert!(!shown.contains("AAEsecret"), "{shown}");
}

/// Each error's message is its own sentence; the cause comes through `source()` only, so a
/// report that walks the chain prints each cause once.
#[test]
fn a_message_does_not_repeat_its_source() {
    let last = TelegramError::Conflict {
        description: "terminated by other getUpdates request".into(),
    };
    let e = TelegramError::RetriesExhausted {
        attempts: 3,
        last: Box::new(last),
    };
    assert_eq!(e.to_string(), "gave up after 3 attempts");
    let chain = pollgate_core::ErrorChain(&e).to_string();
    assert_eq!(
        chain.matches("terminated by other getUpdates request").count(),
        1,
        "{chain}"
    );
    assert!(e.source().is_some());
}
