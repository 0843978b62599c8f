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

#[path = "shared/bridge.rs"]
mod bridge;
#[path = "shared/logging.rs"]
mod logging;

use bridge::*;
use clap::Parser;
use tokio_util::sync::CancellationToken;

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
