//! [`Writer`]: the one thread that runs the spool's transactions.
//!
//! # Why one thread, and not `spawn_blocking`
//!
//! redb runs one write transaction at a time anyway (a second `begin_write` waits for the
//! first to commit), so the commits of the filler and the deletions of the acks gain
//! nothing from running on several threads. On tokio's blocking pool they did run on
//! several, and each thread that allocates gets its own glibc arena: the transactions'
//! buffers, freed, stayed behind in up to 16 arenas. Measured on the standard workload
//! with glibc's default arenas, `bytes:128MiB` through the spool peaked 29 MiB above the
//! same run without it; with one thread for every transaction, that excess falls to 12 MiB
//! (`docs/spool.md`). The queue in front of the thread is bounded.

use std::fmt;
use std::thread;

use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the transaction thread. The thread ends when the last handle is dropped
/// (after running what was queued).
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// The thread is gone (it panicked in a transaction).
#[derive(Debug)]
pub(crate) struct WriterGone;

impl Writer {
    /// Starts the thread.
    ///
    /// # Errors
    /// When the operating system refuses a new thread.
    pub(crate) fn start() -> std::io::Result<Writer> {
        // Each sender waits its turn; a few queued jobs keep the thread busy.
        let (jobs, mut queue) = mpsc::channel::<Job>(8);
        thread::Builder::new().name("pollgate-spool".into()).spawn(move || {
            while let Some(job) = queue.blocking_recv() {
                job();
            }
        })?;
        Ok(Writer { jobs })
    }

    /// Runs `job` on the thread and returns its result.
    ///
    /// # Cancel safety
    /// Once queued, the job runs even if this future is dropped; only its result is lost.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, WriterGone> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).await.map_err(|_| WriterGone)?;
        result.await.map_err(|_| WriterGone)
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}
