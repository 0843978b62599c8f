//! Telegram's limits on outgoing messages, enforced on `sendMessage` when
//! [`MockConfig::send_limits`](crate::MockConfig::send_limits) is set.
//!
//! Telegram's FAQ for bot developers: about 30 messages a second overall, no more than one
//! a second in one chat, and no more than 20 a minute in one group; past them the server
//! answers 429 with `parameters.retry_after` (seconds). The exact algorithm is not
//! published; this one is a sliding window per limit, and `retry_after` is the whole
//! seconds until the oldest send in the window that was full leaves it (at least 1). A
//! refused send counts for nothing.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The limits (Telegram's, by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendLimits {
    /// Sends per second over all chats (default 30).
    pub global_per_second: usize,
    /// Sends per second into one private chat (positive chat id; default 1).
    pub per_chat_per_second: usize,
    /// Sends per minute into one group, supergroup or channel (negative chat id; default 20).
    pub per_group_per_minute: usize,
}

impl Default for SendLimits {
    fn default() -> Self {
        SendLimits {
            global_per_second: 30,
            per_chat_per_second: 1,
            per_group_per_minute: 20,
        }
    }
}

/// The recent sends, per window.
#[derive(Debug)]
pub(crate) struct SendLimiter {
    limits: SendLimits,
    global: VecDeque<Instant>,
    chats: HashMap<i64, VecDeque<Instant>>,
    /// When the chat windows were last swept of chats with no recent send.
    swept_at_len: usize,
}

impl SendLimiter {
    pub(crate) fn new(limits: SendLimits) -> SendLimiter {
        SendLimiter {
            limits,
            global: VecDeque::new(),
            chats: HashMap::new(),
            swept_at_len: 64,
        }
    }

    /// Records a send into `chat` at `now`, or refuses it with the seconds to wait.
    pub(crate) fn try_send(&mut self, chat: i64, now: Instant) -> Result<(), u64> {
        let (per_chat, window) = if chat < 0 {
            (self.limits.per_group_per_minute, Duration::from_secs(60))
        } else {
            (self.limits.per_chat_per_second, Duration::from_secs(1))
        };
        let second = Duration::from_secs(1);
        expire(&mut self.global, now, second);
        let recent = self.chats.entry(chat).or_default();
        expire(recent, now, window);
        let full =
            |q: &VecDeque<Instant>, max: usize, window: Duration| (q.len() >= max).then(|| wait(q, max, now, window));
        let waits = [
            full(&self.global, self.limits.global_per_second, second),
            full(recent, per_chat, window),
        ];
        if let Some(retry_after) = waits.into_iter().flatten().max() {
            return Err(retry_after);
        }
        recent.push_back(now);
        self.global.push_back(now);
        self.sweep(now);
        Ok(())
    }

    /// Drops chats with no send in their window, once the map has doubled since the last
    /// sweep: it stays bounded by the chats sent to within a minute.
    fn sweep(&mut self, now: Instant) {
        if self.chats.len() < 2 * self.swept_at_len {
            return;
        }
        self.chats.retain(|&chat, q| {
            let window = if chat < 0 { 60 } else { 1 };
            expire(q, now, Duration::from_secs(window));
            !q.is_empty()
        });
        self.swept_at_len = self.chats.len().max(64);
    }
}

fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|&t| now.duration_since(t) >= window) {
        q.pop_front();
    }
}

/// Whole seconds (at least 1) until the window holds fewer than `max` sends.
fn wait(q: &VecDeque<Instant>, max: usize, now: Instant, window: Duration) -> u64 {
    let oldest_to_leave = q[q.len() - max];
    let left = (oldest_to_leave + window).saturating_duration_since(now);
    left.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_a_second_per_chat_twenty_a_minute_per_group_thirty_a_second_overall() {
        let t0 = Instant::now();
        let mut l = SendLimiter::new(SendLimits::default());
        assert_eq!(l.try_send(1, t0), Ok(()));
        assert_eq!(l.try_send(1, t0 + Duration::from_millis(300)), Err(1));
        assert_eq!(l.try_send(1, t0 + Duration::from_secs(1)), Ok(()), "the window moved");
        for i in 0..20 {
            assert_eq!(l.try_send(-5, t0 + Duration::from_millis(i)), Ok(()));
        }
        assert_eq!(
            l.try_send(-5, t0 + Duration::from_secs(10)),
            Err(50),
            "wait for the oldest to leave"
        );
        let mut g = SendLimiter::new(SendLimits::default());
        for chat in 0..30 {
            assert_eq!(g.try_send(100 + chat, t0), Ok(()));
        }
        assert_eq!(
            g.try_send(999, t0 + Duration::from_millis(100)),
            Err(1),
            "31st in a second"
        );
    }

    #[test]
    fn chats_without_recent_sends_are_swept() {
        let t0 = Instant::now();
        let mut l = SendLimiter::new(SendLimits {
            global_per_second: 1_000_000,
            ..SendLimits::default()
        });
        for chat in 0..1000 {
            l.try_send(chat + 1, t0 + Duration::from_secs(chat as u64 * 2)).unwrap();
        }
        assert!(l.chats.len() < 200, "{} chat windows kept", l.chats.len());
    }
}
