//! store-compare: durable commit latency and throughput of redb (what `pollgate-spool` uses)
//! against fjall and SQLite, on the spool's workload.
//!
//! For each store, in one run and interleaved round-robin (so that machine noise hits all of
//! them alike): open a fresh store in a fresh directory, append `--batches` batches of
//! `--batch-size` entries (key: sequential i64 update id, value: `--entry-bytes` random-ish
//! bytes), each batch in one transaction that is fsync'd before it returns, then delete the
//! same entries batch by batch, each delete batch committed the same way. Every commit is
//! timed on its own (from the start of the transaction to the return of its commit, the
//! inserts or deletes included: what the spool waits for).
//!
//! | store               | one commit                                                        |
//! |---------------------|-------------------------------------------------------------------|
//! | `redb`              | `begin_write` .. `commit` (default `Durability::Immediate`: fsync) |
//! | `fjall`             | `keyspace.batch()` .. `commit()`, then `persist(SyncAll)` (fsync)  |
//! | `sqlite-wal-full`   | WAL, `synchronous=FULL`: `BEGIN IMMEDIATE` .. `COMMIT` (fsync)     |
//! | `sqlite-wal-normal` | WAL, `synchronous=NORMAL`: NOT durable across power loss (no fsync |
//! |                     | at commit, only at checkpoints); safe across a process crash       |
//!
//! All get an 8 MiB page/block cache, as the spool configures redb.
//!
//! Prints a Markdown table and one JSON line per store on stdout; progress goes to stderr.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The page/block cache every store gets: what `pollgate-spool` gives redb by default.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The first update id: Telegram ids are large positive numbers.
const FIRST_ID: i64 = 700_000_000;

const USAGE: &str = "\
usage: store-compare [--batches N] [--rounds R] [--entry-bytes S] [--batch-size K]
                     [--dir PATH] [--stores LIST]

  --batches N      batches appended (and deleted) per store and round   [200]
  --rounds R       rounds, round-robin over the stores                  [5]
  --entry-bytes S  bytes per entry (a Telegram update is ~1 KiB JSON)   [1024]
  --batch-size K   entries per batch (getUpdates returns at most 100)   [100]
  --dir PATH       where the stores go (a unique subdirectory is made
                   and removed); must be on the disk being judged, not
                   a tmpfs, where fsync costs nothing                   [$TMPDIR or /tmp]
  --stores LIST    comma-separated subset of
                   redb,fjall,sqlite-wal-full,sqlite-wal-normal         [all]
";

// ---------------------------------------------------------------------------------------------
// The stores

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redb,
    Fjall,
    SqliteFull,
    SqliteNormal,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Redb, Kind::Fjall, Kind::SqliteFull, Kind::SqliteNormal];

    fn label(self) -> &'static str {
        match self {
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::SqliteFull => "sqlite-wal-full",
            Kind::SqliteNormal => "sqlite-wal-normal",
        }
    }

    fn from_label(label: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == label)
    }

    /// Whether a commit that returned survives a power loss (not only a process crash).
    fn durable(self) -> bool {
        !matches!(self, Kind::SqliteNormal)
    }

    fn open(self, dir: &Path) -> Result<Box<dyn Store>> {
        let store: Box<dyn Store> = match self {
            Kind::Redb => Box::new(RedbStore::open(dir)?),
            Kind::Fjall => Box::new(FjallStore::open(dir)?),
            Kind::SqliteFull => Box::new(SqliteStore::open(dir, true)?),
            Kind::SqliteNormal => Box::new(SqliteStore::open(dir, false)?),
        };
        Ok(store)
    }
}

/// One store, opened on a fresh directory with its table (partition) already created.
trait Store {
    /// Inserts `ids[i]` → `values[i]` in one transaction, durable (as far as the store's
    /// settings go) when this returns.
    fn append(&mut self, ids: &[i64], values: &[Vec<u8>]) -> Result<()>;
    /// Deletes `ids` in one transaction, committed the same way.
    fn remove(&mut self, ids: &[i64]) -> Result<()>;
    /// How many entries there are (a correctness check, not timed).
    fn count(&mut self) -> Result<u64>;
}

// redb, as `crates/pollgate-spool/src/store.rs` uses it.

