//! The memory limit of this process's cgroup, where one is visible.
//!
//! Containers usually cap memory with a cgroup; exceeding it gets the process OOM-killed,
//! so it is the natural ceiling for `RssAdaptive`'s target.

/// cgroup v2 first, then v1. Inside a container, `/sys/fs/cgroup` is the container's own.
const LIMIT_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
];

/// cgroup v1 reports "no limit" as a huge number (`PAGE_COUNTER_MAX` × page size, about
/// 2^63); anything from 2^60 bytes up is treated as unlimited.
const UNLIMITED_FROM: u64 = 1 << 60;

/// The memory limit of this process's cgroup in bytes, or `None` when there is none
/// (`max`), it is not visible, or the platform has no cgroups.
pub fn cgroup_memory_limit() -> Option<u64> {
    LIMIT_FILES
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| parse_limit(&text))
}

/// Parses `memory.max` (v2) or `memory.limit_in_bytes` (v1).
pub(crate) fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|&limit| limit > 0 && limit < UNLIMITED_FROM)
}

#[cfg(test)]
mod tests {
    use super::parse_limit;

    #[test]
    fn parses_limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 unlimited");
        assert_eq!(parse_limit("0"), None);
        assert_eq!(parse_limit("garbage"), None);
        assert_eq!(parse_limit(""), None);
    }
}
