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
    let mut signals = match Signals::install() {
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

#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name. Never returns if no signal can arrive any more.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.terminate.recv() => "SIGTERM",
            Some(()) = self.interrupt.recv() => "SIGINT",
            else => std::future::pending().await,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> io::Result<Signals> {
        Ok(Signals)
    }

    /// The next Ctrl-C. Never returns if it cannot be listened for (logged).
    async fn recv(&mut self) -> &'static str {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for Ctrl-C; stop the runtime with its shutdown token");
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}
