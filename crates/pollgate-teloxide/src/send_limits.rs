//! [`SendLimiter`]: send slots within Telegram's limits, booked before a reply's update
//! is admitted ([`SendLimiter::pacer`]) or waited for before the reply goes out
//! ([`SendLimiter::acquire`]).
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
//! The global limit is also spread evenly (one send every 35 ms rather than bursts of 30).
//!
//! # Why book before admission
//!
//! A handler that waits for its send slot holds its permit all the while: in a backlog
//! that Telegram lets a bot answer at 30 a second, every slot of the policy fills with
//! handlers that sleep. [`SendLimiter::pacer`] books the slot when the update is about to
//! be admitted, and the runtime holds the update back, with only its cost reserved, until
//! the slot comes (`pollgate_runtime::Pacer`). The handler's [`acquire`](SendLimiter::acquire)
//! then takes the booked slot at once.
//!
//! Slots are kept as sorted send times, past and booked: a send at `t` fits when no window
//! of a limit's length that contains `t` already holds the limit's count. Booked slots may
//! be out of order across chats (a group's next slot is a minute away while a private
//! chat's is now), so a booking fills the earliest gap, not the end of the queue.
//! A booking costs time linear in the bookings ahead of it, which the runtime bounds
//! (`max_queued`). A booking its update does not take within 25 ms of its time (the update
//! ran late, or sent nothing) is given back, and counted ([`SendLimiter::stale_bookings`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_core::Update;
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
    global: Limit,
    /// The global limit spread evenly: one send per `window / max`, so that the sends of
    /// a backlog leave one by one rather than in bursts of `max` (a burst's last handlers
    /// start late on a busy process, and miss their booked slots).
    spacing: Limit,
    private: Limit,
    group: Limit,
    state: Mutex<State>,
}

/// At most `max` sends in any window of `window`.
#[derive(Debug, Clone, Copy)]
struct Limit {
    max: usize,
    window: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Every send, past and booked, in time order.
    global: VecDeque<Instant>,
    /// Each chat's sends, past and booked, in time order.
    chats: HashMap<i64, VecDeque<Instant>>,
    /// Slots booked by the pacer and not yet taken by `acquire`, per chat.
    booked: HashMap<i64, VecDeque<Instant>>,
    /// The number of chats at the last sweep (the next sweep is at twice as many).
    swept_at_len: usize,
    /// Bookings given back because their send came too late to take them.
    stale: u64,
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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_teloxide::SendLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limits = SendLimiter::new(100, 2, 20); // two a second into each private chat
    /// limits.acquire(42).await;
    /// limits.acquire(42).await; // 10 ms later: 100 a second are spread evenly
    /// tokio::time::sleep(Duration::from_millis(50)).await;
    /// assert!(limits.next_slot(42) > Duration::from_millis(900), "a third must wait");
    /// assert_eq!(limits.next_slot(43), Duration::ZERO, "another chat need not");
    /// # }
    /// ```
    #[track_caller]
    pub fn new(global_per_second: usize, per_chat_per_second: usize, per_group_per_minute: usize) -> SendLimiter {
        assert!(
            global_per_second > 0 && per_chat_per_second > 0 && per_group_per_minute > 0,
            "SendLimiter::new: every limit must be at least 1"
        );
        let second = Duration::from_secs(1) + MARGIN;
        SendLimiter {
            global: Limit {
                max: global_per_second,
                window: second,
            },
            spacing: Limit {
                max: 1,
                window: second / global_per_second as u32,
            },
            private: Limit {
                max: per_chat_per_second,
                window: second,
            },
            group: Limit {
                max: per_group_per_minute,
                window: second * 60,
            },
            state: Mutex::new(State {
                swept_at_len: 64,
                ..State::default()
            }),
        }
    }

    /// Waits until a message may be sent into `chat`, and counts it as sent. A slot the
    /// [pacer](Self::pacer) booked for `chat` that is due now is taken instead of a new
    /// one, so a paced update's reply goes out at once.
    ///
    /// # Cancel safety
    /// Cancel safe: a slot taken for a wait that is dropped is given back.
    pub async fn acquire(&self, chat: i64) {
        let at = {
            let mut state = self.state.lock();
            let now = Instant::now();
            match self.take_booking(&mut state, chat, now) {
                Some(booked) => booked,
                None => self.book_at(&mut state, chat, now),
            }
        };
        if at > Instant::now() {
            let mut slot = Slot {
                limiter: self,
                chat,
                at: Some(at),
            };
            tokio::time::sleep_until(at).await;
            slot.at = None;
        }
    }

