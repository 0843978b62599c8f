//! [`SpoolTransport`]: the spool as a [`Transport`] the runtime drives, and the filler
//! task that keeps it fed from the source.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use pollgate_core::{Ack, AckModel, Batch, DecodeFailure, FetchRequest, Transport, Update};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, warn};

use crate::error::SpoolError;
use crate::store::{DeadLetter, SpoolStats, Store, Which};
use crate::writer::{Writer, WriterGone};

/// Configures a spool. Made by [`SpoolTransport::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pollgate_core::TelegramTransport;
/// use pollgate_spool::SpoolTransport;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let telegram = TelegramTransport::builder(std::env::var("TELEGRAM_BOT_TOKEN")?).build()?;
/// let bot_id = telegram.token().bot_id().expect("a token starts with the bot's id");
/// let spool = SpoolTransport::builder("/var/lib/mybot/spool")
///     .source(bot_id.to_string()) // a restart confirms at once what was spooled
///     .max_entries(500_000)
///     .max_bytes(1 << 30)
///     .cache_bytes(4 << 20)
///     .fill_timeout(Duration::from_secs(30))
///     .open(telegram)?;
/// # let _ = spool;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until opened"]
#[derive(Clone, Debug)]
pub struct SpoolBuilder {
    dir: PathBuf,
    max_entries: u64,
    max_bytes: u64,
    fill_timeout: Duration,
    window: usize,
    cache_bytes: usize,
    source: Option<String>,
}

impl SpoolBuilder {
    /// The name of the source this spool fills from (for Telegram, the bot's id: the
    /// token's part before `:`). With it, a restart within 24 hours confirms at once what
    /// the spool committed before the crash, so nothing is fetched twice; without it, or
    /// when the name differs (another bot on the same directory), the recorded offset is
    /// not trusted and at most one batch is spooled twice after a crash.
    pub fn source(mut self, name: impl Into<String>) -> Self {
        self.source = Some(name.into());
        self
    }

    /// The store's page cache (default 8 MiB). redb's own default, 1 GiB, would count
    /// against the memory the admission policy budgets; the spool reads each entry once.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The most entries the spool holds (default 100 000); at the limit the filler stops
    /// fetching and the backlog waits on the source.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// The most JSON bytes the spool holds (default 256 MiB; the file is larger by
    /// redb's pages and free space).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The long-poll timeout of the filler's fetches from the source (default 25 s).
    pub fn fill_timeout(mut self, timeout: Duration) -> Self {
        self.fill_timeout = timeout;
        self
    }

    /// Opens (or creates) the spool in its directory, then starts filling it from
    /// `source` on the current tokio runtime. What the spool already holds is delivered
    /// first, in id order.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Open`] when the file cannot be opened (locked by another process,
    /// corrupt, not writable); [`SpoolError::Store`] when its contents cannot be read.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open<T: Transport>(self, source: T) -> Result<SpoolTransport<T>, SpoolError> {
        let (store, contents) = Store::open(&self.dir, self.cache_bytes, self.source.as_deref())?;
        let bytes = contents.entries.values().map(|&b| u64::from(b)).sum();
        let entries = contents.entries.len() as u64;
        let (dead_letters, dead_bytes) = contents.dead;
        if dead_letters > 0 {
            tracing::warn!(
                dead_letters,
                dead_bytes,
                "spool holds dead letters: list, replay or purge them (pollgate-spool dead list DIR)"
            );
        }
        if entries > 0 {
            tracing::info!(
                entries,
                bytes,
                "spool holds unfinished updates from before; they go first"
            );
        }
        let writer = Writer::start().map_err(|e| SpoolError::Open {
            path: self.dir.join("spool.redb"),
            source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(e))),
        })?;
        let shared = Arc::new(Shared {
            store,
            writer,
            limits: self.clone(),
            state: Mutex::new(State {
                ready: contents.entries,
                leased: HashMap::new(),
                high: contents.high,
                error: None,
            }),
            stats: Arc::new(Mutex::new(SpoolStats {
                entries,
                bytes,
                peak_bytes: bytes,
                dead_letters,
                dead_bytes,
                ..SpoolStats::default()
            })),
            arrived: Notify::new(),
            room: Notify::new(),
            stop: CancellationToken::new(),
            average: AtomicU64::new(0),
        });
        let source = Arc::new(source);
        let filler = AbortOnDropHandle::new(tokio::spawn(fill(Arc::clone(&shared), Arc::clone(&source))));
        Ok(SpoolTransport {
            shared,
            source,
            filler: tokio::sync::Mutex::new(Some(filler)),
        })
    }
}

