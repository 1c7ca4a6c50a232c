//! A running task's execution context, captured from `/proc/<pid>` of the unit's main process:
//! namespace and directory file descriptors, cgroups, credentials, capability bounding set,
//! resource limits and environment. Everything is opened here, in the plugin, before any fork;
//! the child only uses the descriptors (see `spawn`).

use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ExecError;
use super::procfs::{self, ProcStatus};

/// Namespaces joined with `setns` in the child, in this order (the mount namespace last, as it
/// changes the root). The pid namespace is joined by the spawning thread instead (`spawn`).
/// The user namespace is not joined: root already holds every capability over a task's
/// namespaces, and its ids are taken as the plugin sees them.
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

/// Everything the child needs to become part of the task.
#[derive(Debug)]
pub struct TaskContext {
    /// The task's main process, in the plugin's pid numbering.
    pub pid: i32,
    /// The task's pid namespace when it differs from ours.
    pub(super) pid_ns: Option<OwnedFd>,
    /// Namespaces to join (only those that differ from ours), with their `setns` type.
    pub(super) namespaces: Vec<(OwnedFd, libc::c_int)>,
    /// `cgroup.procs` of every hierarchy the main process is in, open for writing.
    pub(super) cgroup_procs: Vec<OwnedFd>,
    pub(super) root: OwnedFd,
    pub(super) cwd: OwnedFd,
    pub(super) status: ProcStatus,
    /// Highest capability number the kernel knows.
    pub(super) cap_last: u32,
    pub(super) rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    /// The main process's seccomp filters, oldest first, to install in the same order.
    pub(super) seccomp: Vec<SeccompFilter>,
    pub env: Vec<(OsString, OsString)>,
}