    /// Books the next slot for a message into `chat` and returns when it is: the slot
    /// counts as taken from then. For [`pacer`](Self::pacer)s; a handler calls
    /// [`acquire`](Self::acquire), which takes the booking when it is due.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_teloxide::SendLimiter;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limits = SendLimiter::telegram();
    /// let first = limits.book(42);
    /// let second = limits.book(42); // a private chat: a second (and a margin) later
    /// assert!(second - first >= Duration::from_secs(1));
    /// tokio::time::sleep_until(second).await;
    /// let start = tokio::time::Instant::now();
    /// limits.acquire(42).await; // takes the booking that is due: no wait
    /// assert_eq!(start.elapsed(), Duration::ZERO);
    /// # }
    /// ```
    pub fn book(&self, chat: i64) -> Instant {
        let mut state = self.state.lock();
        let now = Instant::now();
        // Bookings of this chat too old to be taken any more are given back first: a chat
        // whose updates do not all send keeps no more than its bookings ahead.
        self.give_back_stale(&mut state, chat, now);
        let at = self.book_at(&mut state, chat, now);
        insert(state.booked.entry(chat).or_default(), at);
        at
    }

    /// A pollgate [`Pacer`](pollgate_runtime::Pacer) that books a send slot for every
    /// update `sends_to` says will send a message (into the chat it returns), so the
    /// runtime admits the update only when its slot comes; the handler's
    /// [`acquire`](Self::acquire) then returns at once.
    ///
    /// `sends_to` should name the updates that reply, and only those: a slot booked for
    /// an update that sends nothing is lost (never exceeded) until it passes.
    ///
    /// # Examples
    ///
    /// An echo bot answers every message in its chat (the update's ordering key):
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use pollgate_core::{TelegramTransport, Update};
    /// use pollgate_runtime::Runtime;
    /// use pollgate_teloxide::SendLimiter;
    ///
    /// # fn demo(transport: TelegramTransport, handler: impl pollgate_runtime::Handler) {
    /// let limits = Arc::new(SendLimiter::telegram());
    /// let runtime = Runtime::builder(transport, handler)
    ///     .ordered(true)
    ///     .pacer(limits.pacer(Update::ordering_key))
    ///     .build();
    /// # }
    /// ```
    pub fn pacer<F>(self: &Arc<Self>, sends_to: F) -> impl pollgate_runtime::Pacer + use<F>
    where
        F: Fn(&Update) -> Option<i64> + Send + Sync + 'static,
    {
        let limiter = Arc::clone(self);
        move |update: &Update| sends_to(update).map(|chat| limiter.book(chat))
    }

    /// Booked slots given back because their send came later than 25 ms after
    /// them (the update started late: its previous update of the chat ran long, or the
    /// process was busy); each such send took a new slot, and waited for it. A count
    /// that grows with the sends means the pacer's bookings are not being used.
    pub fn stale_bookings(&self) -> u64 {
        self.state.lock().stale
    }

    /// How long until `chat` has a slot (zero: now). Takes nothing.
    pub fn next_slot(&self, chat: i64) -> Duration {
        let now = Instant::now();
        let mut state = self.state.lock();
        self.expire(&mut state, chat, now);
        self.earliest(&state, chat, now).saturating_duration_since(now)
    }

    /// Takes the slot booked for `chat` that is due now, if there is one: booked at most
    /// [`ON_TIME`] ago (a send that leaves that late still keeps Telegram's limits, within
    /// the margin). Bookings of `chat` that are older (their update ran late, or sent
    /// nothing) are given back: the send about to be booked replaces them.
    fn take_booking(&self, state: &mut State, chat: i64, now: Instant) -> Option<Instant> {
        self.give_back_stale(state, chat, now);
        let booked = state.booked.get_mut(&chat)?;
        // Sorted, and nothing older than ON_TIME is left: the front is the one, if due.
        let taken = booked.front().copied().filter(|&t| t <= now);
        if taken.is_some() {
            booked.pop_front();
        }
        if booked.is_empty() {
            state.booked.remove(&chat);
        }
        taken
    }

    /// Gives back `chat`'s bookings that are more than [`ON_TIME`] past: their update
    /// ran late or sent nothing, and no send may take them any more.
    fn give_back_stale(&self, state: &mut State, chat: i64, now: Instant) {
        let Some(booked) = state.booked.get_mut(&chat) else {
            return;
        };
        let mut stale = Vec::new();
        while let Some(t) = booked.front().copied().filter(|&t| now - t > ON_TIME && t <= now) {
            booked.pop_front();
            stale.push(t);
        }
        if booked.is_empty() {
            state.booked.remove(&chat);
        }
        state.stale += stale.len() as u64;
        for t in stale {
            self.give_back(state, chat, t);
        }
    }

