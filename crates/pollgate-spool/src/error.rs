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