/// One seccomp filter program as the kernel holds it, with the flags it was installed with.
#[derive(Debug, Clone)]
pub struct SeccompFilter {
    pub(super) insns: Vec<libc::sock_filter>,
    pub(super) flags: u64,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

/// `openat(dir, name)` with `O_CLOEXEC` added.
fn open_at(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string for the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_at(dir: &OwnedFd, name: &CStr) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::from(open_at(dir, name, libc::O_RDONLY)?).read_to_end(&mut out)?;
    Ok(out)
}

fn same_file(a: &OwnedFd, b: &Path) -> bool {
    let a = File::from(match a.try_clone() {
        Ok(fd) => fd,
        Err(_) => return false,
    });
    match (a.metadata(), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Finds the unit's main process in our pid numbering: systemd reports `main_pid` in its own
/// namespace, so the processes of the unit's cgroup (`control_group`, systemd's path) are
/// matched by their `NSpid`.
pub fn locate(main_pid: u32, control_group: &str, cgroup_root: &Path) -> Result<i32, ExecError> {
    if main_pid == 0 || control_group.is_empty() {
        return Err(ExecError::NotRunning);
    }
    let rel = control_group.trim_start_matches('/');
    let mut pids = Vec::new();
    for hierarchy in [
        cgroup_root.to_path_buf(),
        cgroup_root.join("unified"),
        cgroup_root.join("systemd"),
    ] {
        let dir = hierarchy.join(rel);
        if dir.is_dir() {
            collect_pids(&dir, &mut pids);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    let candidates: Vec<(i32, Vec<u32>)> = pids
        .into_iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            Some((pid, procfs::parse_status(&text).ok()?.nspid))
        })
        .collect();
    procfs::pick_main(main_pid, &candidates).ok_or(ExecError::NotRunning)
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

impl TaskContext {
    /// Captures the context of process `pid` (our numbering). Every file is read through one
    /// `/proc/<pid>` directory descriptor, so a pid reused meanwhile cannot be mistaken for it.
    pub fn capture(pid: i32, cgroup_root: &Path) -> Result<Self, ExecError> {
        let proc_dir = format!("/proc/{pid}");
        let dir: OwnedFd = File::open(&proc_dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ExecError::NotRunning,
                _ => ExecError::Io {
                    what: format!("opening {proc_dir}"),
                    source: e,
                },
            })?
            .into();
        let status =
            read_at(&dir, c"status").map_err(io_err(format!("reading {proc_dir}/status")))?;
        let status =
            procfs::parse_status(&String::from_utf8_lossy(&status)).map_err(|m| ExecError::Io {
                what: format!("parsing {proc_dir}/status"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, m),
            })?;
        let env =
            read_at(&dir, c"environ").map_err(io_err(format!("reading {proc_dir}/environ")))?;
        let cgroup =
            read_at(&dir, c"cgroup").map_err(io_err(format!("reading {proc_dir}/cgroup")))?;
        let limits =
            read_at(&dir, c"limits").map_err(io_err(format!("reading {proc_dir}/limits")))?;
        // "unlimited" parses as u64::MAX, which is RLIM_INFINITY on Linux
        let rlimits = procfs::parse_limits(&String::from_utf8_lossy(&limits))
            .into_iter()
            .map(|(res, soft, hard)| {
                (
                    res,
                    libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    },
                )
            })
            .collect();
        let (pid_ns, namespaces) = namespaces(&dir, &proc_dir)?;
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
        let root = open_at(&dir, c"root", dir_flags)
            .map_err(io_err(format!("opening {proc_dir}/root")))?;
        let cwd =
            open_at(&dir, c"cwd", dir_flags).map_err(io_err(format!("opening {proc_dir}/cwd")))?;
        let cgroup_procs = open_cgroup_procs(&cgroup, cgroup_root)?;
        let seccomp = match status.seccomp {
            0 => Vec::new(),
            2 => seccomp_filters(pid)?,
            // strict mode allows only read/write/exit: nothing could be executed under it
            _ => {
                return Err(ExecError::Io {
                    what: format!("{proc_dir} runs in strict seccomp mode"),
                    source: std::io::Error::other("exec cannot enter it"),
                });
            }
        };
        Ok(Self {
            pid,
            pid_ns,
            namespaces,
            cgroup_procs,
            root,
            cwd,
            status,
            cap_last: cap_last(),
            rlimits,
            seccomp,
            env: procfs::parse_environ(&env),
        })
    }
}

/// `ptrace` requests for reading a tracee's seccomp filters (`linux/ptrace.h`).
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;

/// `struct seccomp_metadata`.
#[repr(C)]
struct SeccompMetadata {
    filter_off: u64,
    flags: u64,
}

/// Reads the seccomp filters of `pid` (a unit's main process, in filter mode) so that an exec'd
/// command runs under exactly the same stack: systemd compiles `SystemCallFilter=`,
/// `RestrictSUIDSGID=`, `LockPersonality=` and friends into these. The process is seized and
/// interrupted for the few microseconds the reads take, then released; it sees no signal.
/// Runs on one thread throughout, as ptrace requires.
fn seccomp_filters(pid: i32) -> Result<Vec<SeccompFilter>, ExecError> {
    let fail = |what: &str| ExecError::Io {
        what: format!("{what} of process {pid} to copy its seccomp filters"),
        source: std::io::Error::last_os_error(),
    };
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: plain ptrace/waitpid calls on a pid; no memory is shared with the tracee.
    unsafe {
        if libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) != 0 {
            return Err(fail("attaching to"));
        }
        if libc::ptrace(libc::PTRACE_INTERRUPT, pid, null, null) != 0 {
            let e = fail("interrupting");
            libc::ptrace(libc::PTRACE_DETACH, pid, null, null);
            return Err(e);
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, libc::__WALL);
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                let e = fail("waiting for");
                libc::ptrace(libc::PTRACE_DETACH, pid, null, null);
                return Err(e);
            }
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Err(ExecError::NotRunning);
        }
        let result = read_filters(pid);
        libc::ptrace(libc::PTRACE_DETACH, pid, null, null);
        result
    }
}

