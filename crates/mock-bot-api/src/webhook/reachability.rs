//! Whether the webhook's receiver is up, and so how fast the sender may start requests.
//!
//! The real server opens connections freely while updates are being delivered, but once 10 s
//! have passed without a delivery it opens at most one new connection per 2 s
//! (`WebhookActor::create_new_connections`, `pending_new_connection_flood_`). A receiver
//! that is gone therefore costs it one connection attempt every 2 s, however many chats
//! wait. The mock has no view of its HTTP client's connections, so it limits requests
//! instead: while the receiver counts as *down*, at most one request starts per
//! [`WebhookTiming::probe_interval`], and the first delivery brings it back *up*.
//!
//! The receiver counts as down
//! - [`WebhookTiming::down_after`] after the latest delivery, or after the webhook was set
//!   if nothing was delivered since. (The real server starts as if its last delivery were an
//!   hour ago, so it opens one connection until the first delivery; the mock starts at
//!   full width, which tests that hold requests at the receiver rely on.)
//! - at once when a request could not connect ([`Level::Connection`]): the next request
//!   waits `probe_interval`, so a refused port gets no second burst. (The real server keeps
//!   opening connections for those 10 s; the mock is stricter.)
//!
//! [`Level::Connection`]: super::post::Level::Connection

use std::time::Duration;

use tokio::time::Instant;

use crate::config::WebhookTiming;

/// Longer than any test or demo runs: what "never" is cut to.
const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// The shortest `probe_interval` honoured, so that a refused receiver cannot make the
/// sender spin.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// See the module docs. Every method takes the current instant, so the arithmetic is tested
/// without a clock.
#[derive(Debug)]
pub(super) struct Reachability {
    /// How long the receiver stays up without a delivery.
    down_after: Duration,
    /// While down, the least time between two request starts.
    probe_interval: Duration,
    /// Until when the receiver counts as up; `None` after a request could not connect,
    /// until the next delivery.
    up_until: Option<Instant>,
    /// While down: the earliest instant the next request may start.
    next_probe: Instant,
}

impl Reachability {
    /// A receiver that counts as up for `down_after` from `now`.
    pub(super) fn new(timing: &WebhookTiming, now: Instant) -> Self {
        Self {
            down_after: timing.down_after,
            probe_interval: timing.probe_interval.max(MIN_PROBE_INTERVAL),
            up_until: Some(later(now, timing.down_after)),
            next_probe: now,
        }
    }

    /// Starts over, as for a webhook set at `now`: up for `down_after`, and should it go
    /// down, the first probe may start at once.
    pub(super) fn restart(&mut self, now: Instant) {
        self.up_until = Some(later(now, self.down_after));
        self.next_probe = now;
    }

    /// Whether the receiver counts as up at `now`.
    pub(super) fn is_up(&self, now: Instant) -> bool {
        self.up_until.is_some_and(|until| now < until)
    }

    /// Whether a request may start at `now`.
    pub(super) fn may_start(&self, now: Instant) -> bool {
        self.is_up(now) || now >= self.next_probe
    }

    /// When a request may start next, if not at `now`.
    pub(super) fn next_start(&self, now: Instant) -> Option<Instant> {
        (!self.may_start(now)).then_some(self.next_probe)
    }

    /// A request started at `now` (which [`Reachability::may_start`] allowed): while the
    /// receiver is down, it takes the slot until `now + probe_interval`.
    pub(super) fn on_start(&mut self, now: Instant) {
        debug_assert!(self.may_start(now), "a request started before its slot");
        if !self.is_up(now) {
            self.next_probe = later(now, self.probe_interval);
        }
    }

    /// An update was delivered at `now`: the receiver is up for `down_after`.
    pub(super) fn on_delivered(&mut self, now: Instant) {
        self.up_until = Some(later(now, self.down_after));
    }

    /// A request could not connect at `now`: the receiver is down until a delivery, and the
    /// next request waits at least `probe_interval`.
    pub(super) fn on_unreachable(&mut self, now: Instant) {
        self.up_until = None;
        self.next_probe = self.next_probe.max(later(now, self.probe_interval));
    }
}

/// `now + by`, at most a year from `now` (so that huge durations cannot overflow).
fn later(now: Instant, by: Duration) -> Instant {
    now + by.min(YEAR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn reach(t0: Instant) -> Reachability {
        let timing = WebhookTiming {
            down_after: 10 * SEC,
            probe_interval: 2 * SEC,
            ..WebhookTiming::default()
        };
        Reachability::new(&timing, t0)
    }

    #[test]
    fn up_after_set_and_each_delivery_then_down_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut r = reach(t0);
        assert!(r.is_up(t0) && r.may_start(t0));
        assert!(r.is_up(t0 + 9 * SEC));
        r.on_start(t0 + 9 * SEC);
        assert!(r.may_start(t0 + 9 * SEC), "no limit while up");
        r.on_delivered(t0 + 9 * SEC);
        assert!(r.is_up(t0 + 18 * SEC), "a delivery extends it");
        assert!(!r.is_up(t0 + 19 * SEC), "down 10 s after the last delivery");
        // The first probe goes at once, the next 2 s later.
        let t = t0 + 19 * SEC;
        assert!(r.may_start(t));
        r.on_start(t);
        assert!(!r.may_start(t));
        assert!(!r.may_start(t + SEC));
        assert_eq!(r.next_start(t + SEC), Some(t + 2 * SEC));
        assert!(r.may_start(t + 2 * SEC));
        assert_eq!(r.next_start(t + 2 * SEC), None);
        // A delivery brings it back up at once.
        r.on_delivered(t + SEC);
        assert!(r.may_start(t + SEC));
    }

    #[test]
    fn a_refused_connection_downs_it_at_once_until_a_delivery() {
        let t0 = Instant::now();
        let mut r = reach(t0);
        // A burst of requests at a new webhook, all refused.
        for _ in 0..40 {
            r.on_start(t0);
        }
        for ms in [1, 2, 3] {
            r.on_unreachable(t0 + Duration::from_millis(ms));
        }
        let failed = t0 + Duration::from_millis(3);
        assert!(!r.is_up(failed), "within 10 s of the set, yet down");
        assert_eq!(r.next_start(failed), Some(failed + 2 * SEC), "no second burst");
        r.on_start(failed + 2 * SEC);
        r.on_unreachable(failed + 2 * SEC);
        assert_eq!(r.next_start(failed + 3 * SEC), Some(failed + 4 * SEC));
        // Another answer than a delivery keeps it down; a delivery ends it.
        r.on_start(failed + 4 * SEC);
        assert!(!r.may_start(failed + 5 * SEC));
        r.on_delivered(failed + 5 * SEC);
        assert!(r.may_start(failed + 5 * SEC));
        assert!(r.is_up(failed + 14 * SEC));
    }

    #[test]
    fn restart_makes_it_up_and_the_probe_due() {
        let t0 = Instant::now();
        let mut r = reach(t0);
        r.on_unreachable(t0);
        assert!(!r.may_start(t0 + SEC));
        r.restart(t0 + SEC);
        assert!(r.is_up(t0 + SEC) && r.may_start(t0 + SEC));
        assert!(!r.is_up(t0 + 11 * SEC));
        assert!(
            r.may_start(t0 + 11 * SEC),
            "the first probe after a restart is due at once"
        );
    }
}
