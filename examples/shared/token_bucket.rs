//! `TokenBucket`: a user-written admission policy, a rate cap (at most `rate` handler
//! starts per second, bursts up to `burst`), shared by the `custom_policy`, `flood` and
//! `teloxide_bot` examples. `examples/custom_policy.rs` explains why and how to use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pollgate::admission::{Limit, LimitSignal, LimitSignals};
use pollgate::{AdmissionPolicy, Load};

/// At most `rate` admissions per second on average, `burst` at once.
///
/// Tokens refill continuously. Admitting takes a token, so this policy must come *after*
/// the others in `all_of` (which asks its members in order and stops at the first
/// refusal): a token is then only spent on an update that really starts. While the
/// bucket is empty nothing completes to wake the gate, so a ticker thread re-checks the
/// waiters a hundred times a second through the signal the gate gives at `attach`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
    listeners: Arc<LimitSignals>,
    ticker: OnceLock<Ticker>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TokenBucket {
    /// `rate` admissions per second, at most `burst` at once.
    ///
    /// # Panics
    /// If `rate` is not positive or `burst` is below 1.
    pub(crate) fn new(rate: f64, burst: f64) -> TokenBucket {
        assert!(rate > 0.0 && burst >= 1.0, "TokenBucket needs rate > 0 and burst >= 1");
        TokenBucket {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
            listeners: Arc::new(LimitSignals::new()),
            ticker: OnceLock::new(),
        }
    }

    fn tokens(&self, bucket: &mut Bucket) -> f64 {
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        bucket.tokens
    }
}

impl AdmissionPolicy for TokenBucket {
    fn fetch_limit(&self, _load: &Load) -> usize {
        self.tokens(&mut self.bucket.lock()).floor() as usize
    }

    fn admits(&self, _load: &Load, _cost: u64) -> bool {
        let mut bucket = self.bucket.lock();
        if self.tokens(&mut bucket) >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn limit(&self) -> Limit {
        Limit::default()
    }

    fn attach(&self, signal: LimitSignal) {
        self.listeners.add(signal);
        self.ticker.get_or_init(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let (s, listeners) = (Arc::clone(&stop), Arc::clone(&self.listeners));
            let thread = std::thread::Builder::new()
                .name("token-bucket".into())
                .spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        listeners.notify_all();
                    }
                })
                .expect("spawn the token-bucket ticker");
            Ticker {
                stop,
                thread: Some(thread),
            }
        });
    }
}
