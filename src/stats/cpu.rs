//! CPU accounting: node compute (MHz, cores) and the tracker that turns cumulative CPU times into
//! Nomad's percentages and ticks.

use std::num::NonZeroUsize;

use super::CgroupReading;

/// MHz per core assumed when no topology (or no core speed) is known. Nomad's own fingerprint
/// falls back to guessing speeds too; 1 GHz keeps `total_ticks` in the right order of magnitude.
pub const DEFAULT_MHZ_PER_CORE: f64 = 1000.0;

/// The node's CPU compute as Nomad accounts it (docs/nomad-contract.md, *Base plugin and node
/// compute*).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compute {
    /// Total compute in MHz.
    pub total_mhz: f64,
    /// Number of logical cores.
    pub num_cores: u32,
}

impl Compute {
    /// Compute without a topology: `num_cores` from [`std::thread::available_parallelism`] (1 if
    /// unknown) and [`DEFAULT_MHZ_PER_CORE`] per core. Reads no `/proc/cpuinfo`.
    #[must_use]
    pub fn fallback() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let num_cores = u32::try_from(cores).unwrap_or(u32::MAX);
        Self {
            total_mhz: f64::from(num_cores) * DEFAULT_MHZ_PER_CORE,
            num_cores,
        }
    }
}

/// Speeds of one logical core from Nomad's `ClientTopologyCore`, in MHz (0 = unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreSpeed {
    /// `base_speed`.
    pub base_mhz: u64,
    /// `max_speed`.
    pub max_mhz: u64,
    /// `guess_speed`.
    pub guess_mhz: u64,
}

impl From<(u64, u64, u64)> for CoreSpeed {
    fn from((base_mhz, max_mhz, guess_mhz): (u64, u64, u64)) -> Self {
        Self {
            base_mhz,
            max_mhz,
            guess_mhz,
        }
    }
}

impl CoreSpeed {
    /// The first non-zero of base, max and guess speed.
    fn effective_mhz(self) -> u64 {
        [self.base_mhz, self.max_mhz, self.guess_mhz]
            .into_iter()
            .find(|&mhz| mhz > 0)
            .unwrap_or(0)
    }
}

/// Mirrors Nomad's `Topology.Compute()`: total = `override_total_mhz` if > 0, else the sum over all
/// cores (disabled ones included) of each core's first non-zero base/max/guess speed; `num_cores` =
/// number of cores. Without cores the core count comes from [`Compute::fallback`]; a total that
/// still comes out 0 is replaced by `num_cores` × [`DEFAULT_MHZ_PER_CORE`].
#[must_use]
pub fn compute_from_cores(override_total_mhz: u64, cores: &[CoreSpeed]) -> Compute {
    let fallback = Compute::fallback();
    let num_cores = if cores.is_empty() {
        fallback.num_cores
    } else {
        u32::try_from(cores.len()).unwrap_or(u32::MAX)
    };
    let total = if override_total_mhz > 0 {
        override_total_mhz
    } else {
        cores
            .iter()
            .map(|core| core.effective_mhz())
            .fold(0u64, u64::saturating_add)
    };
    let total_mhz = if total > 0 {
        to_f64(total)
    } else {
        f64::from(num_cores) * DEFAULT_MHZ_PER_CORE
    };
    Compute {
        total_mhz,
        num_cores,
    }
}

/// CPU figures for one `TaskStats` sample. Percentages count one core as 100.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuFigures {
    /// Total CPU use.
    pub percent: f64,
    /// User-mode CPU use.
    pub user_percent: f64,
    /// Kernel-mode CPU use.
    pub system_percent: f64,
    /// MHz consumed: `percent / 100 × total_compute / num_cores`.
    pub total_ticks: f64,
}

/// A previous sample of cumulative CPU times (all in nanoseconds).
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: u64,
    total: u64,
    user: Option<u64>,
    system: Option<u64>,
}

/// Turns successive [`CgroupReading`]s of one task into [`CpuFigures`] from the deltas between
/// samples (one tracker per task).
#[derive(Clone, Debug)]
pub struct CpuTracker {
    mhz_per_core: f64,
    previous: Option<Sample>,
    last: CpuFigures,
}

