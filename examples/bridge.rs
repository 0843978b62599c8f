//! The bridge: Telegram `getUpdates` → a Redis stream, for N workers to share.
//!
//! ```text
//! TELEGRAM_BOT_TOKEN=… cargo run --release --example bridge -- --redis-url redis://127.0.0.1:6379
//! ```
//!
//! `getUpdates` allows one consumer per bot, so the bridge is that consumer: it runs the
//! ordinary pollgate runtime in at-least-once mode with a handler that appends each update
//! to the stream (`XADD`) and returns once Redis stored it. The Telegram offset therefore
//! passes an update only after Redis accepted it; a bridge killed at any moment loses
//! nothing, and after a restart appends at most the unconfirmed updates again (the
//! workers are at-least-once anyway). Appends from concurrent handlers share one
//! multiplexed connection, so they are pipelined; per-chat ordering (`ordered`) keeps
//! each chat's updates in stream order.
//!
//! An append that fails for good (Redis refuses it) is never confirmed to Telegram: the
//! bridge stops, the update stays unfinished, and it is fetched again on the next start.
//! `--max-len` caps the stream (`MAXLEN ~`); it is off by default, since a cap deletes
//! entries whether or not a worker handled them.

// `pub(crate)`: scale_out, which includes this file as a module, logs through it too (a
// second `mod` of the same file there would compile it twice).
#[path = "shared/logging.rs"]
pub(crate) mod logging;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use pollgate::transport::TelegramTransport;
use pollgate::{Delivery, Fixed, Runtime, Update};
use pollgate_redis::{ShardedProducer, StreamProducer};
use tokio_util::sync::CancellationToken;

/// Bridge Telegram `getUpdates` to a Redis stream (the bot token is read from
/// `TELEGRAM_BOT_TOKEN`).
#[derive(Debug, Clone, Parser)]
#[command(name = "bridge", version)]
pub(crate) struct BridgeArgs {
    /// The Bot API server.
    #[arg(long, default_value = pollgate::transport::DEFAULT_API_URL)]
    pub(crate) api_url: String,
    /// The Redis server (`redis://[:password@]host:port[/db]`); prefer the environment
    /// variable, which `ps` does not show.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: String,
    /// The stream to append to.
    #[arg(long, default_value = "pollgate:updates")]
    pub(crate) stream: String,
    /// Cap the stream at about this many entries (`XADD … MAXLEN ~ N`); off by default.
    #[arg(long)]
    pub(crate) max_len: Option<usize>,
    /// Appends in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Stop (gracefully, offset confirmed) after this many updates were appended.
    #[arg(long)]
    pub(crate) stop_after: Option<u64>,
    /// Append each chat's updates to one of this many shard streams
    /// (`{stream}:shard:N`, by a hash of the chat id), for workers that keep per-chat
    /// order (`pollgate_redis::ShardedStreamTransport`).
    #[arg(long, value_name = "S")]
    pub(crate) shards: Option<u32>,
}

/// Where the bridge appends: one stream, or shard streams.
enum Appender {
    One(StreamProducer),
    Sharded(ShardedProducer),
}

impl Appender {
    async fn add(&self, update: &Update) -> Result<(), pollgate_redis::RedisTransportError> {
        match self {
            Appender::One(p) => p.add(update).await.map(drop),
            Appender::Sharded(p) => p.add(update).await.map(drop),
        }
    }

    fn added(&self) -> u64 {
        match self {
            Appender::One(p) => p.added(),
            Appender::Sharded(p) => p.added(),
        }
    }
}

/// What a bridge run did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BridgeReport {
    pub(crate) appended: u64,
    pub(crate) elapsed: Duration,
}

/// Runs the bridge until `stop` is cancelled, SIGTERM or SIGINT arrives (a second one
/// aborts the drain), or `--stop-after` is reached.
pub(crate) async fn run_bridge(
    args: &BridgeArgs,
    token: String,
    stop: CancellationToken,
) -> Result<BridgeReport, String> {
    let started = Instant::now();
    let transport = TelegramTransport::builder(token)
        .api_url(&args.api_url)
        .build()
        .map_err(|e| format!("bridge: {e}"))?;
    if args.shards.is_some() && args.max_len.is_some() {
        return Err(
            "bridge: --max-len does not apply to shard streams (the workers trim them \
             below what they have acknowledged)"
                .into(),
        );
    }
    let producer = match args.shards {
        Some(shards) => Appender::Sharded(
            ShardedProducer::builder(&args.redis_url, &args.stream)
                .shards(shards)
                .build()
                .map_err(|e| format!("bridge: {e}"))?,
        ),
        None => {
            let mut producer = StreamProducer::builder(&args.redis_url, &args.stream);
            if let Some(n) = args.max_len {
                producer = producer.max_len_approx(n);
            }
            Appender::One(producer.build().map_err(|e| format!("bridge: {e}"))?)
        }
    };
    let producer = Arc::new(producer);
    let failed = Arc::new(AtomicBool::new(false));
    let runtime = Runtime::builder(transport, {
        let (producer, stop, failed) = (Arc::clone(&producer), stop.clone(), Arc::clone(&failed));
        move |update: Update| {
            let (producer, stop, failed) = (Arc::clone(&producer), stop.clone(), Arc::clone(&failed));
            async move {
                if let Err(e) = producer.add(&update).await {
                    // Never let the runtime count this update as finished: it would
                    // confirm the offset past an update Redis does not have. Stop, and
                    // stay unfinished until the drain deadline gives up on it.
                    tracing::error!(update_id = update.id(), error = %e, "append failed; stopping the bridge");
                    failed.store(true, Ordering::Release);
                    stop.cancel();
                    std::future::pending::<()>().await;
                }
                Ok::<(), std::io::Error>(())
            }
        }
    })
    .policy(Fixed::new(args.concurrency.max(1)))
    .delivery(Delivery::AtLeastOnce)
    .ordered(true)
    .drain_deadline(Duration::from_secs(10))
    .shutdown(stop.clone())
    .shutdown_on_signals()
    .build();
    if let Some(n) = args.stop_after {
        let stop = stop.clone();
        let producer = Arc::clone(&producer);
        tokio::spawn(async move {
            while producer.added() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.cancel();
        });
    }
    let summary = runtime.run().await.map_err(|e| format!("bridge: {e}"))?;
    if failed.load(Ordering::Acquire) {
        return Err(format!(
            "bridge: an append failed; {} update(s) left unconfirmed on the Bot API server",
            summary.unfinished.len()
        ));
    }
    if let Some(e) = summary.flush_error {
        return Err(format!("bridge: could not confirm the final offset: {e}"));
    }
    Ok(BridgeReport {
        appended: producer.added(),
        elapsed: started.elapsed(),
    })
}

#[allow(dead_code)] // unused where this file is a module of scale_out
fn main() -> std::process::ExitCode {
    let args = BridgeArgs::parse();
    logging::init_tracing("info");
    let Ok(token) = std::env::var("TELEGRAM_BOT_TOKEN") else {
        eprintln!("bridge: set TELEGRAM_BOT_TOKEN");
        return std::process::ExitCode::from(2);
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        // SIGTERM or Ctrl-C drains it (`shutdown_on_signals` in `run_bridge`).
        run_bridge(&args, token, CancellationToken::new()).await
    });
    match result {
        Ok(r) => {
            eprintln!(
                "bridge: appended {} updates in {:.1} s",
                r.appended,
                r.elapsed.as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
