//! Pure parsers for the `/proc/<pid>` files exec reads: `status` (credentials, capability
//! bounding set, pid in each pid namespace), `cgroup` (the process's cgroup per hierarchy) and
//! `environ`; plus the choice of the unit's main process among its cgroup's processes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// What exec copies from `/proc/<pid>/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved uid.
    pub uid: [u32; 3],
    /// Real, effective, saved gid.
    pub gid: [u32; 3],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Capability bounding set (`CapBnd`).
    pub cap_bounding: u64,
    /// The pid in each pid namespace, from the reader's namespace inwards (`NSpid`).
    pub nspid: Vec<u32>,
    /// Seccomp mode: 0 none, 1 strict, 2 filter (`Seccomp`; 0 on kernels without it).
    pub seccomp: u32,
}

/// Parses `/proc/<pid>/status`; `Err` names the first missing or malformed field.
pub fn parse_status(text: &str) -> Result<ProcStatus, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .ok_or_else(|| format!("{name} is missing"))
    };
    let numbers = |name: &str| -> Result<Vec<u32>, String> {
        field(name)?
            .split_whitespace()
            .map(|n| {
                n.parse()
                    .map_err(|_| format!("{name}: {n:?} is not a number"))
            })
            .collect()
    };
    let triple = |name: &str| -> Result<[u32; 3], String> {
        match numbers(name)?.as_slice() {
            [r, e, s, ..] => Ok([*r, *e, *s]),
            _ => Err(format!("{name} has fewer than three ids")),
        }
    };
    let cap_bounding = u64::from_str_radix(field("CapBnd")?, 16)
        .map_err(|_| "CapBnd is not a hex mask".to_string())?;
    let nspid = match field("NSpid") {
        Ok(_) => numbers("NSpid")?,
        // kernels before 4.1 have no NSpid: one namespace only
        Err(_) => numbers("Pid")?,
    };
    let seccomp = match field("Seccomp") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("Seccomp: {v:?} is not a number"))?,
        Err(_) => 0,
    };
    Ok(ProcStatus {
        uid: triple("Uid")?,
        gid: triple("Gid")?,
        groups: numbers("Groups")?,
        cap_bounding,
        nspid,
        seccomp,
    })
}

