//! [`RssAdaptive::auto`]: a target without a number, from the cgroup limit or the machine.

use std::fmt;

use sysinfo::{MemoryRefreshKind, System};

use super::bytes::Bytes;
use super::cgroup::{CgroupMemory, MemoryLimit, WorkingSetProbe};
use super::{RssAdaptive, RssAdaptiveBuilder};

/// The fraction of the cgroup's ceiling that [`RssAdaptive::auto`] targets.
///
/// The controller works below its target: it starts shrinking the budget at the high
/// mark (0.95 of the target by default) and shrinks fast at the target itself, so with
/// 0.90 the budget starts giving way at about 86% of the limit and cuts hard at 90%. The
/// rest absorbs what moves faster than one sample and one settle interval — a burst of
/// handler allocations, page cache the kernel has not reclaimed yet — before the kernel's
/// OOM killer sees it. Measured in a 256 MiB cgroup v1 with glibc's default arenas
/// (`scripts/cgroup-oom.sh`, 20 000 updates, handlers holding 256 KiB for 200 ms): peak
/// usage 216, 227–230 and 234–243 MiB at 0.85, 0.90 and 0.93, drains at 0.65, 0.63–0.68
/// and 0.66–0.71 of the limit's ideal, no OOM kill; a fixed budget of 215 MiB was
/// OOM-killed. 0.90 keeps 26 MiB (10%) between the worst peak seen and the limit.
pub const AUTO_LIMIT_FRACTION: f64 = 0.90;

/// The fraction of the machine's memory that [`RssAdaptive::auto`] targets when no cgroup
/// limits the process: the rest is left to the operating system and other processes, which
/// share the machine with nothing to stop them.
pub const AUTO_MACHINE_FRACTION: f64 = 0.5;

/// [`RssAdaptive::auto`]'s target when neither a cgroup limit nor the machine's memory is
/// known (platforms sysinfo does not support): 1 GiB.
pub const AUTO_FALLBACK_TARGET: u64 = 1 << 30;

/// What [`RssAdaptive::auto`] detected and chose.
///
/// `Display` writes the start-up log line, for example
/// `memory limit 512 MiB from cgroup v1 /sys/fs/cgroup/memory/bot, target 460.8 MiB (90%), probe: cgroup working set`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct AutoTarget {
    /// The target in bytes.
    pub target: u64,
    /// Where the target comes from.
    pub source: TargetSource,
    /// What the process's memory cgroup has, limited or not; `None` when no memory cgroup
    /// is visible.
    pub cgroup: Option<MemoryLimit>,
    /// The machine's total memory in bytes, when known.
    pub machine: Option<u64>,
    /// Whether the probe reads the cgroup's working set ([`WorkingSetProbe`]); `false`:
    /// the builder's default RSS probe. A later [`RssAdaptiveBuilder::probe`] replaces
    /// whichever it is.
    pub reads_working_set: bool,
}

/// Where [`AutoTarget::target`] comes from.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSource {
    /// [`AUTO_LIMIT_FRACTION`] of the cgroup's effective ceiling
    /// ([`MemoryLimit::effective`]).
    Cgroup,
    /// [`AUTO_MACHINE_FRACTION`] of the machine's memory: no cgroup limit, or one at or
    /// above the machine's memory (the machine runs out first).
    Machine,
    /// [`AUTO_FALLBACK_TARGET`]: neither is known.
    Fallback,
}

impl AutoTarget {
    /// Plans the target from what was detected; the probe is decided by the caller.
    pub(crate) fn plan(cgroup: Option<MemoryLimit>, machine: Option<u64>) -> Self {
        let ceiling = cgroup.as_ref().and_then(MemoryLimit::effective);
        let (source, target) = match (ceiling, machine) {
            (Some(ceiling), None) => (TargetSource::Cgroup, fraction(ceiling, AUTO_LIMIT_FRACTION)),
            (Some(ceiling), Some(machine)) if ceiling < machine => {
                (TargetSource::Cgroup, fraction(ceiling, AUTO_LIMIT_FRACTION))
            }
            (_, Some(machine)) => (TargetSource::Machine, fraction(machine, AUTO_MACHINE_FRACTION)),
            (None, None) => (TargetSource::Fallback, AUTO_FALLBACK_TARGET),
        };
        Self {
            target,
            source,
            cgroup,
            machine,
            reads_working_set: false,
        }
    }
}

