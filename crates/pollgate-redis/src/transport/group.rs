//! Commands with the transport's retries, and the consumer group kept in existence.

use super::*;

impl Inner {
    /// Runs a command, retrying transient failures with backoff and re-creating the group
    /// if it disappeared.
    pub(super) async fn retry<T, F, Fut>(&self, command: &'static str, mut attempt: F) -> Result<T, RedisTransportError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut recreated = false;
        loop {
            match with_retries(&self.settings.backoff, &self.stats.retries, command, &mut attempt).await {
                Err(RedisTransportError::Refused { source, .. }) if no_group(&source) && !recreated => {
                    warn!(command, group = %self.settings.group, "consumer group missing; creating it again");
                    recreated = true;
                    self.group_ready.store(false, Ordering::Release);
                    Box::pin(self.create_group(true)).await?;
                }
                other => return other,
            }
        }
    }

    /// Creates the consumer group (and the stream) unless done already.
    pub(super) async fn ensure_group(&self) -> Result<(), RedisTransportError> {
        if self.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.create_group(false).await
    }

    /// Creates the group. A group re-created because it disappeared starts at the
    /// beginning of the stream whatever [`StartFrom`] says: entries added since it
    /// vanished must not be skipped.
    pub(super) async fn create_group(&self, again: bool) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let start = match s.start {
            StartFrom::NewEntries if !again => "$",
            _ => "0",
        };
        let created = crate::commands::create_group(
            &s.backoff,
            &self.stats.retries,
            &self.writer,
            &s.stream,
            &s.group,
            start,
        )
        .await?;
        if created {
            info!(stream = %s.stream, group = %s.group, start, "consumer group created");
        }
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
        conn: &ConnectionManager,
    ) -> Result<T, RedisTransportError> {
        self.retry(command, || {
            let mut conn = conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        })
        .await
    }

    pub(super) async fn leave_group(&self) -> Result<(), RedisTransportError> {
        let s = &self.settings;
        let mut cmd = eval(LEAVE_GROUP, &[&s.stream]);
        cmd.arg(&s.group).arg(&s.consumer);
        if let Value::Int(-1) = self.query("EVAL (leave group)", &cmd, &self.writer).await? {
            debug!(consumer = %s.consumer, "entries still pending: the consumer stays in the group");
        } else {
            debug!(consumer = %s.consumer, "consumer removed from the group");
        }
        Ok(())
    }

    pub(super) async fn xack(&self, ids: &[&str]) -> Result<u64, RedisTransportError> {
        let s = &self.settings;
        let mut acked = 0;
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&s.stream).arg(&s.group);
            for id in chunk {
                cmd.arg(*id);
            }
            let n: i64 = self.query("XACK", &cmd, &self.writer).await?;
            acked += n.max(0) as u64;
        }
        Ok(acked)
    }
}
