//! cgroup statistics for task units: layout detection, raw readings over an injected root, CPU deltas.
//!
//! Everything here takes the cgroup file-system root as a parameter (`/sys/fs/cgroup` in production)
//! so that cgroup v1, hybrid and v2 are all testable from fixture trees. The parsers are pure functions
//! over `&str`; the I/O shell only reads whole files and treats any unreadable file as "not measured"
//! (`None`), because which files exist depends on the kernel version, its boot options and on which
//! controllers systemd enabled for the unit.
//!
//! What each layout reports (a field is `None` when its file is missing or unparsable):
//!
//! | field | v2 (unified) | v1 / hybrid |
//! |---|---|---|
//! | `cpu_total_ns` | `cpu.stat` `usage_usec` | `cpuacct.usage`; hybrid falls back to `unified/<cg>/cpu.stat` |
//! | `cpu_user_ns` / `cpu_system_ns` | `cpu.stat` `user_usec` / `system_usec` | `cpuacct.usage_user` / `usage_sys`, else `cpuacct.stat` ticks × 10 ms |
//! | `throttled_periods` / `throttled_time_ns` | `cpu.stat` `nr_throttled` / `throttled_usec` (cpu controller enabled only) | `cpu.stat` `nr_throttled` / `throttled_time` |
//! | `mem_usage` | `memory.current` | `memory.usage_in_bytes` |
//! | `mem_rss` / `mem_cache` | `memory.stat` `anon` / `file` | `memory.stat` `total_rss` / `total_cache` (else `rss` / `cache`) |
//! | `mem_swap` | `memory.swap.current` | `memory.stat` `total_swap` / `swap`, else `memsw.usage_in_bytes − usage_in_bytes` |
//! | `mem_max_usage` | `memory.peak` (Linux ≥ 5.19) | `memory.max_usage_in_bytes` |
//! | `mem_kernel_usage` | `memory.stat` `kernel`, else `kernel_stack + slab` | `memory.kmem.usage_in_bytes` |
//! | `mem_kernel_max_usage` | never (no such file) | `memory.kmem.max_usage_in_bytes` |
//! | `oom_kills` | `memory.events` `oom_kill` | `memory.oom_control` `oom_kill` (Linux ≥ 4.13) |

mod cpu;
mod files;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

pub use cpu::{
    Compute, CoreSpeed, CpuFigures, CpuTracker, DEFAULT_MHZ_PER_CORE, compute_from_cores,
};
pub use files::{CgroupFiles, keyed};

/// Errors of the stats module.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The unit's cgroup directory exists under none of the relevant hierarchies.
    #[error("cgroup {cgroup} not found under {root}")]
    NotFound {
        /// The cgroup path as given (systemd's `ControlGroup`).
        cgroup: String,
        /// The cgroup file-system root that was searched.
        root: PathBuf,
    },
    /// The cgroup path would leave the cgroup root (it contains `..` or similar).
    #[error("invalid cgroup path {0:?}")]
    InvalidPath(String),
}

impl From<StatsError> for std::io::Error {
    fn from(err: StatsError) -> Self {
        let kind = match err {
            StatsError::NotFound { .. } => std::io::ErrorKind::NotFound,
            StatsError::InvalidPath(_) => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, err)
    }
}

/// How cgroups are mounted under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CgroupLayout {
    /// Only v1 hierarchies, one directory per controller (or per combination of controllers).
    V1,
    /// v1 controller hierarchies plus a controller-less v2 tree at `<root>/unified`. Read as v1.
    Hybrid,
    /// One unified v2 tree at the root.
    V2,
}

/// v1 controllers this module recognises as hierarchy names; named hierarchies such as
/// `name=systemd` (mounted at `systemd`) are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// Detects the layout under `root`: V2 when `root/cgroup.controllers` exists, Hybrid when
/// `root/unified/cgroup.controllers` exists next to at least one mounted v1 controller, V1 when only
/// v1 controllers are mounted, `None` when nothing cgroup-like is there.
#[must_use]
pub fn detect_layout(root: &Path) -> Option<CgroupLayout> {
    if root.join("cgroup.controllers").is_file() {
        return Some(CgroupLayout::V2);
    }
    if v1_controllers(root).is_empty() {
        return None;
    }
    if root.join("unified").join("cgroup.controllers").is_file() {
        Some(CgroupLayout::Hybrid)
    } else {
        Some(CgroupLayout::V1)
    }
}

