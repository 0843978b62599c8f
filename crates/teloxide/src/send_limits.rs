//! [`SendLimiter`]: waits for a send slot within Telegram's limits before a reply goes out.
//!
//! # Why not `Throttle`
//!
//! teloxide's `Throttle` adaptor queues requests and holds every chat to its
//! per-group limit (20 a minute) as well, and its queue (30 requests) fills under a
//! backlog: measured on the mock with Telegram's limits, 728 replies into 50 private chats
//! took 123 s through it, five times the 24 s that 30 a second overall allows
//! (`docs/teloxide.md`). This limiter applies each limit where Telegram does: 30 a second
//! overall, one a second in a private chat, 20 a minute in a group or channel (negative
//! chat ids), as sliding windows, and a sender waits only for its own chat's slot and the
//! global one. Each window is kept 5% longer than Telegram's: a slot is taken when the
//! request leaves, and two requests a second apart here can arrive closer together there.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Telegram's send limits, and the waits that keep a bot within them.
///
/// # Examples
///
/// ```
/// use pollgate_teloxide::SendLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limits = SendLimiter::telegram();
/// let start = tokio::time::Instant::now();
/// limits.acquire(42).await; // a private chat: one a second
/// limits.acquire(42).await;
/// assert!(start.elapsed() >= std::time::Duration::from_secs(1));
/// # }
/// ```
#[derive(Debug)]
pub struct SendLimiter {
    global_per_second: usize,
    per_chat_per_second: usize,
    per_group_per_minute: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    global: VecDeque<Instant>,
    chats: HashMap<i64, VecDeque<Instant>>,
    swept_at_len: usize,
}

impl SendLimiter {
    /// Telegram's published limits: 30 a second overall, 1 a second per private chat, 20
    /// a minute per group.
    pub fn telegram() -> SendLimiter {
        SendLimiter::new(30, 1, 20)
    }

    /// Custom limits (a bot with paid broadcasts may send faster).
    ///
    /// # Panics
    /// When a limit is 0.
    #[track_caller]
    pub fn new(global_per_second: usize, per_chat_per_second: usize, per_group_per_minute: usize) -> SendLimiter {
        assert!(
            global_per_second > 0 && per_chat_per_second > 0 && per_group_per_minute > 0,
            "SendLimiter::new: every limit must be at least 1"
        );
        SendLimiter {
            global_per_second,
            per_chat_per_second,
            per_group_per_minute,
            state: Mutex::new(State {
                swept_at_len: 64,
                ..State::default()
            }),
        }
    }

    /// Waits until a message may be sent into `chat`, and counts it as sent.
    ///
    /// # Cancel safety
    /// Cancel safe: the slot is taken only when this returns.
    pub async fn acquire(&self, chat: i64) {
        loop {
            match self.try_acquire(chat, Instant::now()) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// How long until `chat` has a slot (zero: now). Takes nothing.
    pub fn next_slot(&self, chat: i64) -> Duration {
        let now = Instant::now();
        let mut state = self.state.lock();
        self.wait(&mut state, chat, now).unwrap_or_default()
    }

    fn try_acquire(&self, chat: i64, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock();
        if let Some(wait) = self.wait(&mut state, chat, now) {
            return Err(wait);
        }
        state.global.push_back(now);
        state.chats.entry(chat).or_default().push_back(now);
        if state.chats.len() >= 2 * state.swept_at_len {
            let (group, private) = (Duration::from_secs(60) + MARGIN * 60, Duration::from_secs(1) + MARGIN);
            state.chats.retain(|&c, q| {
                expire(q, now, if c < 0 { group } else { private });
                !q.is_empty()
            });
            state.swept_at_len = state.chats.len().max(64);
        }
        Ok(())
    }

    /// The wait before `chat` may send at `now`, if any.
    fn wait(&self, state: &mut State, chat: i64, now: Instant) -> Option<Duration> {
        let second = MARGIN + Duration::from_secs(1);
        let (max, window) = if chat < 0 {
            (self.per_group_per_minute, Duration::from_secs(60) + MARGIN * 60)
        } else {
            (self.per_chat_per_second, second)
        };
        expire(&mut state.global, now, second);
        let global = full(&state.global, self.global_per_second, now, second);
        let chat = state.chats.get_mut(&chat).and_then(|q| {
            expire(q, now, window);
            full(q, max, now, window)
        });
        global.into_iter().chain(chat).max()
    }
}

/// How much longer than Telegram's each window is kept, per second of window.
const MARGIN: Duration = Duration::from_millis(50);

fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|&t| now.duration_since(t) >= window) {
        q.pop_front();
    }
}

/// The wait until `q` holds fewer than `max` sends in `window`, if it is full.
fn full(q: &VecDeque<Instant>, max: usize, now: Instant, window: Duration) -> Option<Duration> {
    (q.len() >= max).then(|| (q[q.len() - max] + window).saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_limit_holds_its_own_senders_only() {
        let l = SendLimiter::telegram();
        let t0 = Instant::now();
        l.acquire(1).await;
        assert_eq!(
            l.next_slot(1),
            Duration::from_millis(1050),
            "one a second per private chat"
        );
        assert_eq!(l.next_slot(2), Duration::ZERO, "another chat is not held");
        for _ in 0..20 {
            l.acquire(-7).await;
        }
        assert!(l.next_slot(-7) > Duration::from_secs(59), "20 a minute per group");
        for chat in 100..108 {
            l.acquire(chat).await;
        }
        // 29 sent within this instant: one more, then the global window is full.
        l.acquire(200).await;
        assert_eq!(l.next_slot(201), Duration::from_millis(1050), "30 a second overall");
        l.acquire(201).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(1050));
    }
}