impl CpuTracker {
    /// A tracker for a node with `total_compute_mhz` spread over `num_cores` (0 is treated as 1).
    #[must_use]
    pub fn new(total_compute_mhz: f64, num_cores: u32) -> Self {
        Self {
            mhz_per_core: total_compute_mhz / f64::from(num_cores.max(1)),
            previous: None,
            last: CpuFigures::default(),
        }
    }

    /// Feeds the reading taken at `now_ns` (any monotonic clock, in nanoseconds) and returns the
    /// figures since the previous one. The first sample, a reading without `cpu_total_ns` and a
    /// counter that went backwards (cgroup recreated) give zeros; a sample at the same instant as the
    /// previous one repeats the last figures. A reading without `cpu_total_ns` keeps the previous
    /// sample, so the next good one averages over the whole gap.
    pub fn update(&mut self, now_ns: u64, reading: &CgroupReading) -> CpuFigures {
        let Some(total_ns) = reading.cpu_total_ns else {
            return CpuFigures::default();
        };
        let current = Sample {
            at: now_ns,
            total: total_ns,
            user: reading.cpu_user_ns,
            system: reading.cpu_system_ns,
        };
        let Some(previous) = self.previous else {
            self.previous = Some(current);
            self.last = CpuFigures::default();
            return self.last;
        };
        let Some(wall_ns) = now_ns.checked_sub(previous.at) else {
            // The caller's clock went backwards: start over.
            self.previous = Some(current);
            self.last = CpuFigures::default();
            return self.last;
        };
        if wall_ns == 0 {
            return self.last;
        }
        let Some(cpu_ns) = total_ns.checked_sub(previous.total) else {
            self.previous = Some(current);
            self.last = CpuFigures::default();
            return self.last;
        };
        let wall = to_f64(wall_ns);
        let percent_of = |delta: u64| to_f64(delta) / wall * 100.0;
        let split = |now: Option<u64>, before: Option<u64>| {
            now.zip(before)
                .and_then(|(now, before)| now.checked_sub(before))
                .map_or(0.0, percent_of)
        };
        let percent = percent_of(cpu_ns);
        self.last = CpuFigures {
            percent,
            user_percent: split(current.user, previous.user),
            system_percent: split(current.system, previous.system),
            total_ticks: percent / 100.0 * self.mhz_per_core,
        };
        self.previous = Some(current);
        self.last
    }
}

