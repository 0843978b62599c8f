//! A real bot: replies to every text message with the same text, through pollgate.
//!
//! ```text
//! TELEGRAM_BOT_TOKEN=123456:ABC... cargo run --example echo_bot
//! ```
//!
//! `TELEGRAM_API_URL` points it at another Bot API-compatible server (a local Bot API
//! server, or `cargo run -p mock-bot-api`). Ctrl-C or SIGTERM drains the handlers and
//! confirms the offset, so a restart neither loses nor repeats a reply (a second one stops
//! at once).
//!
//! The policy is a concurrency cap and a byte budget together; delivery is at-least-once
//! and updates of one chat are answered in order.

#[path = "shared/logging.rs"]
mod logging;

use std::error::Error;
use std::time::Duration;

use pollgate::runtime::RuntimeBuilder;
use pollgate::{ByteBudget, Delivery, Fixed, Handler, Runtime, TelegramTransport, Update, all_of};
use serde::Deserialize;

/// The part of an update this bot reads.
#[derive(Deserialize)]
struct Incoming {
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    message_id: i64,
    chat: Chat,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

/// The Bot API's answer to `sendMessage`.
#[derive(Deserialize)]
struct Reply {
    ok: bool,
    description: Option<String>,
    parameters: Option<ReplyParameters>,
}

#[derive(Deserialize)]
struct ReplyParameters {
    retry_after: Option<u64>,
}

type BoxError = Box<dyn Error + Send + Sync>;

/// The bot against `api_url`, ready to build: say how it stops (`shutdown_on_signals`, or
/// a token) and run it.
pub(crate) fn bot(api_url: &str, token: &str) -> Result<RuntimeBuilder<TelegramTransport, impl Handler>, BoxError> {
    let transport = TelegramTransport::builder(token)
        .api_url(api_url)
        .allowed_updates(["message"])
        .build()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let send_url = reqwest::Url::parse(&format!("{api_url}/bot{token}/sendMessage"))?;
    let handler = move |update: Update| {
        let (client, send_url) = (client.clone(), send_url.clone());
        async move {
            let Incoming { message: Some(message) } = update.parse::<Incoming>()? else {
                return Ok::<(), BoxError>(());
            };
            let Some(text) = message.text else {
                return Ok(());
            };
            let body = serde_json::json!({
                "chat_id": message.chat.id,
                "text": text,
                "reply_parameters": { "message_id": message.message_id },
            });
            // Telegram limits bots to about 30 messages a second: honour one 429.
            let mut why = String::new();
            for _ in 0..2 {
                let response = client
                    .post(send_url.clone())
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.without_url())?;
                let reply: Reply = response.json().await.map_err(|e| e.without_url())?;
                if reply.ok {
                    return Ok(());
                }
                why = reply.description.unwrap_or_default();
                match reply.parameters.and_then(|p| p.retry_after) {
                    Some(wait) => tokio::time::sleep(Duration::from_secs(wait)).await,
                    None => break,
                }
            }
            Err(format!("sendMessage failed for update {}: {why}", update.id()).into())
        }
    };
    Ok(Runtime::builder(transport, handler)
        .policy(all_of(Fixed::new(32), ByteBudget::new(64 << 20)))
        .cost_fn(|u| 64 * 1024 + u.size() as u64) // an HTTP request's buffers per reply
        .delivery(Delivery::AtLeastOnce)
        .ordered(true))
}

#[allow(dead_code)] // the integration test includes this file for `bot` only
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    logging::init_tracing("info");
    let token = std::env::var("TELEGRAM_BOT_TOKEN").map_err(|_| "set TELEGRAM_BOT_TOKEN to your bot's token")?;
    let api_url = std::env::var("TELEGRAM_API_URL").unwrap_or_else(|_| pollgate::transport::DEFAULT_API_URL.to_owned());
    let summary = bot(&api_url, &token)?.shutdown_on_signals().build().run().await?;
    println!(
        "replied to {} updates ({} failed); offset {:?} confirmed",
        summary.stats.completed, summary.stats.failed, summary.confirmed_offset
    );
    Ok(())
}
