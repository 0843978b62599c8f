//! Draining on SIGTERM and SIGINT, turned on by [`RuntimeBuilder::shutdown_on_signals`].
//!
//! SIGTERM is how Docker, Kubernetes and systemd stop a process; SIGINT is Ctrl-C. The first
//! one starts the graceful shutdown (as cancelling the shutdown token does); a second one
//! during the drain ends it at once, as the drain deadline would. Elsewhere than on Unix,
//! Ctrl-C (`tokio::signal::ctrl_c`) plays both parts.
//!
//! [`RuntimeBuilder::shutdown_on_signals`]: crate::RuntimeBuilder::shutdown_on_signals

use std::io;
use std::time::Duration;

use pollgate_admission::Gate;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, info, warn};

/// Listens from now on, and for as long as the returned handle lives: the first signal
/// cancels `shutdown`; the next one cancels `abort` and closes `gate` (what the drain
/// deadline does). `None` when the signal handlers could not be installed (logged).
pub(crate) fn drain_on_signals(
    shutdown: CancellationToken,
    abort: CancellationToken,
    gate: Gate,
    deadline: Duration,
) -> Option<AbortOnDropHandle<()>> {
    // Installed before `run` goes on, so a signal that arrives at once is not missed.
    let mut signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM/SIGINT; stop the runtime with its shutdown token");
            return None;
        }
    };
    Some(AbortOnDropHandle::new(tokio::spawn(async move {
        let name = signals.recv().await;
        info!("{name} received: draining (deadline {deadline:?})");
        shutdown.cancel();
        let name = signals.recv().await;
        warn!("{name} received again: aborting the drain now");
        abort.cancel();
        gate.close();
    })))
}

/// A stop signal received by [`StopSignals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopSignal {
    /// SIGTERM: how Docker, Kubernetes and systemd stop a process.
    Terminate,
    /// SIGINT: Ctrl-C (elsewhere than on Unix, Ctrl-C).
    Interrupt,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt if cfg!(unix) => "SIGINT",
            StopSignal::Interrupt => "Ctrl-C",
        })
    }
}

/// Listens for the signals that ask a process to stop: SIGTERM and SIGINT on Unix, Ctrl-C
/// elsewhere. [`RuntimeBuilder::shutdown_on_signals`] uses it; a supervisor that forwards
/// signals to its children (the flood demo) can use it too.
///
/// The handlers are installed by [`install`](Self::install), so a signal that arrives
/// between `install` and the first [`recv`](Self::recv) is not lost. tokio never removes
/// them: once installed, these signals no longer end the process by themselves.
///
/// # Examples
///
/// ```no_run
/// use pollgate_runtime::StopSignals;
///
/// # async fn demo() -> std::io::Result<()> {
/// let mut signals = StopSignals::install()?;
/// let first = signals.recv().await;
/// println!("{first} received: stopping");
/// # Ok(()) }
/// ```
///
/// [`RuntimeBuilder::shutdown_on_signals`]: crate::RuntimeBuilder::shutdown_on_signals
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the signal handlers and starts listening.
    ///
    /// # Errors
    /// When a handler cannot be installed (no tokio runtime with signal support).
    pub fn install() -> io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// The next stop signal. Never returns if none can arrive any more (or, elsewhere than
    /// on Unix, if Ctrl-C cannot be listened for: logged).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that arrives while no `recv` is pending is kept for the next.
    pub async fn recv(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.terminate.recv() => StopSignal::Terminate,
                Some(()) = self.interrupt.recv() => StopSignal::Interrupt,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            StopSignal::Interrupt
        }
    }
}
