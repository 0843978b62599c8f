//! Errors returned by the [`Gate`](crate::Gate).

use std::fmt;

/// The gate was closed with [`Gate::close`](crate::Gate::close); no more permits are granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("admission gate closed")
    }
}

impl std::error::Error for Closed {}

/// Why [`Gate::try_acquire`](crate::Gate::try_acquire) returned no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// The gate was closed.
    Closed,
    /// The policy does not admit the update now, or others are already waiting.
    NoCapacity,
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("admission gate closed"),
            Self::NoCapacity => f.write_str("no admission capacity available now"),
        }
    }
}

impl std::error::Error for TryAcquireError {}

impl From<Closed> for TryAcquireError {
    fn from(_: Closed) -> Self {
        Self::Closed
    }
}