/// # Safety
/// `pid` must be a ptrace-stopped tracee of the calling thread.
unsafe fn read_filters(pid: i32) -> Result<Vec<SeccompFilter>, ExecError> {
    let mut newest_first = Vec::new();
    for index in 0usize.. {
        // SAFETY (block): the tracee is stopped; buffers are sized from the kernel's count.
        let n = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                pid,
                index as *mut libc::c_void,
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(ExecError::Io {
                what: format!("reading seccomp filter {index} of process {pid}"),
                source: e,
            });
        }
        let len = usize::try_from(n).unwrap_or(0);
        let mut insns = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            };
            len
        ];
        let mut meta = SeccompMetadata {
            filter_off: u64::try_from(index).unwrap_or(u64::MAX),
            flags: 0,
        };
        // SAFETY: `insns` holds `len` instructions, as the kernel reported; `meta` is the
        // kernel's struct layout and its size is passed.
        let (got, meta_ok) = unsafe {
            let got = libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                pid,
                index as *mut libc::c_void,
                insns.as_mut_ptr().cast::<libc::c_void>(),
            );
            let meta_ok = libc::ptrace(
                PTRACE_SECCOMP_GET_METADATA,
                pid,
                std::mem::size_of::<SeccompMetadata>() as *mut libc::c_void,
                (&raw mut meta).cast::<libc::c_void>(),
            ) >= 0;
            (got, meta_ok)
        };
        if got != n {
            return Err(ExecError::Io {
                what: format!("reading seccomp filter {index} of process {pid}"),
                source: std::io::Error::last_os_error(),
            });
        }
        // only the flags that shape the filter's behaviour (log), never listeners or tsync
        let flags = if meta_ok {
            meta.flags & SECCOMP_FILTER_FLAG_LOG
        } else {
            0
        };
        newest_first.push(SeccompFilter { insns, flags });
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// `SECCOMP_FILTER_FLAG_LOG`.
pub(super) const SECCOMP_FILTER_FLAG_LOG: u64 = 2;

/// Opens, for writing, `cgroup.procs` of every cgroup listed in a `/proc/<pid>/cgroup` text.
fn open_cgroup_procs(cgroup: &[u8], cgroup_root: &Path) -> Result<Vec<OwnedFd>, ExecError> {
    let lines = procfs::parse_cgroup(&String::from_utf8_lossy(cgroup));
    procfs::cgroup_procs_files(&lines, cgroup_root, Path::exists)
        .into_iter()
        .map(|file| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .map(OwnedFd::from)
                .map_err(io_err(format!("opening {}", file.display())))
        })
        .collect()
}

type Namespaces = (Option<OwnedFd>, Vec<(OwnedFd, libc::c_int)>);

fn namespaces(dir: &OwnedFd, proc_dir: &str) -> Result<Namespaces, ExecError> {
    let mut joined = Vec::new();
    let mut pid_ns = None;
    let all = NAMESPACES.iter().chain(&[("pid", libc::CLONE_NEWPID)]);
    for (name, kind) in all {
        let path = format!("ns/{name}");
        let cpath = std::ffi::CString::new(path.clone()).map_err(|_| ExecError::NotRunning)?;
        let fd = match open_at(dir, &cpath, libc::O_RDONLY) {
            Ok(fd) => fd,
            // a kernel without this namespace type
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && *name == "cgroup" => continue,
            Err(e) => return Err(io_err(format!("opening {proc_dir}/{path}"))(e)),
        };
        if same_file(&fd, Path::new(&format!("/proc/self/{path}"))) {
            continue;
        }
        if *kind == libc::CLONE_NEWPID {
            pid_ns = Some(fd);
        } else {
            joined.push((fd, *kind));
        }
    }
    Ok((pid_ns, joined))
}

fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}
