//! cgroup v1 and hybrid reader: one hierarchy per controller (or per combination of controllers).
//!
//! A controller's hierarchy is found by name under the root: `memory`, or a combined mount such as
//! `cpu,cpuacct` (usually with `cpu` and `cpuacct` symlinks pointing at it). A directory counts as a
//! mounted hierarchy only if it holds `cgroup.procs`: some systems leave empty placeholder
//! directories such as `cpu,cpuacct` next to separate `cpu` and `cpuacct` mounts.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{CgroupReading, read_flat_keyed, read_u64, v2};

/// Nanoseconds per `USER_HZ` tick in `cpuacct.stat`. `USER_HZ` is 100 on every Linux architecture
/// Nomad supports, independent of the kernel's `CONFIG_HZ`.
pub(super) const NS_PER_USER_HZ_TICK: u64 = 10_000_000;

/// Whether `path` looks like a mounted cgroup hierarchy (follows symlinks).
pub(super) fn is_hierarchy(path: &Path) -> bool {
    path.join("cgroup.procs").is_file()
}

/// The mounted hierarchy that carries `controller`: `root/<controller>` if it is one (a symlink to a
/// combined mount qualifies), else the first directory, by name, whose comma-separated name lists
/// the controller.
pub(super) fn controller_dir(root: &Path, controller: &str) -> Option<PathBuf> {
    let direct = root.join(controller);
    if is_hierarchy(&direct) {
        return Some(direct);
    }
    let mut combined: Vec<PathBuf> = fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.split(',').any(|c| c == controller))
        })
        .map(|entry| entry.path())
        .filter(|path| is_hierarchy(path))
        .collect();
    combined.sort();
    combined.into_iter().next()
}

/// The cgroup `rel` inside `controller`'s hierarchy, if both exist.
fn cgroup_dir(root: &Path, controller: &str, rel: &Path) -> Option<PathBuf> {
    let dir = controller_dir(root, controller)?.join(rel);
    dir.is_dir().then_some(dir)
}

/// Reads the cgroup `rel` from the cpuacct, cpu and memory hierarchies (and, when `hybrid`, CPU
/// time from the unified tree if cpuacct has no such cgroup). `None` when the cgroup exists in none
/// of them.
pub(super) fn read(root: &Path, rel: &Path, hybrid: bool) -> Option<CgroupReading> {
    let cpuacct = cgroup_dir(root, "cpuacct", rel);
    let cpu = cgroup_dir(root, "cpu", rel);
    let memory = cgroup_dir(root, "memory", rel);
    let unified = hybrid
        .then(|| root.join("unified").join(rel))
        .filter(|dir| dir.is_dir());
    if cpuacct.is_none() && cpu.is_none() && memory.is_none() && unified.is_none() {
        return None;
    }

    let mut reading = CgroupReading::default();
    if let Some(dir) = &cpuacct {
        read_cpuacct(&mut reading, dir);
    }
    if reading.cpu_total_ns.is_none()
        && let Some(stat) = unified.and_then(|dir| read_flat_keyed(&dir.join("cpu.stat")))
    {
        // systemd creates the unit's cpuacct cgroup only with CPU accounting on; the unified
        // tree in hybrid mode always has the unit and its core cpu.stat keys.
        v2::apply_cpu_stat(&mut reading, &stat);
    }
    if let Some(stat) = cpu.and_then(|dir| read_flat_keyed(&dir.join("cpu.stat"))) {
        reading.throttled_periods = stat.get("nr_throttled").copied();
        reading.throttled_time_ns = stat.get("throttled_time").copied();
    }
    if let Some(dir) = &memory {
        read_memory(&mut reading, dir);
    }
    Some(reading)
}

/// `oom_kill` from `memory.oom_control` in the memory cgroup directory `dir` (Linux ≥ 4.13).
pub(super) fn read_oom_kills(dir: &Path) -> Option<u64> {
    read_flat_keyed(&dir.join("memory.oom_control"))?
        .get("oom_kill")
        .copied()
}