/// Spooled updates: update id → the update's JSON text (the spool's table definition).
const ENTRIES: redb::TableDefinition<'static, i64, &'static [u8]> = redb::TableDefinition::new("entries");

struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    fn open(dir: &Path) -> Result<Self> {
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("spool.redb"))?;
        // Create the table before timing anything, as the spool does at open.
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.commit()?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn append(&mut self, ids: &[i64], values: &[Vec<u8>]) -> Result<()> {
        // The default durability, `Durability::Immediate`: fsync'd when `commit` returns.
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            for (&id, value) in ids.iter().zip(values) {
                table.insert(id, value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn remove(&mut self, ids: &[i64]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            for &id in ids {
                table.remove(id)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn count(&mut self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        Ok(table.len()?)
    }
}

// fjall 2.x: one keyspace, one partition; a write batch is atomic (one journal entry), and
// `persist(SyncAll)` fsyncs the journal.

struct FjallStore {
    // Dropped before the keyspace.
    entries: fjall::PartitionHandle,
    keyspace: fjall::Keyspace,
}

impl FjallStore {
    fn open(dir: &Path) -> Result<Self> {
        let keyspace = fjall::Config::new(dir).cache_size(CACHE_BYTES as u64).open()?;
        let entries = keyspace.open_partition("entries", fjall::PartitionCreateOptions::default())?;
        keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(FjallStore { entries, keyspace })
    }
}

impl Store for FjallStore {
    fn append(&mut self, ids: &[i64], values: &[Vec<u8>]) -> Result<()> {
        // `batch()` commits with `PersistMode::Buffer` (written to the OS, not fsync'd);
        // the `persist` after it is the fsync.
        let mut batch = self.keyspace.batch();
        for (&id, value) in ids.iter().zip(values) {
            // Big-endian, so that the LSM's byte order is the ids' order.
            batch.insert(&self.entries, id.to_be_bytes(), value.as_slice());
        }
        batch.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    fn remove(&mut self, ids: &[i64]) -> Result<()> {
        let mut batch = self.keyspace.batch();
        for &id in ids {
            batch.remove(&self.entries, id.to_be_bytes());
        }
        batch.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    fn count(&mut self) -> Result<u64> {
        Ok(self.entries.len()? as u64)
    }
}

// SQLite (bundled), WAL journal.

struct SqliteStore {
    conn: rusqlite::Connection,
}

impl SqliteStore {
    /// `full`: `synchronous=FULL` (the WAL is fsync'd at every commit: durable); otherwise
    /// `synchronous=NORMAL` (fsync'd only at checkpoints: a power loss can lose the last
    /// commits, though the database stays consistent).
    fn open(dir: &Path, full: bool) -> Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("spool.sqlite"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode (journal_mode is {mode:?})").into());
        }
        conn.execute_batch(if full {
            "PRAGMA synchronous=FULL;"
        } else {
            "PRAGMA synchronous=NORMAL;"
        })?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        let wanted = if full { 2 } else { 1 };
        if synchronous != wanted {
            return Err(format!("PRAGMA synchronous is {synchronous}, not {wanted}").into());
        }
        // 8 MiB of page cache (negative: in KiB), then the table: the id is the rowid.
        conn.execute_batch(
            "PRAGMA cache_size=-8192;
             CREATE TABLE entries (id INTEGER PRIMARY KEY, json BLOB NOT NULL);",
        )?;
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    fn append(&mut self, ids: &[i64], values: &[Vec<u8>]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO entries (id, json) VALUES (?1, ?2)")?;
            for (id, value) in ids.iter().zip(values) {
                insert.execute((id, value.as_slice()))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn remove(&mut self, ids: &[i64]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM entries WHERE id = ?1")?;
            for id in ids {
                delete.execute((id,))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn count(&mut self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |row| row.get(0))?;
        Ok(u64::try_from(n)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments

struct Config {
    batches: usize,
    rounds: usize,
    entry_bytes: usize,
    batch_size: usize,
    dir: PathBuf,
    kinds: Vec<Kind>,
}

fn parse_args() -> Result<Config> {
    let mut cfg = Config {
        batches: 200,
        rounds: 5,
        entry_bytes: 1024,
        batch_size: 100,
        dir: std::env::temp_dir(),
        kinds: Kind::ALL.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Both `--key value` and `--key=value`.
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        match key.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--batches" => cfg.batches = number(&key, &take_value(&key, inline, &mut args)?)?,
            "--rounds" => cfg.rounds = number(&key, &take_value(&key, inline, &mut args)?)?,
            "--entry-bytes" => cfg.entry_bytes = number(&key, &take_value(&key, inline, &mut args)?)?,
            "--batch-size" => cfg.batch_size = number(&key, &take_value(&key, inline, &mut args)?)?,
            "--dir" => cfg.dir = PathBuf::from(take_value(&key, inline, &mut args)?),
            "--stores" => {
                let list = take_value(&key, inline, &mut args)?;
                let mut kinds = Vec::new();
                for label in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(kind) = Kind::from_label(label) else {
                        return Err(format!("--stores: unknown store {label:?}\n\n{USAGE}").into());
                    };
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                if kinds.is_empty() {
                    return Err(format!("--stores: no store given\n\n{USAGE}").into());
                }
                cfg.kinds = kinds;
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}").into()),
        }
    }
    Ok(cfg)
}

fn take_value(key: &str, inline: Option<String>, args: &mut impl Iterator<Item = String>) -> Result<String> {
    match inline.or_else(|| args.next()) {
        Some(value) => Ok(value),
        None => Err(format!("{key} needs a value\n\n{USAGE}").into()),
    }
}

fn number(key: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("{key}: must be at least 1").into()),
        Err(e) => Err(format!("{key}: {value:?}: {e}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What one store did in one round.
struct Round {
    append: Vec<Duration>,
    delete: Vec<Duration>,
    after_appends: DiskUsage,
    after_deletes: DiskUsage,
}

/// Everything one store did, over all rounds.
struct Totals {
    kind: Kind,
    append: Vec<Duration>,
    delete: Vec<Duration>,
    /// Append updates/s of each round.
    append_rate_by_round: Vec<f64>,
    /// The largest on-disk size over the rounds.
    after_appends: DiskUsage,
    after_deletes: DiskUsage,
}

#[derive(Clone, Copy, Default)]
struct DiskUsage {
    /// Sum of the files' lengths (`ls -l`): counts preallocated, sparse regions.
    file_bytes: u64,
    /// Sum of the blocks allocated to them (`du`): what the disk holds.
    disk_bytes: u64,
}

impl DiskUsage {
    fn max(self, other: DiskUsage) -> DiskUsage {
        DiskUsage {
            file_bytes: self.file_bytes.max(other.file_bytes),
            disk_bytes: self.disk_bytes.max(other.disk_bytes),
        }
    }
}

fn run_one(kind: Kind, run_dir: &Path, cfg: &Config, round: usize) -> Result<Round> {
    let dir = run_dir.join(format!("r{round}-{}", kind.label()));
    fs::create_dir_all(&dir)?;
    let mut store = kind.open(&dir)?;

    let mut ids: Vec<i64> = Vec::with_capacity(cfg.batch_size);
    let mut values: Vec<Vec<u8>> = vec![vec![0u8; cfg.entry_bytes]; cfg.batch_size];
    let batch_ids = |ids: &mut Vec<i64>, batch: usize| {
        let first = FIRST_ID + (batch * cfg.batch_size) as i64;
        ids.clear();
        ids.extend(first..first + cfg.batch_size as i64);
    };

    let mut append = Vec::with_capacity(cfg.batches);
    for batch in 0..cfg.batches {
        // Outside the timed part: the next batch's ids and values.
        batch_ids(&mut ids, batch);
        for (&id, value) in ids.iter().zip(values.iter_mut()) {
            fill_random_ish(value, id as u64 ^ ((round as u64) << 48));
        }
        let start = Instant::now();
        store.append(&ids, &values)?;
        append.push(start.elapsed());
    }
    let expected = (cfg.batches * cfg.batch_size) as u64;
    let held = store.count()?;
    if held != expected {
        return Err(format!("{}: {held} entries after the appends, not {expected}", kind.label()).into());
    }
    let after_appends = disk_usage(&dir);

    let mut delete = Vec::with_capacity(cfg.batches);
    for batch in 0..cfg.batches {
        batch_ids(&mut ids, batch);
        let start = Instant::now();
        store.remove(&ids)?;
        delete.push(start.elapsed());
    }
    let held = store.count()?;
    if held != 0 {
        return Err(format!("{}: {held} entries after the deletes, not 0", kind.label()).into());
    }
    let after_deletes = disk_usage(&dir);

    drop(store);
    if let Err(e) = fs::remove_dir_all(&dir) {
        eprintln!("warning: could not remove {}: {e}", dir.display());
    }
    Ok(Round {
        append,
        delete,
        after_appends,
        after_deletes,
    })
}

/// Printable ASCII from xorshift64 (JSON-like text, but with next to nothing to compress).
fn fill_random_ish(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = b' ' + ((x >> (i * 8)) as u8) % 95;
        }
    }
}

/// Sizes of all files under `dir`. Best effort: a file that a background thread (fjall's
/// flushes and compactions) removes meanwhile is skipped.
fn disk_usage(dir: &Path) -> DiskUsage {
    let mut usage = DiskUsage::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                usage.file_bytes += meta.len();
                usage.disk_bytes += allocated_bytes(&meta);
            }
        }
    }
    usage
}

#[cfg(unix)]
fn allocated_bytes(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

#[cfg(not(unix))]
fn allocated_bytes(meta: &fs::Metadata) -> u64 {
    meta.len()
}

/// The file system `path` is on, from /proc/self/mounts (Linux; `None` elsewhere).
fn filesystem_of(path: &Path) -> Option<String> {
    let path = fs::canonicalize(path).ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_source), Some(mount_point), Some(fs_type)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let mount_point = mount_point.replace("\\040", " ");
        // The longest mount point above `path`; of equal ones the last (it is on top).
        if path.starts_with(&mount_point) && best.as_ref().map_or(true, |(len, _)| mount_point.len() >= *len) {
            best = Some((mount_point.len(), fs_type.to_owned()));
        }
    }
    best.map(|(_, fs_type)| fs_type)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Entries per second over the commits' summed time.
fn rate(commits: &[Duration], batch_size: usize) -> f64 {
    let total: Duration = commits.iter().sum();
    if total.is_zero() {
        return 0.0;
    }
    (commits.len() * batch_size) as f64 / total.as_secs_f64()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    if let Err(e) = run() {
        eprintln!("store-compare: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cfg = parse_args()?;

    // A unique directory of this run's own under --dir, removed at the end.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let run_dir = cfg.dir.join(format!("store-compare-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&run_dir)?;
    let fs_type = filesystem_of(&run_dir).unwrap_or_else(|| "unknown".to_owned());
    if matches!(fs_type.as_str(), "tmpfs" | "ramfs") {
        eprintln!(
            "warning: {} is on {fs_type}: fsync is free there, the figures say nothing about a disk",
            run_dir.display()
        );
    }
    eprintln!(
        "store-compare: {} rounds x {} stores; per store and round {} batches x {} entries x {} bytes; \
         dir {} ({fs_type}); SQLite {}",
        cfg.rounds,
        cfg.kinds.len(),
        cfg.batches,
        cfg.batch_size,
        cfg.entry_bytes,
        run_dir.display(),
        rusqlite::version(),
    );

    let mut totals: Vec<Totals> = cfg
        .kinds
        .iter()
        .map(|&kind| Totals {
            kind,
            append: Vec::new(),
            delete: Vec::new(),
            append_rate_by_round: Vec::new(),
            after_appends: DiskUsage::default(),
            after_deletes: DiskUsage::default(),
        })
        .collect();

    let outcome = (|| -> Result<()> {
        for round in 0..cfg.rounds {
            // Round-robin, starting one store further each round, so that no store always
            // runs first (fresh page cache, cool disk) or right after the same neighbour.
            let mut order: Vec<usize> = (0..totals.len()).collect();
            order.rotate_left(round % totals.len());
            for i in order {
                let kind = totals[i].kind;
                let r = run_one(kind, &run_dir, &cfg, round)?;
                let round_rate = rate(&r.append, cfg.batch_size);
                eprintln!(
                    "round {}/{}  {:<18} append {:>9.0} updates/s  p50 {:>8.0} us   delete p50 {:>8.0} us",
                    round + 1,
                    cfg.rounds,
                    kind.label(),
                    round_rate,
                    micros(percentile(&sorted(&r.append), 50.0)),
                    micros(percentile(&sorted(&r.delete), 50.0)),
                );
                let t = &mut totals[i];
                t.append.extend(r.append);
                t.delete.extend(r.delete);
                t.append_rate_by_round.push(round_rate);
                t.after_appends = t.after_appends.max(r.after_appends);
                t.after_deletes = t.after_deletes.max(r.after_deletes);
            }
        }
        Ok(())
    })();
    if let Err(e) = fs::remove_dir_all(&run_dir) {
        eprintln!("warning: could not remove {}: {e}", run_dir.display());
    }
    outcome?;

    report(&cfg, &fs_type, &mut totals);
    Ok(())
}

fn sorted(samples: &[Duration]) -> Vec<Duration> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    v
}

fn report(cfg: &Config, fs_type: &str, totals: &mut [Totals]) {
    for t in totals.iter_mut() {
        t.append.sort_unstable();
        t.delete.sort_unstable();
    }

    println!();
    println!(
        "{} rounds; per store and round {} append commits of {} entries x {} bytes, then {} delete commits; \
         file system {fs_type}; SQLite {}.",
        cfg.rounds,
        cfg.batches,
        cfg.batch_size,
        cfg.entry_bytes,
        cfg.batches,
        rusqlite::version(),
    );
    println!();
    println!(
        "| store | durable on power loss | append p50 µs | append p99 µs | delete p50 µs | delete p99 µs \
         | append updates/s (round min–max) | on disk after appends, MiB (file lengths) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for t in totals.iter() {
        let (lo, hi) = min_max(&t.append_rate_by_round);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} ({:.0}–{:.0}) | {:.1} ({:.1}) |",
            t.kind.label(),
            if t.kind.durable() {
                "yes"
            } else {
                "no: WAL fsync'd only at checkpoints"
            },
            micros(percentile(&t.append, 50.0)),
            micros(percentile(&t.append, 99.0)),
            micros(percentile(&t.delete, 50.0)),
            micros(percentile(&t.delete, 99.0)),
            rate(&t.append, cfg.batch_size),
            lo,
            hi,
            mib(t.after_appends.disk_bytes),
            mib(t.after_appends.file_bytes),
        );
    }
    println!();
    for t in totals.iter() {
        let by_round = t
            .append_rate_by_round
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{{\"store\":{},\"durable\":{},\"fs\":{},\"sqlite_version\":{},\"rounds\":{},\"batches\":{},\
             \"batch_size\":{},\"entry_bytes\":{},\"append_commits\":{},\"append_p50_us\":{:.1},\
             \"append_p99_us\":{:.1},\"append_max_us\":{:.1},\"delete_p50_us\":{:.1},\"delete_p99_us\":{:.1},\
             \"append_updates_per_s\":{:.0},\"append_updates_per_s_by_round\":[{}],\"delete_updates_per_s\":{:.0},\
             \"disk_bytes_after_appends\":{},\"file_bytes_after_appends\":{},\
             \"disk_bytes_after_deletes\":{},\"file_bytes_after_deletes\":{}}}",
            json_str(t.kind.label()),
            t.kind.durable(),
            json_str(fs_type),
            json_str(rusqlite::version()),
            cfg.rounds,
            cfg.batches,
            cfg.batch_size,
            cfg.entry_bytes,
            t.append.len(),
            micros(percentile(&t.append, 50.0)),
            micros(percentile(&t.append, 99.0)),
            micros(t.append.last().copied().unwrap_or_default()),
            micros(percentile(&t.delete, 50.0)),
            micros(percentile(&t.delete, 99.0)),
            rate(&t.append, cfg.batch_size),
            by_round,
            rate(&t.delete, cfg.batch_size),
            t.after_appends.disk_bytes,
            t.after_appends.file_bytes,
            t.after_deletes.disk_bytes,
            t.after_deletes.file_bytes,
        );
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    })
}
