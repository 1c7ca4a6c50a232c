//! What the Nomad client prepares before StartTask (docs/nomad-contract.md, *Task directories
//! and environment*, *Log FIFOs*): alloc and task directories, logmon-style FIFOs with a reader, the task environment, and the TaskConfig with
//! its cty-msgpack driver config.
//!
//! As the Nomad client does when it runs as root on Linux (client/allocdir/fs_linux.go,
//! createSecretDir, called from TaskDir.Build via MakeSecretsDirs), the task's `secrets/` and
//! `private/` are 1 MiB `noexec` tmpfs mounts. They are made in the mount namespace of the
//! private systemd this thread booted (its namespace has private propagation, so a host mount
//! would be invisible to systemd and to every task), else in the caller's own namespace, and
//! unmounted when the [`Alloc`] is dropped. Every task thus adds two mounts to the namespace
//! systemd copies for each task that gets a mount namespace of its own, as on a real node.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::proto::drivers::{
    AllocatedCpuResources, AllocatedMemoryResources, AllocatedTaskResources, LinuxResources,
    Resources, TaskConfig,
};
use rmpv::Value;

/// Where test alloc dirs live: outside /tmp and /var/tmp, which tasks see privately.
pub const ALLOC_ROOT: &str = "/var/lib/nds-tests";

/// A random alloc id (UUID-shaped).
pub fn alloc_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The job's `config {}` block.
#[derive(Default, Clone)]
pub struct JobConfig {
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub unit: Option<String>,
    pub properties: Option<Vec<(String, String)>>,
    pub work_dir: Option<String>,
}

impl JobConfig {
    pub fn command(cmd: &str, args: &[&str]) -> Self {
        Self {
            command: Some(cmd.into()),
            args: Some(args.iter().map(|a| (*a).to_string()).collect()),
            ..Self::default()
        }
    }

    pub fn sh(script: &str) -> Self {
        Self::command("/bin/sh", &["-c", script])
    }

    /// Encodes like cty/msgpack: every key, sorted, nil when absent.
    pub fn msgpack(&self) -> Vec<u8> {
        let s = |v: &Option<String>| v.clone().map_or(Value::Nil, Value::from);
        let entries = vec![
            (
                "args",
                self.args.clone().map_or(Value::Nil, |a| {
                    Value::Array(a.into_iter().map(Value::from).collect())
                }),
            ),
            ("command", s(&self.command)),
            (
                "properties",
                self.properties.clone().map_or(Value::Nil, |p| {
                    let mut p = p;
                    p.sort();
                    Value::Map(
                        p.into_iter()
                            .map(|(k, v)| (Value::from(k), Value::from(v)))
                            .collect(),
                    )
                }),
            ),
            ("unit", s(&self.unit)),
            ("work_dir", s(&self.work_dir)),
        ];
        let map = Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        );
        let mut out = Vec::new();
        // writing into a Vec cannot fail
        let _ = rmpv::encode::write_value(&mut out, &map);
        out
    }
}

/// What logmon's copy reads from a FIFO at once: Go's `io.Copy` buffer (Nomad
/// `client/logmon/logmon.go`, `logRotatorWrapper.start` copies the FIFO into the rotator).
const COPY_BLOCK: usize = 32 * 1024;
/// logmon's rotator buffers its file writes (`logBufferSize`, 64 KiB) and flushes them every
/// `bufferFlushDuration` (100 ms) (Nomad `client/logmon/logging/rotator.go`).
const ROTATOR_BUFFER: usize = 64 * 1024;
const ROTATOR_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// A FIFO read like logmon does: everything kept in memory, optionally echoed.
pub struct LogReader {
    pub path: PathBuf,
    data: Arc<Mutex<Vec<u8>>>,
}

/// Where a reader echoes what it reads (for `run`).
pub type Echo = Box<dyn FnMut(&[u8]) + Send>;

fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `f` has data (or EOF) within `timeout`.
fn readable_within(f: &std::fs::File, timeout: std::time::Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(f),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&raw mut fds, 1, ms) > 0 }
}

