//! The command-line contract (scripts and docs rely on it; keep it exact), and the hidden
//! arguments of the worker processes.

use std::path::PathBuf;

use clap::Parser;

use crate::size::Size;

/// Scale out on one machine: a mock Bot API backlog → the bridge → a Redis stream → N
/// worker processes, each with its own byte budget.
///
/// Without --redis-url a private redis-server is started on a free loopback port (and
/// stopped at the end). Prints a table (or, with --json, one object per worker and a
/// final one) and exits non-zero if any update was lost.
#[derive(Debug, Clone, Parser)]
#[command(name = "scale_out", version)]
pub(crate) struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) workers: u32,
    /// Updates in the backlog.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) updates: u64,
    /// Each worker's byte budget (sizes accept suffixes: 64MiB).
    #[arg(long, default_value = "64MiB")]
    pub(crate) budget: Size,
    /// Memory each handler touches and holds, in KiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) work_kib: u64,
    /// How long each handler holds it, in ms.
    #[arg(long, default_value_t = 200)]
    pub(crate) work_ms: u64,
    /// SIGKILL one worker this many seconds after the start.
    #[arg(long)]
    pub(crate) kill_one_after: Option<f64>,
    /// Use this Redis server instead of starting a private one (also `REDIS_URL`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// One JSON object per worker, then a final one, on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// How long a dead worker's entries stay pending before another worker claims them,
    /// in ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) claim_idle_ms: u64,
    /// Text size of each generated message, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub(crate) text_bytes: usize,
    /// Chats the updates are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) chats: u64,
    /// Give up (exit non-zero) if the backlog is not drained within this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout_s: u64,
    /// Keep each chat's updates in order, one at a time across all workers: sharded
    /// streams, one owner per shard by a lease (`pollgate_redis::ShardedStreamTransport`),
    /// and the runtime's per-chat ordering within each worker.
    #[arg(long)]
    pub(crate) ordered: bool,
    /// Shard streams with --ordered.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) shards: u32,
    /// With --ordered: how long a shard's lease outlives its owner's last renewal, in ms
    /// (a SIGKILLed worker's shards are taken over after about this long).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(300..))]
    pub(crate) lease_ms: u64,
    /// Each worker appends a JSON line here (`worker-N.jsonl`) when a handler starts and
    /// when it ends: {"ev":"start"|"end","id","chat","worker","t_ns"} (wall clock, ns).
    /// The final object's `order_violations` and `overlaps` are computed from them (from
    /// a temporary directory without this option).
    #[arg(long, value_name = "DIR")]
    pub(crate) ledger_dir: Option<PathBuf>,
    /// SIGKILL the private redis-server this many seconds after the start and start it
    /// again 3 s later on the same port and data directory, with AOF (needs the private
    /// server: not with --redis-url).
    #[arg(long, value_name = "SECS")]
    pub(crate) restart_redis_after: Option<f64>,
    /// With --restart-redis-after: the private server's `appendfsync`.
    #[arg(long, value_enum, default_value_t = Fsync::Everysec)]
    pub(crate) appendfsync: Fsync,
}

/// `--appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Fsync {
    /// fsync once a second (Redis' default): a crash loses up to about 2 s of writes.
    Everysec,
    /// fsync every write: a crash loses nothing acknowledged.
    Always,
}

impl Args {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.kill_one_after {
            if !(s.is_finite() && s >= 0.0) {
                return Err(format!(
                    "--kill-one-after must be a non-negative number of seconds, not {s}"
                ));
            }
            if self.workers < 2 {
                return Err("--kill-one-after needs --workers 2 or more (someone must finish the work)".into());
            }
        }
        if let Some(s) = self.restart_redis_after {
            if !(s.is_finite() && s >= 0.0) {
                return Err(format!(
                    "--restart-redis-after must be a non-negative number of seconds, not {s}"
                ));
            }
            if self.redis_url.is_some() {
                return Err("--restart-redis-after needs the private redis-server (drop --redis-url)".into());
            }
        }
        if self.budget.0 < self.work_kib << 10 {
            return Err(format!(
                "--budget {} is smaller than one handler's working set ({} KiB)",
                self.budget, self.work_kib
            ));
        }
        Ok(())
    }
}

/// A worker process (started by the parent with `__worker`; not part of the contract).
#[derive(Debug, Clone, Parser)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    pub(crate) index: u32,
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: String,
    #[arg(long)]
    pub(crate) stream: String,
    #[arg(long)]
    pub(crate) group: String,
    #[arg(long)]
    pub(crate) budget: u64,
    #[arg(long)]
    pub(crate) work_kib: u64,
    #[arg(long)]
    pub(crate) work_ms: u64,
    #[arg(long)]
    pub(crate) claim_idle_ms: u64,
    #[arg(long)]
    pub(crate) updates: usize,
    #[arg(long)]
    pub(crate) ledger: PathBuf,
    /// The start/end event ledger.
    #[arg(long)]
    pub(crate) events: PathBuf,
    /// Sharded (ordered) mode with this many shards.
    #[arg(long)]
    pub(crate) shards: Option<u32>,
    #[arg(long, default_value_t = 2000)]
    pub(crate) lease_ms: u64,
}
