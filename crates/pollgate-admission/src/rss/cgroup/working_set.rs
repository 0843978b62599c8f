//! [`WorkingSetProbe`]: the memory a cgroup's limit is enforced on, as Docker and
//! Kubernetes report it.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;

use super::{CgroupMemory, CgroupVersion};
use crate::rss::probe::{MemoryProbe, ProcStatusProbe, SysinfoProbe};

/// Reads the working set of this process's memory cgroup, in bytes; where there is no
/// cgroup, this process's RSS.
///
/// The working set is the cgroup's charge minus the inactive file cache, which the kernel
/// reclaims before it OOM-kills — what `docker stats` and the kubelet report, and what
/// `RssAdaptive` should compare with a cgroup limit:
///
/// | version | working set                                                        |
/// |---------|--------------------------------------------------------------------|
/// | v2      | `memory.current − inactive_file` (of `memory.stat`)                |
/// | v1      | `memory.usage_in_bytes − total_inactive_file` (of `memory.stat`)   |
///
/// Unlike RSS it counts page cache, kernel memory and every other process of the cgroup:
/// everything the limit is enforced on.
///
/// The two files are opened once and re-read from offset 0 on each sample, one `pread`
/// each. Measured on the cgroup v1 VM of `docs/benchmarks.md` (criterion, `probe_sample`
/// in `benches/gate.rs`): about 15 µs a read — 1 µs for the usage, 10 µs for the kernel
/// to generate `memory.stat` — against 4–5 µs for [`ProcStatusProbe`] and 40–65 µs for
/// [`SysinfoProbe`]; at the sampler's 5 ms, 0.3% of a core.
///
/// # Examples
///
/// ```
/// use pollgate_admission::{MemoryProbe, RssAdaptive, WorkingSetProbe};
///
/// let mut probe = WorkingSetProbe::new(); // the cgroup if there is one, else RSS
/// let _bytes = probe.sample();
/// let _policy = RssAdaptive::builder(1 << 30).probe(probe).build_manual();
/// ```
#[derive(Debug)]
pub struct WorkingSetProbe {
    source: Source,
    /// Consecutive failed reads of the cgroup's files.
    failures: u32,
}

#[derive(Debug)]
enum Source {
    Cgroup(CgroupFiles),
    Statm(ProcStatusProbe),
    /// Boxed: a sysinfo `System` is large, and the other sources are the usual ones.
    Sysinfo(Box<SysinfoProbe>),
}

impl WorkingSetProbe {
    /// Reads this process's memory cgroup, or its RSS when no memory cgroup is visible or
    /// the cgroup is the root of a v1 hierarchy (the whole machine).
    ///
    /// The RSS fallback reads `/proc/self/statm` ([`ProcStatusProbe`]) on Linux and
    /// [`SysinfoProbe`] elsewhere.
    ///
    /// # Examples
    /// Drive an `RssAdaptive` by the working set instead of RSS (what `RssAdaptive::auto`
    /// does in a limited cgroup):
    /// ```
    /// use pollgate_admission::{MemoryProbe, RssAdaptive, WorkingSetProbe};
    ///
    /// let mut probe = WorkingSetProbe::new();
    /// println!("reads the cgroup: {}, now {:?} bytes", probe.reads_cgroup(), probe.sample());
    /// let policy = RssAdaptive::builder(512 << 20).probe(probe).build();
    /// # drop(policy);
    /// ```
    pub fn new() -> Self {
        CgroupMemory::detect()
            .filter(|cgroup| !(cgroup.version() == CgroupVersion::V1 && cgroup.is_hierarchy_root()))
            .and_then(|cgroup| {
                Self::for_cgroup(&cgroup)
                    .inspect_err(|error| {
                        tracing::debug!(dir = %cgroup.dir().display(), %error, "cgroup working set unreadable; using RSS");
                    })
                    .ok()
            })
            .unwrap_or_else(Self::rss)
    }

    /// Reads the given cgroup's working set.
    ///
    /// # Errors
    ///
    /// When the usage file or `memory.stat` cannot be opened or read (the root of a v2
    /// hierarchy has neither), or `memory.stat` lacks the inactive file count.
    pub fn for_cgroup(cgroup: &CgroupMemory) -> io::Result<Self> {
        let mut files = CgroupFiles::open(cgroup)?;
        files.read()?;
        Ok(Self {
            source: Source::Cgroup(files),
            failures: 0,
        })
    }

    /// Whether it reads a cgroup's working set; `false`: it reads RSS.
    pub fn reads_cgroup(&self) -> bool {
        matches!(self.source, Source::Cgroup(_))
    }

