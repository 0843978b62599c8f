//! [`TeloxideError`]: why a teloxide handler tree did not handle an update.

use pollgate_runtime::{BoxError, Overloaded};

/// Why a [`TeloxideHandler`](crate::TeloxideHandler) did not handle an update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeloxideError {
    /// The update is valid JSON for pollgate but not a `teloxide::types::Update`.
    #[error("update {update_id} cannot be decoded as a teloxide Update")]
    Undecodable {
        /// The update's id.
        update_id: i64,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// Telegram pushed back (429 `retry_after`) or could not be reached: reported to the
    /// admission policy as overload.
    #[error("Telegram pushed back")]
    Overloaded(#[source] Overloaded),
    /// The handler tree returned an error.
    #[error("the handler tree failed")]
    Handler(#[source] BoxError),
}
