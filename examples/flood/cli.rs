//! The command-line contract (scripts and docs rely on it; keep it exact).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

pub(crate) use crate::policy_spec::PolicySpec;
pub(crate) use crate::size::Size;

/// Drain a Telegram-like backlog once per admission policy and compare memory and time.
///
/// With no arguments: starts an embedded mock Bot API server with 20000 updates and drains
/// it once per policy (unbounded, fixed:512, barrier:512, bytes:128MiB, rss:160MiB, auto,
/// custom), each in a fresh child process, then prints a table and writes a plot.
#[derive(Debug, Clone, Parser)]
#[command(name = "flood", version)]
pub(crate) struct Args {
    /// A policy to run: unbounded, fixed:C, barrier:N, bytes:SIZE, rss:SIZE, auto,
    /// custom[:SIZE[:RATE]]. Repeat for several; default: all seven.
    #[arg(long = "policy", value_name = "SPEC")]
    pub(crate) policies: Vec<PolicySpec>,
    /// Updates in the backlog (with --api-url: stop after this many).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub(crate) updates: usize,
    /// Approximate text size of each message, in bytes.
    #[arg(long = "text-bytes", value_name = "S", default_value_t = 1024)]
    pub(crate) text_bytes: usize,
    /// Distinct chats in the backlog.
    #[arg(long, value_name = "K", default_value_t = 100)]
    pub(crate) chats: usize,
    /// KiB of memory each handler touches and holds.
    #[arg(long = "work-kib", value_name = "W", default_value_t = 256)]
    pub(crate) work_kib: u64,
    /// Milliseconds each handler holds its memory.
    #[arg(long = "work-ms", value_name = "T", default_value_t = 200)]
    pub(crate) work_ms: u64,
    /// Fraction of updates that are stragglers (0..=1).
    #[arg(long = "slow-frac", value_name = "F", default_value_t = 0.0)]
    pub(crate) slow_frac: f64,
    /// How many times longer a straggler takes.
    #[arg(long = "slow-x", value_name = "X", default_value_t = 20.0)]
    pub(crate) slow_x: f64,
    /// Fraction of updates whose handler fails its first attempt (0..=1), after doing its
    /// work; they succeed when retried (--attempts).
    #[arg(long = "fail-frac", value_name = "F", default_value_t = 0.0)]
    pub(crate) fail_frac: f64,
    /// Fraction of updates whose handler fails every attempt (0..=1): with --spool they
    /// end in its dead-letter table.
    #[arg(long = "poison-frac", value_name = "F", default_value_t = 0.0)]
    pub(crate) poison_frac: f64,
    /// Runs of a failing handler per update, the first included (the runtime's retry).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) attempts: u32,
    /// Milliseconds before the first retry (doubling after each failed attempt, jittered).
    #[arg(long = "retry-ms", value_name = "MS", default_value_t = 100)]
    pub(crate) retry_ms: u64,
    /// When updates are acknowledged.
    #[arg(long, value_enum, default_value_t = DeliveryArg::Eager)]
    pub(crate) delivery: DeliveryArg,
    /// Handle updates of the same chat one at a time, in order.
    #[arg(long)]
    pub(crate) ordered: bool,
    /// Drain this Bot API-compatible server instead of the embedded one.
    #[arg(long = "api-url", value_name = "URL", requires = "token")]
    pub(crate) api_url: Option<String>,
    /// The bot token for --api-url (or the TELEGRAM_BOT_TOKEN environment variable, which
    /// keeps it out of the process list).
    #[arg(long, value_name = "TOKEN", env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Append each handled update_id to this file, one per line, before the update
    /// counts as finished.
    #[arg(long, value_name = "PATH")]
    pub(crate) ledger: Option<PathBuf>,
    /// Print one JSON object per policy run on stdout (and nothing else there).
    #[arg(long)]
    pub(crate) json: bool,
    /// With --delivery at-least-once: spool updates durably in DIR (pollgate-spool) and
    /// confirm them to the server once committed, instead of once handled.
    #[arg(long, value_name = "DIR")]
    pub(crate) spool: Option<PathBuf>,
    /// How updates arrive: polling (getUpdates) or webhook (the server pushes; with the
    /// embedded server it is set to push to a listener of each run, max_connections 100).
    #[arg(long, value_enum, default_value_t = TransportArg::Polling)]
    pub(crate) transport: TransportArg,
    /// With --transport webhook: listen on ADDR for an outside sender instead of the
    /// embedded server (path /, secret from TELEGRAM_WEBHOOK_SECRET if set); each run stops
    /// after --updates handled or 5 s without a request.
    #[arg(long, value_name = "ADDR")]
    pub(crate) webhook_listen: Option<std::net::SocketAddr>,
    /// Serve the runtime's metrics in Prometheus' text format at http://ADDR/metrics while
    /// each run goes (runs are one after the other, so each serves in turn); every series
    /// carries a `policy` label.
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Seed of the generated backlog.
    #[arg(long, default_value_t = 1, hide = true)]
    pub(crate) seed: u64,
    /// Internal: run one policy in this process (the parent starts children with it).
    #[arg(long, hide = true)]
    pub(crate) child: bool,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportArg {
    /// `getUpdates` long polling.
    Polling,
    /// The server posts each update to a listener (`pollgate-webhook`).
    Webhook,
}

/// `--delivery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeliveryArg {
    /// Acknowledge on fetch.
    Eager,
    /// Acknowledge once handled.
    AtLeastOnce,
}

