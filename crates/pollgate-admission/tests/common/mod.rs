//! Fake `/proc` + `/sys/fs/cgroup` roots for the cgroup tests: one throw-away directory
//! per case, holding exactly the files a case needs.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::fs;
use std::path::PathBuf;

use pollgate_admission::rss::CgroupMemory;

/// The mounts of a v1 host (this one: Debian-style, with a `cgroup2` hierarchy at
/// `unified` that has no controllers: a hybrid host).
pub const V1_MOUNTS: &str = "\
24 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 24 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:18 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:19 - cgroup2 cgroup2 rw
";

/// The mounts of a v2 host.
pub const V2_MOUNTS: &str = "\
24 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

pub const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

/// A throw-away root directory holding one case's files.
pub struct Fixture {
    pub root: PathBuf,
}

impl Fixture {
    pub fn new(case: &str) -> Self {
        let root = std::env::temp_dir().join(format!("pollgate-cgroup-{}-{case}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    /// Writes `text` at `path` (relative to the root), creating directories.
    pub fn file(self, path: &str, text: &str) -> Self {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    pub fn detect(&self) -> CgroupMemory {
        CgroupMemory::detect_in(&self.root).expect("a memory cgroup in the fixture")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
