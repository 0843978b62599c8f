//! Detection in a real memory cgroup, where one is writable (root, and a cgroup v1 memory
//! hierarchy or a v2 one with the memory controller): creates `pollgate-test-<pid>` with a
//! 64 MiB limit, runs this test binary inside it in helper mode, and checks what the
//! helper found; then the same from a sub-cgroup without a limit. Skipped, with the reason
//! on stderr, elsewhere.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pollgate_admission::rss::{CgroupMemory, CgroupVersion, cgroup_memory_limit};
use pollgate_admission::{MemoryProbe, ProcStatusProbe, RssAdaptive, WorkingSetProbe};

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 64 * MIB;
/// Set in the helper process; its value is the cgroup directory it was started in.
const HELPER_ENV: &str = "POLLGATE_CGROUP_HELPER";
const HELPER_TEST: &str = "helper_reports_what_it_detects";
const PREFIX: &str = "pollgate-cgroup: ";

/// Not a test of its own: a no-op unless started by [`detects_a_real_memory_cgroup`] inside
/// a test cgroup, where it prints what detection finds as `pollgate-cgroup: key=value`.
#[test]
fn helper_reports_what_it_detects() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let report = |key: &str, value: &dyn std::fmt::Display| println!("{PREFIX}{key}={value}");
    let cgroup = CgroupMemory::detect().expect("the helper runs in a memory cgroup");
    let limit = cgroup.limit();
    report("version", &cgroup.version());
    report("dir", &cgroup.dir().display());
    report("hard", &limit.hard.map_or(0, |bytes| bytes));
    report(
        "limited_by",
        &limit
            .limited_by
            .as_ref()
            .map_or(String::new(), |dir| dir.display().to_string()),
    );
    report("line", &limit);
    report("cgroup_memory_limit", &cgroup_memory_limit().map_or(0, |bytes| bytes));

    let mut probe = WorkingSetProbe::new();
    assert!(probe.reads_cgroup(), "WorkingSetProbe::new() reads the cgroup");
    let before = probe.sample().expect("a working set");
    let touched = black_box(vec![1u8; 16 * MIB as usize]);
    let after = probe.sample().expect("a working set");
    drop(touched);
    report("working_set_before", &before);
    report("working_set_after_16_mib", &after);

    let reads = 2000u32;
    let start = Instant::now();
    for _ in 0..reads {
        black_box(probe.sample());
    }
    report(
        "working_set_ns_per_read",
        &(start.elapsed().as_nanos() / u128::from(reads)),
    );
    let mut statm = ProcStatusProbe::new().expect("Linux");
    let start = Instant::now();
    for _ in 0..reads {
        black_box(statm.sample());
    }
    report("statm_ns_per_read", &(start.elapsed().as_nanos() / u128::from(reads)));

    let builder = RssAdaptive::auto();
    let auto = builder.auto_target().expect("auto() describes itself");
    report("auto_target", &auto.target);
    report("auto_reads_working_set", &auto.reads_working_set);
    report("auto_line", auto);
}