impl Args {
    /// Checks what clap cannot; the message goes to the user with exit code 2.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.updates == 0 {
            return Err("--updates must be at least 1".into());
        }
        if self.chats == 0 {
            return Err("--chats must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.slow_frac) {
            return Err(format!("--slow-frac must be within 0..=1, got {}", self.slow_frac));
        }
        for (flag, f) in [("--fail-frac", self.fail_frac), ("--poison-frac", self.poison_frac)] {
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("{flag} must be within 0..=1, got {f}"));
            }
        }
        if self.attempts == 0 {
            return Err("--attempts must be at least 1".into());
        }
        if !(self.slow_x.is_finite() && self.slow_x >= 1.0) {
            return Err(format!("--slow-x must be at least 1, got {}", self.slow_x));
        }
        if self.spool.is_some()
            && (self.delivery != DeliveryArg::AtLeastOnce || self.transport != TransportArg::Polling)
        {
            return Err("--spool needs --delivery at-least-once and polling".into());
        }
        if self.webhook_listen.is_some() && self.transport != TransportArg::Webhook {
            return Err("--webhook-listen needs --transport webhook".into());
        }
        if self.webhook_listen.is_some() && self.api_url.is_some() {
            return Err("--webhook-listen and --api-url exclude each other: an outside sender pushes".into());
        }
        if self.child && self.policies.len() != 1 {
            return Err("--child runs exactly one --policy".into());
        }
        for p in &self.policies {
            if let PolicySpec::Rss(b) = p
                && *b < 16 << 20
            {
                return Err(format!("rss:{} is below the 16MiB a process needs to start", Size(*b)));
            }
        }
        Ok(())
    }

    /// The policies to run (the default set when none is given).
    pub(crate) fn policies(&self) -> Vec<PolicySpec> {
        if !self.policies.is_empty() {
            return self.policies.clone();
        }
        vec![
            PolicySpec::Unbounded,
            PolicySpec::Fixed(512),
            PolicySpec::Barrier(512),
            PolicySpec::Bytes(128 << 20),
            PolicySpec::Rss(160 << 20),
            PolicySpec::Auto,
            PolicySpec::Custom {
                budget: 128 << 20,
                rate: 5000.0,
            },
        ]
    }

    /// Bytes each handler holds.
    pub(crate) fn work_bytes(&self) -> u64 {
        self.work_kib * 1024
    }
}