impl LogReader {
    /// Creates the FIFO (mode 0600, as logmon) and starts reading it; panics on failure (tests).
    pub fn new(path: PathBuf) -> Self {
        Self::open(path, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the FIFO and starts a reader thread that keeps (and echoes) everything.
    pub fn open(path: PathBuf, mut echo: Option<Echo>) -> std::io::Result<Self> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: valid C string; mkfifo has no other preconditions.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                e.kind(),
                format!("mkfifo {}: {e}", path.display()),
            ));
        }
        let data = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&data);
        let p = path.clone();
        // logmon copies into `<task>.<stream>.<n>` beside the FIFO; one file, never rotated
        let mut copy = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('.')?.strip_suffix(".fifo"))
            .and_then(|stem| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path.with_file_name(format!("{stem}.0")))
                    .ok()
            })
            .map(|f| std::io::BufWriter::with_capacity(ROTATOR_BUFFER, f));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; COPY_BLOCK];
            // reopen after each writer closes, as logmon does on the next start
            loop {
                let Ok(mut f) = std::fs::File::open(&p) else {
                    break;
                };
                // when the oldest byte not yet in the file was buffered
                let mut since: Option<std::time::Instant> = None;
                loop {
                    // as logmon's rotator: what is buffered reaches the file within 100 ms
                    // (waiting on the FIFO with a timeout only while something is buffered)
                    if let (Some(c), Some(t)) = (copy.as_mut(), since) {
                        let left = ROTATOR_FLUSH.saturating_sub(t.elapsed());
                        if left.is_zero() || !readable_within(&f, left) {
                            let _ = c.flush();
                            since = None;
                        }
                    }
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Some(c) = copy.as_mut() {
                                let _ = c.write_all(&buf[..n]);
                                if c.buffer().is_empty() {
                                    since = None;
                                } else if since.is_none() {
                                    since = Some(std::time::Instant::now());
                                }
                            }
                            lock(&sink).extend_from_slice(&buf[..n]);
                            if let Some(echo) = echo.as_mut() {
                                echo(&buf[..n]);
                            }
                        }
                    }
                }
                if let Some(c) = copy.as_mut() {
                    let _ = c.flush();
                }
                if !p.exists() {
                    break;
                }
            }
        });
        Ok(Self { path, data })
    }

    /// No FIFO yet (while the alloc dir is being built, so that a failure cleans it up).
    fn placeholder() -> Self {
        Self {
            path: PathBuf::new(),
            data: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.data)).into_owned()
    }

    /// Bytes read so far (without copying them).
    pub fn len(&self) -> usize {
        lock(&self.data).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `needle` shows up in the log.
    pub fn wait_for(&self, needle: &str, timeout: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }
}

/// Size of Nomad's `secrets/` and `private/` tmpfs (the default `secrets` size, 1 MB).
const SECRETS_SIZE: &str = "size=1m,mode=0777";

/// Where Nomad's tmpfs mounts of an alloc live.
struct Mounts {
    /// The mount namespace they were made in (`None`: this process's own). Held open so that an
    /// unmount on drop reaches the same namespace even if its PID 1 was killed and its PID reused.
    ns: Option<Arc<std::fs::File>>,
    paths: Vec<PathBuf>,
}

fn os_err(what: String) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Runs `f` in the mount namespace `ns` (on a short-lived thread that leaves the process's
/// shared file-system context first, as setns requires), or right here when `ns` is `None`.
fn in_mount_ns<T: Send>(
    ns: Option<&std::fs::File>,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let Some(ns) = ns else { return f() };
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: plain syscalls; this thread alone changes its fs context and namespace,
            // and it ends when `f` returns.
            unsafe {
                if libc::unshare(libc::CLONE_FS) != 0 {
                    return Err(os_err("unshare(CLONE_FS)".into()));
                }
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(os_err(
                        "setns into the private systemd's mount namespace".into(),
                    ));
                }
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("mount thread panicked")))
    })
}