/// One line of `/proc/<pid>/cgroup`: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// `cpu,cpuacct`, `name=systemd`, or empty for the v2 (unified) hierarchy.
    pub controllers: String,
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`, skipping malformed lines.
pub fn parse_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            path.starts_with('/')
                .then_some(CgroupLine { controllers, path })
        })
        .collect()
}

/// The `cgroup.procs` files to write a pid to so that it joins the same cgroups as the process
/// the lines describe, under the cgroup file-system `root`. Hierarchies not mounted there (no
/// `cgroup.procs` file, e.g. an empty `perf_event` directory) are skipped. `exists` is
/// injected for tests.
pub fn cgroup_procs_files(
    lines: &[CgroupLine],
    root: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Vec<PathBuf> {
    let unified_at_root = lines.iter().any(|l| l.controllers.is_empty())
        && lines.iter().all(|l| l.controllers.is_empty());
    let mut out = Vec::new();
    for l in lines {
        let hierarchy = if l.controllers.is_empty() {
            if unified_at_root {
                root.to_path_buf()
            } else {
                root.join("unified")
            }
        } else if let Some(name) = l.controllers.strip_prefix("name=") {
            root.join(name)
        } else {
            root.join(&l.controllers)
        };
        let file = hierarchy
            .join(l.path.trim_start_matches('/'))
            .join("cgroup.procs");
        if !exists(&file) {
            continue;
        }
        if !out.contains(&file) {
            out.push(file);
        }
    }
    out
}

/// Splits `/proc/<pid>/environ` into pairs; entries without `=` are dropped.
pub fn parse_environ(bytes: &[u8]) -> Vec<(OsString, OsString)> {
    bytes
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let eq = e.iter().position(|b| *b == b'=')?;
            (eq > 0).then(|| {
                (
                    OsString::from_vec(e[..eq].to_vec()),
                    OsString::from_vec(e[eq + 1..].to_vec()),
                )
            })
        })
        .collect()
}

/// `/proc/<pid>/limits` row names in `RLIMIT_*` order (resource numbers 0 to 15).
const LIMIT_NAMES: [&str; 16] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// Parses `/proc/<pid>/limits` (readable without the capability `prlimit` on another user's
/// process needs) into `(resource number, soft, hard)`, `u64::MAX` meaning unlimited. Rows
/// that do not parse are left out.
pub fn parse_limits(text: &str) -> Vec<(u32, u64, u64)> {
    let value = |v: &str| match v {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(idx) = LIMIT_NAMES.iter().position(|n| line.starts_with(n)) else {
            continue;
        };
        let mut rest = line[LIMIT_NAMES[idx].len()..].split_whitespace();
        if let (Some(Some(soft)), Some(Some(hard)), Ok(res)) = (
            rest.next().map(value),
            rest.next().map(value),
            u32::try_from(idx),
        ) {
            out.push((res, soft, hard));
        }
    }
    out
}

/// The process, among `candidates` (pid in our numbering, `NSpid` list), whose pid is
/// `main_pid` in systemd's pid namespace. systemd numbers in its own namespace: ours when it is
/// the host's PID 1 (the first `NSpid` entry), an inner one when it runs in a container. The
/// match with the outermost level wins.
pub fn pick_main(main_pid: u32, candidates: &[(i32, Vec<u32>)]) -> Option<i32> {
    candidates
        .iter()
        .filter_map(|(pid, nspid)| {
            let level = nspid.iter().position(|p| *p == main_pid)?;
            Some((level, *pid))
        })
        .min()
        .map(|(_, pid)| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Pid:\t4242\nPPid:\t1\nUid:\t61234\t61234\t61234\t61234\nGid:\t61234\t61235\t61236\t61234\n\
        FDSize:\t64\nGroups:\t10 20 \nNSpid:\t4242\t57\nCapInh:\t0000000000000000\n\
        CapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\n";

    #[test]
    fn status_fields() {
        let s = parse_status(STATUS).unwrap();
        assert_eq!(s.uid, [61234; 3]);
        assert_eq!(s.gid, [61234, 61235, 61236]);
        assert_eq!(s.groups, vec![10, 20]);
        assert_eq!(s.cap_bounding, 0x1ff_ffff_ffff);
        assert_eq!(s.nspid, vec![4242, 57]);
    }

    #[test]
    fn status_errors_name_the_field() {
        for (text, want) in [
            (
                "Uid:\t1 1 1 1\nGid:\t1 1 1 1\nGroups:\t\nPid:\t3\n",
                "CapBnd is missing",
            ),
            (
                "Uid:\t1 1\nGid:\t1 1 1 1\nGroups:\t\nCapBnd:\t0\nPid:\t3\n",
                "Uid has fewer than three ids",
            ),
            (
                "Uid:\t1 1 1\nGid:\t1 1 1\nGroups:\tx\nCapBnd:\t0\nPid:\t3\n",
                "Groups: \"x\" is not a number",
            ),
            (
                "Uid:\t1 1 1\nGid:\t1 1 1\nGroups:\t\nCapBnd:\tzz\n",
                "CapBnd is not a hex mask",
            ),
        ] {
            assert_eq!(parse_status(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn status_without_nspid_uses_pid() {
        let s =
            parse_status("Pid:\t7\nUid:\t0 0 0 0\nGid:\t0 0 0 0\nGroups:\t\nCapBnd:\t0\n").unwrap();
        assert_eq!(s.nspid, vec![7]);
        assert!(s.groups.is_empty());
    }

    #[test]
    fn cgroup_files_per_layout() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid = "12:cpu,cpuacct:/s/x.service\n9:name=systemd:/s/x.service\n\
                      5:devices:/s/x.service\n4:memory:/\n0::/s/x.service\n";
        let v2 = "0::/s/x.service\n";
        let all = |_: &Path| true;
        type Exists = Box<dyn Fn(&Path) -> bool>;
        let cases: Vec<(&str, Exists, Vec<&str>)> = vec![
            (
                hybrid,
                Box::new(all),
                vec![
                    "/sys/fs/cgroup/cpu,cpuacct/s/x.service/cgroup.procs",
                    "/sys/fs/cgroup/systemd/s/x.service/cgroup.procs",
                    "/sys/fs/cgroup/devices/s/x.service/cgroup.procs",
                    "/sys/fs/cgroup/memory/cgroup.procs",
                    "/sys/fs/cgroup/unified/s/x.service/cgroup.procs",
                ],
            ),
            (
                v2,
                Box::new(all),
                vec!["/sys/fs/cgroup/s/x.service/cgroup.procs"],
            ),
            (
                // hierarchies that are not mounted (or cgroups that vanished) are skipped
                hybrid,
                Box::new(|p: &Path| {
                    !p.starts_with("/sys/fs/cgroup/devices")
                        && !p.starts_with("/sys/fs/cgroup/unified")
                }),
                vec![
                    "/sys/fs/cgroup/cpu,cpuacct/s/x.service/cgroup.procs",
                    "/sys/fs/cgroup/systemd/s/x.service/cgroup.procs",
                    "/sys/fs/cgroup/memory/cgroup.procs",
                ],
            ),
        ];
        for (text, is_dir, want) in cases {
            let got = cgroup_procs_files(&parse_cgroup(text), root, is_dir);
            let want: Vec<PathBuf> = want.into_iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn environ_pairs() {
        let env = parse_environ(b"A=1\0B=x=y\0NOEQ\0=bad\0C=\0");
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), String::new())
            ]
        );
    }

    #[test]
    fn limits_rows() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max stack size            8388608              unlimited            bytes     \n\
            Max processes             96364                96364                processes \n\
            Max open files            1024                 524288               files     \n\
            Max nice priority         0                    0                    \n\
            Max realtime timeout      unlimited            unlimited            us        \n\
            Max bogus thing           1                    1                    \n";
        assert_eq!(
            parse_limits(text),
            vec![
                (0, u64::MAX, u64::MAX),
                (3, 8_388_608, u64::MAX),
                (6, 96364, 96364),
                (7, 1024, 524_288),
                (13, 0, 0),
                (15, u64::MAX, u64::MAX),
            ]
        );
    }

    #[test]
    fn main_process_by_namespace_level() {
        // systemd is the host's PID 1: the first NSpid entry is its numbering
        assert_eq!(
            pick_main(500, &[(499, vec![499]), (500, vec![500])]),
            Some(500)
        );
        // systemd in a container: our pid 9001 is 57 in its namespace
        assert_eq!(
            pick_main(57, &[(9000, vec![9000, 56]), (9001, vec![9001, 57])]),
            Some(9001)
        );
        // PrivatePIDs task: pid 1 inside, but 500 in systemd's (= our) namespace wins
        assert_eq!(
            pick_main(500, &[(500, vec![500, 1]), (77, vec![77, 500])]),
            Some(500)
        );
        assert_eq!(pick_main(3, &[(9, vec![9, 4])]), None);
    }
}
