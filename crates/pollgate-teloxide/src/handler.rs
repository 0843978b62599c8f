//! [`TeloxideHandler`]: a dptree handler tree as pollgate's [`Handler`].

use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;

use pollgate_core::Update;
use pollgate_runtime::{BoxError, Handler, Overloaded};
use teloxide::RequestError;
use teloxide::dispatching::UpdateHandler;
use teloxide::dptree::di::DependencyMap;
use teloxide::requests::Requester;
use tracing::debug;

use crate::error::TeloxideError;

/// Runs a teloxide handler tree for each update pollgate admits.
///
/// Cheap to clone; the tree and the dependencies are shared.
///
/// # Examples
///
/// The runtime calls it with each admitted update; typed, it reaches the tree's branches
/// with their dependencies:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use pollgate_runtime::Handler;
/// use pollgate_teloxide::{TeloxideError, TeloxideHandler};
/// use teloxide::dispatching::UpdateHandler;
/// use teloxide::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tree: UpdateHandler<teloxide::RequestError> =
///     Update::filter_message().endpoint(|msg: Message, seen: Arc<AtomicU64>| async move {
///         seen.store(msg.chat.id.0 as u64, Ordering::Relaxed);
///         Ok(())
///     });
/// let seen = Arc::new(AtomicU64::new(0));
/// let handler = TeloxideHandler::with_dependencies(tree, dptree::deps![seen.clone()]);
///
/// let json = r#"{"update_id":1,"message":{"message_id":5,"date":1700000000,
///     "chat":{"id":42,"type":"private","first_name":"Ada"},"text":"hi"}}"#;
/// handler.handle(pollgate_core::Update::from_json(json).unwrap()).await.unwrap();
/// assert_eq!(seen.load(Ordering::Relaxed), 42);
///
/// // An id past teloxide's `u32` is valid for pollgate, not for teloxide: an error, not
/// // a panic.
/// let odd = pollgate_core::Update::from_json(r#"{"update_id":4294967296,"poll":{}}"#).unwrap();
/// let error = handler.handle(odd).await.unwrap_err();
/// assert!(matches!(error, TeloxideError::Undecodable { update_id: 4294967296, .. }));
/// # }
/// ```
pub struct TeloxideHandler<E> {
    tree: Arc<UpdateHandler<E>>,
    deps: Arc<DependencyMap>,
}

impl<E> Clone for TeloxideHandler<E> {
    fn clone(&self) -> Self {
        TeloxideHandler {
            tree: Arc::clone(&self.tree),
            deps: Arc::clone(&self.deps),
        }
    }
}

impl<E> fmt::Debug for TeloxideHandler<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeloxideHandler").finish_non_exhaustive()
    }
}

impl<E> TeloxideHandler<E>
where
    E: Into<BoxError> + Send + Sync + 'static,
{
    /// Wraps `tree` with `deps`, plus `bot` and its `Me` (from one `getMe`), as teloxide's
    /// `Dispatcher` provides them (`filter_command` needs `Me`). `bot` may be any
    /// requester: `Bot`, or `Bot` wrapped in adaptors such as `Throttle`.
    ///
    /// # Errors
    ///
    /// When `getMe` fails (a bad token, Telegram unreachable).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped, it has sent at most a `getMe`, which changes nothing.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pollgate_teloxide::TeloxideHandler;
    /// use teloxide::dispatching::UpdateHandler;
    /// use teloxide::prelude::*;
    ///
    /// # async fn demo(tree: UpdateHandler<teloxide::RequestError>) -> Result<(), teloxide::RequestError> {
    /// let bot = Bot::from_env(); // TELOXIDE_TOKEN
    /// // The tree's branches may ask for `Bot` and `Me`, as under teloxide's Dispatcher.
    /// let handler = TeloxideHandler::new(bot, tree, dptree::deps![]).await?;
    /// # let _ = handler;
    /// # Ok(()) }
    /// ```
    pub async fn new<B>(bot: B, tree: UpdateHandler<E>, mut deps: DependencyMap) -> Result<Self, B::Err>
    where
        B: Requester + Clone + Send + Sync + 'static,
    {
        let me = bot.get_me().await?;
        deps.insert(me);
        deps.insert(bot);
        Ok(Self::with_dependencies(tree, deps))
    }

    /// Wraps `tree` with `deps` as they are (insert the bot and its `Me` yourself).
    pub fn with_dependencies(tree: UpdateHandler<E>, deps: DependencyMap) -> Self {
        TeloxideHandler {
            tree: Arc::new(tree),
            deps: Arc::new(deps),
        }
    }
}

impl<E> Handler for TeloxideHandler<E>
where
    E: Into<BoxError> + Send + Sync + 'static,
{
    type Error = TeloxideError;
    type Future = Pin<Box<dyn Future<Output = Result<(), TeloxideError>> + Send>>;

    fn handle(&self, update: Update) -> Self::Future {
        let (tree, deps) = (Arc::clone(&self.tree), Arc::clone(&self.deps));
        Box::pin(async move {
            let typed: teloxide::types::Update =
                serde_json::from_str(update.raw()).map_err(|source| TeloxideError::Undecodable {
                    update_id: update.id(),
                    source,
                })?;
            let mut deps = (*deps).clone();
            deps.insert(typed);
            match tree.dispatch(deps).await {
                ControlFlow::Break(Ok(())) => Ok(()),
                ControlFlow::Break(Err(e)) => Err(classify(e.into())),
                ControlFlow::Continue(_) => {
                    debug!(update_id = update.id(), "no branch of the handler tree took the update");
                    Ok(())
                }
            }
        })
    }
}

/// Telegram's 429 and network errors are overload; anything else is the handler's.
pub(crate) fn classify(error: BoxError) -> TeloxideError {
    // The error itself or any cause in its chain (a user's error wrapping a RequestError).
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    let mut pushed_back = None;
    while let Some(e) = cause {
        match e.downcast_ref::<RequestError>() {
            Some(RequestError::RetryAfter(after)) => {
                let reason = format!("Telegram asked to retry after {after}");
                pushed_back = Some(Overloaded::new(reason).retry_after(after.duration()));
                break;
            }
            Some(RequestError::Network(e)) => {
                pushed_back = Some(Overloaded::new(format!(
                    "Telegram unreachable: {}",
                    pollgate_core::ErrorChain(e)
                )));
                break;
            }
            _ => cause = e.source(),
        }
    }
    match pushed_back {
        Some(overloaded) => TeloxideError::Overloaded(overloaded),
        None => TeloxideError::Handler(error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use teloxide::types::Seconds;

    use super::*;

    #[test]
    fn retry_after_is_overload_and_other_errors_are_the_handlers() {
        let e = classify(Box::new(RequestError::RetryAfter(Seconds::from_seconds(3))));
        assert!(
            matches!(&e, TeloxideError::Overloaded(o) if o.reason.contains("3s") && o.retry_after == Some(Duration::from_secs(3))),
            "{e:?}"
        );
        let e = classify(Box::new(RequestError::MigrateToChatId(teloxide::types::ChatId(-1))));
        assert!(matches!(e, TeloxideError::Handler(_)), "{e:?}");
        let e = classify("a bug".into());
        assert!(matches!(e, TeloxideError::Handler(_)));
    }
}
