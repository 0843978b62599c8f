//! Resident memory of this process, from the kernel (`/proc/self/status`).

/// `VmRSS` (now) and `VmHWM` (the high-water mark), in bytes; zero where unavailable.
pub(crate) fn rss_and_peak() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
