//! The POST handler: check the secret, bound the waiting requests, read and decode the
//! body, wait for the runtime, answer.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use pollgate_core::Update;
use subtle::ConstantTimeEq;
use tracing::{error, warn};

use crate::SECRET_HEADER;
use crate::queue::{Answer, NoSlot, Shared};
use crate::stats::Counters;

/// Handles one POST on the webhook path.
pub(crate) async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let counters = &shared.counters;
    Counters::bump(&counters.requests);
    if let Some(secret) = &shared.config.secret {
        let given = headers
            .get(SECRET_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !bool::from(given.ct_eq(secret.as_bytes())) {
            Counters::bump(&counters.rejected_secret);
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    match shared.reserve() {
        Ok(()) => {}
        Err(NoSlot::Full) => {
            Counters::bump(&counters.rejected_full);
            return retry_later(&shared, StatusCode::TOO_MANY_REQUESTS);
        }
        Err(NoSlot::Closed) => {
            Counters::bump(&counters.closed);
            return retry_later(&shared, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    // From here the slot is ours: the guard gives it back on every path (a dropped future
    // included) unless the request goes into the queue, which takes it over.
    let slot = Slot {
        shared: &shared,
        held: true,
    };
    // A body that never arrives (a stalled or half-open connection) must not hold its slot
    // longer than a request may wait.
    let read = tokio::time::timeout(shared.config.max_wait, to_bytes(body, shared.config.max_body_bytes));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Err(_elapsed) => {
            Counters::bump(&counters.bad_request);
            warn!("webhook request body not received within max_wait; answered 408");
            return StatusCode::REQUEST_TIMEOUT.into_response();
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<LengthLimitError>());
            return if too_large {
                Counters::bump(&counters.too_large);
                StatusCode::PAYLOAD_TOO_LARGE.into_response()
            } else {
                // The client went away mid-body: nobody reads this answer.
                Counters::bump(&counters.bad_request);
                StatusCode::BAD_REQUEST.into_response()
            };
        }
    };
    let update = match std::str::from_utf8(&bytes).map(Update::from_json) {
        Ok(Ok(update)) => update,
        Ok(Err(e)) if e.update_id().is_some() => {
            // Telegram sent it, so retrying would bring the same bytes back: report it and
            // answer 200, as polling acknowledges past an undecodable update.
            Counters::bump(&counters.undecodable);
            error!(error = %pollgate_core::ErrorChain(&e), "undecodable update from the webhook; acknowledged so Telegram does not resend it");
            return StatusCode::OK.into_response();
        }
        Ok(Err(e)) => {
            Counters::bump(&counters.bad_request);
            warn!(error = %pollgate_core::ErrorChain(&e), "webhook request without an update; answered 400");
            return StatusCode::BAD_REQUEST.into_response();
        }
        Err(_) => {
            Counters::bump(&counters.bad_request);
            warn!("webhook request body is not UTF-8; answered 400");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let queued = shared.enqueue(update);
    slot.handed_over();
    let Some((seq, answer)) = queued else {
        Counters::bump(&counters.closed);
        return retry_later(&shared, StatusCode::SERVICE_UNAVAILABLE);
    };
    // Dropped (the client closed the connection) while still waiting: leave the queue.
    let mut guard = Withdraw {
        shared: &shared,
        seq,
        armed: true,
    };
    let mut answer = answer;
    let outcome = tokio::select! {
        outcome = &mut answer => outcome,
        () = tokio::time::sleep(shared.config.max_wait) => {
            if shared.withdraw(seq) {
                guard.armed = false;
                Counters::bump(&counters.expired);
                return retry_later(&shared, StatusCode::TOO_MANY_REQUESTS);
            }
            // Taken meanwhile: it runs now; answer when it is acknowledged.
            answer.await
        }
    };
    guard.armed = false;
    match outcome {
        Ok(Answer::Done) => {
            Counters::bump(&counters.answered);
            StatusCode::OK.into_response()
        }
        Ok(Answer::Closed) | Err(_) => {
            Counters::bump(&counters.closed);
            retry_later(&shared, StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// An answer Telegram retries after `Retry-After` seconds.
fn retry_later(shared: &Shared, status: StatusCode) -> Response {
    let secs = shared.config.retry_after_secs();
    (status, [(header::RETRY_AFTER, secs.to_string())]).into_response()
}

/// A reserved waiting slot, given back when dropped unless the queue took it over.
struct Slot<'a> {
    shared: &'a Shared,
    held: bool,
}

impl Slot<'_> {
    /// The queue owns the slot now (`enqueue` gives it back itself when it refuses).
    fn handed_over(mut self) {
        self.held = false;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.shared.release();
        }
    }
}

/// Takes a waiting request out of the queue when its handler is dropped before it was
/// answered (the client disconnected).
struct Withdraw<'a> {
    shared: &'a Shared,
    seq: u64,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if self.armed && self.shared.withdraw(self.seq) {
            Counters::bump(&self.shared.counters.abandoned);
        }
    }
}