impl Mounts {
    /// Mounts a 1 MiB noexec tmpfs on each of `paths` in the namespace of `ns_pid`.
    fn make(ns_pid: Option<u32>, paths: Vec<PathBuf>) -> std::io::Result<Self> {
        let ns = match ns_pid {
            Some(pid) => Some(Arc::new(
                std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("mount namespace of PID {pid}: {e}"))
                })?,
            )),
            None => None,
        };
        let mut me = Self {
            ns,
            paths: Vec::new(),
        };
        let opts = std::ffi::CString::new(SECRETS_SIZE).map_err(std::io::Error::other)?;
        for p in paths {
            let c = c_path(&p)?;
            let opts = &opts;
            let shown = p.display().to_string();
            in_mount_ns(me.ns.as_deref(), move || {
                // SAFETY: valid C strings that outlive the call.
                let rc = unsafe {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        c.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOEXEC,
                        opts.as_ptr().cast(),
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(os_err(format!("mount tmpfs on {shown}")))
                }
            })?;
            me.paths.push(p);
        }
        Ok(me)
    }

    /// Unmounts everything (lazily: a task still holding a file there does not keep it).
    fn unmount(&mut self) {
        let paths = std::mem::take(&mut self.paths);
        if paths.is_empty() {
            return;
        }
        let _ = in_mount_ns(self.ns.as_deref(), move || {
            for p in &paths {
                if let Ok(c) = c_path(p) {
                    // SAFETY: valid C string.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
            Ok(())
        });
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// An allocation with one task, laid out the way the Nomad client does it.
pub struct Alloc {
    pub id: String,
    pub dir: PathBuf,
    pub task: String,
    pub stdout: LogReader,
    pub stderr: LogReader,
    mounts: Mounts,
}

impl Alloc {
    /// A fresh alloc under [`ALLOC_ROOT`]; panics on failure (tests).
    pub fn new(task: &str) -> Self {
        Self::create(Path::new(ALLOC_ROOT), task, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh alloc under [`ALLOC_ROOT`] whose `secrets/` and `private/` are plain directories:
    /// no tmpfs mounts, so a measurement of the driver's own concurrency (the benchmark's burst)
    /// is not dominated by systemd's per-mount cost of a task's mount namespace (see
    /// ARCHITECTURE.md, *Start cost at density*). Panics on failure (tests, benchmark).
    pub fn new_plain(task: &str) -> Self {
        Self::layout(Path::new(ALLOC_ROOT), task, None, false, None, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Lays out `<root>/<new alloc id>/` and the task's log FIFOs, with the tmpfs mounts in
    /// the private systemd this thread booted, if any (else in this process's namespace).
    pub fn create(
        root: &Path,
        task: &str,
        stdout_echo: Option<Echo>,
        stderr_echo: Option<Echo>,
    ) -> std::io::Result<Self> {
        let ns = crate::nomad_standin::private_systemd::booted_on_this_thread();
        Self::create_in(root, task, ns, stdout_echo, stderr_echo)
    }

    /// [`Alloc::create`] with the tmpfs mounts made in the mount namespace of `mount_ns_pid`
    /// (`None`: this process's). Without root, `secrets/` and `private/` are plain directories,
    /// as the Nomad client makes them when it cannot mount.
    pub fn create_in(
        root: &Path,
        task: &str,
        mount_ns_pid: Option<u32>,
        stdout_echo: Option<Echo>,
        stderr_echo: Option<Echo>,
    ) -> std::io::Result<Self> {
        Self::layout(root, task, mount_ns_pid, true, stdout_echo, stderr_echo)
    }

    fn layout(
        root: &Path,
        task: &str,
        mount_ns_pid: Option<u32>,
        tmpfs_mounts: bool,
        stdout_echo: Option<Echo>,
        stderr_echo: Option<Echo>,
    ) -> std::io::Result<Self> {
        let id = alloc_id()?;
        let dir = root.join(&id);
        for (p, mode) in [
            (dir.clone(), 0o755),
            (dir.join("alloc"), 0o755),
            (dir.join("alloc/data"), 0o777),
            (dir.join("alloc/tmp"), 0o777),
            (dir.join("alloc/logs"), 0o777),
            (dir.join(task), 0o777),
            (dir.join(task).join("local"), 0o777),
            (dir.join(task).join("secrets"), 0o777),
            (dir.join(task).join("private"), 0o777),
            (dir.join(task).join("tmp"), 0o1777),
        ] {
            std::fs::create_dir_all(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let tmpfs = [
            dir.join(task).join("secrets"),
            dir.join(task).join("private"),
        ];
        let mounts = if root_user && tmpfs_mounts {
            Mounts::make(mount_ns_pid, tmpfs.to_vec()).inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&dir);
            })?
        } else {
            Mounts {
                ns: None,
                paths: Vec::new(),
            }
        };
        let mut alloc = Self {
            id,
            dir,
            task: task.into(),
            stdout: LogReader::placeholder(),
            stderr: LogReader::placeholder(),
            mounts,
        };
        let logs = alloc.dir.join("alloc/logs");
        alloc.stdout = LogReader::open(logs.join(format!(".{task}.stdout.fifo")), stdout_echo)?;
        alloc.stderr = LogReader::open(logs.join(format!(".{task}.stderr.fifo")), stderr_echo)?;
        Ok(alloc)
    }

    /// TaskConfig for start number `n` (ids change on every start).
    pub fn task_config(&self, n: u32, job: &JobConfig) -> TaskConfig {
        let mut env: HashMap<String, String> = HashMap::new();
        for (k, v) in [
            ("NOMAD_ALLOC_DIR", "/alloc"),
            ("NOMAD_TASK_DIR", "/local"),
            ("NOMAD_SECRETS_DIR", "/secrets"),
            ("NOMAD_TASK_NAME", self.task.as_str()),
            ("NOMAD_ALLOC_ID", self.id.as_str()),
            ("NOMAD_JOB_NAME", "test"),
            ("NOMAD_GROUP_NAME", "group"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        ] {
            env.insert(k.into(), v.into());
        }
        TaskConfig {
            id: format!("{}/{}/{n:08x}", self.id, self.task),
            name: self.task.clone(),
            msgpack_driver_config: job.msgpack(),
            env,
            resources: Some(Resources {
                allocated_resources: Some(AllocatedTaskResources {
                    cpu: Some(AllocatedCpuResources { cpu_shares: 100 }),
                    memory: Some(AllocatedMemoryResources {
                        memory_mb: 256,
                        memory_max_mb: 0,
                    }),
                    networks: vec![],
                }),
                linux_resources: Some(LinuxResources {
                    cpu_shares: 100,
                    memory_limit_bytes: 256 << 20,
                    ..LinuxResources::default()
                }),
                ports: vec![],
            }),
            alloc_dir: self.dir.display().to_string(),
            stdout_path: self.stdout.path.display().to_string(),
            stderr_path: self.stderr.path.display().to_string(),
            task_group_name: "group".into(),
            job_name: "test".into(),
            job_id: "test".into(),
            alloc_id: self.id.clone(),
            namespace: "default".into(),
            ..TaskConfig::default()
        }
    }
}

impl Drop for Alloc {
    fn drop(&mut self) {
        self.mounts.unmount();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
