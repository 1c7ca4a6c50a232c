//! A task's cgroup files opened once and read with `pread` for every sample: no path lookups,
//! no `open`/`close`, no allocation per sample. It reads only the files a `TaskResourceUsage`
//! needs and gives the same [`CgroupReading`] as [`super::read_cgroup`] (but `oom_kills`, which
//! no sample carries). A file that errors on read (the kernel answers `ENODEV` once a cgroup
//! is removed; a unit that restarted has a new one under the same path) makes the reader open
//! everything again and read once more. The descriptors close when the reader drops.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{CgroupLayout, CgroupReading, StatsError, parse_u64, relative_cgroup_path, v1};

/// Largest file read in full (a v2 `memory.stat` is about 1.5 KiB); a longer one is read up to
/// here and its last, cut line ignored.
const BUF: usize = 16 * 1024;

/// One file per field source; which are used depends on the layout.
#[derive(Clone, Copy)]
enum Slot {
    /// v1 `cpuacct.usage`
    CpuacctUsage,
    CpuacctUser,
    CpuacctSys,
    /// v1 `cpuacct.stat` (ticks), opened only without `usage_user`/`usage_sys`
    CpuacctStat,
    /// hybrid `unified/<cg>/cpu.stat` (when cpuacct has no such cgroup), or v2 `cpu.stat`
    UnifiedCpuStat,
    /// v1 `cpu.stat` (throttling)
    CpuStat,
    MemUsage,
    MemMaxUsage,
    MemStat,
    /// v1 `memory.memsw.usage_in_bytes`, v2 `memory.swap.current`
    MemSwap,
    KmemUsage,
    KmemMaxUsage,
}

const SLOTS: usize = 12;

/// See the module documentation.
pub struct CgroupFiles {
    root: PathBuf,
    layout: CgroupLayout,
    rel: PathBuf,
    files: [Option<File>; SLOTS],
}

impl CgroupFiles {
    /// Opens the files of cgroup `cgroup` (systemd's `ControlGroup`) that exist.
    ///
    /// # Errors
    ///
    /// As [`super::read_cgroup`]: the cgroup exists in none of the hierarchies read, or its
    /// path would leave the root.
    pub fn open(root: &Path, layout: CgroupLayout, cgroup: &str) -> Result<Self, StatsError> {
        let mut me = Self {
            root: root.to_path_buf(),
            layout,
            rel: relative_cgroup_path(cgroup)?,
            files: Default::default(),
        };
        if me.reopen() {
            Ok(me)
        } else {
            Err(StatsError::NotFound {
                cgroup: cgroup.to_owned(),
                root: root.to_path_buf(),
            })
        }
    }

    /// How many descriptors the reader holds.
    #[must_use]
    pub fn open_files(&self) -> usize {
        self.files.iter().filter(|f| f.is_some()).count()
    }

