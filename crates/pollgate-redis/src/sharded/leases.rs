//! Leases: one owner per shard, renewed in the background, shares balanced across the live
//! workers, and a shard given up when its lease could not be confirmed.

use super::*;

/// Every `every` (a quarter of the TTL: a renewal late by up to another quarter still keeps the shard, which is given up half a TTL after the last one): heartbeat, renew, balance.
pub(super) async fn lease_task(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first round ran in `start`
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.lease_round().await {
            warn!(error = %pollgate_core::ErrorChain(&e), "lease round failed; retrying at the next tick");
        }
    }
}

impl Inner {
    /// One command with the transport's retries.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
        conn: &ConnectionManager,
    ) -> Result<T, RedisTransportError> {
        commands::query(&self.settings.backoff, &self.stats.retries, command, cmd, conn).await
    }

    /// Heartbeats into the workers set; returns how many workers are alive.
    pub(super) async fn register(&self) -> Result<u64, RedisTransportError> {
        let s = &self.settings;
        let mut cmd = eval(WORKERS, &[s.layout.workers()]);
        cmd.arg(&s.worker).arg(s.lease_ttl.as_millis() as u64);
        self.query("EVAL (workers)", &cmd, &self.writer).await
    }

    /// Heartbeat, renew what is held, take or give up shards to hold about S / workers.
    pub(super) async fn lease_round(&self) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let ttl_ms = s.lease_ttl.as_millis() as u64;
        let workers = self.register().await?;
        let share = s.layout.shards.div_ceil(workers.max(1) as u32);

        // Renew (what was not confirmed for half a TTL is given up first: it may already
        // be someone else's).
        let held: Vec<(u32, String)> = {
            let mut st = self.state.lock();
            self.give_up_unconfirmed(&mut st, Instant::now());
            st.held.iter().map(|(&k, h)| (k, h.token.clone())).collect()
        };
        if !held.is_empty() {
            let keys: Vec<String> = held.iter().map(|(k, _)| s.layout.lease(*k)).collect();
            let mut cmd = eval(RENEW, &keys);
            cmd.arg(ttl_ms);
            for (_, t) in &held {
                cmd.arg(t);
            }
            let sent = Instant::now();
            let renewed: Vec<i64> = self.query("EVAL (renew)", &cmd, &self.writer).await?;
            let mut st = self.state.lock();
            for ((shard, token), ok) in held.iter().zip(renewed) {
                let Some(h) = st.held.get_mut(shard).filter(|h| &h.token == token) else {
                    continue;
                };
                if ok == 1 {
                    h.confirmed = sent;
                } else {
                    let in_flight = h.in_flight.len();
                    st.held.remove(shard);
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        shard,
                        in_flight, "shard lease lost: reading and acknowledging nothing more there"
                    );
                }
            }
        }

        // Trim what every owner has acknowledged (where something was, since the last
        // trim): the streams would grow for ever.
        let trim: Vec<(u32, String)> = {
            let mut st = self.state.lock();
            st.held
                .iter_mut()
                .filter_map(|(&k, h)| (h.group_ready && std::mem::take(&mut h.trim_due)).then(|| (k, h.token.clone())))
                .collect()
        };
        for (shard, token) in trim {
            let mut cmd = eval(TRIM, &[s.layout.stream(shard), s.layout.lease(shard)]);
            cmd.arg(&s.group).arg(&token);
            match self.query::<i64>("EVAL (trim)", &cmd, &self.writer).await {
                Ok(n) if n > 0 => debug!(shard, trimmed = n, "acknowledged entries trimmed"),
                Ok(_) => {}
                Err(e) if group_missing(&e) => self.groups_lost([shard]),
                Err(e) => return Err(e),
            }
        }

        // Balance: drain what is over the share, take free shards up to it.
        let (active, release) = {
            let mut st = self.state.lock();
            let mut active: Vec<u32> = st
                .held
                .iter()
                .filter(|(_, h)| h.phase != Phase::Draining)
                .map(|(&k, _)| k)
                .collect();
            // Drain the shards with the least in flight first.
            active.sort_by_key(|k| st.held[k].in_flight.len());
            while active.len() > share as usize {
                let shard = active.remove(0);
                debug!(shard, share, "over the share: draining the shard");
                if let Some(h) = st.held.get_mut(&shard) {
                    h.phase = Phase::Draining;
                }
            }
            (active.len(), self.drained(&mut st))
        };
        self.release(release).await?;
        if active < share as usize {
            self.acquire(share as usize - active).await?;
        }
        Ok(())
    }

    /// Removes the draining shards with nothing in flight; returns their leases.
    pub(super) fn drained(&self, st: &mut State) -> Vec<(u32, String)> {
        // Not under a read that may still be served: its entries would be delivered to
        // the owner after the next one had recovered.
        let now = Instant::now();
        let busy: Vec<u32> = match &st.blocked {
            Some((until, shards)) if now < *until => shards.clone(),
            _ => Vec::new(),
        };
        let done: Vec<u32> = st
            .held
            .iter()
            .filter(|(k, h)| h.phase == Phase::Draining && h.in_flight.is_empty() && !busy.contains(k))
            .map(|(&k, _)| k)
            .collect();
        done.into_iter()
            .filter_map(|k| st.held.remove(&k).map(|h| (k, h.token)))
            .collect()
    }

    /// Deletes the leases that still hold their tokens.
    pub(super) async fn release(&self, leases: Vec<(u32, String)>) -> Result<(), RedisTransportError> {
        if leases.is_empty() {
            return Ok(());
        }
        let s = &self.settings;
        let keys: Vec<String> = leases.iter().map(|(k, _)| s.layout.lease(*k)).collect();
        let mut cmd = eval(RELEASE, &keys);
        for (_, t) in &leases {
            cmd.arg(t);
        }
        let _: Value = self.query("EVAL (release)", &cmd, &self.writer).await?;
        self.stats.released.fetch_add(leases.len() as u64, Ordering::Relaxed);
        info!(shards = ?leases.iter().map(|(k, _)| k).collect::<Vec<_>>(), "shard leases released");
        Ok(())
    }

    /// Takes up to `want` free shards, starting at a place of this worker's own (so that
    /// workers do not all contend for shard 0).
    pub(super) async fn acquire(&self, want: usize) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let n = s.layout.shards;
        let (candidates, tokens) = {
            let mut st = self.state.lock();
            let start = (splitmix64(s.token.len() as u64 ^ hash_str(&s.token)) % u64::from(n)) as u32;
            let free: Vec<u32> = (0..n)
                .map(|i| (start + i) % n)
                .filter(|k| !st.held.contains_key(k))
                .collect();
            let tokens: Vec<(u64, String)> = free
                .iter()
                .map(|_| {
                    st.tenures += 1;
                    (st.tenures, format!("{}:{}", s.token, st.tenures))
                })
                .collect();
            (free, tokens)
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = candidates.iter().map(|k| s.layout.lease(*k)).collect();
        let mut cmd = eval(ACQUIRE, &keys);
        cmd.arg(s.lease_ttl.as_millis() as u64).arg(want);
        for (_, t) in &tokens {
            cmd.arg(t);
        }
        let sent = Instant::now();
        let taken: Vec<i64> = self.query("EVAL (acquire)", &cmd, &self.writer).await?;
        let mut new = Vec::new();
        {
            let mut st = self.state.lock();
            for ((shard, (tenure, token)), ok) in candidates.into_iter().zip(tokens).zip(taken) {
                if ok == 1 {
                    st.held.insert(
                        shard,
                        Held {
                            tenure,
                            token,
                            confirmed: sent,
                            phase: Phase::Recovering { cursor: None },
                            group_ready: false,
                            in_flight: HashSet::new(),
                            trim_due: true,
                        },
                    );
                    new.push(shard);
                }
            }
        }
        if !new.is_empty() {
            self.stats.acquired.fetch_add(new.len() as u64, Ordering::Relaxed);
            info!(shards = ?new, "shard leases taken");
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Whether `h` may still be read: its lease was confirmed less than half a TTL ago.
    pub(super) fn usable(&self, h: &Held, now: Instant) -> bool {
        now < h.confirmed + self.settings.lease_ttl / 2
    }

    /// Gives up the shards whose lease has not been confirmed for half a TTL (Redis is
    /// unreachable, or this process was paused): the lease may expire at the server
    /// before this worker can renew it, and another worker take the shard. From now on
    /// nothing delivered under them starts here (revoked) or is acknowledged here; the
    /// next owner delivers it again.
    pub(super) fn give_up_unconfirmed(&self, st: &mut State, now: Instant) {
        let stale: Vec<u32> = st
            .held
            .iter()
            .filter(|(_, h)| !self.usable(h, now))
            .map(|(&k, _)| k)
            .collect();
        for shard in stale {
            if let Some(h) = st.held.remove(&shard) {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                warn!(
                    shard,
                    in_flight = h.in_flight.len(),
                    "shard lease not confirmed for half its TTL: given up (its next owner delivers what was in flight)"
                );
            }
        }
    }
}
