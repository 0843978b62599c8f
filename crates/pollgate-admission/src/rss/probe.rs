//! Memory probes: where `RssAdaptive` reads the process's resident memory from.
//!
//! A probe is injected, so tests feed scripted samples and embedders can read whatever
//! they trust (an allocator's own counters, a cgroup's `memory.current`). Any
//! `FnMut() -> Option<u64> + Send + 'static` closure is a probe.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Reads this process's resident set size, in bytes.
///
/// Called from the sampler thread every few milliseconds, so keep it cheap (tens of
/// microseconds at most). `None` means "no reading this time"; the sample is skipped.
///
/// # Examples
///
/// A closure is a probe; so is a type that reads whatever counter the program trusts:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use pollgate_admission::{MemoryProbe, RssAdaptive};
///
/// /// The bytes an instrumented allocator says are live.
/// struct Allocated(Arc<AtomicU64>);
///
/// impl MemoryProbe for Allocated {
///     fn sample(&mut self) -> Option<u64> {
///         Some(self.0.load(Ordering::Relaxed))
///     }
/// }
///
/// const MIB: u64 = 1 << 20;
/// let live = Arc::new(AtomicU64::new(300 * MIB));
/// let policy = RssAdaptive::builder(1000 * MIB).probe(Allocated(live.clone())).build_manual();
/// // The baseline was read once, at build: 950 MiB (the high mark) − 300 MiB.
/// assert_eq!(policy.budget(), 650 * MIB);
///
/// let mut scripted = vec![Some(2), None, Some(1)].into_iter().flatten();
/// let mut probe = move || scripted.next();
/// assert_eq!(MemoryProbe::sample(&mut probe), Some(2));
/// ```
pub trait MemoryProbe: Send + 'static {
    /// The current resident set size in bytes, if it can be read.
    fn sample(&mut self) -> Option<u64>;
}

impl<F> MemoryProbe for F
where
    F: FnMut() -> Option<u64> + Send + 'static,
{
    fn sample(&mut self) -> Option<u64> {
        self()
    }
}

/// The default probe: `sysinfo`, refreshing only this process's memory.
///
/// Keeps one `System` and refreshes just this PID with
/// `ProcessRefreshKind::nothing().with_memory().without_tasks()` — about 34 µs a read on
/// the Linux VM of `docs/benchmarks.md` (the design notes measured 11 µs on another machine; [`ProcStatusProbe`]
/// reads `/proc/self/statm` in about 3 µs), portable to the platforms sysinfo supports.
///
/// # Examples
///
/// ```
/// use pollgate_admission::{MemoryProbe, SysinfoProbe};
///
/// let mut probe = SysinfoProbe::new();
/// if cfg!(target_os = "linux") {
///     let rss = probe.sample().expect("sysinfo reads this process on Linux");
///     assert!(rss > 0);
/// }
/// ```
pub struct SysinfoProbe {
    system: System,
    pid: Option<Pid>,
}

impl SysinfoProbe {
    /// A probe of the current process.
    pub fn new() -> Self {
        Self {
            system: System::new(),
            pid: sysinfo::get_current_pid().ok(),
        }
    }
}

impl Default for SysinfoProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProbe for SysinfoProbe {
    fn sample(&mut self) -> Option<u64> {
        let pid = self.pid?;
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().without_tasks(),
        );
        self.system.process(pid).map(|process| process.memory())
    }
}

impl fmt::Debug for SysinfoProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SysinfoProbe").field("pid", &self.pid).finish()
    }
}

/// A Linux-only probe reading `/proc/self/statm`, without sysinfo.
///
/// Keeps the file open and re-reads it from the start; the resident page count is
/// multiplied by the page size, which is calibrated once against `VmRSS` in
/// `/proc/self/status` (rounded to a power of two; 4 KiB if that fails).
///
/// # Examples
///
/// ```
/// use pollgate_admission::{MemoryProbe, ProcStatusProbe, RssAdaptive};
///
/// // Where there is no `/proc` (not Linux), fall back to the default probe.
/// let builder = RssAdaptive::builder(1 << 30);
/// let builder = match ProcStatusProbe::new() {
///     Some(mut statm) => {
///         assert!(statm.sample().is_some_and(|rss| rss > 0));
///         builder.probe(statm)
///     }
///     None => builder,
/// };
/// let _policy = builder.build_manual();
/// ```
#[derive(Debug)]
pub struct ProcStatusProbe {
    file: File,
    page_size: u64,
    buf: Vec<u8>,
}

impl ProcStatusProbe {
    /// Opens `/proc/self/statm`; `None` where it does not exist (not Linux).
    pub fn new() -> Option<Self> {
        let file = File::open("/proc/self/statm").ok()?;
        let mut probe = Self {
            file,
            page_size: 4096,
            buf: Vec::with_capacity(128),
        };
        if let Some(page_size) = probe.calibrate() {
            probe.page_size = page_size;
        }
        Some(probe)
    }

    fn resident_pages(&mut self) -> Option<u64> {
        self.buf.clear();
        self.file.seek(SeekFrom::Start(0)).ok()?;
        self.file.read_to_end(&mut self.buf).ok()?;
        parse_statm_resident(std::str::from_utf8(&self.buf).ok()?)
    }

    fn calibrate(&mut self) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let vm_rss_kib = parse_vm_rss_kib(&status)?;
        let pages = self.resident_pages()?.max(1);
        let raw = vm_rss_kib * 1024 / pages;
        (raw > 0).then(|| {
            let up = raw.next_power_of_two();
            if up - raw <= raw - up / 2 { up } else { up / 2 }
        })
    }
}

impl MemoryProbe for ProcStatusProbe {
    fn sample(&mut self) -> Option<u64> {
        Some(self.resident_pages()? * self.page_size)
    }
}

/// The second field of `/proc/<pid>/statm`: resident pages.
fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_statm_resident("12345 678 90 1 0 2 0\n"), Some(678));
        assert_eq!(parse_statm_resident("12345"), None);
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    4096 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4096));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn closures_are_probes() {
        let mut samples = vec![3, 2, 1];
        let mut probe = move || samples.pop();
        assert_eq!(MemoryProbe::sample(&mut probe), Some(1));
    }

    #[test]
    fn real_probes_agree_roughly() {
        let sysinfo = SysinfoProbe::new().sample();
        #[cfg(target_os = "linux")]
        {
            let sysinfo = sysinfo.expect("sysinfo reads this process on Linux");
            let statm = ProcStatusProbe::new().unwrap().sample().unwrap();
            let (lo, hi) = (sysinfo.min(statm), sysinfo.max(statm));
            assert!(hi - lo < 64 << 20, "sysinfo {sysinfo} vs statm {statm}");
        }
        let _ = sysinfo;
    }
}