    fn rss() -> Self {
        let source = match ProcStatusProbe::new() {
            Some(statm) => Source::Statm(statm),
            None => Source::Sysinfo(Box::default()),
        };
        Self { source, failures: 0 }
    }
}

impl Default for WorkingSetProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// Failed reads in a row after which the probe gives up on the cgroup and reads RSS.
const FAILURES_BEFORE_RSS: u32 = 3;

impl MemoryProbe for WorkingSetProbe {
    fn sample(&mut self) -> Option<u64> {
        match &mut self.source {
            Source::Cgroup(files) => match files.read() {
                Ok(bytes) => {
                    self.failures = 0;
                    Some(bytes)
                }
                Err(error) => {
                    // The cgroup was removed or the process moved: the files will not come
                    // back. A policy without samples would freeze; read RSS instead.
                    self.failures += 1;
                    if self.failures >= FAILURES_BEFORE_RSS {
                        tracing::warn!(
                            dir = %files.dir.display(),
                            %error,
                            "the cgroup's working set cannot be read any more; reading this process's RSS instead"
                        );
                        self.source = Self::rss().source;
                        return self.sample();
                    }
                    None
                }
            },
            Source::Statm(statm) => statm.sample(),
            Source::Sysinfo(sysinfo) => sysinfo.sample(),
        }
    }
}

/// The open usage and `memory.stat` files of one cgroup.
struct CgroupFiles {
    dir: PathBuf,
    usage: File,
    stat: File,
    inactive_key: &'static [u8],
    buf: Vec<u8>,
}

impl CgroupFiles {
    fn open(cgroup: &CgroupMemory) -> io::Result<Self> {
        let (usage, inactive_key): (&str, &[u8]) = match cgroup.version() {
            CgroupVersion::V1 => ("memory.usage_in_bytes", b"total_inactive_file"),
            CgroupVersion::V2 => ("memory.current", b"inactive_file"),
        };
        let dir = cgroup.dir().to_path_buf();
        Ok(Self {
            usage: File::open(dir.join(usage))?,
            stat: File::open(dir.join("memory.stat"))?,
            dir,
            inactive_key,
            buf: vec![0; 4096],
        })
    }

    fn read(&mut self) -> io::Result<u64> {
        let len = read_from_start(&mut self.usage, &mut self.buf)?;
        let usage = std::str::from_utf8(&self.buf[..len])
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "memory usage is not a number"))?;
        let len = read_from_start(&mut self.stat, &mut self.buf)?;
        let inactive = stat_value(&self.buf[..len], self.inactive_key)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "memory.stat has no inactive file count"))?;
        // The two files are read at different moments (and v1 batches usage per CPU): a
        // reading with more inactive cache than usage is inconsistent. Report the usage
        // then, never "nothing in use".
        Ok(if inactive < usage { usage - inactive } else { usage })
    }
}

impl fmt::Debug for CgroupFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgroupFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Reads a whole file from offset 0 into `buf`, growing it as needed; the length read.
///
/// cgroup files regenerate their content on a read from offset 0. A read that does not
/// fill the buffer is taken as the end: the kernel's `seq_file` (behind every cgroup file)
/// fills a read until the buffer is full or the content ends, so the usual extra read that
/// returns 0 would only cost another regeneration (3 µs for a v1 `memory.stat`).
fn read_from_start(file: &mut File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut len = 0;
    loop {
        let n = read_at(file, &mut buf[len..], len)?;
        len += n;
        if n == 0 || len < buf.len() {
            return Ok(len);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

#[cfg(unix)]
fn read_at(file: &mut File, buf: &mut [u8], offset: usize) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset as u64)
}

#[cfg(not(unix))]
fn read_at(file: &mut File, buf: &mut [u8], offset: usize) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset as u64))?;
    file.read(buf)
}

/// The value of `key` in a `memory.stat` (lines of `key value`).
pub(super) fn stat_value(stat: &[u8], key: &[u8]) -> Option<u64> {
    stat.split(|&b| b == b'\n').find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(b" ")?;
        std::str::from_utf8(value).ok()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::stat_value;

    #[test]
    fn finds_stat_values_by_whole_key() {
        let v1 = b"cache 100\ninactive_file 7\nhierarchical_memory_limit 9\ntotal_inactive_file 42\n";
        assert_eq!(stat_value(v1, b"total_inactive_file"), Some(42));
        assert_eq!(stat_value(v1, b"inactive_file"), Some(7), "not total_inactive_file");
        assert_eq!(stat_value(v1, b"hierarchical_memory_limit"), Some(9));
        assert_eq!(stat_value(v1, b"inactive"), None, "a prefix is not a key");
        assert_eq!(stat_value(b"anon 1\ninactive_file", b"inactive_file"), None);
    }
}
