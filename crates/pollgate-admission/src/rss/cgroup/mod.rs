//! This process's memory cgroup: its limits, and the usage the kernel enforces them on.
//! How and why is on [`CgroupMemory`] and [`WorkingSetProbe`], where users read it.

#[cfg(target_os = "linux")]
mod locate;
mod working_set;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

pub use working_set::WorkingSetProbe;

use super::bytes::Bytes;

/// cgroup v1 reports "no limit" as a huge number (`PAGE_COUNTER_MAX` × page size, about
/// 2^63); anything from 2^60 bytes up is treated as unlimited.
const UNLIMITED_FROM: u64 = 1 << 60;

/// The memory limit of this process's cgroup in bytes: the most restrictive hard limit
/// (`memory.max`, `memory.limit_in_bytes`) between its cgroup and the root of what is
/// visible. `None` when there is none, no memory cgroup is visible, or the platform is not
/// Linux.
///
/// `memory.high` is not included; see [`CgroupMemory::limit`] for it and for where the
/// limit was found.
pub fn cgroup_memory_limit() -> Option<u64> {
    CgroupMemory::detect()?.limit().hard
}

/// The cgroup version of a hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// cgroup v1: one hierarchy per controller, `memory.limit_in_bytes`.
    V1,
    /// cgroup v2, the unified hierarchy: `memory.max`, `memory.high`.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// This process's memory cgroup: the directory holding its memory files, and how far up
/// its hierarchy is visible.
///
/// Containers, systemd units (`MemoryMax=`) and Kubernetes pods cap memory with a cgroup;
/// exceeding the limit gets the process OOM-killed, so it is the natural ceiling for
/// `RssAdaptive`'s target.
///
/// # Finding the cgroup
///
/// `/sys/fs/cgroup/memory.max` is the process's own limit only inside a cgroup namespace.
/// A systemd unit on a v2 host, `docker --cgroupns=host`, and every cgroup v1 host see the
/// whole hierarchy there, whose root says "unlimited". So [`detect`](Self::detect) does
/// what the JVM, .NET's GC and Go's automemlimit do: the cgroup from `/proc/self/cgroup`,
/// the mount from `/proc/self/mountinfo`, on v1, v2 and hybrid hosts. `/proc/self/cgroup`
/// gives the path from the root of the whole hierarchy, a mount shows the subtree from its
/// own root (`docker --cgroupns=host` mounts `/docker/<id>` at `/sys/fs/cgroup/memory`), so
/// the directory is `mount point + (path − mount root)`. On a hybrid host the v1 memory
/// controller wins when there is one; a v2 hierarchy counts only when the cgroup's
/// `cgroup.controllers` lists `memory`.
///
/// # The limit
///
/// A parent's limit applies to its children (a slice, a pod), and a child may set a lower
/// one, so [`limit`](Self::limit) walks from the process's cgroup up to the mount point and
/// keeps the most restrictive `memory.max` (v2) or `memory.limit_in_bytes` (v1). On v2 it
/// also keeps the lowest `memory.high`: above it the kernel throttles and reclaims hard, a
/// soft ceiling. On v1 the kernel's own `hierarchical_memory_limit` (in `memory.stat`)
/// counts too: it covers ancestors above the mount, which the walk cannot see.
///
/// What the limit is enforced on is the cgroup's charge, not the process's RSS: see
/// [`WorkingSetProbe`].
///
/// # Examples
///
/// Log what the process runs under, and read its working set once:
///
/// ```
/// use pollgate_admission::rss::CgroupMemory;
///
/// match CgroupMemory::detect() {
///     Some(cgroup) => {
///         println!("{}", cgroup.limit()); // "memory limit 512 MiB from cgroup v2 /sys/fs/cgroup/…"
///         let _bytes = cgroup.working_set();
///     }
///     None => println!("no memory cgroup visible"),
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    version: CgroupVersion,
    dir: PathBuf,
    mount: PathBuf,
    hierarchy_root: bool,
}

impl CgroupMemory {
    /// Finds this process's memory cgroup; `None` when it has none that is visible (no
    /// cgroup file system mounted, v2 without the memory controller) or the platform is
    /// not Linux.
    ///
    /// # Examples
    /// Print the limit the OOM killer will enforce, and what counts against it now:
    /// ```
    /// use pollgate_admission::rss::CgroupMemory;
    ///
    /// match CgroupMemory::detect() {
    ///     Some(cgroup) => println!("{}; working set {:?} bytes", cgroup.limit(), cgroup.limiting().working_set()),
    ///     None => println!("no memory cgroup visible"),
    /// }
    /// ```
    pub fn detect() -> Option<Self> {
        Self::detect_in(Path::new("/"))
    }