    /// (Re)opens every file; false when the cgroup exists in none of the hierarchies.
    fn reopen(&mut self) -> bool {
        self.files = Default::default();
        let open = |dir: &Path, name: &str| File::open(dir.join(name)).ok();
        match self.layout {
            CgroupLayout::V2 => {
                let dir = self.root.join(&self.rel);
                if !dir.is_dir() {
                    return false;
                }
                self.files[Slot::UnifiedCpuStat as usize] = open(&dir, "cpu.stat");
                self.files[Slot::MemUsage as usize] = open(&dir, "memory.current");
                self.files[Slot::MemStat as usize] = open(&dir, "memory.stat");
                self.files[Slot::MemSwap as usize] = open(&dir, "memory.swap.current");
                self.files[Slot::MemMaxUsage as usize] = open(&dir, "memory.peak");
                true
            }
            CgroupLayout::V1 | CgroupLayout::Hybrid => {
                let dir = |controller: &str| {
                    v1::controller_dir(&self.root, controller)
                        .map(|d| d.join(&self.rel))
                        .filter(|d| d.is_dir())
                };
                let cpuacct = dir("cpuacct");
                let cpu = dir("cpu");
                let memory = dir("memory");
                let unified = (self.layout == CgroupLayout::Hybrid)
                    .then(|| self.root.join("unified").join(&self.rel))
                    .filter(|d| d.is_dir());
                if cpuacct.is_none() && cpu.is_none() && memory.is_none() && unified.is_none() {
                    return false;
                }
                if let Some(d) = &cpuacct {
                    self.files[Slot::CpuacctUsage as usize] = open(d, "cpuacct.usage");
                    self.files[Slot::CpuacctUser as usize] = open(d, "cpuacct.usage_user");
                    self.files[Slot::CpuacctSys as usize] = open(d, "cpuacct.usage_sys");
                    if self.files[Slot::CpuacctUser as usize].is_none()
                        || self.files[Slot::CpuacctSys as usize].is_none()
                    {
                        self.files[Slot::CpuacctStat as usize] = open(d, "cpuacct.stat");
                    }
                }
                if let Some(d) = &unified {
                    self.files[Slot::UnifiedCpuStat as usize] = open(d, "cpu.stat");
                }
                if let Some(d) = &cpu {
                    self.files[Slot::CpuStat as usize] = open(d, "cpu.stat");
                }
                if let Some(d) = &memory {
                    self.files[Slot::MemUsage as usize] = open(d, "memory.usage_in_bytes");
                    self.files[Slot::MemMaxUsage as usize] = open(d, "memory.max_usage_in_bytes");
                    self.files[Slot::MemStat as usize] = open(d, "memory.stat");
                    self.files[Slot::MemSwap as usize] = open(d, "memory.memsw.usage_in_bytes");
                    self.files[Slot::KmemUsage as usize] = open(d, "memory.kmem.usage_in_bytes");
                    self.files[Slot::KmemMaxUsage as usize] =
                        open(d, "memory.kmem.max_usage_in_bytes");
                }
                true
            }
        }
    }

    /// One reading; `None` when the cgroup is gone (also after reopening).
    pub fn read(&mut self) -> Option<CgroupReading> {
        let mut buf = [0u8; BUF];
        if let Some(r) = self.read_once(&mut buf) {
            return Some(r);
        }
        // a descriptor went stale: the cgroup was removed, perhaps made again
        if !self.reopen() {
            return None;
        }
        self.read_once(&mut buf)
    }

    /// A reading from the open files; `None` when one of them failed to read.
    fn read_once(&self, buf: &mut [u8; BUF]) -> Option<CgroupReading> {
        let mut r = CgroupReading::default();
        match self.layout {
            CgroupLayout::V2 => {
                if let Some(text) = self.text(Slot::UnifiedCpuStat, buf)? {
                    apply_cpu_stat(&mut r, text);
                }
                r.mem_usage = self.number(Slot::MemUsage, buf)?;
                if let Some(text) = self.text(Slot::MemStat, buf)? {
                    let [anon, file, kernel, stack, slab] =
                        keyed(text, ["anon", "file", "kernel", "kernel_stack", "slab"]);
                    r.mem_rss = anon;
                    r.mem_cache = file;
                    r.mem_kernel_usage = kernel.or_else(|| Some(stack?.saturating_add(slab?)));
                }
                r.mem_swap = self.number(Slot::MemSwap, buf)?;
                r.mem_max_usage = self.number(Slot::MemMaxUsage, buf)?;
            }
            CgroupLayout::V1 | CgroupLayout::Hybrid => {
                r.cpu_total_ns = self.number(Slot::CpuacctUsage, buf)?;
                r.cpu_user_ns = self.number(Slot::CpuacctUser, buf)?;
                r.cpu_system_ns = self.number(Slot::CpuacctSys, buf)?;
                if (r.cpu_user_ns.is_none() || r.cpu_system_ns.is_none())
                    && let Some(text) = self.text(Slot::CpuacctStat, buf)?
                {
                    let [user, system] = keyed(text, ["user", "system"])
                        .map(|t| t.map(|t| t.saturating_mul(v1::NS_PER_USER_HZ_TICK)));
                    r.cpu_user_ns = r.cpu_user_ns.or(user);
                    r.cpu_system_ns = r.cpu_system_ns.or(system);
                }
                if r.cpu_total_ns.is_none()
                    && let Some(text) = self.text(Slot::UnifiedCpuStat, buf)?
                {
                    apply_cpu_stat(&mut r, text);
                }
                if let Some(text) = self.text(Slot::CpuStat, buf)? {
                    [r.throttled_periods, r.throttled_time_ns] =
                        keyed(text, ["nr_throttled", "throttled_time"]);
                }
                r.mem_usage = self.number(Slot::MemUsage, buf)?;
                r.mem_max_usage = self.number(Slot::MemMaxUsage, buf)?;
                if let Some(text) = self.text(Slot::MemStat, buf)? {
                    // the hierarchical totals where the kernel gives them
                    let [total_rss, rss, total_cache, cache, total_swap, swap] = keyed(
                        text,
                        [
                            "total_rss",
                            "rss",
                            "total_cache",
                            "cache",
                            "total_swap",
                            "swap",
                        ],
                    );
                    r.mem_rss = total_rss.or(rss);
                    r.mem_cache = total_cache.or(cache);
                    r.mem_swap = total_swap.or(swap);
                }
                if r.mem_swap.is_none() {
                    let memsw = self.number(Slot::MemSwap, buf)?;
                    r.mem_swap = memsw.zip(r.mem_usage).map(|(a, b)| a.saturating_sub(b));
                }
                r.mem_kernel_usage = self.number(Slot::KmemUsage, buf)?;
                r.mem_kernel_max_usage = self.number(Slot::KmemMaxUsage, buf)?;
            }
        }
        Some(r)
    }