/// A durable local spool in front of a transport with cumulative acks (Telegram): a
/// [`Transport`] with individual acks that the runtime drives at full speed under
/// at-least-once delivery. See the [crate docs](crate).
///
/// # Examples
///
/// What the runtime does with it: fetch what the filler spooled, acknowledge each update
/// by its receipt once handled (`telegram` stands for a `TelegramTransport`):
///
/// ```
/// use std::time::Duration;
/// use pollgate_core::{Ack, FetchRequest, Transport};
/// use pollgate_spool::SpoolTransport;
///
/// # use std::convert::Infallible;
/// # use std::sync::Mutex;
/// # use pollgate_core::{AckModel, Batch, Update};
/// # /// Updates served like `getUpdates`, then long polls that find nothing.
/// # struct Backlog(Mutex<(Vec<Update>, i64)>);
/// # impl Backlog {
/// #     fn new(ids: std::ops::RangeInclusive<i64>) -> Backlog {
/// #         let json = |id| format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":7}}}}}}"#);
/// #         Backlog(Mutex::new((ids.map(|id| Update::from_json(&json(id)).unwrap()).collect(), 0)))
/// #     }
/// # }
/// # impl Transport for Backlog {
/// #     type Error = Infallible;
/// #     fn ack_model(&self) -> AckModel { AckModel::Cumulative { window: 100 } }
/// #     async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
/// #         let updates: Vec<Update> = {
/// #             let state = self.0.lock().unwrap();
/// #             state.0.iter().filter(|u| u.id() >= state.1).take(request.limit).cloned().collect()
/// #         };
/// #         if updates.is_empty() { tokio::time::sleep(request.timeout).await }
/// #         Ok(Batch { updates, ..Batch::default() })
/// #     }
/// #     async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
/// #         let mut state = self.0.lock().unwrap();
/// #         state.1 = state.1.max(ack.below.unwrap_or(0));
/// #         Ok(())
/// #     }
/// #     async fn flush(&self) -> Result<(), Infallible> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let telegram = Backlog::new(1..=3);
/// let dir = std::env::temp_dir().join(format!("pollgate-spool-doc-{}", std::process::id()));
/// let spool = SpoolTransport::builder(&dir).max_entries(10_000).open(telegram)?;
/// let handle = spool.handle();
/// let request = FetchRequest { limit: 100, timeout: Duration::from_secs(10) };
/// let mut receipts = Vec::new();
/// while receipts.len() < 3 {
///     let batch = spool.fetch(request).await?; // on disk, and confirmed to the source
///     receipts.extend(batch.updates.iter().filter_map(|u| u.receipt().cloned()));
/// }
/// assert_eq!(spool.stats().spooled, 3);
/// spool.ack(Ack { below: None, receipts: &receipts, failed: &[] }).await?; // handled: deleted
/// spool.close().await;
/// assert_eq!((handle.stats().entries, handle.stats().deleted), (0, 3));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
pub struct SpoolTransport<T> {
    shared: Arc<Shared>,
    source: Arc<T>,
    filler: tokio::sync::Mutex<Option<AbortOnDropHandle<()>>>,
}