    /// [`detect`](Self::detect) with every path under `root`: `root/proc/self/cgroup`,
    /// `root/proc/self/mountinfo`, and the mount points that mountinfo names, under `root`
    /// too. For tests on fixture trees.
    pub fn detect_in(root: &Path) -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            locate::locate(root).map(|found| Self {
                version: found.version,
                dir: found.dir,
                mount: found.mount,
                hierarchy_root: found.hierarchy_root,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = root;
            None
        }
    }

    /// The hierarchy's version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directory of the process's memory cgroup (under the detection root).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits, read now: walks from the process's cgroup up to the mount point and
    /// keeps the most restrictive of each (see [the type docs](Self#the-limit)).
    pub fn limit(&self) -> MemoryLimit {
        let (hard_file, soft_file) = match self.version {
            CgroupVersion::V1 => ("memory.limit_in_bytes", None),
            CgroupVersion::V2 => ("memory.max", Some("memory.high")),
        };
        let mut hard: Option<(u64, &Path)> = None;
        let mut soft: Option<u64> = None;
        for dir in self.walk() {
            if let Some(bytes) = read_limit(&dir.join(hard_file))
                && hard.is_none_or(|(lowest, _)| bytes < lowest)
            {
                hard = Some((bytes, dir));
            }
            if let Some(bytes) = soft_file.and_then(|file| read_limit(&dir.join(file))) {
                soft = Some(soft.map_or(bytes, |lowest| lowest.min(bytes)));
            }
        }
        let mut limited_by = hard.map(|(_, dir)| dir.to_path_buf());
        let mut hard = hard.map(|(bytes, _)| bytes);
        if self.version == CgroupVersion::V1
            && let Some(bytes) = self.read_stat("hierarchical_memory_limit").and_then(limit_from)
            && hard.is_none_or(|lowest| bytes < lowest)
        {
            hard = Some(bytes);
            limited_by = None;
        }
        MemoryLimit {
            hard,
            soft,
            version: self.version,
            cgroup: self.dir.clone(),
            limited_by,
        }
    }

    /// The working set, read once (`None` when the files cannot be read). For repeated
    /// reads use a [`WorkingSetProbe`], which keeps the files open.
    pub fn working_set(&self) -> Option<u64> {
        use super::probe::MemoryProbe;
        WorkingSetProbe::for_cgroup(self).ok()?.sample()
    }

    /// Whether the cgroup is the root of its whole hierarchy, as far as this cgroup
    /// namespace shows: the whole machine on a host.
    /// The cgroup whose limit applies to this process: the ancestor that set the most
    /// restrictive limit (its usage, siblings included, is what the kernel enforces the
    /// limit against), else this cgroup itself. [`RssAdaptive::auto`] reads its working
    /// set.
    ///
    /// [`RssAdaptive::auto`]: crate::RssAdaptive::auto
    pub fn limiting(&self) -> CgroupMemory {
        self.limit()
            .limited_by
            .as_deref()
            .filter(|dir| dir.starts_with(&self.mount) && dir.is_dir())
            .map_or_else(|| self.at(&self.dir), |dir| self.at(dir))
    }

    /// The same hierarchy seen from `dir`, an ancestor of this cgroup.
    fn at(&self, dir: &Path) -> CgroupMemory {
        CgroupMemory {
            version: self.version,
            dir: dir.to_path_buf(),
            mount: self.mount.clone(),
            hierarchy_root: dir == self.mount,
        }
    }

    pub(crate) fn is_hierarchy_root(&self) -> bool {
        self.hierarchy_root
    }

    /// The process's cgroup, then each parent up to the mount point.
    fn walk(&self) -> impl Iterator<Item = &Path> {
        let within = self.dir.starts_with(&self.mount);
        let mut done = false;
        self.dir.ancestors().take_while(move |dir| {
            let take = !done;
            done = !within || *dir == self.mount;
            take
        })
    }

    fn read_stat(&self, key: &str) -> Option<u64> {
        let stat = fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        working_set::stat_value(stat.as_bytes(), key.as_bytes())
    }
}

