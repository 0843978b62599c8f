//! Where this process's memory cgroup is: `/proc/self/cgroup` names the cgroup,
//! `/proc/self/mountinfo` says where its hierarchy is mounted. Linux only.
//!
//! The two files are parsed with `procfs-core` (the parsing half of the `procfs` crate):
//! it reads from any `BufRead`, so the same code runs on fixture trees, and it gets the
//! variable-length optional fields of mountinfo right. What it leaves to us: mountinfo
//! escapes space, tab, newline and backslash as `\ooo` octal ([`unescape`]).
//!
//! The mapping, as the JVM, .NET's GC and Go's automemlimit do it:
//!
//! * **v1**: the line `N:…memory…:/path` (controllers are comma-separated); its hierarchy is
//!   the `cgroup` mount whose super options include `memory`.
//! * **v2**: the line `0::/path`; the `cgroup2` mount. It has a memory controller only when
//!   the cgroup's `cgroup.controllers` lists `memory`.
//! * **Hybrid** (both): the v1 memory controller wins when there is one — then the v2
//!   hierarchy has no memory controller, as the kernel binds a controller to one hierarchy.
//!
//! `/path` is relative to the root of the whole hierarchy, while a mount shows the subtree
//! from the mount's *root* (the 4th mountinfo field): `docker --cgroupns=host` shows the
//! process in `/docker/<id>` and mounts exactly that subtree at `/sys/fs/cgroup/memory`.
//! So the directory is `mount point + (path − mount root)`.

use std::fs;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use procfs_core::process::MountInfo;
use procfs_core::{FromBufRead, ProcessCGroup, ProcessCGroups};

use super::CgroupVersion;

/// A memory cgroup found on disk.
#[derive(Debug)]
pub(super) struct Located {
    pub(super) version: CgroupVersion,
    /// The process's cgroup directory, under the detection root.
    pub(super) dir: PathBuf,
    /// The mount point of its hierarchy, under the detection root: the walk up stops here.
    pub(super) mount: PathBuf,
    /// Whether `dir` is the root of the whole hierarchy (the whole machine).
    pub(super) hierarchy_root: bool,
}

/// Finds the memory cgroup of the process whose `/proc/self` is under `root`.
pub(super) fn locate(root: &Path) -> Option<Located> {
    let cgroups = read_cgroups(root)?;
    let mounts = read_mounts(root)?;

    let v1 = cgroups
        .iter()
        .find(|cgroup| cgroup.hierarchy != 0 && cgroup.controllers.iter().any(|c| c == "memory"));
    if let Some(cgroup) = v1 {
        let candidates = mounts
            .iter()
            .filter(|mount| mount.fs_type == "cgroup" && mount.super_options.contains_key("memory"));
        match place(root, cgroup, candidates, CgroupVersion::V1) {
            Some(found) => return Some(found),
            None => tracing::debug!(path = %cgroup.pathname, "cgroup v1 memory controller is not mounted"),
        }
    }

    let v2 = cgroups
        .iter()
        .find(|cgroup| cgroup.hierarchy == 0 && cgroup.controllers.is_empty())?;
    let candidates = mounts.iter().filter(|mount| mount.fs_type == "cgroup2");
    let found = place(root, v2, candidates, CgroupVersion::V2)?;
    if lists_memory(&found.dir) {
        Some(found)
    } else {
        tracing::debug!(dir = %found.dir.display(), "cgroup v2 without the memory controller");
        None
    }
}

fn read_cgroups(root: &Path) -> Option<Vec<ProcessCGroup>> {
    let path = root.join("proc/self/cgroup");
    let file = fs::File::open(&path)
        .inspect_err(|error| tracing::debug!(path = %path.display(), %error, "no cgroup membership"))
        .ok()?;
    ProcessCGroups::from_buf_read(BufReader::new(file))
        .inspect_err(|error| tracing::debug!(path = %path.display(), %error, "unreadable cgroup membership"))
        .ok()
        .map(|cgroups| cgroups.0)
}

/// Every mount that parses; a line that does not (a format this parser does not know) is
/// skipped rather than losing the others.
fn read_mounts(root: &Path) -> Option<Vec<MountInfo>> {
    let path = root.join("proc/self/mountinfo");
    let text = fs::read_to_string(&path)
        .inspect_err(|error| tracing::debug!(path = %path.display(), %error, "no mount table"))
        .ok()?;
    Some(
        text.lines()
            .filter_map(|line| MountInfo::from_line(line).ok())
            .collect(),
    )
}

/// Maps the cgroup onto one of the hierarchy's mounts: the mount whose root contains the
/// cgroup, the deepest such root if several do (bind mounts of sub-trees); failing that, the
/// first mount's own directory (the cgroup is outside every mounted subtree, as it can be
/// after the process moved, or is shown as `/../x` from another cgroup namespace).
fn place<'a>(
    root: &Path,
    cgroup: &ProcessCGroup,
    mounts: impl Iterator<Item = &'a MountInfo>,
    version: CgroupVersion,
) -> Option<Located> {
    let cgroup_path = Path::new(&cgroup.pathname);
    let mut first = None;
    let mut best: Option<(usize, &MountInfo, PathBuf)> = None;
    for mount in mounts {
        first.get_or_insert(mount);
        let mount_root = PathBuf::from(unescape(&mount.root));
        let Ok(rest) = cgroup_path.strip_prefix(&mount_root) else {
            continue;
        };
        if rest.components().any(|c| !matches!(c, Component::Normal(_))) {
            continue;
        }
        let depth = mount_root.components().count();
        if best.as_ref().is_none_or(|(deepest, ..)| depth > *deepest) {
            best = Some((depth, mount, rest.to_path_buf()));
        }
    }
    let mount_dir = |mount: &MountInfo| {
        let point = unescape(&mount.mount_point.to_string_lossy());
        root.join(point.trim_start_matches('/'))
    };
    match best {
        Some((_, mount, rest)) => {
            let mount_point = mount_dir(mount);
            Some(Located {
                version,
                dir: mount_point.join(&rest),
                hierarchy_root: rest.as_os_str().is_empty() && unescape(&mount.root) == "/",
                mount: mount_point,
            })
        }
        None => {
            let mount = first?;
            tracing::debug!(
                path = %cgroup.pathname,
                mount_root = %mount.root,
                "cgroup outside every mounted subtree; using the mount point"
            );
            let mount_point = mount_dir(mount);
            Some(Located {
                version,
                dir: mount_point.clone(),
                hierarchy_root: false,
                mount: mount_point,
            })
        }
    }
}

/// Whether a v2 cgroup's `cgroup.controllers` lists `memory`.
fn lists_memory(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .is_ok_and(|controllers| controllers.split_ascii_whitespace().any(|c| c == "memory"))
}

/// Undoes mountinfo's `\ooo` escapes (the kernel's `mangle_path` escapes space, tab,
/// newline and backslash).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|digits| {
            bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)) && digits[0] <= b'3'
        });
        match octal {
            Some(digits) => {
                out.push(digits.iter().fold(0u8, |acc, d| acc * 8 + (d - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape(r"/mnt/my\040cgroups"), "/mnt/my cgroups");
        assert_eq!(
            unescape(r"/a\134x2db"),
            r"/a\x2db",
            "a backslash from systemd's escaping"
        );
        assert_eq!(unescape(r"/tail\04"), r"/tail\04", "too short: left as is");
        assert_eq!(unescape(r"/x\999"), r"/x\999", "not octal: left as is");
    }
}