    /// The file's text: `Some(None)` when it is not open, `None` when reading it failed.
    ///
    /// One `pread` from offset 0: every file read here is a single-record seq file (a cgroup
    /// file without a `seq_start` of its own, which kernfs' `kernfs_seq_start` iterates like
    /// `single_open`: one record at offset 0, none after), which the kernel formats whole and
    /// copies out as far as the buffer allows, so a read shorter than the buffer is the whole
    /// file; asking again for the end of file would double the system calls of a sample. A
    /// file that fills the buffer keeps its complete lines.
    fn text<'b>(&self, slot: Slot, buf: &'b mut [u8; BUF]) -> Option<Option<&'b str>> {
        let Some(f) = &self.files[slot as usize] else {
            return Some(None);
        };
        let mut len = loop {
            match f.read_at(buf, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        };
        if len == buf.len() {
            len = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        }
        // cgroup files are ASCII; anything else is "not measured"
        Some(std::str::from_utf8(&buf[..len]).ok())
    }

    /// A single-value file; `Some(None)` when not open or unparsable, `None` on a read error.
    fn number(&self, slot: Slot, buf: &mut [u8; BUF]) -> Option<Option<u64>> {
        Some(self.text(slot, buf)?.and_then(parse_u64))
    }
}

/// For each of `keys`, the last well-formed `key value` line's value in a flat-keyed file, as
/// [`super::parse_flat_keyed`] would map it (cgroup files are ASCII), in one pass over `text`
/// and without building the map: a v1 `memory.stat` has some fifty lines, of which a sample
/// wants three.
#[must_use]
pub fn keyed<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    // a key listed twice would fill only its first slot
    debug_assert!(
        keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k)),
        "keys listed twice: {keys:?}"
    );
    let mut found = [None; N];
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let Some(slot) = parts
            .next()
            .and_then(|key| keys.iter().position(|k| *k == key))
        else {
            continue;
        };
        if let (Some(value), None) = (parts.next(), parts.next())
            && let Some(v) = parse_u64(value)
        {
            found[slot] = Some(v);
        }
    }
    found
}

/// v2 `cpu.stat` (also hybrid's unified one), as [`super::v2`]'s `apply_cpu_stat`.
fn apply_cpu_stat(r: &mut CgroupReading, text: &str) {
    let [total, user, system, periods, throttled] = keyed(
        text,
        [
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_throttled",
            "throttled_usec",
        ],
    );
    let ns = |usec: Option<u64>| usec.map(|v| v.saturating_mul(1000));
    r.cpu_total_ns = ns(total);
    r.cpu_user_ns = ns(user);
    r.cpu_system_ns = ns(system);
    r.throttled_periods = periods;
    r.throttled_time_ns = ns(throttled);
}