fn fraction(bytes: u64, fraction: f64) -> u64 {
    // Sizes stay far below 2^53, where f64 is exact enough; `as` saturates.
    ((bytes as f64 * fraction).round() as u64).max(1)
}

impl fmt::Display for AutoTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = |fraction: f64| (fraction * 100.0).round();
        match (self.source, &self.cgroup, self.machine) {
            (TargetSource::Cgroup, Some(cgroup), _) => write!(
                f,
                "{cgroup}, target {} ({}%)",
                Bytes(self.target),
                percent(AUTO_LIMIT_FRACTION)
            )?,
            (TargetSource::Machine, cgroup, Some(machine)) => {
                match cgroup
                    .as_ref()
                    .and_then(|cgroup| cgroup.effective().map(|bytes| (cgroup, bytes)))
                {
                    Some((cgroup, bytes)) => write!(
                        f,
                        "cgroup {} limit {} at {} is not below the machine's memory {}",
                        cgroup.version,
                        Bytes(bytes),
                        cgroup.cgroup.display(),
                        Bytes(machine)
                    )?,
                    None => write!(f, "no cgroup memory limit, machine memory {}", Bytes(machine))?,
                }
                write!(
                    f,
                    ", target {} ({}%)",
                    Bytes(self.target),
                    percent(AUTO_MACHINE_FRACTION)
                )?;
            }
            _ => write!(
                f,
                "no cgroup memory limit, machine memory unknown, target {} (fallback)",
                Bytes(self.target)
            )?,
        }
        let probe = if self.reads_working_set {
            "cgroup working set"
        } else {
            "RSS"
        };
        write!(f, ", probe: {probe}")
    }
}

impl RssAdaptive {
    /// A builder that needs no number: the target is [`AUTO_LIMIT_FRACTION`] (0.90) of this
    /// process's cgroup memory ceiling, read by a [`WorkingSetProbe`]; without a cgroup
    /// limit, [`AUTO_MACHINE_FRACTION`] (0.5) of the machine's memory, read as RSS.
    ///
    /// The ceiling is the cgroup's hard limit, or `memory.high` where that is lower (see
    /// [`CgroupMemory::limit`]). A cgroup limit at or above the machine's memory counts as
    /// none: the machine runs out first. Where neither is known, the target is
    /// [`AUTO_FALLBACK_TARGET`] and a warning is logged.
    ///
    /// What was detected is on [`RssAdaptiveBuilder::auto_target`] and, once built,
    /// [`RssAdaptive::auto_target`]; its `Display` is the line to log at start. Every
    /// builder method still applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_admission::{Gate, RssAdaptive};
    ///
    /// let builder = RssAdaptive::auto().expected_cost(256 << 10);
    /// // "memory limit 512 MiB from cgroup v2 /sys/fs/cgroup/…, target 460.8 MiB (90%), probe: cgroup working set"
    /// let plan = builder.auto_target().unwrap().clone();
    /// println!("{plan}");
    /// let gate = Gate::new(builder.build_manual());
    /// assert_eq!(gate.stats().memory_target, Some(plan.target));
    /// ```
    pub fn auto() -> RssAdaptiveBuilder {
        let cgroup = CgroupMemory::detect();
        let mut plan = AutoTarget::plan(cgroup.as_ref().map(CgroupMemory::limit), machine_memory());
        let mut builder = Self::builder(plan.target);
        if plan.source == TargetSource::Cgroup
            && let Some(cgroup) = &cgroup
        {
            // The limit is enforced against the usage of the cgroup that set it, which
            // counts its other children too (sibling services in a slice, a pod's
            // sidecars): read that one, not only this process's own.
            let limiting = cgroup.limiting();
            match WorkingSetProbe::for_cgroup(&limiting) {
                Ok(probe) => {
                    builder = builder.probe(probe);
                    plan.reads_working_set = true;
                }
                Err(error) => tracing::warn!(
                    dir = %cgroup.dir().display(),
                    %error,
                    "cgroup working set unreadable; RssAdaptive::auto reads RSS"
                ),
            }
        }
        if plan.source == TargetSource::Fallback {
            tracing::warn!(
                target = plan.target,
                "no cgroup memory limit and the machine's memory is unknown; RssAdaptive::auto uses a fallback target"
            );
        }
        tracing::info!(target: "pollgate", "auto admission policy: {plan}");
        builder.auto = Some(plan);
        builder
    }
}