/// Controllers available under `root`, sorted: for v2 the root's `cgroup.controllers`; for v1 and
/// hybrid the controllers whose hierarchies are mounted (a combined `cpu,cpuacct` mount yields both).
#[must_use]
pub fn available_controllers(root: &Path, layout: CgroupLayout) -> Vec<String> {
    match layout {
        CgroupLayout::V2 => {
            let mut names: Vec<String> = read_file(&root.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            names.sort();
            names.dedup();
            names
        }
        CgroupLayout::V1 | CgroupLayout::Hybrid => v1_controllers(root),
    }
}

/// One raw reading of a unit's cgroup. CPU times are cumulative nanoseconds, memory figures bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupReading {
    /// Total CPU time consumed.
    pub cpu_total_ns: Option<u64>,
    /// CPU time in user mode.
    pub cpu_user_ns: Option<u64>,
    /// CPU time in kernel mode.
    pub cpu_system_ns: Option<u64>,
    /// Number of periods in which the cgroup was throttled.
    pub throttled_periods: Option<u64>,
    /// Total time the cgroup was throttled.
    pub throttled_time_ns: Option<u64>,
    /// Current memory usage (v1 includes page cache, as does v2 `memory.current`).
    pub mem_usage: Option<u64>,
    /// Anonymous memory.
    pub mem_rss: Option<u64>,
    /// Page cache (file-backed memory).
    pub mem_cache: Option<u64>,
    /// Swap in use.
    pub mem_swap: Option<u64>,
    /// Peak memory usage.
    pub mem_max_usage: Option<u64>,
    /// Kernel memory.
    pub mem_kernel_usage: Option<u64>,
    /// Peak kernel memory.
    pub mem_kernel_max_usage: Option<u64>,
    /// Number of processes the OOM killer killed in this cgroup.
    pub oom_kills: Option<u64>,
}

/// Reads the cgroup `cgroup` (systemd's `ControlGroup` property, e.g.
/// `/nomad_tasks.slice/nomad-x.service`; `/` or `""` is the root cgroup). Hybrid is read as v1.
///
/// Each missing or unparsable file leaves its field `None`.
///
/// # Errors
///
/// [`StatsError::NotFound`] when the cgroup directory exists in none of the hierarchies read;
/// [`StatsError::InvalidPath`] when `cgroup` contains `..`.
pub fn read_cgroup(
    root: &Path,
    layout: CgroupLayout,
    cgroup: &str,
) -> Result<CgroupReading, StatsError> {
    let rel = relative_cgroup_path(cgroup)?;
    let reading = match layout {
        CgroupLayout::V2 => v2::read(root, &rel),
        CgroupLayout::V1 => v1::read(root, &rel, false),
        CgroupLayout::Hybrid => v1::read(root, &rel, true),
    };
    reading.ok_or_else(|| StatsError::NotFound {
        cgroup: cgroup.to_owned(),
        root: root.to_path_buf(),
    })
}

/// OOM kills recorded for the cgroup: v2 `memory.events` `oom_kill`; v1 `memory.oom_control`
/// `oom_kill` (Linux ≥ 4.13). `None` when the file, the key or the cgroup is missing.
#[must_use]
pub fn read_oom_kills(root: &Path, layout: CgroupLayout, cgroup: &str) -> Option<u64> {
    let rel = relative_cgroup_path(cgroup).ok()?;
    match layout {
        CgroupLayout::V2 => v2::read_oom_kills(&root.join(&rel)),
        CgroupLayout::V1 | CgroupLayout::Hybrid => {
            let dir = v1::controller_dir(root, "memory")?.join(&rel);
            v1::read_oom_kills(&dir)
        }
    }
}

/// The unit's directory in the v1 memory hierarchy (`None` on v2 or when absent).
#[must_use]
pub fn v1_memory_dir(root: &Path, layout: CgroupLayout, cgroup: &str) -> Option<PathBuf> {
    if layout == CgroupLayout::V2 {
        return None;
    }
    let rel = relative_cgroup_path(cgroup).ok()?;
    let dir = v1::controller_dir(root, "memory")?.join(rel);
    dir.is_dir().then_some(dir)
}

