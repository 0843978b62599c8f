//! The on-disk part: one redb file with the spooled updates, keyed by update id, and the
//! highest id ever committed.
//!
//! redb commits atomically (copy-on-write pages, checksummed) and, with its default
//! `Durability::Immediate`, fsyncs before `commit` returns: a committed batch survives a
//! crash or `kill -9` whole, an interrupted one is not there at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition};

use crate::error::SpoolError;

/// Spooled updates: update id → the update's JSON text.
const ENTRIES: TableDefinition<'_, i64, &[u8]> = TableDefinition::new("entries");
/// Bookkeeping: `high` → the highest update id ever committed (entries deleted since
/// included), so that a batch fetched again after a crash is not spooled twice; `high_at`
/// → when (Unix seconds).
const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");

/// Dead letters: update id → (attempts, when it failed for good in Unix seconds, the last
/// error, the update's JSON text).
const DEAD: TableDefinition<'_, i64, (u32, i64, &str, &[u8])> = TableDefinition::new("dead");

/// Bookkeeping: `source` → the name of the source `high` belongs to
/// ([`SpoolBuilder::source`](crate::SpoolBuilder::source)).
const SOURCE: TableDefinition<'_, &str, &str> = TableDefinition::new("source");

/// After this long without a commit, `high` is forgotten at open. Telegram keeps updates
/// for 24 hours, and after a week without updates it may restart its ids at a random,
/// possibly lower, number: confirming a stale `high + 1` then would drop new updates.
const HIGH_FORGOTTEN_AFTER_S: i64 = 24 * 3600;

/// Creates a new, empty spool file under a temporary name and renames it into place, so a
/// crash during creation leaves no half-written `spool.redb` (which the next start would
/// have to refuse as corrupt), only a `spool.redb.new` that the next start replaces.
fn create_atomically(dir: &Path, path: &Path, cache_bytes: usize) -> Result<(), SpoolError> {
    let fresh = dir.join("spool.redb.new");
    let io = |e: std::io::Error| SpoolError::Open {
        path: path.to_path_buf(),
        source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(e))),
    };
    match std::fs::remove_file(&fresh) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&fresh)
            .map_err(|source| SpoolError::Open {
                path: fresh.clone(),
                source: Box::new(source),
            })?;
        let txn = db
            .begin_write()
            .map_err(|e| SpoolError::store("created the file")(e.into()))?;
        txn.open_table(ENTRIES)
            .map_err(|e| SpoolError::store("created the file")(e.into()))?;
        txn.open_table(DEAD)
            .map_err(|e| SpoolError::store("created the file")(e.into()))?;
        txn.commit()
            .map_err(|e| SpoolError::store("created the file")(e.into()))?;
    }
    std::fs::rename(&fresh, path).map_err(io)?;
    // The rename must survive a power loss too.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the spool holds and has done (a snapshot from [`SpoolTransport::stats`](crate::SpoolTransport::stats)).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Entries in the spool now (waiting or being handled).
    pub entries: u64,
    /// Their JSON bytes.
    pub bytes: u64,
    /// The most bytes the spool held at once.
    pub peak_bytes: u64,
    /// Batches committed from the source.
    pub batches: u64,
    /// Updates committed from the source.
    pub spooled: u64,
    /// Entries deleted after their handler finished.
    pub deleted: u64,
    /// Updates the source delivered again that were already spooled (skipped).
    pub skipped: u64,
    /// Dead letters in the spool now: updates whose handler failed on every attempt
    /// ([`SpoolTransport::dead_letters`](crate::SpoolTransport::dead_letters)).
    pub dead_letters: u64,
    /// Their JSON bytes (they count against the spool's limits, with the entries).
    pub dead_bytes: u64,
    /// Entries moved to the dead letters since the spool was opened.
    pub dead_lettered: u64,
}

/// An update whose handler failed on every attempt, kept in the spool's dead-letter table
/// until it is replayed or purged.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The update's id.
    pub update_id: i64,
    /// How many times its handler ran.
    pub attempts: u32,
    /// When it failed for the last time.
    pub failed_at: SystemTime,
    /// The last attempt's error, panic message or timeout.
    pub error: String,
    /// The update's JSON text, as received.
    pub json: String,
}

/// The redb database behind a spool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    db: Arc<Database>,
}

/// What a spool holds at open: each entry's id and size, and the highest id committed.
pub(crate) struct Contents {
    pub(crate) entries: BTreeMap<i64, u32>,
    pub(crate) high: Option<i64>,
    /// Dead letters: how many, and their JSON bytes.
    pub(crate) dead: (u64, u64),
}