struct Shared {
    store: Store,
    /// Runs the commits and deletions, one at a time, on one thread.
    writer: Writer,
    limits: SpoolBuilder,
    state: Mutex<State>,
    /// The counters, apart so that a [`SpoolHandle`] does not keep the store open.
    stats: Arc<Mutex<SpoolStats>>,
    /// Wakes the fetch when entries arrive (or the filler failed).
    arrived: Notify,
    /// Wakes the filler when entries were deleted.
    room: Notify,
    /// Stops the filler between commits (never inside one).
    stop: CancellationToken,
    /// The average entry size of the last committed batch (0: none yet).
    average: AtomicU64,
}

struct State {
    /// Entries waiting for a fetch: id → JSON size.
    ready: BTreeMap<i64, u32>,
    /// Entries handed to the runtime and not acknowledged yet.
    leased: HashMap<i64, u32>,
    /// The highest id committed (when trusted: see [`SpoolBuilder::source`]).
    high: Option<i64>,
    /// The filler's final error, returned by the next fetch.
    error: Option<SpoolError>,
}

impl SpoolTransport<()> {
    /// Starts configuring a spool kept in `dir` (created if missing; the file is
    /// `dir/spool.redb`).
    pub fn builder(dir: impl Into<PathBuf>) -> SpoolBuilder {
        SpoolBuilder {
            dir: dir.into(),
            max_entries: 100_000,
            max_bytes: 256 << 20,
            fill_timeout: Duration::from_secs(25),
            window: 100,
            cache_bytes: 8 << 20,
            source: None,
        }
    }
}

impl<T> SpoolTransport<T> {
    /// What the spool holds and has done.
    pub fn stats(&self) -> SpoolStats {
        *self.shared.stats.lock()
    }

    /// A handle on the spool's counters that outlives the runtime's ownership of it.
    pub fn handle(&self) -> SpoolHandle {
        SpoolHandle {
            stats: Arc::clone(&self.shared.stats),
        }
    }

    /// Stops the filler, waits for the transactions already queued (an acknowledgement
    /// whose caller went away, say), and closes the spool file, so that it can be opened
    /// again in this process once this returns (dropping the transport closes it a moment
    /// later, when the filler task has ended). Entries stay in the spool; nothing is
    /// confirmed that was not already.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the transport: the filler is aborted, and the file is
    /// closed once the transactions already queued have run, a moment later. Nothing is
    /// lost (what the filler was committing is delivered at the next open), but the file
    /// may still be open for a moment after the drop.
    pub async fn close(self) {
        self.stop_filler().await;
        // The queue is first in, first out: once this no-op ran, every job before it has
        // run and dropped its handle on the store.
        let _ = self.shared.writer.run(|| ()).await;
    }

    /// Puts leased entries back among the waiting ones (a fetch that failed after leasing).
    fn unlease(&self, ids: &[i64]) {
        let mut state = self.shared.state.lock();
        for id in ids {
            if let Some(size) = state.leased.remove(id) {
                state.ready.insert(*id, size);
            }
        }
    }

    /// Stops the filler between two commits and waits for it to end.
    async fn stop_filler(&self) {
        self.shared.stop.cancel();
        let filler = self.filler.lock().await.take();
        if let Some(filler) = filler {
            let _ = filler.await;
        }
    }
}

impl Shared {
    /// How many entries the filler may ask for now: 0 until the room reaches the low-water
    /// mark (a quarter of `max_entries`, at most one window), so that a full spool refills
    /// in whole batches rather than one `getUpdates` and one commit per freed entry; and
    /// no more than the free bytes hold at the entries' average size.
    ///
    /// Dead letters count against both limits: a spool that fills with them stops
    /// fetching (and says so) rather than growing without bound.
    fn room(&self) -> usize {
        let s = *self.stats.lock();
        let l = &self.limits;
        let free_entries = l.max_entries.saturating_sub(s.entries + s.dead_letters);
        let low_water = (l.max_entries / 4).clamp(1, l.window as u64);
        let free_bytes = l.max_bytes.saturating_sub(s.bytes + s.dead_bytes);
        // The entries' average size: of those held, else of the last batch; unknown before
        // the first batch, which then asks for one update only.
        let average = match (s.entries, self.average.load(Relaxed)) {
            (0, 0) => return usize::from(free_entries > 0 && free_bytes > 0),
            (0, last) => last,
            (n, _) => (s.bytes / n).max(1),
        };
        if free_entries < low_water.min(l.max_entries) || free_bytes < average {
            return 0;
        }
        let by_bytes = (free_bytes / average).max(1);
        usize::try_from(free_entries.min(by_bytes)).unwrap_or(usize::MAX)
    }

