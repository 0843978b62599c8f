//! [`DeadLetters`]: a spool's dead letters, worked on while no bot runs on the spool.
//!
//! A running bot holds its spool file locked; its [`SpoolTransport`] lists, replays and
//! purges dead letters in process. Once it has stopped, an operator opens the same file
//! with [`DeadLetters::open`] (or the `pollgate-spool` command, feature `cli`): a replayed
//! letter goes back among the entries and is handled first at the next start.
//!
//! [`SpoolTransport`]: crate::SpoolTransport

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::SpoolError;
use crate::store::{DeadLetter, Store, Which};

/// The dead letters of a spool that is not running.
///
/// # Examples
///
/// ```no_run
/// use pollgate_spool::{DeadLetters, Which};
///
/// # fn demo() -> Result<(), pollgate_spool::SpoolError> {
/// let dead = DeadLetters::open("/var/lib/mybot/spool")?;
/// for letter in dead.list()? {
///     println!("{}: {} attempts, {}", letter.update_id, letter.attempts, letter.error);
/// }
/// // The bug is fixed: handle them again at the next start.
/// dead.replay(Which::All)?;
/// # Ok(()) }
/// ```
pub struct DeadLetters {
    store: Store,
    dir: PathBuf,
}

impl DeadLetters {
    /// Opens the spool in `dir` (it must exist; nothing is created).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Open`] when there is no spool there, it is corrupt, or a running
    /// spool holds it ([`SpoolError::is_locked`]: stop the bot, or use its
    /// [`SpoolTransport`](crate::SpoolTransport) instead).
    pub fn open(dir: impl AsRef<Path>) -> Result<DeadLetters, SpoolError> {
        let dir = dir.as_ref();
        Ok(DeadLetters {
            store: Store::open_existing(dir, 1 << 20)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Every dead letter, in id order.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Store`] when the table cannot be read.
    pub fn list(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        self.store.dead_letters()
    }

    /// Puts dead letters back among the entries; the next start handles them first.
    /// Returns how many; ids that are not dead letters are skipped.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Store`] when the transaction fails (nothing moved).
    pub fn replay(&self, which: Which<'_>) -> Result<usize, SpoolError> {
        self.store.take_dead(which, true).map(|taken| taken.len())
    }

    /// Deletes dead letters for good. Returns how many; ids that are not dead letters
    /// are skipped.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Store`] when the transaction fails (nothing deleted).
    pub fn purge(&self, which: Which<'_>) -> Result<usize, SpoolError> {
        self.store.take_dead(which, false).map(|taken| taken.len())
    }
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}
