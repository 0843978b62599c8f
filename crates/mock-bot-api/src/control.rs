//! Control endpoints, so that other processes (the flood demo, the crash harness) can steer
//! a server they did not start in-process.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /stats` | – | [`Stats`](crate::Stats) |
//! | `POST /control/backlog` | [`BacklogSpec`](crate::BacklogSpec) | `{"first":1,"last":1000}` (`last < first` when empty) |
//! | `POST /control/push` | array of update bodies without `update_id` | `{"ids":[...]}` |
//! | `POST /control/faults` | [`FaultRates`](crate::FaultRates) | `{"ok":true}` |
//! | `POST /control/inject` | one [`Fault`](crate::Fault) or an array of them | `{"ok":true}` |
//! | `POST /control/conflict_window` | `{"calls":3}` | `{"ok":true}` |
//! | `POST /control/reset` | – | `{"ok":true}` |
//! | `GET /control/sent` | – | array of recorded `sendMessage` parameters |
//!
//! Bodies are JSON; missing fields of specs and rates take their defaults.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::BacklogSpec;
use crate::faults::{Fault, FaultRates};
use crate::generator;
use crate::reply;
use crate::state::Shared;

type AppState = State<Arc<Shared>>;

/// Reads a JSON body (empty = `{}`); the error is the text after `Bad Request: `.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

fn done() -> Response {
    Json(json!({"ok": true})).into_response()
}

/// `GET /stats`.
pub(crate) async fn stats(State(shared): AppState) -> Response {
    Json(shared.stats()).into_response()
}

/// `POST /control/backlog`: generates off the async threads.
pub(crate) async fn backlog(State(shared): AppState, body: Bytes) -> Response {
    let spec: BacklogSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(why) => return reply::bad_request(&why),
    };
    let task = tokio::task::spawn_blocking(move || generator::generate_into(&shared, &spec));
    match task.await {
        Ok(range) => Json(json!({"first": range.start(), "last": range.end()})).into_response(),
        Err(_) => reply::error(500, "Internal Server Error: generator failed"),
    }
}

/// `POST /control/push`.
pub(crate) async fn push(State(shared): AppState, body: Bytes) -> Response {
    match parse::<Vec<Value>>(&body) {
        Ok(payloads) => {
            let ids = shared.push_bodies(payloads.iter().map(Value::to_string));
            Json(json!({"ids": ids})).into_response()
        }
        Err(why) => reply::bad_request(&why),
    }
}

/// `POST /control/faults`.
pub(crate) async fn faults(State(shared): AppState, body: Bytes) -> Response {
    match parse::<FaultRates>(&body) {
        Ok(rates) => {
            shared.set_fault_rates(rates);
            done()
        }
        Err(why) => reply::bad_request(&why),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Fault),
    Many(Vec<Fault>),
}

/// `POST /control/inject`.
pub(crate) async fn inject(State(shared): AppState, body: Bytes) -> Response {
    match parse::<OneOrMany>(&body) {
        Ok(OneOrMany::One(fault)) => shared.inject(fault),
        Ok(OneOrMany::Many(faults)) => faults.into_iter().for_each(|f| shared.inject(f)),
        Err(why) => return reply::bad_request(&why),
    }
    done()
}

#[derive(Deserialize)]
struct ConflictWindow {
    calls: usize,
}

/// `POST /control/conflict_window`.
pub(crate) async fn conflict_window(State(shared): AppState, body: Bytes) -> Response {
    match parse::<ConflictWindow>(&body) {
        Ok(window) => {
            shared.inject_conflict_window(window.calls);
            done()
        }
        Err(why) => reply::bad_request(&why),
    }
}

/// `POST /control/reset`.
pub(crate) async fn reset(State(shared): AppState) -> Response {
    shared.reset();
    done()
}

/// `GET /control/sent`.
pub(crate) async fn sent(State(shared): AppState) -> Response {
    Json(shared.sent_messages()).into_response()
}
