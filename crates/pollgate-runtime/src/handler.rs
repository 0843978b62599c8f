//! The handler: what runs for each update.
//!
//! Any `Fn(Update) -> impl Future<Output = Result<(), E>>` is a handler, so a closure is
//! enough; implement [`Handler`] by hand to name the future type or keep state.
//! A returned error is counted, logged with the update id and reported to the admission
//! policy as a failure unrelated to load, unless it is (or wraps) [`Overloaded`], which
//! tells the policy the handler is shedding load. A panic is caught, counted and
//! reported as a panic. Neither ever stops the runtime.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use pollgate_core::Update;

/// The error type handlers' errors are converted into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Handles one update.
///
/// # Examples
///
/// A closure is a handler; a type implements the trait to keep state (here, a counter
/// shared with the caller) and to name its future:
///
/// ```
/// use std::future::{Ready, ready};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use pollgate_core::Update;
/// use pollgate_runtime::Handler;
///
/// struct Count(Arc<AtomicU64>);
///
/// impl Handler for Count {
///     type Error = std::convert::Infallible;
///     type Future = Ready<Result<(), Self::Error>>;
///
///     fn handle(&self, _update: Update) -> Self::Future {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         ready(Ok(()))
///     }
/// }
///
/// let seen = Arc::new(AtomicU64::new(0));
/// let handler = Count(Arc::clone(&seen));
/// let update = Update::from_json(r#"{"update_id": 1}"#).unwrap();
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(handler.handle(update)).unwrap();
/// assert_eq!(seen.load(Ordering::Relaxed), 1);
///
/// // A closure works as it is:
/// let echo = |update: Update| async move { Ok::<(), std::io::Error>(println!("{}", update.id())) };
/// rt.block_on(echo.handle(Update::from_json(r#"{"update_id": 2}"#).unwrap())).unwrap();
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The handler's error.
    type Error: Into<BoxError> + Send + 'static;
    /// The future that handles one update.
    type Future: Future<Output = Result<(), Self::Error>> + Send + 'static;

    /// Starts handling `update`.
    fn handle(&self, update: Update) -> Self::Future;
}

impl<F, Fut, E> Handler for F
where
    F: Fn(Update) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    type Error = E;
    type Future = Fut;

    fn handle(&self, update: Update) -> Fut {
        self(update)
    }
}

/// Return this error (or one whose source chain contains it) from a handler to tell the
/// admission policy that the work failed because of load, such as a downstream service
/// shedding requests. Other errors are treated as unrelated to load and never shrink a
/// limit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use pollgate_runtime::Overloaded;
///
/// let e = Overloaded::new("the payments API answered 503").retry_after(Duration::from_secs(5));
/// assert_eq!(e.to_string(), "overloaded: the payments API answered 503");
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Overloaded {
    /// What was overloaded.
    pub reason: String,
    /// How long the downstream asked to be left alone, if it said (reported to the
    /// policy as [`Completion::retry_after`](pollgate_admission::Completion::retry_after)).
    pub retry_after: Option<Duration>,
}

impl Overloaded {
    /// Overload for `reason`.
    pub fn new(reason: impl Into<String>) -> Overloaded {
        Overloaded {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// The same, with the wait the downstream asked for.
    pub fn retry_after(mut self, wait: Duration) -> Overloaded {
        self.retry_after = Some(wait);
        self
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overloaded: {}", self.reason)
    }
}

impl std::error::Error for Overloaded {}

/// The [`Overloaded`] that `error` is, or was caused by.
pub(crate) fn overload<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Overloaded> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(o) = e.downcast_ref::<Overloaded>() {
            return Some(o);
        }
        cur = e.source();
    }
    None
}
