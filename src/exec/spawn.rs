//! Forking the command into a task's context. A short-lived thread joins the task's pid
//! namespace (`setns` on a pid namespace only affects the caller's future children, per thread)
//! and spawns; the child's `pre_exec` hook then, with async-signal-safe system calls only:
//! starts a session (and takes the pty as controlling terminal), joins the task's cgroups
//! (`cgroup.procs` ← `0`), its other namespaces (mount last), its root and working directory,
//! copies its resource limits and capability bounding set, takes its groups, gid and uid, and
//! sets `no_new_privs`. Then the program is executed, looked up in the task's `PATH`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::ExecError;
use super::context::{SeccompFilter, TaskContext};

/// `SECCOMP_SET_MODE_FILTER` for the `seccomp` system call.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
use super::pty::{self, PtyMaster};

/// How the command's stdio is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio3 {
    /// stdin from /dev/null, stdout and stderr captured (ExecTask).
    Capture,
    /// Three pipes (streaming without tty).
    Pipes,
    /// One pty for all three (streaming with tty).
    Tty,
}

/// The plugin's ends of the command's stdio.
#[derive(Debug)]
pub enum Io {
    Pipes {
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    },
    Pty(PtyMaster),
}

/// A command running in a task's context.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    /// Its pid (our numbering), also its process group and session id.
    pub pid: i32,
    pub io: Io,
}

impl Spawned {
    /// Takes the plugin's ends of the stdio, leaving none behind.
    pub fn take_io(&mut self) -> Io {
        std::mem::replace(
            &mut self.io,
            Io::Pipes {
                stdin: None,
                stdout: None,
                stderr: None,
            },
        )
    }

    /// SIGKILLs the command's whole process group.
    pub fn kill_group(&self) {
        // SAFETY: kill has no memory preconditions; the group is the one setsid made.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
    }
}

/// What the child does between fork and exec; plain data, no allocation in the child.
struct ChildSetup {
    tty: bool,
    cgroup_procs: Vec<RawFd>,
    namespaces: Vec<(RawFd, libc::c_int)>,
    root: RawFd,
    cwd: RawFd,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    drop_caps: Vec<libc::c_int>,
    groups: Vec<libc::gid_t>,
    uid: [libc::uid_t; 3],
    gid: [libc::gid_t; 3],
    /// The task's seccomp filters, oldest first.
    seccomp: Vec<SeccompFilter>,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes the task's limit; without CAP_SYS_RESOURCE a limit above our hard limit cannot be
/// set, so it is clamped to ours instead. Async-signal-safe.
fn set_rlimit(resource: libc::__rlimit_resource_t, lim: &libc::rlimit) {
    // SAFETY: setrlimit/getrlimit read and write only the `rlimit` values given.
    unsafe {
        if libc::setrlimit(resource, lim) == 0 {
            return;
        }
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(resource, &mut cur) != 0 {
            return;
        }
        let clamped = libc::rlimit {
            rlim_cur: lim.rlim_cur.min(cur.rlim_max),
            rlim_max: lim.rlim_max.min(cur.rlim_max),
        };
        libc::setrlimit(resource, &clamped);
    }
}

impl ChildSetup {
    fn new(ctx: &TaskContext, tty: bool) -> Self {
        let drop_caps = (0..=ctx.cap_last.min(63))
            .filter(|c| ctx.status.cap_bounding & (1u64 << c) == 0)
            .filter_map(|c| libc::c_int::try_from(c).ok())
            .collect();
        Self {
            tty,
            cgroup_procs: ctx.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect(),
            namespaces: ctx
                .namespaces
                .iter()
                .map(|(fd, kind)| (fd.as_raw_fd(), *kind))
                .collect(),
            root: ctx.root.as_raw_fd(),
            cwd: ctx.cwd.as_raw_fd(),
            rlimits: ctx.rlimits.clone(),
            drop_caps,
            groups: ctx.status.groups.clone(),
            uid: ctx.status.uid,
            gid: ctx.status.gid,
            seccomp: ctx.seccomp.clone(),
        }
    }

