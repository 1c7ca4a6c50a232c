//! A private systemd: PID 1 of fresh PID/mount/UTS/IPC namespaces on the host's root file
//! system, for tests, benchmarks and `run --private-systemd` on machines whose PID 1 is not
//! systemd. `/run` is a new tmpfs; everything that would clean or reconfigure the shared file
//! system (tmpfiles above all, which empties /tmp) is masked, and only a minimal target with
//! D-Bus and journald is booted. Dropping the fixture SIGKILLs its PID 1 and thereby everything
//! inside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Units masked inside the namespace: none of them may touch the host.
const MASKED: &[&str] = &[
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-journal-flush.service",
    "systemd-sysusers.service",
    "systemd-remount-fs.service",
    "systemd-binfmt.service",
    "systemd-modules-load.service",
    "systemd-sysctl.service",
    "systemd-update-utmp.service",
    "systemd-random-seed.service",
    "systemd-machine-id-commit.service",
    "systemd-firstboot.service",
    "systemd-logind.service",
    "ldconfig.service",
    "getty.target",
    "console-getty.service",
    "cron.service",
];

thread_local! {
    /// PIDs of the private systemds this thread booted and has not dropped yet, newest last:
    /// [`crate::nomad_standin::alloc::Alloc`] makes Nomad's tmpfs mounts in the newest one's
    /// mount namespace.
    static BOOTED: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The PID 1 of the newest private systemd booted by this thread and still up, if any.
pub fn booted_on_this_thread() -> Option<u32> {
    BOOTED.with(|b| b.borrow().last().copied())
}

pub struct PrivateSystemd {
    /// PID (host numbering) of the namespace's systemd.
    pub pid: u32,
    unshare: Child,
    pub state_dir: PathBuf,
    /// Name of this instance's cgroup subtree in every hierarchy.
    pub cgroup: String,
}

fn boot_script(cgroup: &str) -> String {
    // Each instance gets a cgroup subtree of its own in every hierarchy, so concurrent
    // instances (and the host) never share slices.
    let mut s = format!(
        "#!/bin/sh\nset -e\nfor d in /sys/fs/cgroup /sys/fs/cgroup/*; do\n  [ -f \"$d/cgroup.procs\" ] || continue\n  mkdir -p \"$d/{cgroup}\"\n  for f in cpuset.cpus cpuset.mems; do [ -f \"$d/$f\" ] && cat \"$d/$f\" > \"$d/{cgroup}/$f\"; done\n  echo $$ > \"$d/{cgroup}/cgroup.procs\"\ndone\n"
    );
    s.push_str("mount -t tmpfs -o mode=755 tmpfs /run\nmkdir -p /run/systemd/system /run/lock /run/systemd/journald.conf.d\n");
    for u in MASKED {
        s.push_str(&format!("ln -sf /dev/null /run/systemd/system/{u}\n"));
    }
    s.push_str(
        "printf '[Journal]\\nStorage=volatile\\n' > /run/systemd/journald.conf.d/volatile.conf\n",
    );
    s.push_str(
        "cat > /run/systemd/system/nds-test.target <<'EOT'\n[Unit]\nDescription=nomad-driver-systemd tests\nRequires=dbus.socket systemd-journald.socket\nWants=dbus.service systemd-journald.service\nAfter=dbus.socket\nAllowIsolate=yes\nEOT\n",
    );
    s.push_str("exec env container=nds-test /lib/systemd/systemd --system --unit=nds-test.target --log-target=console --log-level=notice\n");
    s
}

/// Whether this process may boot a private systemd (root, systemd and unshare present).
pub fn can_run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    for p in [
        "/lib/systemd/systemd",
        "/usr/bin/unshare",
        "/usr/bin/dbus-daemon",
    ] {
        if !Path::new(p).exists() {
            return Err(format!("{p} is missing"));
        }
    }
    Ok(())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

impl PrivateSystemd {
    /// Boots one; panics with systemd's log when it does not come up (for tests).
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Boots one and waits until systemd answers on its bus.
    pub fn try_start() -> Result<Self, String> {
        can_run()?;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state_dir = PathBuf::from(format!("/var/tmp/nds-psd-{}-{n}", std::process::id()));
        let io = |what: &str, e: std::io::Error| format!("private systemd: {what}: {e}");
        std::fs::create_dir_all(&state_dir).map_err(|e| io("state dir", e))?;
        let script = state_dir.join("boot.sh");
        let cgroup = format!("nds-test-{}-{n}", std::process::id());
        std::fs::write(&script, boot_script(&cgroup)).map_err(|e| io("boot script", e))?;
        let log = std::fs::File::create(state_dir.join("systemd.log")).map_err(|e| io("log", e))?;
        let log2 = log.try_clone().map_err(|e| io("log", e))?;
        let unshare = Command::new("setsid")
            .args(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc"])
            .args(["--propagation", "private", "--mount-proc", "--", "/bin/sh"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log)
            .spawn()
            .map_err(|e| io("spawn unshare", e))?;
        let mut me = Self {
            pid: 0,
            unshare,
            state_dir,
            cgroup,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // setsid may exec unshare in place or fork it; unshare forks the namespace's PID 1.
            // Only that direct child counts: PID 1's own children are briefly named "systemd"
            // too, between fork and exec.
            let mut parent = me.unshare.id();
            if let Some(u) = children(parent).into_iter().find(|p| comm(*p) == "unshare") {
                parent = u;
            }
            if let Some(init) = children(parent).into_iter().find(|p| comm(*p) == "systemd") {
                me.pid = init;
            }
            if me.pid != 0 && me.bus_socket().exists() && me.ping() {
                let pid = me.pid;
                BOOTED.with(|b| b.borrow_mut().push(pid));
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(me.state_dir.join("systemd.log")).unwrap_or_default();
        Err(format!("private systemd did not come up:\n{log}"))
    }

    pub fn bus_socket(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/run/dbus/system_bus_socket",
            self.pid
        ))
    }

    /// `DBUS_SYSTEM_BUS_ADDRESS` reaching this systemd from the host.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket().display())
    }

    /// `/run/systemd` of the namespace, seen from the host.
    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/run/systemd", self.pid))
    }

    fn ping(&self) -> bool {
        self.busctl(&[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.DBus.Peer",
            "Ping",
        ])
        .is_some()
    }

    /// Runs `busctl` against this systemd; stdout on success.
    pub fn busctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.bus_address()))
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command inside the namespace (e.g. `systemctl show`); stdout.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args([
                "--target",
                &self.pid.to_string(),
                "--mount",
                "--pid",
                "--uts",
                "--ipc",
                "--",
            ])
            .args(["timeout", "30"])
            .args(cmd)
            .output();
        let Ok(out) = out else {
            return String::new();
        };
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show UNIT -p PROP --value`.
    pub fn show(&self, unit: &str, prop: &str) -> String {
        self.exec(&["systemctl", "show", unit, "-p", prop, "--value"])
            .trim()
            .to_string()
    }

    /// Loaded units whose name starts with `nomad-` or that live in the slice.
    pub fn nomad_units(&self) -> Vec<String> {
        self.exec(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "nomad-*",
        ])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|u| u.ends_with(".service"))
        .collect()
    }
}

impl Drop for PrivateSystemd {
    fn drop(&mut self) {
        let pid = self.pid;
        BOOTED.with(|b| b.borrow_mut().retain(|p| *p != pid));
        if self.pid != 0 {
            // SAFETY: kill on a pid we started.
            unsafe {
                libc::kill(i32::try_from(self.pid).unwrap_or(0), libc::SIGKILL);
            }
        }
        let _ = self.unshare.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
        // Empty cgroups can only be removed bottom-up, once their processes are reaped.
        for _ in 0..50 {
            let mut left = false;
            for h in cgroup_hierarchies() {
                let top = h.join(&self.cgroup);
                if top.exists() {
                    remove_cgroup_tree(&top);
                    left |= top.exists();
                }
            }
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        out.extend(entries.flatten().map(|e| e.path()));
    }
    out.into_iter()
        .filter(|d| d.join("cgroup.procs").exists())
        .collect()
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
