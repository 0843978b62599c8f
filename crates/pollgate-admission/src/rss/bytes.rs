//! Byte counts for people: the sizes in log lines and `Display` impls ("435.2 MiB").

use std::fmt;

/// Formats a byte count with a binary unit: `512 B`, `64 MiB`, `435.2 MiB`, `23.4 GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bytes(pub(crate) u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut unit = 0;
        while unit + 1 < UNITS.len() && self.0 >= 1 << (10 * (unit + 1)) {
            unit += 1;
        }
        let scale = 1u64 << (10 * unit);
        if self.0.is_multiple_of(scale) {
            write!(f, "{} {}", self.0 / scale, UNITS[unit])
        } else {
            // Sizes stay far below 2^53, where f64 is exact enough.
            write!(f, "{:.1} {}", self.0 as f64 / scale as f64, UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn picks_the_largest_unit_that_fits() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(64 << 20).to_string(), "64 MiB");
        assert_eq!(Bytes((64 << 20) / 10 * 8).to_string(), "51.2 MiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3 GiB");
        assert_eq!(Bytes(u64::MAX).to_string(), "16384.0 PiB");
    }
}