/// u64 → f64; exact below 2^53, which covers ~104 days of CPU nanoseconds per delta and any MHz.
#[allow(clippy::cast_precision_loss)]
fn to_f64(value: u64) -> f64 {
    value as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn cpu(total: u64, user: u64, system: u64) -> CgroupReading {
        CgroupReading {
            cpu_total_ns: Some(total),
            cpu_user_ns: Some(user),
            cpu_system_ns: Some(system),
            ..CgroupReading::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn first_sample_is_zero() {
        let mut t = CpuTracker::new(4000.0, 4);
        assert_eq!(
            t.update(SECOND, &cpu(5 * SECOND, 0, 0)),
            CpuFigures::default()
        );
    }

    #[test]
    fn one_core_second_over_two_wall_seconds_is_fifty_percent() {
        let mut t = CpuTracker::new(4000.0, 4);
        t.update(10 * SECOND, &cpu(100 * SECOND, 60 * SECOND, 40 * SECOND));
        let f = t.update(
            12 * SECOND,
            &cpu(
                101 * SECOND,
                60 * SECOND + 750_000_000,
                40 * SECOND + 250_000_000,
            ),
        );
        assert!(close(f.percent, 50.0), "{f:?}");
        assert!(close(f.user_percent, 37.5), "{f:?}");
        assert!(close(f.system_percent, 12.5), "{f:?}");
        // 50 % of one 1000 MHz core.
        assert!(close(f.total_ticks, 500.0), "{f:?}");
    }

    #[test]
    fn two_full_cores_count_as_two_hundred_percent() {
        let mut t = CpuTracker::new(4000.0, 4);
        t.update(0, &cpu(0, 0, 0));
        let f = t.update(SECOND, &cpu(2 * SECOND, 2 * SECOND, 0));
        assert!(close(f.percent, 200.0));
        assert!(close(f.total_ticks, 2000.0));
    }

    #[test]
    fn total_ticks_follow_total_compute_and_core_count() {
        let mut t = CpuTracker::new(4000.0, 4);
        t.update(0, &cpu(0, 0, 0));
        let f = t.update(SECOND, &cpu(SECOND / 2, 0, 0));
        assert!(close(f.total_ticks, 500.0), "{f:?}");
    }

    #[test]
    fn counter_reset_restarts_from_zero() {
        let mut t = CpuTracker::new(2000.0, 2);
        t.update(0, &cpu(10 * SECOND, 0, 0));
        assert_eq!(t.update(SECOND, &cpu(SECOND, 0, 0)), CpuFigures::default());
        let f = t.update(2 * SECOND, &cpu(SECOND + SECOND / 4, 0, 0));
        assert!(close(f.percent, 25.0), "{f:?}");
    }

    #[test]
    fn same_instant_repeats_last_figures() {
        let mut t = CpuTracker::new(1000.0, 1);
        t.update(0, &cpu(0, 0, 0));
        let f = t.update(SECOND, &cpu(SECOND, 0, 0));
        assert_eq!(t.update(SECOND, &cpu(SECOND, 0, 0)), f);
    }

    #[test]
    fn missing_total_keeps_previous_sample() {
        let mut t = CpuTracker::new(1000.0, 1);
        t.update(0, &cpu(0, 0, 0));
        assert_eq!(
            t.update(SECOND, &CgroupReading::default()),
            CpuFigures::default()
        );
        let f = t.update(2 * SECOND, &cpu(SECOND, 0, 0));
        assert!(close(f.percent, 50.0), "{f:?}");
    }

    #[test]
    fn missing_split_gives_zero_user_and_system() {
        let mut t = CpuTracker::new(1000.0, 1);
        let only_total = |ns| CgroupReading {
            cpu_total_ns: Some(ns),
            ..CgroupReading::default()
        };
        t.update(0, &only_total(0));
        let f = t.update(SECOND, &only_total(SECOND));
        assert!(close(f.percent, 100.0));
        assert!(close(f.user_percent, 0.0) && close(f.system_percent, 0.0));
    }

    #[test]
    fn zero_cores_do_not_divide_by_zero() {
        let mut t = CpuTracker::new(1000.0, 0);
        t.update(0, &cpu(0, 0, 0));
        let f = t.update(SECOND, &cpu(SECOND, 0, 0));
        assert!(close(f.total_ticks, 1000.0));
    }

    #[test]
    fn compute_uses_override_first() {
        let cores = [CoreSpeed::from((2000, 3000, 0)); 4];
        let c = compute_from_cores(5000, &cores);
        assert!(close(c.total_mhz, 5000.0));
        assert_eq!(c.num_cores, 4);
    }

    #[test]
    fn compute_sums_first_nonzero_speed_per_core() {
        let cores = [
            CoreSpeed::from((2000, 3000, 1000)),
            CoreSpeed::from((0, 3000, 1000)),
            CoreSpeed::from((0, 0, 1000)),
            CoreSpeed::from((0, 0, 0)),
        ];
        let c = compute_from_cores(0, &cores);
        assert!(close(c.total_mhz, 6000.0));
        assert_eq!(c.num_cores, 4);
    }

    #[test]
    fn compute_without_speeds_assumes_one_ghz_per_core() {
        let c = compute_from_cores(0, &[CoreSpeed::default(); 3]);
        assert!(close(c.total_mhz, 3000.0));
        assert_eq!(c.num_cores, 3);
    }

    #[test]
    fn compute_without_topology_falls_back_to_available_parallelism() {
        let c = compute_from_cores(0, &[]);
        assert_eq!(c, Compute::fallback());
        assert!(c.num_cores >= 1);
        assert!(close(c.total_mhz, f64::from(c.num_cores) * 1000.0));

        let c = compute_from_cores(8000, &[]);
        assert!(close(c.total_mhz, 8000.0));
        assert_eq!(c.num_cores, Compute::fallback().num_cores);
    }
}
