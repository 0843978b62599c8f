//! The heartbeat: a slow handler is not a dead consumer.
//!
//! Every `claim_idle / 4` a background task re-claims this worker's in-flight entries that it
//! still owns, which resets their idle time, so only a consumer that stopped heart-beating
//! loses its entries to `XAUTOCLAIM` on the other workers.

use super::*;

impl RedisStreamTransport {
    pub(super) fn start_heartbeat(&self) {
        let mut slot = self.heartbeat.lock();
        if slot.is_none() {
            let weak = Arc::downgrade(&self.inner);
            let every = (self.inner.settings.claim_idle / 4).max(Duration::from_millis(2));
            *slot = Some(tokio::spawn(heartbeat(weak, every)));
        }
    }
}

/// Every `every` (a quarter of `claim_idle`), heart-beats all in-flight entries, so slow
/// handlers are not mistaken for a dead consumer; a failed beat is retried at the next
/// tick, still well within `claim_idle`.
async fn heartbeat(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let ids: Vec<Arc<str>> = inner.state.lock().in_flight.iter().cloned().collect();
        let s = &inner.settings;
        for chunk in ids.chunks(500) {
            let mut cmd = eval(HEARTBEAT, &[&s.stream]);
            cmd.arg(&s.group).arg(&s.consumer);
            for id in chunk {
                cmd.arg(&**id);
            }
            let mut conn = inner.writer.clone();
            match cmd.query_async::<i64>(&mut conn).await {
                Ok(n) => {
                    inner.stats.heartbeats.fetch_add(n.max(0) as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(error = %e, entries = chunk.len(), "heartbeat failed; retrying at the next tick");
                }
            }
        }
    }
}
