//! The Bot API methods: `getMe`, `getUpdates` (with long polling and faults),
//! `setWebhook`, `deleteWebhook`, `getWebhookInfo`, `close`, `logOut` and `sendMessage`
//! (with Telegram's send limits when configured: [`crate::send_limits`]).
//!
//! `getUpdates` follows the official semantics: `offset` confirms (drops) every update
//! below it, `-N` keeps only the last `N` pending; at most `limit` (default 100, clamped to
//! 1..=100) updates from the offset on are returned in id order; with `timeout` the call
//! waits until something arrives, and a newer `getUpdates` call ends a waiting one with 409.
//! A faulted call confirms nothing, except `Slow` and `MalformedUpdate`, which answer normally.
//!
//! While a webhook is set (`setWebhook` with a non-empty `url`), `getUpdates` gets 409 "can't
//! use getUpdates method while webhook is active", before any fault and without confirming
//! anything, until `deleteWebhook` (or `setWebhook` with an empty `url`) removes it.
//! Meanwhile the webhook sender ([`crate::webhook`]) POSTs the pending updates to the URL.
//! Like the real server, `setWebhook` wants an HTTPS URL, with one exception for local
//! testing: `http://` is accepted when the host is loopback (`localhost`, `127.0.0.0/8`,
//! `[::1]`), as the real server does in `--local` mode. `secret_token` (1-256 characters of
//! `A-Z`, `a-z`, `0-9`, `_`, `-`) and `max_connections` (clamped to 1..=100, default 40)
//! are honoured; `allowed_updates`, `certificate` and `ip_address` are accepted and ignored.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{DEFAULT_MAX_CONNECTIONS, WebhookSpec};
use crate::faults::Fault;
use crate::params::Params;
use crate::reply;
use crate::state::Shared;

/// `ANY /{bot_token}/{method}`: checks the token and dispatches on the method name, which
/// like in the real API is case-insensitive.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot_token, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    let method = method.to_ascii_lowercase();
    {
        let mut inner = shared.inner.lock();
        inner.stats.calls += 1;
        if method == "getupdates" {
            inner.stats.get_updates_calls += 1;
        }
    }
    let Some(token) = bot_token.strip_prefix("bot") else {
        return reply::not_found();
    };
    if token != shared.token {
        return reply::unauthorized();
    }
    let params = match Params::extract(req).await {
        Ok(params) => params,
        Err(why) => return reply::bad_request(&why),
    };
    match method.as_str() {
        "getupdates" => get_updates(&shared, &params).await,
        "getme" => reply::ok(bot_user(&shared)),
        "setwebhook" => set_webhook(&shared, &params),
        "deletewebhook" => match params.bool("drop_pending_updates") {
            Ok(drop) => {
                shared.set_webhook(WebhookSpec::default(), drop == Some(true));
                reply::ok(Value::Bool(true))
            }
            Err(why) => reply::bad_request(&why),
        },
        "getwebhookinfo" => reply::ok(webhook_info(&shared)),
        "close" | "logout" => reply::ok(Value::Bool(true)),
        "sendmessage" => send_message(&shared, params),
        _ => reply::not_found(),
    }
}

/// `setWebhook`: sets the webhook (an empty `url` removes it) and so starts or stops the
/// sender. Only an HTTPS URL is accepted, or plain HTTP to a loopback host.
fn set_webhook(shared: &Shared, params: &Params) -> Response {
    let spec = match parse_webhook(params) {
        Ok(spec) => spec,
        Err(why) => return reply::bad_request(&why),
    };
    let drop = match params.bool("drop_pending_updates") {
        Ok(drop) => drop == Some(true),
        Err(why) => return reply::bad_request(&why),
    };
    shared.set_webhook(spec, drop);
    reply::ok(Value::Bool(true))
}

