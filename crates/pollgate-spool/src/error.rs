//! [`SpoolError`]: what can go wrong with the store or the source behind it.

/// An error of the spool or of the transport it fills from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool could not be opened: the directory is not writable, the file is locked by
    /// another process, or it is corrupt. Nothing was deleted; fix or move the file.
    #[error("cannot open the spool at {path}")]
    Open {
        /// The spool file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A read or write of the store failed (disk full, I/O error).
    #[error("spool store failed while it {doing}")]
    Store {
        /// What the spool was doing.
        doing: &'static str,
        /// The store's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The transport the spool fills from failed for good (its own retries exhausted).
    #[error("the spool's source failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SpoolError {
    /// Whether the spool file is held by another process (or another spool in this one):
    /// typically the previous instance of the bot, still exiting. Opening again once it is
    /// gone succeeds.
    ///
    /// # Examples
    ///
    /// The dead letters of a running spool are its [`SpoolTransport`](crate::SpoolTransport)'s
    /// to work on; [`DeadLetters`](crate::DeadLetters) opens the file once the bot stopped:
    ///
    /// ```
    /// use pollgate_core::{Ack, FetchRequest, Transport};
    /// use pollgate_spool::{DeadLetters, SpoolTransport};
    ///
    /// # use std::convert::Infallible;
    /// # use std::sync::Mutex;
    /// # use pollgate_core::{AckModel, Batch, Update};
    /// # /// Updates served like `getUpdates`, then long polls that find nothing.
    /// # struct Backlog(Mutex<(Vec<Update>, i64)>);
    /// # impl Backlog {
    /// #     fn new(ids: std::ops::RangeInclusive<i64>) -> Backlog {
    /// #         let json = |id| format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":7}}}}}}"#);
    /// #         Backlog(Mutex::new((ids.map(|id| Update::from_json(&json(id)).unwrap()).collect(), 0)))
    /// #     }
    /// # }
    /// # impl Transport for Backlog {
    /// #     type Error = Infallible;
    /// #     fn ack_model(&self) -> AckModel { AckModel::Cumulative { window: 100 } }
    /// #     async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
    /// #         let updates: Vec<Update> = {
    /// #             let state = self.0.lock().unwrap();
    /// #             state.0.iter().filter(|u| u.id() >= state.1).take(request.limit).cloned().collect()
    /// #         };
    /// #         if updates.is_empty() { tokio::time::sleep(request.timeout).await }
    /// #         Ok(Batch { updates, ..Batch::default() })
    /// #     }
    /// #     async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
    /// #         let mut state = self.0.lock().unwrap();
    /// #         state.1 = state.1.max(ack.below.unwrap_or(0));
    /// #         Ok(())
    /// #     }
    /// #     async fn flush(&self) -> Result<(), Infallible> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let telegram = Backlog::new(1..=0);
    /// let dir = std::env::temp_dir().join(format!("pollgate-spool-lock-doc-{}", std::process::id()));
    /// let spool = SpoolTransport::builder(&dir).open(telegram)?;
    /// let error = DeadLetters::open(&dir).unwrap_err();
    /// assert!(error.is_locked(), "{error}");
    /// spool.close().await;
    /// assert!(DeadLetters::open(&dir)?.list()?.is_empty());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn is_locked(&self) -> bool {
        matches!(self, SpoolError::Open { source, .. } if matches!(**source, redb::DatabaseError::DatabaseAlreadyOpen))
    }

    pub(crate) fn store(doing: &'static str) -> impl FnOnce(redb::Error) -> SpoolError {
        move |source| SpoolError::Store {
            doing,
            source: Box::new(source),
        }
    }
}