/// The limits of a memory cgroup, as [`CgroupMemory::limit`] found them.
///
/// `Display` writes one line for a start-up log:
/// `memory limit 512 MiB (memory.high 400 MiB) from cgroup v2 /sys/fs/cgroup/bot.slice/bot.service (set on /sys/fs/cgroup/bot.slice)`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The hard limit in bytes (`memory.max`, `memory.limit_in_bytes`): the kernel
    /// OOM-kills above it. `None`: unlimited.
    pub hard: Option<u64>,
    /// The soft ceiling in bytes (v2 `memory.high`): the kernel throttles the cgroup and
    /// reclaims hard above it. `None`: none set, or v1.
    pub soft: Option<u64>,
    /// The hierarchy's version.
    pub version: CgroupVersion,
    /// The process's cgroup directory.
    pub cgroup: PathBuf,
    /// The directory whose limit file set [`hard`](Self::hard): the process's cgroup or
    /// a parent. `None` when unlimited, or when only v1's `hierarchical_memory_limit` shows
    /// it (set on an ancestor above the mount point).
    pub limited_by: Option<PathBuf>,
}

impl MemoryLimit {
    /// The ceiling to stay under: the lower of the hard limit and `memory.high`; `None`
    /// when neither is set.
    pub fn effective(&self) -> Option<u64> {
        match (self.hard, self.soft) {
            (Some(hard), Some(soft)) => Some(hard.min(soft)),
            (hard, soft) => hard.or(soft),
        }
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.hard, self.soft) {
            (None, None) => {
                return write!(
                    f,
                    "no memory limit on cgroup {} {}",
                    self.version,
                    self.cgroup.display()
                );
            }
            (Some(hard), None) => write!(f, "memory limit {}", Bytes(hard))?,
            (None, Some(soft)) => write!(f, "memory.high {}", Bytes(soft))?,
            (Some(hard), Some(soft)) => write!(f, "memory limit {} (memory.high {})", Bytes(hard), Bytes(soft))?,
        }
        write!(f, " from cgroup {} {}", self.version, self.cgroup.display())?;
        match &self.limited_by {
            Some(dir) if *dir != self.cgroup => write!(f, " (set on {})", dir.display()),
            None if self.hard.is_some() => f.write_str(" (set above the mount point)"),
            _ => Ok(()),
        }
    }
}

fn read_limit(path: &Path) -> Option<u64> {
    parse_limit(&fs::read_to_string(path).ok()?)
}

/// Parses `memory.max`, `memory.high` (v2) or `memory.limit_in_bytes` (v1).
pub(crate) fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    limit_from(text.parse::<u64>().ok()?)
}

fn limit_from(bytes: u64) -> Option<u64> {
    Some(bytes).filter(|&limit| limit > 0 && limit < UNLIMITED_FROM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 unlimited");
        assert_eq!(parse_limit("0"), None);
        assert_eq!(parse_limit("garbage"), None);
        assert_eq!(parse_limit(""), None);
    }

    fn limit(hard: Option<u64>, soft: Option<u64>, limited_by: Option<&str>) -> MemoryLimit {
        MemoryLimit {
            hard,
            soft,
            version: CgroupVersion::V2,
            cgroup: PathBuf::from("/sys/fs/cgroup/bot.slice/bot.service"),
            limited_by: limited_by.map(PathBuf::from),
        }
    }

    #[test]
    fn effective_is_the_lower_ceiling() {
        assert_eq!(limit(None, None, None).effective(), None);
        assert_eq!(limit(Some(512), None, None).effective(), Some(512));
        assert_eq!(limit(None, Some(400), None).effective(), Some(400));
        assert_eq!(limit(Some(512), Some(400), None).effective(), Some(400));
        assert_eq!(limit(Some(300), Some(400), None).effective(), Some(300));
    }

    #[test]
    fn displays_one_log_line() {
        let own = "/sys/fs/cgroup/bot.slice/bot.service";
        assert_eq!(
            limit(Some(512 << 20), None, Some(own)).to_string(),
            "memory limit 512 MiB from cgroup v2 /sys/fs/cgroup/bot.slice/bot.service"
        );
        assert_eq!(
            limit(Some(512 << 20), Some(400 << 20), Some("/sys/fs/cgroup/bot.slice")).to_string(),
            "memory limit 512 MiB (memory.high 400 MiB) from cgroup v2 /sys/fs/cgroup/bot.slice/bot.service \
             (set on /sys/fs/cgroup/bot.slice)"
        );
        assert_eq!(
            limit(Some(1 << 30), None, None).to_string(),
            "memory limit 1 GiB from cgroup v2 /sys/fs/cgroup/bot.slice/bot.service (set above the mount point)"
        );
        assert_eq!(
            limit(None, None, None).to_string(),
            "no memory limit on cgroup v2 /sys/fs/cgroup/bot.slice/bot.service"
        );
    }
}
