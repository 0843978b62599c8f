//! Delivery from the shards held: the previous owners' pending entries first, then new
//! ones; acknowledgements and dead letters fenced by the lease.

use super::*;

impl Inner {
    /// Creates the group on a shard stream unless done this tenure.
    pub(super) async fn ensure_group(&self, shard: u32) -> Result<(), RedisTransportError> {
        if self.state.lock().held.get(&shard).is_none_or(|h| h.group_ready) {
            return Ok(());
        }
        let s = &self.settings;
        let stream = s.layout.stream(shard);
        commands::create_group(&s.backoff, &self.stats.retries, &self.writer, &stream, &s.group, "0").await?;
        if let Some(h) = self.state.lock().held.get_mut(&shard) {
            h.group_ready = true;
        }
        Ok(())
    }

    /// Delivers up to `count` of the previous owners' pending entries of `shard`, in
    /// stream order; moves the shard to reading once there are no more.
    pub(super) async fn recover(
        &self,
        shard: u32,
        count: usize,
        out: &mut Vec<Update>,
    ) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let (tenure, token, cursor, in_flight) = {
            let st = self.state.lock();
            let Some(h) = st.held.get(&shard) else { return Ok(()) };
            let Phase::Recovering { cursor } = &h.phase else {
                return Ok(());
            };
            (h.tenure, h.token.clone(), cursor.clone(), h.in_flight.clone())
        };
        let stream = s.layout.stream(shard);
        let start = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&stream).arg(&s.group).arg(start).arg("+").arg(count).arg(OWNER);
        let rows = reply::pending(self.query("XPENDING", &cmd, &self.writer).await?)?;
        let done = rows.len() < count;
        let last = rows.last().map(|(id, _)| id.clone());
        let ids: Vec<(String, u64)> = rows
            .into_iter()
            .filter(|(id, _)| !in_flight.contains(id.as_str()))
            .collect();
        if !ids.is_empty() {
            let mut cmd = eval(FENCED_CLAIM, &[stream.clone(), s.layout.lease(shard)]);
            cmd.arg(&s.group).arg(OWNER).arg(&token);
            for (id, _) in &ids {
                cmd.arg(id);
            }
            let claimed: Value = self.query("EVAL (claim)", &cmd, &self.writer).await?;
            if claimed == Value::Nil {
                // The lease is gone: stop now (a fetch would otherwise come straight back
                // to this shard until the next renewal).
                let mut st = self.state.lock();
                if st.held.get(&shard).is_some_and(|h| h.token == token) {
                    st.held.remove(&shard);
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    warn!(shard, "shard lease lost during recovery");
                }
                return Ok(());
            }
            let entries = reply::entries("XCLAIM", claimed)?;
            let present: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let deleted = ids.iter().filter(|(id, _)| !present.contains(id.as_str())).count();
            if deleted > 0 {
                warn!(
                    shard,
                    entries = deleted,
                    "pending entries were deleted from the stream before being handled"
                );
                self.stats.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
            }
            let deliveries: std::collections::HashMap<&str, u64> =
                ids.iter().map(|(id, d)| (id.as_str(), d + 1)).collect();
            let with_counts = entries
                .into_iter()
                .map(|e| {
                    let d = deliveries.get(e.id.as_str()).copied().unwrap_or(1);
                    (e, d)
                })
                .collect();
            self.accept((shard, tenure), &token, with_counts, true, out).await?;
        }
        let mut st = self.state.lock();
        if let Some(h) = st
            .held
            .get_mut(&shard)
            .filter(|h| h.token == token && h.phase != Phase::Draining)
        {
            h.phase = if done {
                Phase::Reading
            } else {
                Phase::Recovering { cursor: last }
            };
        }
        Ok(())
    }

    /// Turns entries of `shard` into updates with receipts `{shard}/{id}`; over-delivered
    /// and malformed entries go to the dead-letter stream.
    pub(super) async fn accept(
        &self,
        (shard, tenure): (u32, u64),
        token: &str,
        entries: Vec<(Entry, u64)>,
        recovered: bool,
        out: &mut Vec<Update>,
    ) -> Result<(), RedisTransportError> {
        let max = u64::from(self.settings.max_deliveries);
        for (entry, deliveries) in entries {
            if entry.fields.is_none() {
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
                self.fenced_ack(shard, token, &[entry.id.as_str()]).await?;
                continue;
            }
            if deliveries > max {
                let reason =
                    format!("delivered {deliveries} times (max_deliveries {max}) without its handler finishing");
                self.dead_letter(shard, token, &entry, &reason, deliveries).await?;
                continue;
            }
            match decode(&entry, &self.settings.field) {
                Ok(update) => {
                    out.push(update.with_receipt(Arc::<str>::from(format!("{shard}/{tenure}/{}", entry.id))));
                    let counter = if recovered {
                        &self.stats.recovered
                    } else {
                        &self.stats.read
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.dead_letter(shard, token, &entry, &e.reason(), deliveries).await?,
            }
        }
        Ok(())
    }

    pub(super) async fn dead_letter(
        &self,
        shard: u32,
        token: &str,
        entry: &Entry,
        reason: &str,
        deliveries: u64,
    ) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let stream = s.layout.stream(shard);
        let mut cmd = eval(FENCED_DEAD, &[stream.clone(), s.layout.lease(shard), s.layout.dead()]);
        cmd.arg(&s.group).arg(token).arg(&entry.id);
        for (field, value) in entry.fields.iter().flatten() {
            cmd.arg(field).arg(value.as_slice());
        }
        cmd.arg("pollgate_reason")
            .arg(reason)
            .arg("pollgate_source_stream")
            .arg(&stream)
            .arg("pollgate_source_id")
            .arg(&entry.id)
            .arg("pollgate_deliveries")
            .arg(deliveries)
            .arg("pollgate_consumer")
            .arg(&s.worker);
        let moved: i64 = self.query("EVAL (dead letter)", &cmd, &self.writer).await?;
        if moved == 1 {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            error!(shard, entry = %entry.id, deliveries, reason, "entry moved to the dead-letter stream");
        }
        Ok(())
    }

    /// `XACK`s `ids` of `shard` while this tenure's lease holds; returns how many.
    pub(super) async fn fenced_ack(&self, shard: u32, token: &str, ids: &[&str]) -> Result<u64, RedisTransportError> {
        let s = &self.settings;
        let mut acked = 0;
        for chunk in ids.chunks(1000) {
            let mut cmd = eval(FENCED_ACK, &[s.layout.stream(shard), s.layout.lease(shard)]);
            cmd.arg(&s.group).arg(token);
            for id in chunk {
                cmd.arg(*id);
            }
            let n: i64 = match self.query("EVAL (ack)", &cmd, &self.writer).await {
                Ok(n) => n,
                Err(e) if group_missing(&e) => {
                    // Gone with the group (Redis lost its data): nothing to acknowledge.
                    self.groups_lost([shard]);
                    self.stats.fenced.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n < 0 {
                self.stats.fenced.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                warn!(
                    shard,
                    entries = chunk.len(),
                    "not acknowledged: the shard's lease was lost (its next owner delivers them again)"
                );
            } else {
                acked += n as u64;
            }
        }
        Ok(acked)
    }

    /// Reads new entries from the readable shards, at most `limit`, blocking up to
    /// `block` (never past the shards' usable time).
    ///
    /// One attempt only: a read resent after a failure would carry a `BLOCK` and a list
    /// of shards computed before it (a lease may be gone by then), and the lost reply may
    /// have delivered entries. On a failure the shards it covered recover their pending
    /// entries before reading again, after a backoff delay; the fetch returns what it has.
    pub(super) async fn read_new(
        &self,
        shards: &[(u32, Instant)],
        limit: usize,
        block: Duration,
        out: &mut Vec<Update>,
    ) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        // `COUNT` is per stream: read at most `limit` shards, `limit / n` from each, so
        // that the batch never exceeds what the policy admits (the caller rotates which
        // shards come first). With more readable shards than that, do not block: the
        // others may have entries.
        let cut = shards.len() > limit;
        let shards = &shards[..shards.len().min(limit)];
        let per = limit / shards.len().max(1);
        let until = shards.iter().map(|(_, u)| *u).min().unwrap_or_else(Instant::now);
        let block = if cut {
            Duration::ZERO
        } else {
            block.min(until.saturating_duration_since(Instant::now()))
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&s.group).arg(OWNER).arg("COUNT").arg(per);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for (k, _) in shards {
            cmd.arg(s.layout.stream(*k));
        }
        for _ in shards {
            cmd.arg(">");
        }
        // Until its reply arrives the read may still be served: its shards are neither
        // released nor flushed before then, and a fetch dropped meanwhile marks them for
        // recovery.
        let covered: Vec<u32> = shards.iter().map(|(k, _)| *k).collect();
        self.state.lock().blocked = Some((Instant::now() + block + READ_SLACK, covered.clone()));
        let mut guard = ReadGuard {
            inner: self,
            shards: covered,
            armed: true,
        };
        let mut conn = self.reader.clone();
        let value = match cmd.query_async::<Value>(&mut conn).await {
            Ok(v) => {
                // The guard stays armed until every entry of the reply is handed over or
                // dead-lettered: a fetch dropped in between recovers the shards.
                let mut st = self.state.lock();
                st.blocked = None;
                st.read_failures = 0;
                v
            }
            Err(e) => {
                drop(guard); // the shards recover first
                if no_group(&e) {
                    self.groups_lost(shards.iter().map(|(k, _)| *k));
                }
                if !(transient(&e) || no_group(&e)) {
                    return Err(RedisTransportError::Refused {
                        command: "XREADGROUP",
                        source: e,
                    });
                }
                let failures = {
                    let mut st = self.state.lock();
                    st.read_failures += 1;
                    st.read_failures
                };
                if s.backoff.max_retries.is_some_and(|max| failures > max) {
                    return Err(RedisTransportError::Unavailable {
                        command: "XREADGROUP",
                        attempts: failures,
                        source: e,
                    });
                }
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                let delay = s.backoff.delay(failures);
                warn!(error = %pollgate_core::ErrorChain(&e), attempt = failures, ?delay, "XREADGROUP failed; recovering the shards' pending entries, then reading again");
                tokio::time::sleep(delay).await;
                return Ok(());
            }
        };
        for (stream, entries) in reply::read_groups(value)? {
            let Some(shard) = stream.rsplit(':').next().and_then(|k| k.parse::<u32>().ok()) else {
                continue;
            };
            let held = self.state.lock().held.get(&shard).map(|h| (h.tenure, h.token.clone()));
            let Some((tenure, token)) = held else { continue };
            let entries = entries.into_iter().map(|e| (e, 1)).collect();
            let before = out.len();
            self.accept((shard, tenure), &token, entries, false, out).await?;
            debug!(shard, entries = out.len() - before, "read");
        }
        guard.armed = false;
        Ok(())
    }

    /// The consumer group of these shards is gone (Redis lost its data, or failed over to
    /// a replica without it): it is created again, from the start of the stream, and
    /// the shards recover before reading.
    pub(super) fn groups_lost(&self, shards: impl IntoIterator<Item = u32>) {
        let mut st = self.state.lock();
        for k in shards {
            if let Some(h) = st.held.get_mut(&k) {
                warn!(shard = k, "the consumer group is gone; creating it again");
                h.group_ready = false;
                if h.phase != Phase::Draining {
                    h.phase = Phase::Recovering { cursor: None };
                }
            }
        }
    }
}

/// Marks the shards of a read that did not complete (an error, or the fetch dropped) for
/// recovery: entries it delivered are pending on the owner, and `>` never returns them.
struct ReadGuard<'a> {
    inner: &'a Inner,
    shards: Vec<u32>,
    armed: bool,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.state.lock();
            for k in &self.shards {
                if let Some(h) = st.held.get_mut(k).filter(|h| h.phase == Phase::Reading) {
                    h.phase = Phase::Recovering { cursor: None };
                }
            }
        }
    }
}