/// Which dead letters [`SpoolTransport::replay_dead_letters`] and
/// [`SpoolTransport::purge_dead_letters`] apply to.
///
/// [`SpoolTransport::replay_dead_letters`]: crate::SpoolTransport::replay_dead_letters
/// [`SpoolTransport::purge_dead_letters`]: crate::SpoolTransport::purge_dead_letters
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which<'a> {
    /// Every dead letter.
    All,
    /// Those with these update ids (others are skipped).
    Ids(&'a [i64]),
}

impl Store {
    /// Opens (or creates) `dir/spool.redb` with a page cache of `cache_bytes`, and reads
    /// what it holds. The recorded highest id is trusted only when it was written for the
    /// same `source` (and recently): otherwise confirming it would drop another source's
    /// updates.
    pub(crate) fn open(dir: &Path, cache_bytes: usize, source: Option<&str>) -> Result<(Store, Contents), SpoolError> {
        let path: PathBuf = dir.join("spool.redb");
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Open {
            path: path.clone(),
            source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(e))),
        })?;
        if !path.exists() {
            create_atomically(dir, &path, cache_bytes)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|source| SpoolError::Open {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let store = Store { db: Arc::new(db) };
        let contents = store.contents(source)?;
        Ok((store, contents))
    }

    /// Opens an existing `dir/spool.redb` (never creates one), for working on its dead
    /// letters while no spool runs on it.
    pub(crate) fn open_existing(dir: &Path, cache_bytes: usize) -> Result<Store, SpoolError> {
        let path: PathBuf = dir.join("spool.redb");
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .open(&path)
            .map_err(|source| SpoolError::Open {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let store = Store { db: Arc::new(db) };
        store.ensure_tables()?;
        Ok(store)
    }

    /// Creates the tables on first use (a spool written by an older version may lack
    /// some), so that reads never meet a missing table.
    fn ensure_tables(&self) -> Result<(), SpoolError> {
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            txn.open_table(ENTRIES)?;
            txn.open_table(META)?;
            txn.open_table(SOURCE)?;
            txn.open_table(DEAD)?;
            txn.commit()?;
            Ok(())
        };
        write().map_err(SpoolError::store("created its tables"))
    }

    fn contents(&self, source: Option<&str>) -> Result<Contents, SpoolError> {
        self.ensure_tables()?;
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let read = || -> Result<Contents, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut entries = BTreeMap::new();
            for row in table.iter()? {
                let (id, json) = row?;
                entries.insert(id.value(), u32::try_from(json.value().len()).unwrap_or(u32::MAX));
            }
            let meta = txn.open_table(META)?;
            let high_at = meta.get("high_at")?.map_or(0, |v| v.value());
            let fresh = unix_now().saturating_sub(high_at) < HIGH_FORGOTTEN_AFTER_S;
            let recorded = txn.open_table(SOURCE)?.get("source")?.map(|v| v.value().to_owned());
            let same_source = source.is_some() && recorded.as_deref() == source;
            let high = meta.get("high")?.map(|v| v.value()).filter(|_| fresh && same_source);
            let mut dead = (0, 0);
            for row in txn.open_table(DEAD)?.iter()? {
                let (_, value) = row?;
                let (_, _, _, json) = value.value();
                dead.0 += 1;
                dead.1 += json.len() as u64;
            }
            Ok(Contents { entries, high, dead })
        };
        read().map_err(SpoolError::store("read its contents at open"))
    }

    /// Commits a batch, the new highest id and the source's name in one transaction
    /// (fsync'd on return).
    ///
    /// Rows whose id is a dead letter are not spooled again (a source that delivers a
    /// batch again after a crash, before its offset was confirmed): their indexes in
    /// `rows` are returned.
    pub(crate) fn append(
        &self,
        rows: &[(i64, String)],
        high: i64,
        source: Option<&str>,
    ) -> Result<Vec<usize>, SpoolError> {
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let write = || -> Result<Vec<usize>, redb::Error> {
            let txn = self.db.begin_write()?;
            let mut dead_again = Vec::new();
            {
                let mut table = txn.open_table(ENTRIES)?;
                let dead = txn.open_table(DEAD)?;
                for (i, (id, json)) in rows.iter().enumerate() {
                    if dead.get(*id)?.is_some() {
                        dead_again.push(i);
                        continue;
                    }
                    table.insert(*id, json.as_bytes())?;
                }
                let mut meta = txn.open_table(META)?;
                meta.insert("high", high)?;
                meta.insert("high_at", unix_now())?;
                let mut names = txn.open_table(SOURCE)?;
                match source {
                    Some(source) => names.insert("source", source)?,
                    None => names.remove("source")?,
                };
            }
            txn.commit()?;
            Ok(dead_again)
        };
        write().map_err(SpoolError::store("committed a batch"))
    }

    /// Reads entries by id (those still there), in the order given.
    pub(crate) fn read(&self, ids: &[i64]) -> Result<Vec<(i64, String)>, SpoolError> {
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let read = || -> Result<Vec<(i64, String)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut rows = Vec::with_capacity(ids.len());
            for &id in ids {
                if let Some(json) = table.get(id)? {
                    rows.push((id, String::from_utf8_lossy(json.value()).into_owned()));
                }
            }
            Ok(rows)
        };
        read().map_err(SpoolError::store("read entries"))
    }

    /// Deletes finished entries in one transaction.
    pub(crate) fn remove(&self, ids: &[i64]) -> Result<(), SpoolError> {
        self.finish(ids, &[]).map(|_| ())
    }

    /// In one transaction: deletes the entries `done`, and moves the entries `failed`
    /// (id, attempts, error) to the dead letters. Returns the id and JSON size of each
    /// entry moved (those no longer in the spool are skipped).
    pub(crate) fn finish(&self, done: &[i64], failed: &[(i64, u32, String)]) -> Result<Vec<(i64, u64)>, SpoolError> {
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let write = || -> Result<Vec<(i64, u64)>, redb::Error> {
            let txn = self.db.begin_write()?;
            let mut moved = Vec::new();
            {
                let mut table = txn.open_table(ENTRIES)?;
                let mut dead = txn.open_table(DEAD)?;
                let now = unix_now();
                for (id, attempts, error) in failed {
                    let Some(json) = table.remove(*id)? else { continue };
                    let json = json.value().to_vec();
                    dead.insert(*id, (*attempts, now, error.as_str(), json.as_slice()))?;
                    moved.push((*id, json.len() as u64));
                }
                for &id in done {
                    table.remove(id)?;
                }
            }
            txn.commit()?;
            Ok(moved)
        };
        let doing = if failed.is_empty() {
            "deleted finished entries"
        } else {
            "moved failed entries to the dead letters"
        };
        write().map_err(SpoolError::store(doing))
    }

    /// The dead letters, in id order.
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let read = || -> Result<Vec<DeadLetter>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(DEAD)?;
            let mut letters = Vec::new();
            for row in table.iter()? {
                let (id, value) = row?;
                let (attempts, at, error, json) = value.value();
                letters.push(DeadLetter {
                    update_id: id.value(),
                    attempts,
                    failed_at: UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0)),
                    error: error.to_owned(),
                    json: String::from_utf8_lossy(json).into_owned(),
                });
            }
            Ok(letters)
        };
        read().map_err(SpoolError::store("read the dead letters"))
    }

    /// Removes dead letters in one transaction; with `replay`, puts them back among the
    /// entries. Returns each one's id and JSON size.
    pub(crate) fn take_dead(&self, which: Which<'_>, replay: bool) -> Result<Vec<(i64, u64)>, SpoolError> {
        #[allow(clippy::result_large_err)] // redb's error, boxed on the way out
        let write = || -> Result<Vec<(i64, u64)>, redb::Error> {
            let txn = self.db.begin_write()?;
            let mut taken = Vec::new();
            {
                let mut dead = txn.open_table(DEAD)?;
                let mut entries = txn.open_table(ENTRIES)?;
                let ids: Vec<i64> = match which {
                    Which::All => dead
                        .iter()?
                        .map(|row| row.map(|(id, _)| id.value()))
                        .collect::<Result<_, _>>()?,
                    Which::Ids(ids) => ids.to_vec(),
                };
                for id in ids {
                    let Some(value) = dead.remove(id)? else { continue };
                    let (_, _, _, json) = value.value();
                    if replay {
                        entries.insert(id, json)?;
                    }
                    taken.push((id, json.len() as u64));
                }
            }
            txn.commit()?;
            Ok(taken)
        };
        let doing = if replay {
            "replayed dead letters"
        } else {
            "purged dead letters"
        };
        write().map_err(SpoolError::store(doing))
    }
}