/// The machine's total memory, from sysinfo (`/proc/meminfo` on Linux).
fn machine_memory() -> Option<u64> {
    let mut system = System::new();
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    Some(system.total_memory()).filter(|&total| total > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rss::cgroup::CgroupVersion;
    use std::path::PathBuf;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn cgroup(hard: Option<u64>, soft: Option<u64>) -> MemoryLimit {
        MemoryLimit {
            hard,
            soft,
            version: CgroupVersion::V1,
            cgroup: PathBuf::from("/sys/fs/cgroup/memory/bot"),
            limited_by: hard.map(|_| PathBuf::from("/sys/fs/cgroup/memory/bot")),
        }
    }

    #[test]
    fn a_cgroup_limit_sets_the_target() {
        let plan = AutoTarget::plan(Some(cgroup(Some(1000 * MIB), None)), Some(24 * GIB));
        assert_eq!(plan.source, TargetSource::Cgroup);
        assert_eq!(plan.target, 900 * MIB);
    }

    #[test]
    fn memory_high_below_the_hard_limit_is_the_ceiling() {
        let plan = AutoTarget::plan(Some(cgroup(Some(1000 * MIB), Some(500 * MIB))), Some(24 * GIB));
        assert_eq!(plan.source, TargetSource::Cgroup);
        assert_eq!(plan.target, 450 * MIB);
        let only_high = AutoTarget::plan(Some(cgroup(None, Some(500 * MIB))), Some(24 * GIB));
        assert_eq!(only_high.target, 450 * MIB);
    }

    #[test]
    fn without_a_cgroup_limit_half_the_machine() {
        for detected in [None, Some(cgroup(None, None))] {
            let plan = AutoTarget::plan(detected, Some(24 * GIB));
            assert_eq!(plan.source, TargetSource::Machine);
            assert_eq!(plan.target, 12 * GIB);
        }
    }

    #[test]
    fn a_cgroup_limit_above_the_machine_counts_as_none() {
        let plan = AutoTarget::plan(Some(cgroup(Some(64 * GIB), None)), Some(24 * GIB));
        assert_eq!(plan.source, TargetSource::Machine);
        assert_eq!(plan.target, 12 * GIB);
        assert!(
            plan.to_string().contains("is not below the machine's memory 24 GiB"),
            "{plan}"
        );
    }

    #[test]
    fn nothing_known_falls_back() {
        let plan = AutoTarget::plan(None, None);
        assert_eq!(plan.source, TargetSource::Fallback);
        assert_eq!(plan.target, AUTO_FALLBACK_TARGET);
        let with_cgroup = AutoTarget::plan(Some(cgroup(Some(512 * MIB), None)), None);
        assert_eq!(
            with_cgroup.source,
            TargetSource::Cgroup,
            "the machine's size is not needed"
        );
    }

    #[test]
    fn displays_one_log_line() {
        let mut plan = AutoTarget::plan(Some(cgroup(Some(512 * MIB), None)), Some(24 * GIB));
        plan.reads_working_set = true;
        assert_eq!(
            plan.to_string(),
            "memory limit 512 MiB from cgroup v1 /sys/fs/cgroup/memory/bot, target 460.8 MiB (90%), \
             probe: cgroup working set"
        );
        let machine = AutoTarget::plan(None, Some(24 * GIB));
        assert_eq!(
            machine.to_string(),
            "no cgroup memory limit, machine memory 24 GiB, target 12 GiB (50%), probe: RSS"
        );
        assert_eq!(
            AutoTarget::plan(None, None).to_string(),
            "no cgroup memory limit, machine memory unknown, target 1 GiB (fallback), probe: RSS"
        );
    }

    #[test]
    fn auto_builds_on_this_machine() {
        let builder = RssAdaptive::auto();
        let plan = builder.auto_target().expect("auto() records what it detected").clone();
        let policy = builder.build_manual();
        assert_eq!(policy.target(), plan.target);
        assert_eq!(policy.auto_target(), Some(&plan));
        println!("{plan}");
    }
}
