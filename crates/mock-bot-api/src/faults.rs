//! What can go wrong with a `getUpdates` call, and how often it goes wrong at random.
//!
//! Faults apply to `getUpdates` only. Each call first takes a pending conflict-window slot,
//! else the next scheduled fault (FIFO), else rolls the random [`FaultRates`].

use serde::{Deserialize, Serialize};

/// One misbehaviour of the server for one `getUpdates` call.
///
/// Serialized with an internal `kind` tag in snake_case, as `POST /control/inject` expects:
/// `{"kind":"too_many_requests","retry_after":3}`, `{"kind":"server_error","status":502}`,
/// `{"kind":"malformed_json"}`, `{"kind":"malformed_update"}`, `{"kind":"drop_connection"}`,
/// `{"kind":"slow","ms":250}`, `{"kind":"conflict"}`, `{"kind":"unauthorized"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// 429 with `parameters.retry_after`.
    TooManyRequests {
        /// Seconds the client is told to wait.
        retry_after: u32,
    },
    /// A proxy error page: `status` (500 or 502) with an HTML body.
    ServerError {
        /// HTTP status to answer with.
        status: u16,
    },
    /// 200 with the real response cut in half; nothing is confirmed.
    MalformedJson,
    /// 200 with valid JSON, but the middle update of the batch is replaced by a broken one
    /// that keeps its `update_id`. The call otherwise counts as a normal one.
    MalformedUpdate,
    /// Headers are sent, then the body fails: the client sees a network error.
    DropConnection,
    /// Wait `ms` milliseconds, then answer normally.
    Slow {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// 409, as when another bot instance polls.
    Conflict,
    /// 401, as when the token was revoked.
    Unauthorized,
}

impl Fault {
    /// The snake_case name this fault is counted under in
    /// [`Stats::faults`](crate::Stats::faults).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::TooManyRequests { .. } => "too_many_requests",
            Fault::ServerError { .. } => "server_error",
            Fault::MalformedJson => "malformed_json",
            Fault::MalformedUpdate => "malformed_update",
            Fault::DropConnection => "drop_connection",
            Fault::Slow { .. } => "slow",
            Fault::Conflict => "conflict",
            Fault::Unauthorized => "unauthorized",
        }
    }
}

/// Probabilities (0..=1) that a `getUpdates` call is hit by each random fault.
///
/// One uniform draw decides per call, against the cumulative sum in field order, so when
/// the probabilities add up to more than 1 the earlier ones win. Values outside 0..=1 are
/// clamped, NaN counts as 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRates {
    /// Probability of a 429.
    pub too_many_requests: f64,
    /// `retry_after` of random 429s, in seconds (default 1).
    pub retry_after_secs: u32,
    /// Probability of a 500 or 502 HTML page.
    pub server_error: f64,
    /// Probability of a truncated JSON body.
    pub malformed_json: f64,
    /// Probability of one broken update in an otherwise valid batch.
    pub malformed_update: f64,
    /// Probability of a connection dropped mid-response.
    pub drop_connection: f64,
    /// Probability of a slow answer.
    pub slow: f64,
    /// Delay of slow answers, in milliseconds (default 200).
    pub slow_ms: u64,
}

impl Default for FaultRates {
    fn default() -> Self {
        Self {
            too_many_requests: 0.0,
            retry_after_secs: 1,
            server_error: 0.0,
            malformed_json: 0.0,
            malformed_update: 0.0,
            drop_connection: 0.0,
            slow: 0.0,
            slow_ms: 200,
        }
    }
}

impl FaultRates {
    /// Rolls the dice once for one call.
    pub(crate) fn pick(&self, rng: &mut fastrand::Rng) -> Option<Fault> {
        let x = rng.f64();
        let mut acc = 0.0;
        let mut hit = |p: f64| {
            acc += if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
            x < acc
        };
        if hit(self.too_many_requests) {
            return Some(Fault::TooManyRequests {
                retry_after: self.retry_after_secs,
            });
        }
        if hit(self.server_error) {
            let status = if rng.bool() { 500 } else { 502 };
            return Some(Fault::ServerError { status });
        }
        if hit(self.malformed_json) {
            return Some(Fault::MalformedJson);
        }
        if hit(self.malformed_update) {
            return Some(Fault::MalformedUpdate);
        }
        if hit(self.drop_connection) {
            return Some(Fault::DropConnection);
        }
        if hit(self.slow) {
            return Some(Fault::Slow { ms: self.slow_ms });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rates_never_fault() {
        let mut rng = fastrand::Rng::with_seed(7);
        let rates = FaultRates::default();
        assert!((0..10_000).all(|_| rates.pick(&mut rng).is_none()));
    }

    #[test]
    fn certain_rate_always_faults_and_earlier_fields_win() {
        let mut rng = fastrand::Rng::with_seed(7);
        let rates = FaultRates {
            malformed_json: 1.0,
            slow: 1.0,
            ..FaultRates::default()
        };
        assert!((0..1000).all(|_| rates.pick(&mut rng) == Some(Fault::MalformedJson)));
    }

    #[test]
    fn rates_are_roughly_respected() {
        let mut rng = fastrand::Rng::with_seed(3);
        let rates = FaultRates {
            server_error: 0.25,
            ..FaultRates::default()
        };
        let hits = (0..20_000)
            .filter(|_| matches!(rates.pick(&mut rng), Some(Fault::ServerError { .. })))
            .count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
    }

    #[test]
    fn tag_representation_is_snake_case_kind() {
        let f: Vec<Fault> = serde_json::from_str(
            r#"[{"kind":"too_many_requests","retry_after":3},{"kind":"conflict"},{"kind":"slow","ms":5}]"#,
        )
        .unwrap();
        assert_eq!(
            f,
            [
                Fault::TooManyRequests { retry_after: 3 },
                Fault::Conflict,
                Fault::Slow { ms: 5 }
            ]
        );
        assert_eq!(f[0].kind(), "too_many_requests");
    }
}
