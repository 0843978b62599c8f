//! A teloxide bot under pollgate: `/start` and `/help`, an echo of each text message as a
//! reply to it, and one piece of per-chat state (how many messages the chat sent).
//!
//! ```text
//! TELEGRAM_BOT_TOKEN=... cargo run --release --example teloxide_bot -- --policy auto
//! cargo run -p mock-bot-api -- --port 8081 --updates 1500 --chats 50 --send-limits &
//! TELEGRAM_BOT_TOKEN=123456:TEST cargo run --release --example teloxide_bot -- \
//!     --api-url http://127.0.0.1:8081 --policy fixed:64 --exit-when-idle 3 --json
//! ```
//!
//! Replies keep within Telegram's send limits: each text message's send slot is booked
//! before its update is admitted (`pollgate_teloxide::SendLimiter::pacer`), so a handler
//! starts when it can reply and never holds its permit waiting for a slot.
//! `--pacing limiter-in-handler` waits in the handler instead; `--pacing throttle` uses
//! teloxide's `Throttle` adaptor. `--dispatcher` runs the same handler tree on teloxide's own `Dispatcher`, for comparison (`docs/teloxide.md`).
//!
//! With `--json` it prints one line at exit: `handled` (updates that reached the tree),
//! `replies` (messages sent), `retry_after_hits` (sends Telegram refused with 429),
//! `peak_rss_bytes` and `drain_s` (from the start to the last update handled or reply
//! sent); also `max_in_tree`, the most updates in the handler tree at once, and
//! `stale_bookings` (`SendLimiter::stale_bookings`).

#[path = "shared/logging.rs"]
mod logging;
#[path = "shared/policy_spec.rs"]
mod policy_spec;
#[path = "shared/proc_mem.rs"]
mod proc_mem;
#[path = "shared/size.rs"]
#[allow(dead_code)] // the parser only
mod size;
#[path = "shared/token_bucket.rs"]
mod token_bucket;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use parking_lot::Mutex;
use pollgate::{AdmissionPolicy, Barrier, ByteBudget, Fixed, Retry, RssAdaptive, Runtime, TelegramTransport, all_of};
use pollgate_teloxide::{SendLimiter, TeloxideHandler};
use teloxide::RequestError;
use teloxide::adaptors::Throttle;
use teloxide::adaptors::throttle::Limits;
use teloxide::dispatching::UpdateHandler;
use teloxide::dptree::di::DependencyMap;
use teloxide::prelude::*;
use teloxide::types::ReplyParameters;
use teloxide::utils::command::BotCommands;

use crate::policy_spec::{PolicySpec, Unbounded};

/// A teloxide echo bot whose updates pollgate admits.
#[derive(Debug, Parser)]
#[command(name = "teloxide_bot")]
struct Args {
    /// The Bot API server (the token comes from TELEGRAM_BOT_TOKEN).
    #[arg(long, value_name = "URL", default_value = "https://api.telegram.org")]
    api_url: String,
    /// The admission policy, as the flood demo's --policy.
    #[arg(long, value_name = "SPEC", default_value = "auto")]
    policy: PolicySpec,
    /// Exit after this many seconds with nothing to do.
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<f64>,
    /// Memory each text message's handler holds while it runs (e.g. 1MiB), as a real
    /// handler's working set: shows what waiting for a send slot inside a handler costs.
    #[arg(long, value_name = "SIZE")]
    handler_bytes: Option<size::Size>,
    /// Print one JSON line at exit.
    #[arg(long)]
    json: bool,
    /// Run the tree on teloxide's own Dispatcher instead of pollgate (for comparison).
    #[arg(long)]
    dispatcher: bool,
    /// How replies keep within Telegram's send limits: pollgate's `SendLimiter` (each
    /// limit where Telegram applies it) or teloxide's `Throttle` adaptor.
    #[arg(long, value_enum, default_value_t = Pacing::Limiter)]
    pacing: Pacing,
}

/// `--pacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Pacing {
    /// `pollgate_teloxide::SendLimiter`: a reply's slot is booked before its update is
    /// admitted (the runtime's pacer; with --dispatcher, which admits everything, the
    /// handler waits for its slot instead).
    Limiter,
    /// `pollgate_teloxide::SendLimiter` waited for in the handler, before each send (for
    /// comparison: the handler holds its permit while it waits).
    LimiterInHandler,
    /// teloxide's `Throttle` adaptor around the bot.
    Throttle,
}

#[derive(BotCommands, Clone)]
#[command(rename_rule = "lowercase", description = "This bot echoes what you write.")]
enum Command {
    /// Start talking.
    Start,
    /// Show this help.
    Help,
}