    fn fail(&self, error: SpoolError) {
        error!(error = %pollgate_core::ErrorChain(&error), "spool filler stopped");
        self.state.lock().error = Some(error);
        self.arrived.notify_one();
    }
}

/// The filler: while there is room, fetch from the source, commit, then confirm. It stops
/// (on `shared.stop`) only while waiting for room or for the source, never between a
/// commit and the bookkeeping after it.
async fn fill<T: Transport>(shared: Arc<Shared>, source: Arc<T>) {
    let window = shared.limits.window;
    // The offset to confirm: everything up to the last committed batch.
    let mut confirm = shared.state.lock().high.map(|h| h + 1);
    let mut said_full = false;
    loop {
        let room = loop {
            let freed = shared.room.notified();
            let room = shared.room();
            if room > 0 {
                said_full = false;
                break room;
            }
            let s = *shared.stats.lock();
            if !said_full && s.dead_letters > 0 {
                said_full = true;
                warn!(
                    entries = s.entries,
                    dead_letters = s.dead_letters,
                    dead_bytes = s.dead_bytes,
                    "spool full, dead letters included: fetching waits (replay or purge them: pollgate-spool dead list DIR)"
                );
            }
            tokio::select! {
                () = freed => {}
                () = shared.stop.cancelled() => return,
            }
        };
        if let Err(e) = source
            .ack(Ack {
                below: confirm,
                receipts: &[],
                failed: &[],
            })
            .await
        {
            return shared.fail(SpoolError::Source(Box::new(e)));
        }
        let request = FetchRequest {
            limit: room.min(window),
            timeout: shared.limits.fill_timeout,
        };
        let batch = tokio::select! {
            batch = source.fetch(request) => match batch {
                Ok(batch) => batch,
                Err(e) => return shared.fail(SpoolError::Source(Box::new(e))),
            },
            () = shared.stop.cancelled() => return,
        };
        let Some(last) = batch.last_id() else { continue };
        // Already spooled: at or below the trusted highest id, or still in the spool (a
        // batch delivered again after a crash between its commit and its confirmation).
        let spooled = |id: i64, state: &State| {
            state.high.is_some_and(|h| id <= h) || state.ready.contains_key(&id) || state.leased.contains_key(&id)
        };
        let (rows, skipped, high) = {
            let state = shared.state.lock();
            let mut skipped = 0u64;
            let mut rows: Vec<(i64, String)> = Vec::with_capacity(batch.len());
            for u in &batch.updates {
                if spooled(u.id(), &state) {
                    skipped += 1;
                } else {
                    rows.push((u.id(), u.raw().to_owned()));
                }
            }
            // Undecodable updates are spooled too (their excerpt): confirmed with the batch,
            // they must survive a crash until the runtime has reported them.
            for f in &batch.failures {
                if spooled(f.update_id, &state) {
                    skipped += 1;
                } else {
                    rows.push((f.update_id, f.raw.clone()));
                }
            }
            (rows, skipped, state.high)
        };
        drop(batch); // the response body, before the commit
        let new_high = high.map_or(last, |h| h.max(last));
        let store = shared.store.clone();
        let source_name = shared.limits.source.clone();
        let committed = shared
            .writer
            .run(move || {
                let dead_again = store.append(&rows, new_high, source_name.as_deref())?;
                let rows: Vec<(i64, String)> = rows
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !dead_again.contains(i))
                    .map(|(_, row)| row)
                    .collect();
                Ok::<_, SpoolError>((rows, dead_again.len() as u64))
            })
            .await;
        let (rows, dead_again) = match committed {
            Ok(Ok(committed)) => committed,
            Ok(Err(e)) => return shared.fail(e),
            Err(WriterGone) => {
                return shared.fail(SpoolError::Source("the spool's transaction thread failed".into()));
            }
        };
        let mut added = 0u64;
        {
            let mut state = shared.state.lock();
            for (id, json) in &rows {
                let size = u32::try_from(json.len()).unwrap_or(u32::MAX);
                state.ready.insert(*id, size);
                added += u64::from(size);
            }
            state.high = Some(new_high);
        }
        if !rows.is_empty() {
            shared.average.store((added / rows.len() as u64).max(1), Relaxed);
        }
        {
            let mut stats = shared.stats.lock();
            stats.bytes += added;
            stats.entries += rows.len() as u64;
            stats.peak_bytes = stats.peak_bytes.max(stats.bytes);
            stats.batches += 1;
            stats.spooled += rows.len() as u64;
            stats.skipped += skipped + dead_again;
        }
        debug!(spooled = rows.len(), last, "spool committed a batch");
        confirm = Some(new_high + 1);
        shared.arrived.notify_one();
    }
}

