//! Re-delivery: this consumer's own pending entries, entries claimed from dead consumers,
//! and the dead-letter stream for what was delivered too often or is not an update.

use super::*;

impl Inner {
    /// Ids of up to `count` entries of this consumer's own pending list, after the cursor.
    pub(super) async fn own_pending(&self, count: usize) -> Result<Vec<String>, RedisTransportError> {
        let s = &self.settings;
        let (cursor, in_flight) = {
            let st = self.state.lock();
            (st.history_cursor.clone(), st.in_flight.len())
        };
        let start = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
        let want = count + in_flight;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(start)
            .arg("+")
            .arg(want)
            .arg(&s.consumer);
        let rows = reply::pending(self.query("XPENDING", &cmd, &self.writer).await?)?;
        let mut st = self.state.lock();
        st.history_cursor = rows.last().map(|(id, _)| id.clone());
        if rows.len() < want {
            st.history = History::Done;
            st.history_cursor = None;
        }
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    /// Claims up to `count` entries idle for longer than `claim_idle`; returns their ids.
    pub(super) async fn claim(&self, count: usize) -> Result<Vec<String>, RedisTransportError> {
        let s = &self.settings;
        let cursor = self.state.lock().claim_cursor.clone();
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(s.claim_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(count);
        let (next, claimed, deleted) = reply::auto_claim(self.query("XAUTOCLAIM", &cmd, &self.writer).await?)?;
        if !deleted.is_empty() {
            // Redis removed them from the pending list itself.
            warn!(entries = ?deleted, "pending entries were deleted from the stream before being handled");
            self.stats.deleted.fetch_add(deleted.len() as u64, Ordering::Relaxed);
        }
        let mut st = self.state.lock();
        if next == "0-0" {
            // A full pass: look again after a fraction of the idle time.
            st.next_claim = Instant::now() + (s.claim_idle / 4).max(Duration::from_millis(5));
        }
        st.claim_cursor = next;
        Ok(claimed.into_iter().map(|e| e.id).collect())
    }

    /// For re-deliveries (own pending entries, claimed ones): which are still pending on
    /// this consumer, how often they were delivered, and their content, in one pipeline.
    /// `count_delivery` claims each to itself (`XCLAIM`), which counts a delivery;
    /// otherwise the content is read with `XRANGE`, which does not.
    ///
    /// Entries in flight here are skipped before asking, so an acknowledgement that races
    /// this cannot make an entry look fresh: if it is no longer in the in-flight set, its
    /// `XACK` has run, and the `XPENDING` below no longer lists it.
    pub(super) async fn redeliver(
        &self,
        ids: Vec<String>,
        count_delivery: bool,
        seen: &HashSet<String>,
    ) -> Result<Vec<(Entry, u64)>, RedisTransportError> {
        let ids: Vec<String> = {
            let st = self.state.lock();
            ids.into_iter()
                .filter(|id| !st.in_flight.contains(id.as_str()) && !seen.contains(id))
                .collect()
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let s = &self.settings;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("XPENDING")
                .arg(&s.stream)
                .arg(&s.group)
                .arg(id)
                .arg(id)
                .arg(1)
                .arg(&s.consumer);
            if count_delivery {
                pipe.cmd("XCLAIM")
                    .arg(&s.stream)
                    .arg(&s.group)
                    .arg(&s.consumer)
                    .arg(0)
                    .arg(id);
            } else {
                pipe.cmd("XRANGE").arg(&s.stream).arg(id).arg(id);
            }
        }
        let replies: Vec<Value> = self
            .retry("XPENDING+XRANGE", || {
                let mut conn = self.writer.clone();
                let pipe = pipe.clone();
                async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
            })
            .await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let mut replies = replies.into_iter();
        for id in ids {
            let (Some(pending), Some(content)) = (replies.next(), replies.next()) else {
                return Err(RedisTransportError::Protocol {
                    command: "XPENDING+XRANGE",
                    detail: "fewer replies than commands".into(),
                });
            };
            let Some((_, deliveries)) = reply::pending(pending)?.into_iter().next() else {
                continue; // acknowledged meanwhile, or claimed by another worker
            };
            match reply::entries("XRANGE", content)?.into_iter().next() {
                Some(entry) if entry.fields.is_some() => {
                    out.push((entry, deliveries + u64::from(count_delivery)));
                }
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            warn!(entries = ?gone, "pending entries were deleted from the stream before being handled; acknowledged");
            let ids: Vec<&str> = gone.iter().map(String::as_str).collect();
            self.xack(&ids).await?;
            self.stats.deleted.fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Moves an entry to the dead-letter stream with the reason, then acknowledges it.
    pub(super) async fn dead_letter(
        &self,
        entry: &Entry,
        reason: &str,
        deliveries: u64,
    ) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let mut cmd = eval(DEAD_LETTER, &[&s.stream, &s.dead_letter]);
        cmd.arg(&s.group).arg(&s.consumer).arg(&entry.id);
        for (field, value) in entry.fields.iter().flatten() {
            cmd.arg(field).arg(value.as_slice());
        }
        cmd.arg("pollgate_reason")
            .arg(reason)
            .arg("pollgate_source_stream")
            .arg(&s.stream)
            .arg("pollgate_source_id")
            .arg(&entry.id)
            .arg("pollgate_deliveries")
            .arg(deliveries)
            .arg("pollgate_consumer")
            .arg(&s.consumer);
        let moved: i64 = self.query("EVAL (dead letter)", &cmd, &self.writer).await?;
        if moved == 1 {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            error!(entry = %entry.id, deliveries, reason, dead_letter = %s.dead_letter, "entry moved to the dead-letter stream");
        }
        Ok(())
    }

    /// Turns delivered entries into updates (appended to `out`, their ids to `seen`);
    /// over-delivered and malformed entries are dead-lettered instead.
    pub(super) async fn accept(
        &self,
        entries: Vec<(Entry, u64)>,
        source: Source,
        out: &mut Vec<Update>,
        seen: &mut HashSet<String>,
    ) -> Result<(), RedisTransportError> {
        let max = u64::from(self.settings.max_deliveries);
        for (entry, deliveries) in entries {
            if !seen.insert(entry.id.clone()) {
                continue;
            }
            if entry.fields.is_none() {
                // Pending but deleted from the stream (a new read never returns one).
                warn!(entry = %entry.id, "a pending entry was deleted from the stream; acknowledged");
                self.xack(&[entry.id.as_str()]).await?;
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if deliveries > max {
                let reason =
                    format!("delivered {deliveries} times (max_deliveries {max}) without its handler finishing");
                self.dead_letter(&entry, &reason, deliveries).await?;
                continue;
            }
            match decode(&entry, &self.settings.field) {
                Ok(update) => {
                    out.push(update.with_receipt(Arc::<str>::from(entry.id.as_str())));
                    let counter = match source {
                        Source::New => &self.stats.read,
                        Source::Own => &self.stats.recovered,
                        Source::Claimed => &self.stats.claimed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.dead_letter(&entry, &e.reason(), deliveries).await?,
            }
        }
        Ok(())
    }
}
