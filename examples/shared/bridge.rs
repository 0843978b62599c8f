//! The bridge's body, shared by the `bridge` example (`examples/bridge.rs`, which says
//! what it does and why) and `scale_out`, which runs it as one of its processes.

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
#[allow(dead_code)] // scale_out reports its own totals
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
        .map_err(|e| format!("bridge: {}", pollgate::transport::ErrorChain(&e)))?;
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
                .map_err(|e| format!("bridge: {}", pollgate::transport::ErrorChain(&e)))?,
        ),
        None => {
            let mut producer = StreamProducer::builder(&args.redis_url, &args.stream);
            if let Some(n) = args.max_len {
                producer = producer.max_len_approx(n);
            }
            Appender::One(
                producer
                    .build()
                    .map_err(|e| format!("bridge: {}", pollgate::transport::ErrorChain(&e)))?,
            )
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
                    tracing::error!(update_id = update.id(), error = %pollgate::transport::ErrorChain(&e), "append failed; stopping the bridge");
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
    let summary = runtime
        .run()
        .await
        .map_err(|e| format!("bridge: {}", pollgate::transport::ErrorChain(&e)))?;
    if failed.load(Ordering::Acquire) {
        return Err(format!(
            "bridge: an append failed; {} update(s) left unconfirmed on the Bot API server",
            summary.unfinished.len()
        ));
    }
    if let Some(e) = summary.flush_error {
        return Err(format!(
            "bridge: could not confirm the final offset: {}",
            pollgate::transport::ErrorChain(&e)
        ));
    }
    Ok(BridgeReport {
        appended: producer.added(),
        elapsed: started.elapsed(),
    })
}