    /// Runs in the forked child: async-signal-safe system calls only.
    fn enter(&self) -> io::Result<()> {
        // SAFETY (whole block): every call is a raw system call on descriptors the parent opened
        // and keeps open across the fork, or on plain values owned by `self`; no allocation,
        // no locks.
        unsafe {
            check(libc::setsid())?;
            if self.tty {
                // stdin is the pty slave by now: make it the controlling terminal
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            for fd in &self.cgroup_procs {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (fd, kind) in &self.namespaces {
                check(libc::setns(*fd, *kind))?;
            }
            check(libc::fchdir(self.root))?;
            check(libc::chroot(c".".as_ptr()))?;
            check(libc::fchdir(self.cwd))?;
            for (resource, lim) in &self.rlimits {
                set_rlimit(*resource, lim);
            }
            for cap in &self.drop_caps {
                check(libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0))?;
            }
            check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(libc::setresgid(self.gid[0], self.gid[1], self.gid[2]))?;
            check(libc::setresuid(self.uid[0], self.uid[1], self.uid[2]))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            // last: the task's filters may forbid what the steps above needed
            for f in &self.seccomp {
                let prog = libc::sock_fprog {
                    len: u16::try_from(f.insns.len())
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
                    filter: f.insns.as_ptr().cast_mut(),
                };
                let r = libc::syscall(
                    libc::SYS_seccomp,
                    SECCOMP_SET_MODE_FILTER,
                    f.flags,
                    &raw const prog,
                );
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Starts `argv` in the task's context. Must be called inside a tokio runtime.
pub async fn spawn(
    ctx: TaskContext,
    argv: Vec<String>,
    stdio: Stdio3,
) -> Result<Spawned, ExecError> {
    let Some(program) = argv.first().cloned() else {
        return Err(ExecError::EmptyCommand);
    };
    let (master, slave) = match stdio {
        Stdio3::Tty => {
            let (m, s) = pty::open().map_err(|source| ExecError::Io {
                what: "allocating a pty".into(),
                source,
            })?;
            (Some(m), Some(s))
        }
        _ => (None, None),
    };
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nds-exec-spawn".into())
        .spawn(move || {
            let _runtime = handle.enter();
            let _ = tx.send(spawn_here(&ctx, &program, &argv[1..], slave, stdio));
            // `ctx` drops here, closing the parent's copies of the task's descriptors
        })
        .map_err(|source| ExecError::Io {
            what: "starting the exec thread".into(),
            source,
        })?;
    let (child, pipes) = rx.await.map_err(|_| ExecError::Io {
        what: "spawning".into(),
        source: io::Error::other("the exec thread panicked"),
    })??;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| ExecError::Io {
            what: "spawning".into(),
            source: io::Error::other("the command has no pid"),
        })?;
    let io = match master {
        Some(m) => Io::Pty(m),
        None => pipes,
    };
    Ok(Spawned { child, pid, io })
}

/// On the dedicated thread: join the pid namespace, then fork and exec.
fn spawn_here(
    ctx: &TaskContext,
    program: &str,
    args: &[String],
    slave: Option<OwnedFd>,
    stdio: Stdio3,
) -> Result<(Child, Io), ExecError> {
    if let Some(ns) = &ctx.pid_ns {
        // SAFETY: setns on an open namespace descriptor; it changes only this thread's
        // pid namespace for children, and the thread exits after this spawn.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
            return Err(ExecError::Io {
                what: "joining the task's pid namespace".into(),
                source: io::Error::last_os_error(),
            });
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(ctx.env.iter().cloned());
    let term: OsString = "TERM".into();
    if stdio == Stdio3::Tty && !ctx.env.iter().any(|(k, _)| *k == term) {
        cmd.env("TERM", "xterm");
    }
    let stdio_err = |source| ExecError::Io {
        what: "preparing the command's stdio".into(),
        source,
    };
    match (stdio, slave) {
        (Stdio3::Tty, Some(s)) => {
            cmd.stdin(Stdio::from(s.try_clone().map_err(stdio_err)?))
                .stdout(Stdio::from(s.try_clone().map_err(stdio_err)?))
                .stderr(Stdio::from(s));
        }
        (Stdio3::Capture, _) => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        _ => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    cmd.kill_on_drop(true);
    let setup = ChildSetup::new(ctx, stdio == Stdio3::Tty);
    // SAFETY: the hook only makes async-signal-safe system calls (`ChildSetup::enter`).
    unsafe {
        cmd.pre_exec(move || setup.enter());
    }
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let io = Io::Pipes {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    Ok((child, io))
}
