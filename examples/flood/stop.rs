//! Stopping the demo cleanly: SIGTERM or SIGINT (Ctrl-C) to the parent is forwarded to the
//! running child, which drains (`shutdown_on_signals`), confirms the offset and still
//! prints its result; the parent starts no further run and reports what ran.
//!
//! Each signal is forwarded once, so a second one aborts the child's drain, as it would
//! for a bot run by hand. Children run in their own process group (see `parent.rs`):
//! a terminal's Ctrl-C, sent to the whole foreground group, would otherwise reach the
//! child twice (from the terminal and from the parent) and abort the drain at once.
//! Elsewhere than on Unix only Ctrl-C is watched, and the child, on the same console,
//! receives it itself.

use std::io::Write;

use tokio::sync::watch;

/// A stop signal.
pub(crate) use pollgate::runtime::StopSignal as Kind;
use pollgate::runtime::StopSignals;

/// The stop signals the parent received, and which of them were forwarded.
#[derive(Debug)]
pub(crate) struct Stops {
    /// How many signals arrived, and the last one.
    received: watch::Receiver<(u32, Kind)>,
    forwarded: u32,
}

impl Stops {
    /// Whether a stop was asked for: start no further run.
    pub(crate) fn requested(&self) -> bool {
        self.received.borrow().0 > 0
    }

    /// The next signal not yet forwarded, as soon as there is one.
    ///
    /// Cancel safe: a signal counts as forwarded only once returned.
    pub(crate) async fn next(&mut self) -> Kind {
        loop {
            let (count, kind) = *self.received.borrow_and_update();
            if count > self.forwarded {
                self.forwarded += 1;
                return kind;
            }
            if self.received.changed().await.is_err() {
                // The listener is gone: no signal will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Listens for SIGTERM and SIGINT (Ctrl-C elsewhere than on Unix) from now on.
///
/// # Errors
/// When a signal handler cannot be installed.
pub(crate) fn listen() -> Result<Stops, String> {
    let (tx, rx) = watch::channel((0, Kind::Terminate));
    let mut signals = StopSignals::install().map_err(|e| format!("cannot listen for SIGTERM/SIGINT: {e}"))?;
    tokio::spawn(async move {
        loop {
            let kind = signals.recv().await;
            let first = tx.borrow().0 == 0;
            // Not `eprintln!`: it panics when stderr is gone (a closed pipe), and this task
            // must keep forwarding.
            let _ = writeln!(
                std::io::stderr(),
                "flood: {kind} received: {}",
                if first {
                    "the running child drains and reports; no further run starts"
                } else {
                    "the running child aborts its drain"
                }
            );
            tx.send_modify(|(count, last)| {
                *count += 1;
                *last = kind;
            });
        }
    });
    Ok(Stops {
        received: rx,
        forwarded: 0,
    })
}

/// Sends `kind` to the process `pid` (nothing happens if it has just exited).
#[cfg(unix)]
pub(crate) fn forward(pid: u32, kind: Kind) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = match kind {
        Kind::Terminate => Signal::TERM,
        _ => Signal::INT,
    };
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, signal);
    }
}

/// Nothing to do: the child shares the console and receives Ctrl-C itself.
#[cfg(not(unix))]
pub(crate) fn forward(_pid: u32, _kind: Kind) {}
