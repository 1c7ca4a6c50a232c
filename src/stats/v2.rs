//! cgroup v2 (unified) reader: one directory per cgroup under the root.

use std::collections::HashMap;
use std::path::Path;

use super::{CgroupReading, read_flat_keyed, read_u64};

/// Reads the cgroup at `root/rel`; `None` when that directory does not exist.
pub(super) fn read(root: &Path, rel: &Path) -> Option<CgroupReading> {
    let dir = root.join(rel);
    if !dir.is_dir() {
        return None;
    }
    let mut reading = CgroupReading::default();
    if let Some(stat) = read_flat_keyed(&dir.join("cpu.stat")) {
        apply_cpu_stat(&mut reading, &stat);
    }
    reading.mem_usage = read_u64(&dir.join("memory.current"));
    if let Some(stat) = read_flat_keyed(&dir.join("memory.stat")) {
        apply_memory_stat(&mut reading, &stat);
    }
    reading.mem_swap = read_u64(&dir.join("memory.swap.current"));
    reading.mem_max_usage = read_u64(&dir.join("memory.peak"));
    reading.oom_kills = read_oom_kills(&dir);
    Some(reading)
}

/// `oom_kill` from `memory.events` in the cgroup directory `dir`.
pub(super) fn read_oom_kills(dir: &Path) -> Option<u64> {
    read_flat_keyed(&dir.join("memory.events"))?
        .get("oom_kill")
        .copied()
}

/// Fills the CPU fields from a parsed v2 `cpu.stat` (microseconds → nanoseconds). The throttling
/// keys exist only when the cpu controller is enabled for the cgroup.
pub(super) fn apply_cpu_stat(reading: &mut CgroupReading, stat: &HashMap<String, u64>) {
    let usec = |key: &str| stat.get(key).map(|v| v.saturating_mul(1000));
    reading.cpu_total_ns = usec("usage_usec");
    reading.cpu_user_ns = usec("user_usec");
    reading.cpu_system_ns = usec("system_usec");
    reading.throttled_periods = stat.get("nr_throttled").copied();
    reading.throttled_time_ns = usec("throttled_usec");
}

/// Fills rss (`anon`), cache (`file`) and kernel memory from a parsed v2 `memory.stat`. Kernels
/// before 5.18 lack the `kernel` key; `kernel_stack + slab` approximates it there.
fn apply_memory_stat(reading: &mut CgroupReading, stat: &HashMap<String, u64>) {
    reading.mem_rss = stat.get("anon").copied();
    reading.mem_cache = stat.get("file").copied();
    reading.mem_kernel_usage = stat.get("kernel").copied().or_else(|| {
        let stack = stat.get("kernel_stack")?;
        let slab = stat.get("slab")?;
        Some(stack.saturating_add(*slab))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn cpu_stat_converts_microseconds() {
        let mut r = CgroupReading::default();
        apply_cpu_stat(
            &mut r,
            &map(&[
                ("usage_usec", 3),
                ("user_usec", 2),
                ("system_usec", 1),
                ("nr_throttled", 5),
                ("throttled_usec", 7),
            ]),
        );
        assert_eq!(r.cpu_total_ns, Some(3000));
        assert_eq!(r.cpu_user_ns, Some(2000));
        assert_eq!(r.cpu_system_ns, Some(1000));
        assert_eq!(r.throttled_periods, Some(5));
        assert_eq!(r.throttled_time_ns, Some(7000));
    }

    #[test]
    fn cpu_stat_without_cpu_controller_has_no_throttling() {
        let mut r = CgroupReading::default();
        apply_cpu_stat(&mut r, &map(&[("usage_usec", 1), ("user_usec", 1)]));
        assert_eq!(r.cpu_total_ns, Some(1000));
        assert_eq!(r.cpu_system_ns, None);
        assert_eq!(r.throttled_periods, None);
        assert_eq!(r.throttled_time_ns, None);
    }

    #[test]
    fn memory_stat_prefers_kernel_key_then_sums_stack_and_slab() {
        let mut r = CgroupReading::default();
        apply_memory_stat(
            &mut r,
            &map(&[
                ("anon", 10),
                ("file", 20),
                ("kernel", 30),
                ("kernel_stack", 1),
                ("slab", 2),
            ]),
        );
        assert_eq!((r.mem_rss, r.mem_cache), (Some(10), Some(20)));
        assert_eq!(r.mem_kernel_usage, Some(30));

        let mut r = CgroupReading::default();
        apply_memory_stat(&mut r, &map(&[("kernel_stack", 1), ("slab", 2)]));
        assert_eq!(r.mem_kernel_usage, Some(3));
        assert_eq!(r.mem_rss, None);

        let mut r = CgroupReading::default();
        apply_memory_stat(&mut r, &map(&[("kernel_stack", 1)]));
        assert_eq!(r.mem_kernel_usage, None);
    }
}
