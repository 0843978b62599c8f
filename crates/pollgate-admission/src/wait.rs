//! The hand-written futures behind the gate's `async fn`s.
//!
//! They use nothing but `std::task::Waker` and the gate's lock, so the crate needs no async
//! runtime. Every check and every waker registration happens under the same lock as every
//! change, which is what makes lost wake-ups impossible.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use crate::error::Closed;
use crate::gate::{CLOSED, GRANTED, Shared, State, WAITING, Waiter};
use crate::permit::{Permit, Reservation};

/// `Gate::acquire` / `Gate::acquire_reserved`.
pub(crate) struct Acquire<'a> {
    shared: &'a Arc<Shared>,
    cost: u64,
    reservation: Option<Reservation>,
    queued: Option<(u64, Arc<AtomicU8>)>,
    done: bool,
}

impl<'a> Acquire<'a> {
    pub(crate) fn new(shared: &'a Arc<Shared>, cost: u64, reservation: Option<Reservation>) -> Self {
        Self {
            shared,
            cost,
            reservation,
            queued: None,
            done: false,
        }
    }

    fn permit(&mut self) -> Permit {
        self.done = true;
        self.queued = None;
        match self.reservation.take() {
            Some(reservation) => reservation.into_permit(),
            None => Permit::new(self.shared.clone(), self.cost),
        }
    }
}

impl Future for Acquire<'_> {
    type Output = Result<Permit, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`Acquire` polled after completion");
        let reserved = this.reservation.is_some();

        if let Some((id, status)) = &this.queued {
            let id = *id;
            // Fate is only written under the lock; a quick look avoids taking it.
            let mut fate = status.load(Ordering::Acquire);
            if fate == WAITING {
                let mut state = this.shared.state.lock();
                fate = status.load(Ordering::Acquire);
                if fate == WAITING {
                    let waiter = state.waiters.get_mut(&id).expect("waiting waiter is queued");
                    match &mut waiter.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
            return match fate {
                GRANTED => Poll::Ready(Ok(this.permit())),
                _ => {
                    debug_assert_eq!(fate, CLOSED);
                    this.done = true;
                    this.queued = None;
                    Poll::Ready(Err(Closed))
                }
            };
        }

        let mut state = this.shared.state.lock();
        if state.closed {
            drop(state);
            this.done = true;
            return Poll::Ready(Err(Closed));
        }
        if state.waiters.is_empty() {
            let load = state.load_for(this.cost, reserved, false);
            if this.shared.policy.admits(&load, this.cost) {
                state.grant(this.cost, reserved);
                drop(state);
                return Poll::Ready(Ok(this.permit()));
            }
        }
        let id = state.next_id();
        let status = Arc::new(AtomicU8::new(WAITING));
        state.waiters.insert(
            id,
            Waiter {
                cost: this.cost,
                reserved,
                waker: Some(cx.waker().clone()),
                status: status.clone(),
            },
        );
        this.queued = Some((id, status));
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some((id, status)) = self.queued.take() else {
            return;
        };
        let mut state = self.shared.state.lock();
        if state.waiters.remove(&id).is_some() {
            // Leaving may unblock whoever queued behind us, and `waiting` went down.
            let mut wake = Vec::new();
            state.grant_waiters(&*self.shared.policy, &mut wake);
            State::finish_change(state, &*self.shared.policy, wake);
        } else {
            drop(state);
            if status.load(Ordering::Acquire) == GRANTED {
                // Granted but never polled: hand the capacity straight back.
                drop(self.permit());
            }
        }
    }
}

/// What a [`Watch`] waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WatchMode {
    /// Any capacity change (`Gate::changed`).
    Changed,
    /// `fetch_limit() >= n` (`Gate::fetch_ready`, `Gate::fetch_ready_at_least`).
    FetchAtLeast(usize),
    /// The gate is closed (`Gate::closed`).
    Closed,
}

/// `Gate::changed` / `Gate::fetch_ready`.
pub(crate) struct Watch<'a> {
    shared: &'a Shared,
    mode: WatchMode,
    seen: Option<u64>,
    key: Option<u64>,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(shared: &'a Shared, mode: WatchMode) -> Self {
        Self {
            shared,
            mode,
            seen: None,
            key: None,
        }
    }
}

impl Future for Watch<'_> {
    type Output = Result<usize, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.shared.state.lock();
        let ready = match this.mode {
            WatchMode::Changed if state.closed => Some(Ok(0)),
            WatchMode::Changed => match this.seen {
                Some(seen) if seen != state.generation => Some(Ok(0)),
                Some(_) => None,
                None => {
                    this.seen = Some(state.generation);
                    None
                }
            },
            WatchMode::Closed if state.closed => Some(Ok(0)),
            WatchMode::Closed => None,
            WatchMode::FetchAtLeast(_) if state.closed => Some(Err(Closed)),
            WatchMode::FetchAtLeast(min) => {
                let n = this.shared.policy.fetch_limit(&state.load());
                (n >= min).then_some(Ok(n))
            }
        };
        match ready {
            Some(out) => {
                if let Some(key) = this.key.take() {
                    state.watchers.retain(|(k, ..)| *k != key);
                }
                Poll::Ready(out)
            }
            None => {
                let key = match this.key {
                    Some(key) => key,
                    None => *this.key.insert(state.next_id()),
                };
                let mode = this.mode;
                match state.watchers.iter_mut().find(|(k, ..)| *k == key) {
                    Some((_, waker, _)) if waker.will_wake(cx.waker()) => {}
                    Some((_, waker, _)) => *waker = cx.waker().clone(),
                    None => state.watchers.push((key, cx.waker().clone(), mode)),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.shared.state.lock().watchers.retain(|(k, ..)| *k != key);
        }
    }
}