impl<T: Transport> Transport for SpoolTransport<T> {
    type Error = SpoolError;

    /// The source's retries: the filler is what talks to the server.
    fn retries(&self) -> Vec<(&'static str, u64)> {
        self.source.retries()
    }

    /// What waits on the source's server (what the spool holds is not counted).
    fn backlog(&self) -> impl std::future::Future<Output = Option<u64>> + Send {
        self.source.backlog()
    }

    fn ack_model(&self) -> AckModel {
        AckModel::Individual {
            window: self.shared.limits.window,
        }
    }

    /// Takes up to `request.limit` spooled entries in id order, waiting up to
    /// `request.timeout` for the filler when none is ready.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: entries are leased only in the step that returns them.
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, SpoolError> {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + request.timeout;
        loop {
            let arrived = shared.arrived.notified();
            let ids = {
                let mut state = shared.state.lock();
                if let Some(e) = state.error.take() {
                    return Err(e);
                }
                let limit = request.limit.clamp(1, shared.limits.window);
                let ids: Vec<i64> = state.ready.keys().take(limit).copied().collect();
                for id in &ids {
                    if let Some(size) = state.ready.remove(id) {
                        state.leased.insert(*id, size);
                    }
                }
                ids
            };
            if !ids.is_empty() {
                let rows = match shared.store.read(&ids) {
                    Ok(rows) => rows,
                    Err(e) => {
                        self.unlease(&ids);
                        return Err(e);
                    }
                };
                let mut updates = Vec::with_capacity(rows.len());
                let mut failures = Vec::new();
                for (id, json) in rows {
                    match Update::from_json(&json) {
                        Ok(update) => updates.push(update.with_receipt(id.to_string())),
                        Err(error) => failures.push(DecodeFailure {
                            update_id: id,
                            id_inferred: false,
                            error,
                            raw: json,
                        }),
                    }
                }
                if !failures.is_empty() {
                    // Reported by the runtime with this batch; retrying cannot decode them.
                    // (Deleted here, not on the transaction thread: an await after the lease
                    // would make this fetch lose its entries when dropped.)
                    let gone: Vec<i64> = failures.iter().map(|f| f.update_id).collect();
                    if let Err(e) = shared.store.remove(&gone) {
                        self.unlease(&ids);
                        return Err(e);
                    }
                    shared.forget(&gone, &[]);
                }
                return Ok(Batch {
                    updates,
                    failures,
                    truncated: false,
                });
            }
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Batch::default()),
            }
        }
    }

    /// Deletes the acknowledged entries and moves those that failed every attempt
    /// ([`Ack::failed`]) to the dead letters, in one transaction, and makes room for the
    /// filler.
    ///
    /// # Cancel safety
    ///
    /// Once its transaction is queued on the spool's transaction thread, a dropped call's
    /// transaction and bookkeeping still complete; only the error is lost. Dropped before
    /// that (while it waits for room in the thread's queue of eight jobs), it does
    /// nothing: the entries stay leased, delivered neither again nor deleted until they
    /// are acknowledged again (the runtime does, in its final acknowledgement) or the
    /// spool is opened again (they are still in the file).
    async fn ack(&self, ack: Ack<'_>) -> Result<(), SpoolError> {
        let failed: Vec<(i64, u32, String)> = ack
            .failed
            .iter()
            .filter_map(|f| Some((f.receipt.parse().ok()?, f.attempts, f.error.clone())))
            .collect();
        let ids: Vec<i64> = ack
            .receipts
            .iter()
            .filter_map(|r| r.parse().ok())
            .filter(|id| !failed.iter().any(|f| f.0 == *id))
            .collect();
        if ids.is_empty() && failed.is_empty() {
            return Ok(());
        }
        // The transaction and the bookkeeping after it are one job on the transaction
        // thread: a dropped call loses neither, and replays and purges (jobs too) never
        // see one without the other.
        let shared = Arc::clone(&self.shared);
        let finished = self.shared.writer.run(move || {
            let moved = shared.store.finish(&ids, &failed)?;
            for (id, attempts, error) in &failed {
                if moved.iter().any(|(m, _)| m == id) {
                    warn!(update_id = id, attempts, error = %error, "update failed on every attempt: kept as a dead letter");
                } else {
                    warn!(
                        update_id = id,
                        attempts,
                        error = %error,
                        "update failed on every attempt, but its entry was already deleted (eager delivery acknowledges at fetch): not kept"
                    );
                }
            }
            shared.forget(&ids, &moved);
            Ok::<(), SpoolError>(())
        });
        match finished.await {
            Ok(result) => result,
            Err(WriterGone) => Err(SpoolError::Source("the spool's transaction thread failed".into())),
        }
    }

    /// Stops the filler and flushes the source (Telegram: confirms the last committed
    /// batch's offset). Entries still in the spool stay there for the next start.
    ///
    /// # Cancel safety
    ///
    /// The filler is stopped at the first poll, whatever follows. Dropped while the filler
    /// winds down, the filler is aborted: a batch it was committing stays in the file and
    /// is delivered at the next start. Dropped before the source's flush completed, the
    /// source's offset may stay behind what the spool committed: the next start fetches
    /// that batch again and skips what the spool still holds (and, with
    /// [`SpoolBuilder::source`], everything up to its recorded highest id); without
    /// `source`, updates of it that were handled meanwhile are spooled and handled again.
    async fn flush(&self) -> Result<(), SpoolError> {
        self.stop_filler().await;
        let confirm = self.shared.state.lock().high.map(|h| h + 1);
        self.source
            .ack(Ack {
                below: confirm,
                receipts: &[],
                failed: &[],
            })
            .await
            .map_err(|e| SpoolError::Source(Box::new(e)))?;
        self.source.flush().await.map_err(|e| SpoolError::Source(Box::new(e)))
    }
}