/// What the handlers did, and the per-chat state.
#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    /// Updates whose branch returned (handled or failed).
    done: AtomicU64,
    replies: AtomicU64,
    retry_after_hits: AtomicU64,
    /// When the last update was handled, in ms since the start.
    last_ms: AtomicU64,
    /// The most updates in the tree at once.
    max_in_tree: AtomicU64,
    per_chat: Mutex<HashMap<ChatId, u64>>,
    started: Option<Instant>,
    /// `--handler-bytes`.
    handler_bytes: usize,
}

impl Counters {
    /// An update's branch returned.
    fn finish(&self, result: Result<(), RequestError>) -> Result<(), RequestError> {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.touch();
        result
    }

    /// The memory a handler holds while it runs (`--handler-bytes`), touched.
    fn working_set(&self) -> Vec<u8> {
        vec![1; self.handler_bytes]
    }

    /// Updates in the tree now.
    fn in_flight(&self) -> u64 {
        self.handled
            .load(Ordering::Relaxed)
            .saturating_sub(self.done.load(Ordering::Relaxed))
    }

    /// Records activity now (an update handled, a reply sent).
    fn touch(&self) {
        if let Some(started) = self.started {
            self.last_ms
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// Counts a send's outcome (a 429 separately) and passes it on.
async fn counted<T>(c: &Counters, sent: Result<T, RequestError>) -> Result<(), RequestError> {
    match sent {
        Ok(_) => {
            c.replies.fetch_add(1, Ordering::Relaxed);
            c.touch();
            Ok(())
        }
        Err(e) => {
            if matches!(e, RequestError::RetryAfter(_)) {
                c.retry_after_hits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
    }
}

/// The handler tree, for a bot of type `B` (`Bot`, or `Throttle<Bot>`); with a
/// `SendLimiter` among the dependencies each reply waits for its slot first.
fn tree<B>() -> UpdateHandler<RequestError>
where
    B: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    B::SendMessage: Send,
{
    let commands = teloxide::filter_command::<Command, _>().endpoint(
        |bot: B, msg: Message, cmd: Command, c: Arc<Counters>, pace: Arc<Option<Arc<SendLimiter>>>| async move {
            let _working_set = c.working_set();
            let text = match cmd {
                Command::Start => "Hello! Write anything and I will echo it.".to_owned(),
                Command::Help => Command::descriptions().to_string(),
            };
            if let Some(limiter) = &*pace {
                limiter.acquire(msg.chat.id.0).await;
            }
            let sent = counted(&c, bot.send_message(msg.chat.id, text).await).await;
            c.finish(sent)
        },
    );
    let echo = dptree::filter_map(|msg: Message| msg.text().map(str::to_owned)).endpoint(
        |bot: B, msg: Message, text: String, c: Arc<Counters>, pace: Arc<Option<Arc<SendLimiter>>>| async move {
            let _working_set = c.working_set();
            let n = {
                let mut chats = c.per_chat.lock();
                let n = chats.entry(msg.chat.id).or_default();
                *n += 1;
                *n
            };
            if let Some(limiter) = &*pace {
                limiter.acquire(msg.chat.id.0).await;
            }
            let reply = bot
                .send_message(msg.chat.id, format!("#{n}: {text}"))
                .reply_parameters(ReplyParameters::new(msg.id))
                .await;
            let sent = counted(&c, reply).await;
            c.finish(sent)
        },
    );
    // Everything else (other update kinds, messages without text) ends here.
    let rest = dptree::endpoint(|c: Arc<Counters>| async move { c.finish(Ok(())) });
    dptree::entry()
        .branch(Update::filter_message().branch(commands).branch(echo))
        .branch(rest)
}

/// Counts every update that reaches the tree, then runs it.
fn counting_tree<B>(c: Arc<Counters>) -> UpdateHandler<RequestError>
where
    B: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    B::SendMessage: Send,
{
    dptree::entry()
        .inspect(move |_: Update| {
            c.handled.fetch_add(1, Ordering::Relaxed);
            c.max_in_tree.fetch_max(c.in_flight(), Ordering::Relaxed);
            c.touch();
        })
        .chain(tree::<B>())
}

fn policy(spec: PolicySpec) -> Arc<dyn AdmissionPolicy> {
    match spec {
        PolicySpec::Unbounded => Arc::new(Unbounded),
        PolicySpec::Fixed(c) => Arc::new(Fixed::new(c)),
        PolicySpec::Barrier(n) => Arc::new(Barrier::new(n)),
        PolicySpec::Bytes(b) => Arc::new(ByteBudget::new(b)),
        PolicySpec::Rss(b) => Arc::new(RssAdaptive::builder(b).build()),
        PolicySpec::Auto => Arc::new(RssAdaptive::auto().build()),
        PolicySpec::Custom { budget, rate } => Arc::new(all_of(
            ByteBudget::new(budget),
            token_bucket::TokenBucket::new(rate, (rate / 10.0).max(1.0)),
        )),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init_tracing("warn");
    let args = Args::parse();
    let token = std::env::var("TELEGRAM_BOT_TOKEN").map_err(|_| "set TELEGRAM_BOT_TOKEN")?;
    let bot = Bot::new(&token).set_api_url(args.api_url.parse()?);
    let started = Instant::now();
    let counters = Arc::new(Counters {
        started: Some(started),
        handler_bytes: usize::try_from(args.handler_bytes.map_or(0, |s| s.0))?,
        ..Counters::default()
    });
    let stop = pollgate::CancellationToken::new();
    let idle = args.exit_when_idle.map(Duration::from_secs_f64);
    let watch = tokio::spawn(exit_when_idle(Arc::clone(&counters), started, idle, stop.clone()));
    let mut stale = None;
    match args.pacing {
        Pacing::Limiter | Pacing::LimiterInHandler => {
            let limiter = Arc::new(SendLimiter::telegram());
            let deps = dptree::deps![Arc::clone(&counters), Arc::new(Some(Arc::clone(&limiter)))];
            let book = (args.pacing == Pacing::Limiter).then_some(Arc::clone(&limiter));
            let tree = counting_tree::<Bot>(Arc::clone(&counters));
            serve(&args, token, bot, tree, deps, book, stop).await?;
            stale = Some(limiter.stale_bookings());
        }
        Pacing::Throttle => {
            let deps = dptree::deps![Arc::clone(&counters), Arc::new(None::<Arc<SendLimiter>>)];
            let bot = bot.throttle(Limits::default());
            let tree = counting_tree::<Throttle<Bot>>(Arc::clone(&counters));
            serve(&args, token, bot, tree, deps, None, stop).await?;
        }
    }
    watch.abort();
    if args.json {
        let (_, peak) = proc_mem::rss_and_peak();
        println!(
            "{}",
            serde_json::json!({
                "handled": counters.handled.load(Ordering::Relaxed),
                "replies": counters.replies.load(Ordering::Relaxed),
                "retry_after_hits": counters.retry_after_hits.load(Ordering::Relaxed),
                "peak_rss_bytes": peak,
                "drain_s": counters.last_ms.load(Ordering::Relaxed) as f64 / 1e3,
                "mode": if args.dispatcher { "dispatcher" } else { "pollgate" },
                "max_in_tree": counters.max_in_tree.load(Ordering::Relaxed),
                "stale_bookings": stale,
                "pacing": args.pacing.to_possible_value().map(|v| v.get_name().to_owned()),
                "policy": args.policy.to_string(),
            })
        );
    }
    Ok(())
}

/// Runs the tree on pollgate (or, with `--dispatcher`, on teloxide's Dispatcher) until
/// `stop`; with `book`, each text message's send slot is booked before it is admitted.
async fn serve<B>(
    args: &Args,
    token: String,
    bot: B,
    tree: UpdateHandler<RequestError>,
    deps: DependencyMap,
    book: Option<Arc<SendLimiter>>,
    stop: pollgate::CancellationToken,
) -> Result<(), Box<dyn std::error::Error>>
where
    B: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    B::GetUpdates: Send,
{
    if args.dispatcher {
        let mut dispatcher = Dispatcher::builder(bot, tree).dependencies(deps).build();
        let token = dispatcher.shutdown_token();
        let stopping = tokio::spawn(async move {
            stop.cancelled().await;
            if let Ok(done) = token.shutdown() {
                done.await;
            }
        });
        dispatcher.dispatch().await;
        let _ = stopping.await;
        return Ok(());
    }
    let handler = TeloxideHandler::new(bot, tree, deps).await?;
    let transport = TelegramTransport::builder(token)
        .api_url(args.api_url.clone())
        .build()?;
    let mut runtime = Runtime::builder(transport, handler)
        .shared_policy(policy(args.policy))
        .ordered(true)
        // A 429 that slips through fails its handler: run it again, holding its chat.
        .retry(Retry::attempts(5).initial_backoff(Duration::from_secs(1)))
        .shutdown(stop)
        .shutdown_on_signals();
    if let Some(limiter) = book {
        runtime = runtime.pacer(limiter.pacer(replies_to));
    }
    runtime.build().run().await?;
    Ok(())
}

/// The chat a reply to `update` goes to: text messages (echoes and commands) are
/// answered, nothing else is.
fn replies_to(update: &pollgate::Update) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        message: Option<Message>,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        chat: Chat,
        text: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Chat {
        id: i64,
    }
    let message = update.parse::<Probe>().ok()?.message?;
    message.text.map(|_| message.chat.id)
}

/// Cancels `stop` once nothing is in the tree and nothing happened for `idle` (never
/// without `idle`).
async fn exit_when_idle(c: Arc<Counters>, started: Instant, idle: Option<Duration>, stop: pollgate::CancellationToken) {
    let Some(idle) = idle else { return };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let last = Duration::from_millis(c.last_ms.load(Ordering::Relaxed));
        if c.in_flight() == 0 && started.elapsed().saturating_sub(last) >= idle {
            stop.cancel();
            return;
        }
    }
}