#[test]
fn detects_a_real_memory_cgroup() {
    let parent = match writable_parent() {
        Ok(parent) => parent,
        Err(reason) => {
            // Straight to stderr: the test harness captures only `print!` and `eprint!`.
            let _ = writeln!(std::io::stderr(), "detects_a_real_memory_cgroup: skipped: {reason}");
            return;
        }
    };
    let (version, parent) = parent;
    let mut cgroup = TestCgroup::create(&parent.join(format!("pollgate-test-{}", std::process::id())))
        .expect("mkdir of the test cgroup");
    let limit_file = match version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    fs::write(cgroup.dir.join(limit_file), LIMIT.to_string()).expect("set the test cgroup's limit");

    // The process in the limited cgroup itself.
    let own = run_helper(&cgroup.dir);
    log(&format!("in {}: {}", cgroup.dir.display(), own["line"]));
    assert_eq!(own["version"], version.to_string());
    assert_eq!(own["dir"], cgroup.dir.display().to_string());
    assert_eq!(own["hard"], LIMIT.to_string());
    assert_eq!(own["cgroup_memory_limit"], LIMIT.to_string());
    assert_eq!(own["limited_by"], cgroup.dir.display().to_string());
    let before: u64 = own["working_set_before"].parse().unwrap();
    let after: u64 = own["working_set_after_16_mib"].parse().unwrap();
    assert!(0 < before && before < LIMIT, "working set {before} in (0, {LIMIT})");
    assert!(after >= before + 12 * MIB, "touching 16 MiB shows: {before} -> {after}");
    assert!(after < LIMIT, "working set {after} below the limit");
    let target = (LIMIT as f64 * pollgate_admission::rss::AUTO_LIMIT_FRACTION).round() as u64;
    assert_eq!(own["auto_target"], target.to_string());
    assert_eq!(own["auto_reads_working_set"], "true");
    log(&format!("auto: {}", own["auto_line"]));
    log(&format!(
        "working set {before} B, {after} B after touching 16 MiB; a read costs {} ns (statm: {} ns) in a {} build",
        own["working_set_ns_per_read"],
        own["statm_ns_per_read"],
        if cfg!(debug_assertions) { "debug" } else { "release" }
    ));

    // A sub-cgroup without a limit of its own: the parent's limit applies.
    if version == CgroupVersion::V2 {
        // v2 puts processes in leaves only: the test cgroup is empty again by now.
        fs::write(cgroup.dir.join("cgroup.subtree_control"), "+memory").expect("enable memory below");
    }
    let nested = cgroup.child("nested").expect("mkdir of the nested cgroup");
    let inner = run_helper(&nested);
    log(&format!("in {}: {}", nested.display(), inner["line"]));
    assert_eq!(inner["dir"], nested.display().to_string());
    assert_eq!(inner["hard"], LIMIT.to_string(), "the parent's limit");
    assert_eq!(inner["limited_by"], cgroup.dir.display().to_string());
}

/// Where a test cgroup can be created: the process's own memory cgroup on v1; on v2 the
/// nearest ancestor that delegates the memory controller (v2 keeps processes out of
/// cgroups whose children have controllers, so not the process's own).
fn writable_parent() -> Result<(CgroupVersion, PathBuf), String> {
    let euid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_ascii_whitespace().nth(2).map(str::to_owned)
        })
        .ok_or("no effective uid in /proc/self/status")?;
    if euid != "0" {
        return Err(format!("needs root to create cgroups (euid {euid})"));
    }
    let cgroup = CgroupMemory::detect().ok_or("no memory cgroup visible")?;
    match cgroup.version() {
        CgroupVersion::V1 => Ok((CgroupVersion::V1, cgroup.dir().to_path_buf())),
        CgroupVersion::V2 => cgroup
            .dir()
            .ancestors()
            .skip(1)
            .take_while(|dir| dir.join("cgroup.subtree_control").exists())
            .find(|dir| {
                fs::read_to_string(dir.join("cgroup.subtree_control"))
                    .is_ok_and(|controllers| controllers.split_ascii_whitespace().any(|c| c == "memory"))
            })
            .map(|dir| (CgroupVersion::V2, dir.to_path_buf()))
            .ok_or_else(|| {
                format!(
                    "no ancestor of {} delegates the v2 memory controller",
                    cgroup.dir().display()
                )
            }),
    }
}

/// Runs this binary's helper test inside `dir` and returns what it reported.
fn run_helper(dir: &Path) -> HashMap<String, String> {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .args(["-c", r#"echo $$ > "$1" && shift && exec "$@""#, "sh"])
        .arg(dir.join("cgroup.procs"))
        .arg(exe)
        .args(["--exact", HELPER_TEST, "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, dir)
        .output()
        .expect("start the helper");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helper in {} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        // The harness may print "test … " on the same line, before the helper's first report.
        .filter_map(|line| line.split_once(PREFIX)?.1.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "detects_a_real_memory_cgroup: {line}");
}

/// A cgroup this test made; removed with its children when dropped.
struct TestCgroup {
    dir: PathBuf,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    fn create(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            children: Vec::new(),
        })
    }

    fn child(&mut self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir)?;
        self.children.push(dir.clone());
        Ok(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.children.iter().rev().chain([&self.dir]) {
            // A cgroup whose last process just exited can be busy for a moment.
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Err(error) = fs::remove_dir(dir) {
                if Instant::now() > deadline {
                    log(&format!("could not remove {}: {error}", dir.display()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
