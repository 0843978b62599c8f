//! `mock-bot-api`: serve a mock Telegram Bot API on loopback until Ctrl-C.
//!
//! ```text
//! cargo run -p mock-bot-api -- --port 8081 --updates 100000 --text-bytes 256 --chats 50
//! cargo run -p mock-bot-api -- --rate 500 --live-updates 0 --server-error 0.05
//! MOCK_WEBHOOK_SECRET=s3cr3t cargo run -p mock-bot-api -- --updates 10000 \
//!     --webhook-url http://127.0.0.1:8443/hook --max-connections 8 --webhook-backoff-ms 50
//! ```

use std::time::Duration;

use clap::Parser;
use mock_bot_api::{
    BacklogSpec, DEFAULT_MAX_CONNECTIONS, DEFAULT_TOKEN, FaultRates, LiveSpec, Mix, MockConfig, MockServer, SendLimits,
    WebhookSpec, WebhookTiming,
};

/// Serve a Telegram Bot API-compatible mock on 127.0.0.1 until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "mock-bot-api", version)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 8081)]
    port: u16,
    /// Bot token clients must use.
    #[arg(long, default_value = DEFAULT_TOKEN)]
    token: String,
    /// Updates in the backlog generated at start.
    #[arg(long, default_value_t = 0)]
    updates: usize,
    /// Approximate text size of generated messages, in bytes.
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    /// Distinct chats generated updates are spread over.
    #[arg(long, default_value_t = 10)]
    chats: usize,
    /// Which chats and updates: varied (every kind), private-text or group-text (every
    /// update a text message, in private chats or in groups only).
    #[arg(long, default_value = "varied")]
    mix: Mix,
    /// Seed of the generator and of random faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Live mode: generate this many updates per second while clients poll.
    #[arg(long)]
    rate: Option<f64>,
    /// Live mode: stop after this many updates (0 = never).
    #[arg(long, default_value_t = 0)]
    live_updates: usize,
    /// Longest long-poll wait, in seconds.
    #[arg(long, default_value_t = 50)]
    max_poll_timeout: u64,
    /// Probability of a 429 per getUpdates call.
    #[arg(long, default_value_t = 0.0)]
    too_many_requests: f64,
    /// retry_after of random 429s, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after: u32,
    /// Probability of a 500/502 HTML page per getUpdates call.
    #[arg(long, default_value_t = 0.0)]
    server_error: f64,
    /// Probability of a truncated JSON body per getUpdates call.
    #[arg(long, default_value_t = 0.0)]
    malformed_json: f64,
    /// Probability of one broken update in a batch per getUpdates call.
    #[arg(long, default_value_t = 0.0)]
    malformed_update: f64,
    /// Probability of a dropped connection per getUpdates call.
    #[arg(long, default_value_t = 0.0)]
    drop_connection: f64,
    /// Probability of a slow answer per getUpdates call.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// Delay of slow answers, in milliseconds.
    #[arg(long, default_value_t = 200)]
    slow_ms: u64,
    /// Push updates to this webhook from the start, as if setWebhook had been called (any
    /// URL, http:// too).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Secret token sent as X-Telegram-Bot-Api-Secret-Token with every webhook request.
    #[arg(long, env = "MOCK_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Most webhook requests in flight at once (clamped to 1..=100).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: u32,
    /// Wait before retrying an update after its first failed webhook request, in
    /// milliseconds; it doubles with every further failure.
    #[arg(long, default_value_t = 1000)]
    webhook_backoff_ms: u64,
    /// Longest wait between two webhook attempts at one update, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    webhook_backoff_cap_ms: u64,
    /// How long one webhook request may take, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    webhook_timeout_ms: u64,
    /// How long without a delivered update before the webhook counts as down, in
    /// milliseconds; a refused connection makes it down at once.
    #[arg(long, default_value_t = 10_000)]
    webhook_down_after_ms: u64,
    /// While the webhook is down, the least time between two requests, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    webhook_probe_ms: u64,
    /// Enforce Telegram's send limits on sendMessage (30/s overall, 1/s per private chat,
    /// 20/min per group): past them it answers 429 with retry_after.
    #[arg(long)]
    send_limits: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let shape = |updates| BacklogSpec {
        updates,
        text_bytes: args.text_bytes,
        chats: args.chats,
        seed: args.seed,
        mix: args.mix,
    };
    let config = MockConfig {
        port: args.port,
        token: args.token.clone(),
        backlog: (args.updates > 0).then(|| shape(args.updates)),
        live: args.rate.map(|rate_per_sec| LiveSpec {
            rate_per_sec,
            spec: shape(args.live_updates),
        }),
        faults: FaultRates {
            too_many_requests: args.too_many_requests,
            retry_after_secs: args.retry_after,
            server_error: args.server_error,
            malformed_json: args.malformed_json,
            malformed_update: args.malformed_update,
            drop_connection: args.drop_connection,
            slow: args.slow,
            slow_ms: args.slow_ms,
        },
        seed: args.seed,
        max_poll_timeout: Duration::from_secs(args.max_poll_timeout),
        webhook: args.webhook_url.clone().map(|url| WebhookSpec {
            url,
            secret_token: args.webhook_secret.clone().filter(|s| !s.is_empty()),
            max_connections: args.max_connections,
        }),
        webhook_timing: WebhookTiming {
            base: Duration::from_millis(args.webhook_backoff_ms),
            cap: Duration::from_millis(args.webhook_backoff_cap_ms),
            request_timeout: Duration::from_millis(args.webhook_timeout_ms),
            down_after: Duration::from_millis(args.webhook_down_after_ms),
            probe_interval: Duration::from_millis(args.webhook_probe_ms),
        },
        send_limits: args.send_limits.then(SendLimits::default),
    };
    let server = MockServer::start(config).await?;
    println!("url: {}", server.url());
    println!("token: {}", server.token());
    println!("pending: {}", server.pending());
    if args.webhook_url.is_some() {
        // Not the URL itself: it often holds the bot's token.
        println!("webhook: set (max_connections {})", args.max_connections.clamp(1, 100));
    }
    tokio::signal::ctrl_c().await?;
    let stats = server.stats();
    println!(
        "served {} updates ({} duplicates) in {} getUpdates calls",
        stats.updates_served, stats.duplicates_served, stats.get_updates_calls
    );
    if stats.webhook_posts > 0 {
        println!(
            "webhook: {} requests, {} delivered, {} failed ({} with 429), at most {} at once",
            stats.webhook_posts,
            stats.webhook_delivered,
            stats.webhook_failed,
            stats.webhook_429,
            stats.webhook_in_flight_peak
        );
    }
    server.shutdown().await;
    Ok(())
}