/// The webhook `setWebhook`'s parameters describe; the error is the text after `Bad Request: `.
fn parse_webhook(params: &Params) -> Result<WebhookSpec, String> {
    let url = params.string("url")?.unwrap_or_default();
    if !url.is_empty() && !url.starts_with("https://") && !is_loopback_http(&url) {
        return Err("bad webhook: An HTTPS URL must be provided for webhook".to_owned());
    }
    let secret_token = params.string("secret_token")?.filter(|s| !s.is_empty());
    if let Some(secret) = &secret_token {
        if secret.len() > 256 {
            return Err("secret token must be at most 256 characters".to_owned());
        }
        if !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("secret token contains unallowed characters".to_owned());
        }
    }
    let max_connections = params
        .int("max_connections")?
        .map_or(DEFAULT_MAX_CONNECTIONS, |n| n.clamp(1, 100) as u32);
    Ok(WebhookSpec {
        url,
        secret_token,
        max_connections,
    })
}

/// Whether `url` is plain HTTP to this machine: `localhost`, `127.0.0.0/8` or `[::1]`.
fn is_loopback_http(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    url.scheme() == "http"
        && (host == "localhost" || host == "[::1]" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()))
}

/// `getWebhookInfo`: the URL, the pending count and, while a webhook is set, its
/// `max_connections` and the latest delivery error.
fn webhook_info(shared: &Shared) -> Value {
    let inner = shared.inner.lock();
    let mut info = json!({
        "url": inner.webhook.url,
        "has_custom_certificate": false,
        "pending_update_count": inner.pending(),
    });
    if !inner.webhook.url.is_empty() {
        info["max_connections"] = json!(inner.webhook.max_connections);
        if let Some((date, message)) = &inner.webhook_last_error {
            info["last_error_date"] = json!(date);
            info["last_error_message"] = json!(message);
        }
    }
    info
}

fn bot_user(shared: &Shared) -> Value {
    json!({
        "id": shared.bot_id,
        "is_bot": true,
        "first_name": "Mock",
        "username": "mock_bot",
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    })
}

/// Decrements the waiting-poll gauge when a long poll ends, however it ends.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct GetUpdates {
    offset: Option<i64>,
    limit: Option<i64>,
    timeout: Option<i64>,
    allowed_updates: Option<Vec<String>>,
}

impl GetUpdates {
    fn parse(params: &Params) -> Result<Self, String> {
        Ok(Self {
            offset: params.int("offset")?,
            limit: params.int("limit")?,
            timeout: params.int("timeout")?,
            allowed_updates: params.string_array("allowed_updates")?,
        })
    }
}