    /// Takes the earliest slot at or after `from` for `chat`.
    fn book_at(&self, state: &mut State, chat: i64, from: Instant) -> Instant {
        self.expire(state, chat, from);
        let at = self.earliest(state, chat, from);
        insert(&mut state.global, at);
        insert(state.chats.entry(chat).or_default(), at);
        if state.chats.len() >= 2 * state.swept_at_len {
            self.sweep(state, from);
        }
        at
    }

    /// The earliest instant at or after `from` that fits both `chat`'s limit and the
    /// global one.
    fn earliest(&self, state: &State, chat: i64, from: Instant) -> Instant {
        let own = self.limit_of(chat);
        let sends = state.chats.get(&chat);
        let mut at = from;
        loop {
            let fits_chat = sends.map_or(at, |q| own.earliest(q, at));
            let fits_global = self.global.earliest(&state.global, fits_chat);
            let fits_all = self.spacing.earliest(&state.global, fits_global);
            if fits_all == at {
                return at;
            }
            at = fits_all;
        }
    }

    /// Removes one send at `t` of `chat` (a booking given back or replaced).
    fn give_back(&self, state: &mut State, chat: i64, t: Instant) {
        remove(&mut state.global, t);
        if let Some(q) = state.chats.get_mut(&chat) {
            remove(q, t);
        }
    }

    fn limit_of(&self, chat: i64) -> Limit {
        if chat < 0 { self.group } else { self.private }
    }

    /// Drops the sends that no longer count at `now`.
    fn expire(&self, state: &mut State, chat: i64, now: Instant) {
        let (global, own) = (self.global.window, self.limit_of(chat).window);
        expire(&mut state.global, now, global);
        if let Some(q) = state.chats.get_mut(&chat) {
            expire(q, now, own);
        }
    }

    /// Forgets chats with nothing that counts any more, and bookings long past.
    fn sweep(&self, state: &mut State, now: Instant) {
        state.chats.retain(|&c, q| {
            expire(q, now, self.limit_of(c).window);
            !q.is_empty()
        });
        let longest = self.group.window.max(self.private.window);
        state.booked.retain(|_, q| {
            expire(q, now, longest);
            !q.is_empty()
        });
        state.swept_at_len = state.chats.len().max(64);
    }
}

/// A slot taken by an `acquire` that is still waiting for it: given back when the wait is
/// dropped.
struct Slot<'a> {
    limiter: &'a SendLimiter,
    chat: i64,
    at: Option<Instant>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.at {
            let mut state = self.limiter.state.lock();
            self.limiter.give_back(&mut state, self.chat, t);
        }
    }
}

impl Limit {
    /// The earliest instant at or after `from` at which one more send fits in `sends`
    /// (sorted, within the limit): every window of `self.window` containing it holds
    /// fewer than `self.max`.
    ///
    /// Each run of `max` consecutive sends `s[i] ..= s[i + max - 1]` that spans less than
    /// `window` forbids the open interval `(s[i + max - 1] - window, s[i] + window)` (a run
    /// that spans a window or more forbids nothing); both ends grow with `i`, so one pass
    /// from the first run that ends after `from` finds the first gap.
    fn earliest(&self, sends: &VecDeque<Instant>, from: Instant) -> Instant {
        let (max, window) = (self.max, self.window);
        if sends.len() < max {
            return from;
        }
        let mut at = from;
        let first = sends.partition_point(|&s| s + window <= at);
        for i in first..=sends.len() - max {
            let (run_first, run_last) = (sends[i], sends[i + max - 1]);
            let forbidden_from = run_last.checked_sub(window);
            if forbidden_from.is_some_and(|lo| at <= lo) {
                break;
            }
            // A run that already spans a whole window forbids nothing: a send anywhere
            // makes no window hold more than `max`.
            if run_last - run_first >= window {
                continue;
            }
            let until = run_first + window;
            if at < until {
                at = until;
            }
        }
        at
    }
}

/// How much longer than Telegram's each window is kept, per second of window.
const MARGIN: Duration = Duration::from_millis(50);

/// How late after its booked slot a send may still take it: half the margin, so that a
/// send a little late still arrives a second after the one before it.
const ON_TIME: Duration = Duration::from_millis(25);

fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|&t| t + window <= now) {
        q.pop_front();
    }
}

fn insert(q: &mut VecDeque<Instant>, t: Instant) {
    let at = q.partition_point(|&s| s <= t);
    q.insert(at, t);
}

