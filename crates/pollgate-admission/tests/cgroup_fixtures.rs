//! Memory cgroup detection on fixture trees: a fake `/proc/self` and `/sys/fs/cgroup` per
//! case, laid out as the kernel shows them on cgroup v1, v2 and hybrid hosts, inside and
//! outside containers.
#![cfg(target_os = "linux")]

mod common;

use std::fs;

use common::*;
use pollgate_admission::rss::{CgroupMemory, CgroupVersion};
use pollgate_admission::{MemoryProbe, WorkingSetProbe};

const MIB: u64 = 1 << 20;
/// What cgroup v1 writes for "no limit" on 64-bit with 4 KiB pages.
const V1_UNLIMITED: &str = "9223372036854771712\n";

/// A v1 host whose process is in the memory cgroup `path`.
fn v1_host(case: &str, path: &str) -> Fixture {
    Fixture::new(case)
        .file(
            "proc/self/cgroup",
            &format!("9:name=systemd:/\n4:memory:{path}\n1:cpu,cpuacct:/\n0::/\n"),
        )
        .file("proc/self/mountinfo", V1_MOUNTS)
        .file("sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
}

/// A v2 host whose process is in `path`.
fn v2_host(case: &str, path: &str) -> Fixture {
    Fixture::new(case)
        .file("proc/self/cgroup", &format!("0::{path}\n"))
        .file("proc/self/mountinfo", V2_MOUNTS)
        .file("sys/fs/cgroup/cgroup.controllers", V2_CONTROLLERS)
        .file(&format!("sys/fs/cgroup{path}/cgroup.controllers"), "memory pids\n")
}

fn v1_stat(inactive_file: u64, total_inactive_file: u64, hierarchical_limit: &str) -> String {
    format!(
        "cache 0\nrss 0\ninactive_file {inactive_file}\nactive_file 0\n\
         hierarchical_memory_limit {hierarchical_limit}\ntotal_inactive_file {total_inactive_file}\n"
    )
}

#[test]
fn v1_reads_the_process_cgroup_not_the_hierarchy_root() {
    let fixture = v1_host("v1", "/process_api/a6a8")
        .file("sys/fs/cgroup/memory/process_api/memory.limit_in_bytes", V1_UNLIMITED)
        .file(
            "sys/fs/cgroup/memory/process_api/a6a8/memory.limit_in_bytes",
            "536870912\n",
        );
    let cgroup = fixture.detect();
    assert_eq!(cgroup.version(), CgroupVersion::V1);
    assert_eq!(cgroup.dir(), fixture.path("sys/fs/cgroup/memory/process_api/a6a8"));
    let limit = cgroup.limit();
    assert_eq!(limit.hard, Some(512 * MIB));
    assert_eq!(limit.soft, None, "v1 has no memory.high");
    assert_eq!(limit.limited_by.as_deref(), Some(cgroup.dir()));
}

#[test]
fn v2_systemd_unit_without_a_cgroup_namespace() {
    let fixture = v2_host("v2", "/system.slice/bot.service")
        .file("sys/fs/cgroup/system.slice/memory.max", "max\n")
        .file("sys/fs/cgroup/system.slice/memory.high", "max\n")
        .file("sys/fs/cgroup/system.slice/bot.service/memory.max", "268435456\n")
        .file("sys/fs/cgroup/system.slice/bot.service/memory.high", "209715200\n");
    let cgroup = fixture.detect();
    assert_eq!(cgroup.version(), CgroupVersion::V2);
    assert_eq!(cgroup.dir(), fixture.path("sys/fs/cgroup/system.slice/bot.service"));
    let limit = cgroup.limit();
    assert_eq!((limit.hard, limit.soft), (Some(256 * MIB), Some(200 * MIB)));
    assert_eq!(limit.effective(), Some(200 * MIB), "memory.high is the lower ceiling");
    let expected = format!(
        "memory limit 256 MiB (memory.high 200 MiB) from cgroup v2 {}",
        cgroup.dir().display()
    );
    assert_eq!(limit.to_string(), expected);
}

#[test]
fn hybrid_prefers_the_v1_memory_controller() {
    // `v1_host` also lists `0::/` and mounts an empty cgroup2 hierarchy at `unified`.
    let fixture = v1_host("hybrid-v1", "/bot")
        .file("sys/fs/cgroup/unified/cgroup.controllers", "")
        .file("sys/fs/cgroup/memory/bot/memory.limit_in_bytes", "1073741824\n");
    let cgroup = fixture.detect();
    assert_eq!(cgroup.version(), CgroupVersion::V1);
    assert_eq!(cgroup.limit().hard, Some(1024 * MIB));
}

#[test]
fn hybrid_with_memory_on_the_unified_hierarchy() {
    let fixture = Fixture::new("hybrid-v2")
        .file("proc/self/cgroup", "3:cpu,cpuacct:/bot\n1:name=systemd:/bot\n0::/bot\n")
        .file("proc/self/mountinfo", V1_MOUNTS)
        .file("sys/fs/cgroup/unified/cgroup.controllers", "memory\n")
        .file("sys/fs/cgroup/unified/bot/cgroup.controllers", "memory\n")
        .file("sys/fs/cgroup/unified/bot/memory.max", "104857600\n");
    let cgroup = fixture.detect();
    assert_eq!(cgroup.version(), CgroupVersion::V2);
    assert_eq!(cgroup.dir(), fixture.path("sys/fs/cgroup/unified/bot"));
    assert_eq!(cgroup.limit().hard, Some(100 * MIB));
}

#[test]
fn v2_without_the_memory_controller_is_not_a_memory_cgroup() {
    let fixture = v2_host("v2-no-memory", "/bot").file("sys/fs/cgroup/bot/cgroup.controllers", "cpu pids\n");
    assert_eq!(CgroupMemory::detect_in(&fixture.root), None);
}

#[test]
fn nested_cgroup_without_a_limit_reports_its_ancestors() {
    let fixture = v1_host("nested", "/a/b/c")
        .file("sys/fs/cgroup/memory/a/memory.limit_in_bytes", "1073741824\n")
        .file("sys/fs/cgroup/memory/a/b/memory.limit_in_bytes", V1_UNLIMITED)
        .file("sys/fs/cgroup/memory/a/b/c/memory.limit_in_bytes", V1_UNLIMITED);
    let cgroup = fixture.detect();
    let limit = cgroup.limit();
    assert_eq!(limit.hard, Some(1024 * MIB));
    assert_eq!(limit.limited_by, Some(fixture.path("sys/fs/cgroup/memory/a")));
    assert!(limit.to_string().ends_with(&format!(
        "(set on {})",
        fixture.path("sys/fs/cgroup/memory/a").display()
    )));
}

#[test]
fn parent_slice_limit_applies_to_the_service() {
    let fixture = v2_host("parent-limited", "/bots.slice/bot.service")
        .file("sys/fs/cgroup/bots.slice/memory.max", "314572800\n")
        .file("sys/fs/cgroup/bots.slice/memory.high", "max\n")
        .file("sys/fs/cgroup/bots.slice/bot.service/memory.max", "1073741824\n")
        .file("sys/fs/cgroup/bots.slice/bot.service/memory.high", "max\n");
    let limit = fixture.detect().limit();
    assert_eq!(limit.hard, Some(300 * MIB), "the slice's limit is the more restrictive");
    assert_eq!(limit.soft, None);
    assert_eq!(limit.limited_by, Some(fixture.path("sys/fs/cgroup/bots.slice")));
}

#[test]
fn sub_cgroup_gets_its_own_lower_limit_not_the_containers() {
    // A container with a cgroup namespace: its own cgroup is `/`, mounted at /sys/fs/cgroup.
    let fixture = v2_host("sub-cgroup", "/workers/bot")
        .file("sys/fs/cgroup/memory.max", "1073741824\n")
        .file("sys/fs/cgroup/workers/memory.max", "max\n")
        .file("sys/fs/cgroup/workers/bot/memory.max", "209715200\n");
    let limit = fixture.detect().limit();
    assert_eq!(limit.hard, Some(200 * MIB));
    assert_eq!(limit.limited_by, Some(fixture.path("sys/fs/cgroup/workers/bot")));
}

#[test]
fn container_without_a_cgroup_namespace_maps_the_mount_root() {
    // `docker --cgroupns=host` on v1: the process is in /docker/<id> of the host's
    // hierarchy, and the container sees exactly that subtree at /sys/fs/cgroup/memory.
    let fixture = Fixture::new("docker-v1")
        .file(
            "proc/self/cgroup",
            "4:memory:/docker/0123abcd\n1:cpu:/docker/0123abcd\n",
        )
        .file(
            "proc/self/mountinfo",
            "300 290 0:32 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:13 \
             - cgroup cgroup rw,memory\n",
        )
        .file("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n")
        .file("sys/fs/cgroup/memory/memory.stat", &v1_stat(0, 0, "268435456"));
    let cgroup = fixture.detect();
    assert_eq!(cgroup.dir(), fixture.path("sys/fs/cgroup/memory"));
    assert_eq!(cgroup.limit().hard, Some(256 * MIB));
}

#[test]
fn v1_hierarchical_limit_covers_ancestors_above_the_mount() {
    // A pod limit on the parent of the container's cgroup, which the container cannot see.
    let fixture = Fixture::new("v1-hierarchical")
        .file("proc/self/cgroup", "4:memory:/kubepods/pod1/ctr\n")
        .file(
            "proc/self/mountinfo",
            "300 290 0:32 /kubepods/pod1/ctr /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n",
        )
        .file("sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
        .file("sys/fs/cgroup/memory/memory.stat", &v1_stat(0, 0, "134217728"));
    let limit = fixture.detect().limit();
    assert_eq!(limit.hard, Some(128 * MIB));
    assert_eq!(limit.limited_by, None);
    assert!(limit.to_string().ends_with("(set above the mount point)"), "{limit}");
}

#[test]
fn unlimited_v1_has_no_limit() {
    let fixture = v1_host("unlimited", "/bot")
        .file("sys/fs/cgroup/memory/bot/memory.limit_in_bytes", V1_UNLIMITED)
        .file(
            "sys/fs/cgroup/memory/bot/memory.stat",
            &v1_stat(0, 0, V1_UNLIMITED.trim()),
        );
    let limit = fixture.detect().limit();
    assert_eq!((limit.hard, limit.soft, limit.effective()), (None, None, None));
    assert_eq!(limit.limited_by, None);
    assert!(
        limit.to_string().starts_with("no memory limit on cgroup v1 "),
        "{limit}"
    );
}

#[test]
fn max_everywhere_on_v2_has_no_limit() {
    let fixture = v2_host("max", "/user.slice/session.scope")
        .file("sys/fs/cgroup/user.slice/memory.max", "max\n")
        .file("sys/fs/cgroup/user.slice/memory.high", "max\n")
        .file("sys/fs/cgroup/user.slice/session.scope/memory.max", "max\n")
        .file("sys/fs/cgroup/user.slice/session.scope/memory.high", "max\n");
    let limit = fixture.detect().limit();
    assert_eq!(limit.effective(), None);
}

#[test]
fn no_cgroup_file_system_is_none() {
    let empty = Fixture::new("empty");
    assert_eq!(CgroupMemory::detect_in(&empty.root), None);
    let unmounted = Fixture::new("unmounted")
        .file("proc/self/cgroup", "4:memory:/bot\n0::/bot\n")
        .file("proc/self/mountinfo", "24 1 253:1 / / rw,relatime - ext4 /dev/vda rw\n");
    assert_eq!(CgroupMemory::detect_in(&unmounted.root), None);
}

#[test]
fn cgroup_outside_every_mounted_subtree_uses_the_mount_point() {
    let fixture = Fixture::new("outside")
        .file("proc/self/cgroup", "4:memory:/elsewhere\n")
        .file(
            "proc/self/mountinfo",
            "300 290 0:32 /docker/0123abcd /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n",
        )
        .file("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n");
    let cgroup = fixture.detect();
    assert_eq!(cgroup.dir(), fixture.path("sys/fs/cgroup/memory"));
    assert_eq!(cgroup.limit().hard, Some(256 * MIB));
}

#[test]
fn mount_points_are_unescaped() {
    let fixture = Fixture::new("escaped")
        .file("proc/self/cgroup", "0::/bot\n")
        .file(
            "proc/self/mountinfo",
            "35 24 0:30 / /mnt/cgroup\\040v2 rw,relatime shared:9 - cgroup2 cgroup2 rw\n",
        )
        .file("mnt/cgroup v2/bot/cgroup.controllers", "memory\n")
        .file("mnt/cgroup v2/bot/memory.max", "67108864\n");
    let cgroup = fixture.detect();
    assert_eq!(cgroup.dir(), fixture.path("mnt/cgroup v2/bot"));
    assert_eq!(cgroup.limit().hard, Some(64 * MIB));
}

#[test]
fn v1_working_set_is_usage_minus_total_inactive_file() {
    let fixture = v1_host("ws-v1", "/bot")
        .file("sys/fs/cgroup/memory/bot/memory.usage_in_bytes", "104857600\n")
        .file(
            "sys/fs/cgroup/memory/bot/memory.stat",
            &v1_stat(5 * MIB, 30 * MIB, V1_UNLIMITED.trim()),
        );
    let cgroup = fixture.detect();
    assert_eq!(cgroup.working_set(), Some(70 * MIB));
    let mut probe = WorkingSetProbe::for_cgroup(&cgroup).unwrap();
    assert!(probe.reads_cgroup());
    assert_eq!(probe.sample(), Some(70 * MIB));

    // The files stay open and are read again from the start on every sample.
    fs::write(
        fixture.path("sys/fs/cgroup/memory/bot/memory.usage_in_bytes"),
        "209715200\n",
    )
    .unwrap();
    assert_eq!(probe.sample(), Some(170 * MIB));
}

#[test]
fn v2_working_set_is_current_minus_inactive_file() {
    let stat = "anon 1000\nfile 2000\nactive_file 100\ninactive_file 62914560\nslab 5\n";
    let fixture = v2_host("ws-v2", "/bot")
        .file("sys/fs/cgroup/bot/memory.current", "167772160\n")
        .file("sys/fs/cgroup/bot/memory.stat", stat);
    let mut probe = WorkingSetProbe::for_cgroup(&fixture.detect()).unwrap();
    assert_eq!(probe.sample(), Some(100 * MIB));

    // A memory.stat far longer than the probe's first buffer still parses.
    let long = format!("{}inactive_file 0\n", "padding_counter 1234567890\n".repeat(500));
    fs::write(fixture.path("sys/fs/cgroup/bot/memory.stat"), long).unwrap();
    assert_eq!(probe.sample(), Some(160 * MIB));
}

#[test]
fn working_set_needs_the_usage_files() {
    // The root of a v2 hierarchy has neither memory.current nor memory.stat.
    let fixture = v2_host("ws-root", "/");
    let cgroup = fixture.detect();
    assert_eq!(cgroup.dir(), fixture.path("sys/fs/cgroup"));
    assert!(WorkingSetProbe::for_cgroup(&cgroup).is_err());
    assert_eq!(cgroup.working_set(), None);

    let no_inactive = v2_host("ws-no-inactive", "/bot")
        .file("sys/fs/cgroup/bot/memory.current", "1000\n")
        .file("sys/fs/cgroup/bot/memory.stat", "anon 1000\n");
    let error = WorkingSetProbe::for_cgroup(&no_inactive.detect()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
/// More inactive cache than usage is an inconsistent reading (two files read at different
/// moments): the usage is reported, never a negative or zero working set.
fn an_inconsistent_working_set_reads_as_the_usage() {
    let fixture = v2_host("ws-saturating", "/bot")
        .file("sys/fs/cgroup/bot/memory.current", "1000\n")
        .file("sys/fs/cgroup/bot/memory.stat", "inactive_file 5000\n");
    assert_eq!(fixture.detect().working_set(), Some(1000));
}