async fn get_updates(shared: &Arc<Shared>, params: &Params) -> Response {
    let request = match GetUpdates::parse(params) {
        Ok(request) => request,
        Err(why) => return reply::bad_request(&why),
    };
    if !shared.inner.lock().webhook.url.is_empty() {
        return reply::webhook_conflict();
    }
    let limit = request.limit.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = request.timeout.map(|t| t.max(0) as u64);
    let wait = Duration::from_secs(timeout.unwrap_or(0)).min(shared.max_poll_timeout);
    let (generation, fault) = {
        let mut inner = shared.inner.lock();
        inner.poll_generation += 1;
        let stats = &mut inner.stats;
        stats.last_offset = request.offset;
        stats.last_limit = request.limit.map(|l| l.max(0) as u64);
        stats.last_timeout = timeout;
        stats.max_limit_seen = stats.max_limit_seen.max(stats.last_limit.unwrap_or(0));
        *stats.limits_seen.entry(limit as u64).or_default() += 1;
        if request.allowed_updates.is_some() {
            stats.last_allowed_updates = request.allowed_updates;
        }
        (inner.poll_generation, inner.next_fault())
    };
    // A newer call ends any poll still waiting.
    shared.wake.notify_waiters();

    let mut break_middle = false;
    if let Some(fault) = fault {
        tracing::debug!(kind = fault.kind(), "mock-bot-api: injecting fault");
        match fault {
            Fault::TooManyRequests { retry_after } => return reply::too_many_requests(retry_after),
            Fault::ServerError { status } => return reply::server_error(status),
            Fault::MalformedJson => {
                let batch = shared.inner.lock().peek(request.offset, limit);
                return reply::truncated(reply::updates_body(&batch, false));
            }
            Fault::DropConnection => {
                let batch = shared.inner.lock().peek(request.offset, limit);
                return reply::dropped(reply::updates_body(&batch, false));
            }
            Fault::Conflict => return reply::conflict(),
            Fault::Unauthorized => return reply::unauthorized(),
            Fault::Slow { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Fault::MalformedUpdate => break_middle = true,
        }
    }
    long_poll(shared, request.offset, limit, wait, generation, break_middle).await
}

/// Serves from `offset`, waiting up to `wait` for updates when there are none.
async fn long_poll(
    shared: &Shared,
    mut offset: Option<i64>,
    limit: usize,
    wait: Duration,
    generation: u64,
    break_middle: bool,
) -> Response {
    let deadline = Instant::now() + wait;
    let mut waited = false;
    let mut _in_flight = None;
    loop {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut inner = shared.inner.lock();
            if waited && inner.poll_generation != generation {
                inner.stats.terminated_polls += 1;
                return reply::conflict();
            }
            let (next_offset, batch) = inner.serve(offset, limit);
            offset = next_offset;
            let closing = shared.closing.load(Ordering::SeqCst);
            if !batch.is_empty() || closing || Instant::now() >= deadline {
                drop(inner);
                return reply::json_text(StatusCode::OK, reply::updates_body(&batch, break_middle));
            }
            if _in_flight.is_none() {
                shared.in_flight_polls.fetch_add(1, Ordering::SeqCst);
                _in_flight = Some(InFlight(&shared.in_flight_polls));
            }
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        waited = true;
    }
}

fn send_message(shared: &Shared, params: Params) -> Response {
    let chat = match params.get("chat_id") {
        None => return reply::bad_request("chat_id is empty"),
        Some(_) => match params.int("chat_id") {
            Ok(Some(id)) if id > 0 => json!({"id": id, "type": "private", "first_name": "User"}),
            Ok(Some(id)) if id < 0 => json!({"id": id, "type": "supergroup", "title": "Group"}),
            _ => match params.string("chat_id") {
                Ok(Some(name)) if name.len() > 1 && name.starts_with('@') => json!({
                    "id": -1_009_999_999_999_i64, "type": "channel", "title": &name[1..], "username": &name[1..],
                }),
                _ => return reply::bad_request("chat not found"),
            },
        },
    };
    let text = match params.string("text") {
        Ok(Some(text)) if !text.trim().is_empty() => text,
        Ok(_) => return reply::bad_request("message text is empty"),
        Err(why) => return reply::bad_request(&why),
    };
    if let Some(limiter) = &shared.send_limiter {
        let chat_id = chat["id"].as_i64().unwrap_or_default();
        let refused = limiter.lock().try_send(chat_id, Instant::now());
        if let Err(retry_after) = refused {
            shared.inner.lock().stats.send_429 += 1;
            return reply::too_many_requests(u32::try_from(retry_after).unwrap_or(u32::MAX));
        }
    }
    let message_id = shared.record_sent(params.into_value());
    let date = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    reply::ok(json!({
        "message_id": message_id,
        "from": bot_user(shared),
        "chat": chat,
        "date": date,
        "text": text,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://127.1.2.3/",
            "http://localhost:3000/bot/hook?x=1",
            "http://LOCALHOST/",
            "http://[::1]:9/x",
            "http://user:pw@127.0.0.1:1/",
        ] {
            assert!(is_loopback_http(url), "{url}");
        }
        for url in [
            "http://plain.example/hook",
            "http://127.0.0.1.example/",
            "http://localhost.example/",
            "http://10.0.0.1/",
            "https://127.0.0.1/",
            "ftp://127.0.0.1/",
            "http://",
            "not a url",
        ] {
            assert!(!is_loopback_http(url), "{url}");
        }
    }
}
