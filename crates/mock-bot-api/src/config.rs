//! Configuration of a mock server: where it listens, what it serves and how it misbehaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::FaultRates;

/// The token a [`MockConfig`] uses unless told otherwise.
pub const DEFAULT_TOKEN: &str = "123456:TEST-token";

/// Everything [`MockServer::start`](crate::MockServer::start) needs to know.
///
/// Build it with struct update syntax from [`MockConfig::default`]:
/// `MockConfig { backlog: Some(BacklogSpec::default()), ..MockConfig::default() }`.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Port on 127.0.0.1 to bind; 0 picks a free one.
    pub port: u16,
    /// The bot token clients must put in `/bot{token}/{method}`. The part before `:` is the
    /// bot's user id in `getMe` when it is a number.
    pub token: String,
    /// A backlog generated before the server accepts its first request.
    pub backlog: Option<BacklogSpec>,
    /// Updates generated in the background at a steady rate while clients poll.
    pub live: Option<LiveSpec>,
    /// Random fault probabilities applied to every `getUpdates` call.
    pub faults: FaultRates,
    /// Seed of the random source that decides random faults.
    pub seed: u64,
    /// The longest a long poll waits, whatever `timeout` the client asks for.
    pub max_poll_timeout: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            port: 0,
            token: DEFAULT_TOKEN.to_owned(),
            backlog: None,
            live: None,
            faults: FaultRates::default(),
            seed: 1,
            max_poll_timeout: Duration::from_secs(50),
        }
    }
}

/// The shape of a batch of generated updates.
///
/// Generation is deterministic: the same spec yields the same update bodies (only the
/// `update_id`s depend on what the server already holds). Out-of-range values are clamped
/// rather than rejected: `chats` to `1..=1_000_000`, `text_bytes` to at most 1 MiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BacklogSpec {
    /// How many updates to generate.
    pub updates: usize,
    /// Approximate size in bytes of each message text.
    pub text_bytes: usize,
    /// How many distinct chats the updates are spread over.
    pub chats: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for BacklogSpec {
    fn default() -> Self {
        Self {
            updates: 1000,
            text_bytes: 64,
            chats: 10,
            seed: 1,
        }
    }
}

/// Live mode: generated updates arrive at a steady rate while clients poll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveSpec {
    /// Updates per second; a value that is not a positive finite number disables live mode.
    pub rate_per_sec: f64,
    /// Shape of the generated updates; `updates` is how many to push before stopping
    /// (0 = never stop).
    pub spec: BacklogSpec,
}
