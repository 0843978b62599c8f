//! [`TeloxideError`]: why a teloxide handler tree did not handle an update.

use pollgate_runtime::{BoxError, Overloaded};

/// Why a [`TeloxideHandler`](crate::TeloxideHandler) did not handle an update.
///
/// # Examples
///
/// Telegram's 429 in a branch comes back as overload, with its `retry_after`, for the
/// admission policy:
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_runtime::Handler;
/// use pollgate_teloxide::{TeloxideError, TeloxideHandler};
/// use teloxide::dispatching::UpdateHandler;
/// use teloxide::prelude::*;
/// use teloxide::types::Seconds;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tree: UpdateHandler<teloxide::RequestError> = Update::filter_message()
///     .endpoint(|| async { Err(teloxide::RequestError::RetryAfter(Seconds::from_seconds(3))) });
/// let handler = TeloxideHandler::with_dependencies(tree, dptree::deps![]);
/// let json = r#"{"update_id":1,"message":{"message_id":5,"date":1700000000,
///     "chat":{"id":42,"type":"private","first_name":"Ada"},"text":"hi"}}"#;
/// let error = handler.handle(pollgate_core::Update::from_json(json).unwrap()).await.unwrap_err();
/// let TeloxideError::Overloaded(overloaded) = error else { panic!("{error:?}") };
/// assert_eq!(overloaded.retry_after, Some(Duration::from_secs(3)));
/// # }
/// ```
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