/// The counters of a [`SpoolTransport`], readable after the runtime took the transport.
/// It does not keep the spool file open.
#[derive(Clone)]
pub struct SpoolHandle {
    stats: Arc<Mutex<SpoolStats>>,
}

impl SpoolHandle {
    /// What the spool holds and has done.
    pub fn stats(&self) -> SpoolStats {
        *self.stats.lock()
    }
}

impl Shared {
    /// Drops deleted entries (`ids`) and entries moved to the dead letters (`moved`) from
    /// the bookkeeping (waiting or leased) and wakes the filler. Runs on the transaction
    /// thread right after the transaction it accounts for (or, for undecodable entries,
    /// after their deletion).
    fn forget(&self, ids: &[i64], moved: &[(i64, u64)]) {
        let (mut count, mut bytes, mut deleted) = (0u64, 0u64, 0u64);
        let (mut dead, mut dead_bytes) = (0u64, 0u64);
        {
            let mut state = self.state.lock();
            for id in ids {
                if let Some(size) = state.leased.remove(id).or_else(|| state.ready.remove(id)) {
                    count += 1;
                    deleted += 1;
                    bytes += u64::from(size);
                }
            }
            for (id, json) in moved {
                if let Some(size) = state.leased.remove(id).or_else(|| state.ready.remove(id)) {
                    bytes += u64::from(size);
                    count += 1;
                }
                // Moved by the transaction: a dead letter now, whatever the bookkeeping held.
                dead += 1;
                dead_bytes += json;
            }
        }
        {
            let mut stats = self.stats.lock();
            stats.entries -= count;
            stats.bytes -= bytes;
            stats.deleted += deleted;
            stats.dead_letters += dead;
            stats.dead_bytes += dead_bytes;
            stats.dead_lettered += dead;
        }
        self.room.notify_one();
    }