fn remove(q: &mut VecDeque<Instant>, t: Instant) {
    let at = q.partition_point(|&s| s < t);
    if q.get(at) == Some(&t) {
        q.remove(at);
    }
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
        assert_eq!(
            l.next_slot(2),
            Duration::from_millis(35),
            "another chat waits only for the global spacing"
        );
        for _ in 0..20 {
            l.acquire(-7).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(700), "20 sends 35 ms apart");
        assert!(l.next_slot(-7) > Duration::from_secs(59), "20 a minute per group");
        for chat in 100..109 {
            l.acquire(chat).await;
        }
        // 30 sent 35 ms apart: the 31st goes 1050 ms after the first.
        assert_eq!(t0.elapsed(), Duration::from_millis(1015));
        l.acquire(200).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(1050), "30 a second overall");
    }

    #[tokio::test(start_paused = true)]
    async fn a_booking_fills_the_earliest_gap_and_acquire_takes_it_when_due() {
        // Two a second overall: one send every 525 ms (1050 ms windows with the margin).
        let l = SendLimiter::new(2, 1, 20);
        let t0 = Instant::now();
        let ms = |t: Instant| (t - t0).as_millis();
        let one: Vec<u128> = (0..3).map(|_| ms(l.book(1))).collect();
        assert_eq!(one, [0, 1050, 2100], "a chat: a second apart");
        assert_eq!(ms(l.book(2)), 525, "the gap between chat 1's first two");
        assert_eq!(ms(l.book(3)), 1575, "the next gap");
        assert_eq!(ms(l.book(2)), 2625, "chat 2's own second, then the spacing");
        // Taking a due booking costs no new slot and no wait.
        let before = l.state.lock().global.len();
        l.acquire(1).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(
            l.state.lock().global.len(),
            before,
            "the booking was taken, not added to"
        );
        // Chat 1's second booking comes due: taken without a wait, 20 ms late.
        tokio::time::advance(Duration::from_millis(1070)).await;
        l.acquire(1).await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(1070),
            "chat 1's second booking, taken when due"
        );
        assert_eq!(l.state.lock().global.len(), before);
        // Its third, 100 ms late, is given back: the send books a slot of its own, after
        // chat 2's at 2625.
        tokio::time::advance(Duration::from_millis(1130)).await;
        l.acquire(1).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(3150));
        assert_eq!(l.stale_bookings(), 1);
        let chat = l.state.lock().chats[&1].clone();
        assert_eq!(
            chat.iter().map(|&t| ms(t)).collect::<Vec<_>>(),
            [3150],
            "2100 given back, 1050 expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_gives_its_slot_back() {
        let l = SendLimiter::telegram();
        l.acquire(5).await;
        assert_eq!(l.next_slot(5), Duration::from_millis(1050));
        {
            let wait = l.acquire(5);
            tokio::pin!(wait);
            assert!(futures_poll_once(wait.as_mut()).await.is_pending());
            assert_eq!(l.next_slot(5), Duration::from_millis(2100), "taken while it waits");
        }
        assert_eq!(l.next_slot(5), Duration::from_millis(1050), "given back when dropped");
    }

    /// Polls `f` once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await
    }

    /// Random sends, booked (and then sent up to 40 ms late, or never) or not, never put
    /// more than a limit's count in any of Telegram's windows.
    #[tokio::test(start_paused = true)]
    async fn no_window_ever_holds_more_than_its_limit() {
        let l = Arc::new(SendLimiter::new(5, 1, 3));
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let sent: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
        let mut tasks = Vec::new();
        for _ in 0..400 {
            let chat = [1, 2, 3, -1, -2][(next() % 5) as usize];
            let (l, sent) = (Arc::clone(&l), Arc::clone(&sent));
            let (booked, late, sends) = (next() % 2 == 0, Duration::from_millis(next() % 40), next() % 8 != 0);
            let at = booked.then(|| l.book(chat));
            tasks.push(tokio::spawn(async move {
                if let Some(at) = at {
                    tokio::time::sleep_until(at + late).await;
                }
                if sends {
                    l.acquire(chat).await;
                    sent.lock().push((chat, Instant::now()));
                }
            }));
            tokio::time::sleep(Duration::from_millis(next() % 300)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let sent = sent.lock().clone();
        // Telegram's own windows, without the margin.
        let check = |max: usize, window: Duration, times: &mut Vec<Instant>| {
            times.sort();
            for w in times.windows(max + 1) {
                assert!(w[max] - w[0] >= window, "{} sends within {window:?}", max + 1);
            }
        };
        assert!(sent.len() > 300, "{}", sent.len());
        check(5, Duration::from_secs(1), &mut sent.iter().map(|s| s.1).collect());
        for chat in [1, 2, 3, -1, -2] {
            let (max, window) = if chat < 0 {
                (3, Duration::from_secs(60))
            } else {
                (1, Duration::from_secs(1))
            };
            check(
                max,
                window,
                &mut sent.iter().filter(|s| s.0 == chat).map(|s| s.1).collect(),
            );
        }
    }
}
