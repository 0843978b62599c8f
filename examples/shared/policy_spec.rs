//! `--policy SPEC`: the admission policies the demos compare, by name (`fixed:512`,
//! `bytes:128MiB`, `auto`, ...). Shared by the flood demo and the teloxide bot, so a
//! script passes the same spec to both.

use std::fmt;
use std::str::FromStr;

use pollgate::{AdmissionPolicy, Load};

use crate::size::Size;

/// The baseline that reproduces the problem: fetch 100 per call as fast as the server
/// answers and start every update at once.
#[derive(Debug)]
pub(crate) struct Unbounded;

impl AdmissionPolicy for Unbounded {
    fn fetch_limit(&self, _load: &Load) -> usize {
        usize::MAX
    }

    fn admits(&self, _load: &Load, _cost: u64) -> bool {
        true
    }
}

/// One `--policy` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PolicySpec {
    /// Fetch 100 per call as fast as possible and spawn a task per update (aiogram's
    /// default behaviour): the problem.
    Unbounded,
    /// At most C at once.
    Fixed(usize),
    /// Batches of N, each drained before the next fetch.
    Barrier(usize),
    /// Declared bytes in flight at most B.
    Bytes(u64),
    /// Resident memory target B (baseline included).
    Rss(u64),
    /// `RssAdaptive::auto()`: the target from the cgroup limit, else machine memory.
    Auto,
    /// The token bucket of `examples/custom_policy.rs` with a byte budget.
    Custom {
        /// The byte budget.
        budget: u64,
        /// Admissions per second.
        rate: f64,
    },
}

const EXPECTED: &str = "expected unbounded, fixed:C, barrier:N, bytes:SIZE, rss:SIZE, auto or custom[:SIZE[:RATE]] \
                        (SIZE like 128MiB)";

impl FromStr for PolicySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<PolicySpec, String> {
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let arg = parts.next();
        let extra = parts.next();
        let count = |v: Option<&str>| -> Result<usize, String> {
            let v = v.ok_or_else(|| format!("'{s}' needs a value; {EXPECTED}"))?;
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("'{v}' in '{s}' is not a positive count")),
            }
        };
        let size = |v: Option<&str>| -> Result<u64, String> {
            let v = v.ok_or_else(|| format!("'{s}' needs a size; {EXPECTED}"))?;
            v.parse::<Size>().map(|b| b.0).map_err(|e| format!("'{s}': {e}"))
        };
        let spec = match name {
            "unbounded" if arg.is_none() => PolicySpec::Unbounded,
            "fixed" => PolicySpec::Fixed(count(arg)?),
            "barrier" => PolicySpec::Barrier(count(arg)?),
            "bytes" => PolicySpec::Bytes(size(arg)?),
            "rss" => PolicySpec::Rss(size(arg)?),
            "auto" if arg.is_none() => PolicySpec::Auto,
            "custom" => {
                let budget = if arg.is_some() { size(arg)? } else { 128 << 20 };
                let rate = match extra {
                    Some(r) => r
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| format!("'{r}' in '{s}' is not a positive rate"))?,
                    None => 5000.0,
                };
                return Ok(PolicySpec::Custom { budget, rate });
            }
            _ => return Err(format!("unknown policy '{s}'; {EXPECTED}")),
        };
        if extra.is_some() {
            return Err(format!("too many ':' in '{s}'; {EXPECTED}"));
        }
        Ok(spec)
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Unbounded => f.write_str("unbounded"),
            PolicySpec::Fixed(c) => write!(f, "fixed:{c}"),
            PolicySpec::Barrier(n) => write!(f, "barrier:{n}"),
            PolicySpec::Bytes(b) => write!(f, "bytes:{}", Size(*b)),
            PolicySpec::Rss(b) => write!(f, "rss:{}", Size(*b)),
            PolicySpec::Auto => f.write_str("auto"),
            PolicySpec::Custom { budget, rate } => write!(f, "custom:{}:{rate}", Size(*budget)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_sizes_round_trip() {
        for s in [
            "unbounded",
            "fixed:512",
            "barrier:64",
            "bytes:128MiB",
            "rss:160MiB",
            "auto",
            "custom:64MiB:300",
        ] {
            assert_eq!(s.parse::<PolicySpec>().unwrap().to_string(), s);
        }
        assert!("fixed:0".parse::<PolicySpec>().is_err());
        assert!("bytes:12XB".parse::<PolicySpec>().is_err());
        assert!("lifo:3".parse::<PolicySpec>().is_err());
    }
}