    /// Takes dead letters out of their table (back among the entries with `replay`) and
    /// accounts for it. Runs on the transaction thread, in order with the acks.
    fn take_dead(&self, which: Selection, replay: bool) -> Result<usize, SpoolError> {
        let taken = self.store.take_dead(which.borrow(), replay)?;
        let (count, bytes) = (taken.len() as u64, taken.iter().map(|(_, b)| b).sum::<u64>());
        if replay {
            let mut state = self.state.lock();
            for &(id, size) in &taken {
                state.ready.insert(id, u32::try_from(size).unwrap_or(u32::MAX));
            }
        }
        {
            let mut stats = self.stats.lock();
            stats.dead_letters -= count;
            stats.dead_bytes -= bytes;
            if replay {
                stats.entries += count;
                stats.bytes += bytes;
                stats.peak_bytes = stats.peak_bytes.max(stats.bytes);
            }
        }
        if replay {
            self.arrived.notify_one();
        } else {
            self.room.notify_one();
        }
        Ok(taken.len())
    }
}

/// [`Which`], owned, to travel to the transaction thread.
enum Selection {
    All,
    Ids(Vec<i64>),
}

impl Selection {
    fn of(which: Which<'_>) -> Selection {
        match which {
            Which::All => Selection::All,
            Which::Ids(ids) => Selection::Ids(ids.to_vec()),
        }
    }

    fn borrow(&self) -> Which<'_> {
        match self {
            Selection::All => Which::All,
            Selection::Ids(ids) => Which::Ids(ids),
        }
    }
}