/// CPU times from a cpuacct cgroup directory: `cpuacct.usage` for the total; the nanosecond
/// `cpuacct.usage_user` / `cpuacct.usage_sys` (Linux ≥ 4.7) for the split, else `cpuacct.stat`.
fn read_cpuacct(reading: &mut CgroupReading, dir: &Path) {
    reading.cpu_total_ns = read_u64(&dir.join("cpuacct.usage"));
    reading.cpu_user_ns = read_u64(&dir.join("cpuacct.usage_user"));
    reading.cpu_system_ns = read_u64(&dir.join("cpuacct.usage_sys"));
    if (reading.cpu_user_ns.is_none() || reading.cpu_system_ns.is_none())
        && let Some(stat) = read_flat_keyed(&dir.join("cpuacct.stat"))
    {
        let (user, system) = cpuacct_stat_ns(&stat);
        reading.cpu_user_ns = reading.cpu_user_ns.or(user);
        reading.cpu_system_ns = reading.cpu_system_ns.or(system);
    }
}

/// User and system time in nanoseconds from a parsed `cpuacct.stat` (values in `USER_HZ` ticks).
fn cpuacct_stat_ns(stat: &HashMap<String, u64>) -> (Option<u64>, Option<u64>) {
    let ns = |key: &str| {
        stat.get(key)
            .map(|ticks| ticks.saturating_mul(NS_PER_USER_HZ_TICK))
    };
    (ns("user"), ns("system"))
}

/// Memory figures from a memory cgroup directory.
fn read_memory(reading: &mut CgroupReading, dir: &Path) {
    reading.mem_usage = read_u64(&dir.join("memory.usage_in_bytes"));
    reading.mem_max_usage = read_u64(&dir.join("memory.max_usage_in_bytes"));
    if let Some(stat) = read_flat_keyed(&dir.join("memory.stat")) {
        apply_memory_stat(reading, &stat);
    }
    if reading.mem_swap.is_none() {
        let memsw = read_u64(&dir.join("memory.memsw.usage_in_bytes"));
        reading.mem_swap = swap_from_memsw(memsw, reading.mem_usage);
    }
    reading.mem_kernel_usage = read_u64(&dir.join("memory.kmem.usage_in_bytes"));
    reading.mem_kernel_max_usage = read_u64(&dir.join("memory.kmem.max_usage_in_bytes"));
    reading.oom_kills = read_oom_kills(dir);
}

/// rss, cache and swap from a parsed v1 `memory.stat`, preferring the hierarchical `total_*` keys
/// (equal to the plain ones for a leaf cgroup, which a service unit normally is). `swap` is present
/// only with swap accounting on.
fn apply_memory_stat(reading: &mut CgroupReading, stat: &HashMap<String, u64>) {
    let get = |key: &str| {
        stat.get(format!("total_{key}").as_str())
            .or_else(|| stat.get(key))
            .copied()
    };
    reading.mem_rss = get("rss");
    reading.mem_cache = get("cache");
    reading.mem_swap = get("swap");
}

/// Swap usage as `memory.memsw.usage_in_bytes − memory.usage_in_bytes` (the two files are read at
/// slightly different times, hence the saturation).
fn swap_from_memsw(memsw: Option<u64>, usage: Option<u64>) -> Option<u64> {
    Some(memsw?.saturating_sub(usage?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn cpuacct_stat_ticks_are_ten_milliseconds() {
        let (user, system) = cpuacct_stat_ns(&map(&[("user", 150), ("system", 3)]));
        assert_eq!(user, Some(1_500_000_000));
        assert_eq!(system, Some(30_000_000));
        assert_eq!(cpuacct_stat_ns(&map(&[])), (None, None));
    }

    #[test]
    fn memory_stat_prefers_hierarchical_totals() {
        let mut r = CgroupReading::default();
        apply_memory_stat(
            &mut r,
            &map(&[
                ("rss", 1),
                ("cache", 2),
                ("swap", 3),
                ("total_rss", 10),
                ("total_cache", 20),
                ("total_swap", 30),
            ]),
        );
        assert_eq!(
            (r.mem_rss, r.mem_cache, r.mem_swap),
            (Some(10), Some(20), Some(30))
        );

        let mut r = CgroupReading::default();
        apply_memory_stat(&mut r, &map(&[("rss", 1), ("cache", 2)]));
        assert_eq!(
            (r.mem_rss, r.mem_cache, r.mem_swap),
            (Some(1), Some(2), None)
        );
    }

    #[test]
    fn swap_from_memsw_subtracts_and_saturates() {
        assert_eq!(swap_from_memsw(Some(150), Some(100)), Some(50));
        assert_eq!(swap_from_memsw(Some(90), Some(100)), Some(0));
        assert_eq!(swap_from_memsw(None, Some(100)), None);
        assert_eq!(swap_from_memsw(Some(100), None), None);
    }
}
