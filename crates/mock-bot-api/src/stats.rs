//! A snapshot of what the server has seen and done, for assertions and for `GET /stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters and last-seen parameters of a mock server.
///
/// Returned by [`MockServer::stats`](crate::MockServer::stats) and, as JSON, by `GET /stats`.
/// [`MockServer::reset`](crate::MockServer::reset) zeroes it (except `next_update_id`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Stats {
    /// Every request to `/bot{token}/{method}`, whatever the method, token or outcome.
    pub calls: u64,
    /// `getUpdates` calls, including faulted ones and ones with bad parameters.
    pub get_updates_calls: u64,
    /// The highest offset confirmed so far (0 before any).
    pub highest_confirmed_offset: i64,
    /// Updates returned in successful responses (a `MalformedUpdate` response counts;
    /// truncated or dropped responses do not).
    pub updates_served: u64,
    /// Served updates whose id was at or below the highest id served before.
    pub duplicates_served: u64,
    /// `getUpdates` calls currently waiting in a long poll.
    pub in_flight_polls: u64,
    /// Updates not yet confirmed.
    pub pending: u64,
    /// The id the next pushed or generated update gets.
    pub next_update_id: i64,
    /// Injected or random faults, per [`Fault::kind`](crate::Fault::kind).
    pub faults: BTreeMap<String, u64>,
    /// Waiting long polls terminated with 409 by a newer `getUpdates` call.
    pub terminated_polls: u64,
    /// The largest `limit` a client asked for, before clamping.
    pub max_limit_seen: u64,
    /// How often each effective (clamped, 1..=100) `limit` was used.
    pub limits_seen: BTreeMap<u64, u64>,
    /// `offset` of the latest `getUpdates` call.
    pub last_offset: Option<i64>,
    /// `limit` of the latest `getUpdates` call, as sent (negative values read as 0).
    pub last_limit: Option<u64>,
    /// `timeout` of the latest `getUpdates` call, as sent (negative values read as 0).
    pub last_timeout: Option<u64>,
    /// `allowed_updates` of the latest `getUpdates` call that had one.
    pub last_allowed_updates: Option<Vec<String>>,
    /// `sendMessage` calls accepted.
    pub sent_messages: u64,
    /// `sendMessage` calls refused with 429 by the send limits (not counted in
    /// `sent_messages`).
    pub send_429: u64,
    /// Requests the webhook sender started (first attempts and retries).
    pub webhook_posts: u64,
    /// Webhook requests answered with a 2xx status: their updates are delivered and gone.
    pub webhook_delivered: u64,
    /// Webhook requests that failed: a non-2xx answer (429s included), a connection error or
    /// a timeout. Each failure is retried later (after a connection error, the update is
    /// sent again as it was, once the receiver is probed again).
    pub webhook_failed: u64,
    /// Webhook requests answered with 429 (also counted in `webhook_failed`).
    pub webhook_429: u64,
    /// Webhook requests in flight now.
    pub webhook_in_flight: u64,
    /// The most webhook requests that were in flight at once.
    pub webhook_in_flight_peak: u64,
}