impl<T> SpoolTransport<T> {
    /// The dead letters: updates whose handler failed on every attempt, in id order.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Store`] when the table cannot be read.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        self.shared.store.dead_letters()
    }

    /// Puts dead letters back among the entries, to be handled again (first, in id order,
    /// like every entry). Returns how many were replayed; ids that are not dead letters
    /// are skipped. One committed transaction, on the spool's transaction thread, in
    /// order with the acknowledgements.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Store`] when the transaction fails (nothing moved).
    ///
    /// # Cancel safety
    ///
    /// Once its transaction is queued on the spool's transaction thread, the replay
    /// completes even if this future is dropped; dropped before (while the thread's queue
    /// is full), nothing moves.
    ///
    /// # Examples
    ///
    /// An update whose handler failed every attempt becomes a dead letter; once the bug
    /// is fixed, a replay delivers it again:
    ///
    /// ```
    /// use std::time::Duration;
    /// use pollgate_core::{Ack, FetchRequest, HandlerFailure, Transport};
    /// use pollgate_spool::{SpoolTransport, Which};
    ///
    /// # use std::convert::Infallible;
    /// # use std::sync::Mutex;
    /// # use pollgate_core::{AckModel, Batch, Update};
    /// # /// Updates served like `getUpdates`, then long polls that find nothing.
    /// # struct Backlog(Mutex<(Vec<Update>, i64)>);
    /// # impl Backlog {
    /// #     fn new(ids: std::ops::RangeInclusive<i64>) -> Backlog {
    /// #         let json = |id| format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":7}}}}}}"#);
    /// #         Backlog(Mutex::new((ids.map(|id| Update::from_json(&json(id)).unwrap()).collect(), 0)))
    /// #     }
    /// # }
    /// # impl Transport for Backlog {
    /// #     type Error = Infallible;
    /// #     fn ack_model(&self) -> AckModel { AckModel::Cumulative { window: 100 } }
    /// #     async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
    /// #         let updates: Vec<Update> = {
    /// #             let state = self.0.lock().unwrap();
    /// #             state.0.iter().filter(|u| u.id() >= state.1).take(request.limit).cloned().collect()
    /// #         };
    /// #         if updates.is_empty() { tokio::time::sleep(request.timeout).await }
    /// #         Ok(Batch { updates, ..Batch::default() })
    /// #     }
    /// #     async fn ack(&self, ack: Ack<'_>) -> Result<(), Infallible> {
    /// #         let mut state = self.0.lock().unwrap();
    /// #         state.1 = state.1.max(ack.below.unwrap_or(0));
    /// #         Ok(())
    /// #     }
    /// #     async fn flush(&self) -> Result<(), Infallible> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let telegram = Backlog::new(1..=1);
    /// let dir = std::env::temp_dir().join(format!("pollgate-spool-dead-doc-{}", std::process::id()));
    /// let spool = SpoolTransport::builder(&dir).open(telegram)?;
    /// let request = FetchRequest { limit: 10, timeout: Duration::from_secs(10) };
    /// let update = spool.fetch(request).await?.updates.remove(0);
    /// let receipt = update.receipt().unwrap().clone();
    /// let failed = [HandlerFailure::new(update.id(), receipt.clone(), 3, "the database is down")];
    /// spool.ack(Ack { below: None, receipts: &[receipt], failed: &failed }).await?;
    /// assert_eq!(spool.dead_letters()?[0].error, "the database is down");
    ///
    /// assert_eq!(spool.replay_dead_letters(Which::All).await?, 1);
    /// assert_eq!(spool.fetch(request).await?.updates[0].id(), update.id());
    /// # spool.close().await;
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn replay_dead_letters(&self, which: Which<'_>) -> Result<usize, SpoolError> {
        self.take_dead(which, true).await
    }

    /// Deletes dead letters for good. Returns how many were purged; ids that are not dead
    /// letters are skipped. One committed transaction, as for
    /// [`replay_dead_letters`](Self::replay_dead_letters).
    ///
    /// # Errors
    ///
    /// [`SpoolError::Store`] when the transaction fails (nothing deleted).
    ///
    /// # Cancel safety
    ///
    /// As for [`replay_dead_letters`](Self::replay_dead_letters): once queued, the purge
    /// completes even if this future is dropped; dropped before, nothing is deleted.
    pub async fn purge_dead_letters(&self, which: Which<'_>) -> Result<usize, SpoolError> {
        self.take_dead(which, false).await
    }

    async fn take_dead(&self, which: Which<'_>, replay: bool) -> Result<usize, SpoolError> {
        let (shared, which) = (Arc::clone(&self.shared), Selection::of(which));
        match self.shared.writer.run(move || shared.take_dead(which, replay)).await {
            Ok(result) => result,
            Err(WriterGone) => Err(SpoolError::Source("the spool's transaction thread failed".into())),
        }
    }
}

impl fmt::Debug for SpoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolHandle").field("stats", &self.stats()).finish()
    }
}

impl<T> fmt::Debug for SpoolTransport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolTransport")
            .field("limits", &self.shared.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
