//! A user-written admission policy, plugged in through the public trait only: a
//! token-bucket rate cap (at most `rate` handler starts per second, bursts up to
//! `burst`), composed with a byte budget so memory stays bounded too.
//!
//! Why a rate cap: the handler calls a downstream API with its own rate limit (Telegram's
//! `sendMessage` allows about 30 messages per second per bot). Admitting faster than that
//! only makes handlers wait inside the API client while holding memory.
//!
//! ```text
//! cargo run --example custom_policy
//! ```
//!
//! The flood demo uses the same policy for its `custom` run.

#[path = "shared/token_bucket.rs"]
mod token_bucket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use token_bucket::TokenBucket;

#[tokio::main]
async fn main() {
    use pollgate::transport::InMemoryTransport;
    use pollgate::{ByteBudget, Runtime, Update, all_of};

    // 300 updates in memory; handlers hold 1 MiB each for 10 ms.
    let updates = (1..=300).map(|id| {
        Update::from_json(&format!(
            r#"{{"update_id":{id},"message":{{"chat":{{"id":{}}}}}}}"#,
            id % 7
        ))
        .unwrap()
    });
    let transport = Arc::new(InMemoryTransport::with_updates(updates));
    let policy = all_of(ByteBudget::new(64 << 20), TokenBucket::new(200.0, 20.0));
    let runtime = Runtime::builder(Arc::clone(&transport), |_u: Update| async {
        let buf = vec![1u8; 1 << 20];
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::hint::black_box(buf);
        Ok::<(), std::convert::Infallible>(())
    })
    .policy(policy)
    .cost_fn(|_| 1 << 20)
    .poll_timeout(Duration::from_millis(100))
    .shutdown_on_signals() // Ctrl-C: drain and report what was handled
    .build();
    let stats = runtime.stats();
    let shutdown = runtime.shutdown_token();
    let started = Instant::now();
    let run = tokio::spawn(runtime.run());
    while stats.snapshot().finished() < 300 && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    let summary = run
        .await
        .expect("runtime task")
        .expect("in-memory transport never fails");
    println!(
        "handled {} updates in {:.2} s ({:.0}/s; the cap is 200/s after a burst of 20), at most {} at once",
        summary.stats.finished(),
        took.as_secs_f64(),
        summary.stats.finished() as f64 / took.as_secs_f64(),
        summary.stats.max_in_flight
    );
}