/// Parses a single-value cgroup file such as `memory.current`. Surrounding whitespace (the trailing
/// newline) is ignored; `max` means unlimited and yields `u64::MAX`; anything else non-numeric,
/// including negative numbers such as v1's `-1`, yields `None`.
#[must_use]
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Parses a flat-keyed cgroup file (`key value` per line, e.g. `cpu.stat`, `memory.stat`,
/// `memory.events`, `memory.oom_control`). Blank lines and lines whose value does not parse with
/// [`parse_u64`] are skipped; unknown keys are kept. A repeated key keeps its last value.
#[must_use]
pub fn parse_flat_keyed(s: &str) -> HashMap<&str, u64> {
    s.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let key = parts.next()?;
            let value = parse_u64(parts.next()?)?;
            parts.next().is_none().then_some((key, value))
        })
        .collect()
}

/// Turns `/a.slice/b.service` into the relative path `a.slice/b.service`, refusing anything that
/// could escape the root.
fn relative_cgroup_path(cgroup: &str) -> Result<PathBuf, StatsError> {
    let path = Path::new(cgroup);
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(StatsError::InvalidPath(cgroup.to_owned()));
            }
        }
    }
    Ok(rel)
}

/// Mounted v1 controllers under `root`, sorted and deduplicated.
fn v1_controllers(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| v1::is_hierarchy(&entry.path()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .flat_map(|name| {
            name.split(',')
                .filter(|c| V1_CONTROLLERS.contains(c))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Reads a whole file; any error (missing file, unsupported attribute, …) is "not available".
fn read_file(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// Reads and parses a single-value file.
fn read_u64(path: &Path) -> Option<u64> {
    read_file(path).as_deref().and_then(parse_u64)
}

/// Reads a flat-keyed file into owned keys.
fn read_flat_keyed(path: &Path) -> Option<HashMap<String, u64>> {
    let text = read_file(path)?;
    Some(
        parse_flat_keyed(&text)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

#[cfg(test)]
mod parser_tests {
    use super::*;

    #[test]
    fn parse_u64_handles_whitespace_max_and_garbage() {
        assert_eq!(parse_u64("1234\n"), Some(1234));
        assert_eq!(parse_u64("  42  "), Some(42));
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_u64("-1\n"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("12 34"), None);
        assert_eq!(parse_u64("18446744073709551616"), None);
    }

    #[test]
    fn parse_flat_keyed_reads_cpu_stat() {
        let text = "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\n\
                    core_sched.force_idle_usec 0\nnr_periods 10\nnr_throttled 3\n\
                    throttled_usec 7000\nnr_bursts 0\nburst_usec 0\n";
        let map = parse_flat_keyed(text);
        assert_eq!(map.get("usage_usec"), Some(&2_000_000));
        assert_eq!(map.get("nr_throttled"), Some(&3));
        assert_eq!(map.get("core_sched.force_idle_usec"), Some(&0));
        assert_eq!(map.len(), 9);
    }

    #[test]
    fn parse_flat_keyed_skips_blank_and_malformed_lines() {
        let text = "\nanon 4096\n\nbogus\nfile notanumber\nthree parts here\nlimit max\nneg -1\n";
        let map = parse_flat_keyed(text);
        assert_eq!(map.get("anon"), Some(&4096));
        assert_eq!(map.get("limit"), Some(&u64::MAX));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn parse_flat_keyed_reads_oom_control() {
        let map = parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
        assert_eq!(map.get("oom_kill"), Some(&1));
        assert_eq!(map.get("under_oom"), Some(&0));
    }

    #[test]
    fn relative_cgroup_path_strips_root_and_refuses_parent() {
        assert_eq!(
            relative_cgroup_path("/nomad_tasks.slice/nomad-x.service").ok(),
            Some(PathBuf::from("nomad_tasks.slice/nomad-x.service"))
        );
        assert_eq!(relative_cgroup_path("/").ok(), Some(PathBuf::new()));
        assert_eq!(relative_cgroup_path("").ok(), Some(PathBuf::new()));
        assert!(matches!(
            relative_cgroup_path("/a/../../etc"),
            Err(StatsError::InvalidPath(_))
        ));
    }

    #[test]
    fn errors_are_lowercase_and_convert_to_io() {
        let err = StatsError::NotFound {
            cgroup: "/x.service".into(),
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        assert_eq!(
            err.to_string(),
            "cgroup /x.service not found under /sys/fs/cgroup"
        );
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
