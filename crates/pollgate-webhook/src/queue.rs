//! The requests between Telegram and the runtime: waiting for admission, or taken and
//! waiting for their acknowledgement.
//!
//! One mutex guards both sets and the count of reserved slots, so a request is always in
//! exactly one place: reserved (its body is being read), waiting, taken, or answered. Each
//! request holds the sending half of a oneshot channel's answer; whoever removes it from
//! the queue answers it (the fetch by moving it to `taken`, an ack with 200, a timeout
//! with 429, the close with 503), and a request whose client went away removes itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::Mutex;
use pollgate_core::Update;
use tokio::sync::{Notify, oneshot};

use crate::builder::WebhookBuilder;
use crate::stats::Counters;

/// How a request is answered once it leaves the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Acknowledged: 200.
    Done,
    /// The transport closed first: 503 with `Retry-After`.
    Closed,
}

struct Waiting {
    seq: u64,
    update: Update,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    /// Requests whose body is being read, plus `waiting.len()`: what `max_waiting` bounds.
    slots: usize,
    waiting: VecDeque<Waiting>,
    taken: HashMap<Arc<str>, oneshot::Sender<Answer>>,
    next_seq: u64,
    closed: bool,
}

/// State shared by the listener's request handlers and the transport.
pub(crate) struct Shared {
    pub(crate) config: WebhookBuilder,
    state: Mutex<State>,
    /// Wakes the fetch when a request starts waiting (or the transport closes).
    pub(crate) arrived: Notify,
    pub(crate) counters: Counters,
}

/// Why a request cannot have a slot.
pub(crate) enum NoSlot {
    Full,
    Closed,
}

impl Shared {
    pub(crate) fn new(config: WebhookBuilder) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            counters: Counters::default(),
        }
    }

    /// Reserves a waiting slot before the body is read. The caller must
    /// [`enqueue`](Self::enqueue) or [`release`](Self::release) it.
    pub(crate) fn reserve(&self) -> Result<(), NoSlot> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(NoSlot::Closed);
        }
        if state.slots >= self.config.max_waiting {
            return Err(NoSlot::Full);
        }
        state.slots += 1;
        Ok(())
    }

    /// Gives back a reserved slot whose request will not wait (bad body).
    pub(crate) fn release(&self) {
        let mut state = self.state.lock();
        state.slots = state.slots.saturating_sub(1);
    }

    /// Puts a request with a reserved slot in the queue; `None` when the transport closed
    /// meanwhile (answer 503).
    pub(crate) fn enqueue(&self, update: Update) -> Option<(u64, oneshot::Receiver<Answer>)> {
        let (answer, receiver) = oneshot::channel();
        let seq = {
            let mut state = self.state.lock();
            if state.closed {
                state.slots = state.slots.saturating_sub(1);
                return None;
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.waiting.push_back(Waiting { seq, update, answer });
            let waiting = state.waiting.len() as u64;
            self.counters.waiting_peak.fetch_max(waiting, Relaxed);
            seq
        };
        self.arrived.notify_one();
        Some((seq, receiver))
    }

    /// Removes request `seq` if it still waits (timed out, or its client left); whether it did.
    pub(crate) fn withdraw(&self, seq: u64) -> bool {
        let mut state = self.state.lock();
        let Some(at) = state.waiting.iter().position(|w| w.seq == seq) else {
            return false;
        };
        state.waiting.remove(at);
        state.slots = state.slots.saturating_sub(1);
        true
    }

    /// Takes up to `limit` waiting updates for the runtime, each with its receipt.
    pub(crate) fn take(&self, limit: usize) -> Vec<Update> {
        let mut state = self.state.lock();
        let n = limit.min(state.waiting.len());
        let mut updates = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(w) = state.waiting.pop_front() else { break };
            state.slots = state.slots.saturating_sub(1);
            let receipt: Arc<str> = w.seq.to_string().into();
            state.taken.insert(Arc::clone(&receipt), w.answer);
            updates.push(w.update.with_receipt(receipt));
        }
        self.counters.taken.fetch_add(updates.len() as u64, Relaxed);
        updates
    }

    /// Answers the requests of acknowledged updates with 200.
    pub(crate) fn acknowledge(&self, receipts: &[Arc<str>]) {
        let answers: Vec<_> = {
            let mut state = self.state.lock();
            receipts.iter().filter_map(|r| state.taken.remove(r)).collect()
        };
        for answer in answers {
            // A client that left no longer listens; its update was handled all the same.
            let _ = answer.send(Answer::Done);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Closes the queue: every waiting or unacknowledged request is answered 503, new ones
    /// are refused. Idempotent.
    pub(crate) fn close(&self) {
        let (waiting, taken) = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            state.slots = 0;
            (std::mem::take(&mut state.waiting), std::mem::take(&mut state.taken))
        };
        for answer in waiting.into_iter().map(|w| w.answer).chain(taken.into_values()) {
            let _ = answer.send(Answer::Closed);
        }
        self.arrived.notify_one();
    }

    /// Requests waiting for admission now.
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().waiting.len()
    }
}
