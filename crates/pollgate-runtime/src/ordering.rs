//! Per-key ordering: updates with the same key run one at a time, in update_id order.
//!
//! A key is *busy* while a task is handling one of its updates. The dispatcher never
//! waits for a busy key (a dispatch loop that blocks on one full per-chat queue lets one
//! slow chat stall all the others): it parks the update in the key's queue with a
//! [`Reservation`] of its JSON size (what it holds while it waits), so waiting updates
//! count against the memory budget but hold no concurrency slot and not yet their
//! handler's working set, and moves on. The task that finishes an update of a key takes
//! the key's next update, reserves its cost, acquires a slot for it like everybody else,
//! and runs it;
//! when the queue is empty the key becomes idle again.
//!
//! The queues are bounded as a whole: the runtime stops fetching while
//! `max_queued` updates wait behind busy keys.

use std::collections::{HashMap, VecDeque};

use pollgate_admission::Reservation;
use pollgate_core::Update;

/// An update waiting behind its key, with its memory reserved.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) update: Update,
    pub(crate) reservation: Reservation,
    /// When the [pacer](crate::Pacer), asked as the update arrived, lets it start.
    pub(crate) start_at: Option<tokio::time::Instant>,
}

/// The busy keys and what waits behind them.
#[derive(Debug, Default)]
pub(crate) struct KeyQueues {
    busy: HashMap<i64, VecDeque<Queued>>,
}

impl KeyQueues {
    /// Marks `key` busy and returns `true` when it was idle (the caller runs the update
    /// now); otherwise queues the update made by `park` and returns `false`.
    pub(crate) fn claim_or_park(&mut self, key: i64, park: impl FnOnce() -> Queued) -> bool {
        match self.busy.get_mut(&key) {
            Some(queue) => {
                queue.push_back(park());
                false
            }
            None => {
                self.busy.insert(key, VecDeque::new());
                true
            }
        }
    }

    /// The next update of `key`, or `None` after marking the key idle.
    pub(crate) fn next(&mut self, key: i64) -> Option<Queued> {
        let queue = self.busy.get_mut(&key)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.busy.remove(&key);
        }
        next
    }

    /// Removes every queued update of `key` and marks it idle (used when giving up).
    pub(crate) fn abandon(&mut self, key: i64) -> VecDeque<Queued> {
        self.busy.remove(&key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollgate_admission::{Fixed, Gate};

    fn update(id: i64) -> Update {
        Update::from_json(&format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":1}}}}}}"#)).unwrap()
    }

    #[test]
    fn second_update_of_a_busy_key_waits_and_comes_back_in_order() {
        let gate = Gate::new(Fixed::new(4));
        let mut q = KeyQueues::default();
        assert!(q.claim_or_park(1, || unreachable!()));
        for id in [2, 3] {
            assert!(!q.claim_or_park(1, || Queued {
                update: update(id),
                reservation: gate.reserve(10),
                start_at: None,
            }));
        }
        assert!(q.claim_or_park(2, || unreachable!()), "other keys are not blocked");
        assert_eq!(gate.load().reserved, 2);
        assert_eq!(q.next(1).map(|x| x.update.id()), Some(2));
        assert_eq!(q.next(1).map(|x| x.update.id()), Some(3));
        assert!(q.next(1).is_none());
        assert!(q.claim_or_park(1, || unreachable!()), "idle again");
        assert_eq!(gate.load().reserved, 0);
    }
}
