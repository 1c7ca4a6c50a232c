//! OOM kills on cgroup v1, where systemd cannot see them: the kernel's memory.oom_control
//! notification (an eventfd registered through cgroup.event_control) fires when the unit's
//! memory cgroup runs out, before the victim dies and before systemd prunes the cgroup.
//! On cgroup v2 systemd itself reports `Result=oom-kill` and this is not used.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

/// Registers for OOM notifications of the v1 memory cgroup `dir`.
fn register(dir: &Path) -> io::Result<OwnedFd> {
    let control = std::fs::File::open(dir.join("memory.oom_control"))?;
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )?;
    // the kernel holds its own reference to memory.oom_control from here on
    Ok(efd)
}

/// Whether the v1 memory cgroup `dir` has counted an OOM kill (`oom_kill`, Linux ≥ 4.13).
pub(super) fn had_oom_kills(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("memory.oom_control"))
        .is_ok_and(|text| oom_kills(&text).is_some_and(|n| n > 0))
}

/// Watches `dir` until cancelled; sets `flag` when an OOM happens while the cgroup exists.
pub(super) fn watch(dir: PathBuf, flag: Arc<AtomicBool>, cancel: CancellationToken) {
    let efd = match register(&dir) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot watch for OOM kills on cgroup v1");
            return;
        }
    };
    // OOM kills from before the watch began (the plugin was down, or restarting): the kernel
    // counts them (`oom_kill`, Linux 4.13 and newer) for as long as the cgroup lives
    if let Ok(text) = std::fs::read_to_string(dir.join("memory.oom_control"))
        && oom_kills(&text).is_some_and(|n| n > 0)
    {
        flag.store(true, Ordering::SeqCst);
        tracing::info!(cgroup = %dir.display(), "memory cgroup had OOM kills before the watch began");
    }
    tokio::spawn(async move {
        // SAFETY: `efd` is an OwnedFd: valid, open, and owned by the AsyncFd for its lifetime.
        let Ok(afd) = (unsafe { AsyncFd::register(efd) }) else {
            return;
        };
        loop {
            let mut guard = tokio::select! {
                _ = cancel.cancelled() => return,
                g = afd.readable() => match g { Ok(g) => g, Err(_) => return },
            };
            let mut buf = [0u8; 8];
            // SAFETY: reading 8 bytes into a valid 8-byte buffer from our own eventfd.
            let n = unsafe { libc::read(afd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            guard.clear_ready();
            if n != 8 {
                continue;
            }
            // The same eventfd also fires when the cgroup is removed; only a live cgroup means OOM.
            if dir.join("memory.oom_control").exists() {
                flag.store(true, Ordering::SeqCst);
                tracing::info!(cgroup = %dir.display(), "memory cgroup hit its limit (OOM)");
            } else {
                return;
            }
        }
    });
}

/// Whether the kernel log (`/dev/kmsg`, root only) still holds an OOM kill in the memory
/// cgroup of `unit`: on cgroup v1 the only trace of an OOM kill that ended the task while the
/// plugin was down, once systemd has pruned the cgroup with its `oom_kill` counter. The
/// kernel's `oom-kill:` record names the victim's cgroup (`task_memcg=…/<unit>`); unit names
/// are unique to their task. False when the record has left the ring buffer or kmsg cannot be
/// read.
pub(super) fn kernel_logged_oom(unit: &str) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut kmsg) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return false;
    };
    // one record per read; EAGAIN at the end of the buffer, EPIPE for records overwritten
    // while we read
    let mut buf = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if let Some((_, message)) = record.split_once(';')
                    && is_oom_kill_of(message, unit)
                {
                    return true;
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => return false,
        }
    }
}

/// A kernel `oom-kill:` record whose victim lived in `unit`'s cgroup.
fn is_oom_kill_of(message: &str, unit: &str) -> bool {
    let Some(fields) = message.trim_end().strip_prefix("oom-kill:") else {
        return false;
    };
    let suffix = format!("/{unit}");
    fields.split(',').any(|f| {
        f.strip_prefix("task_memcg=")
            .is_some_and(|cg| cg.ends_with(&suffix))
    })
}

/// The `oom_kill` counter of a v1 `memory.oom_control` (absent before Linux 4.13).
fn oom_kills(text: &str) -> Option<u64> {
    crate::stats::parse_flat_keyed(text)
        .get("oom_kill")
        .copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_oom_records_name_their_unit() {
        let line = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/s.slice/nomad-a-b-1.service,task_memcg=/s.slice/nomad-a-b-1.service,task=perl,pid=7,uid=0\n";
        assert!(super::is_oom_kill_of(line, "nomad-a-b-1.service"));
        assert!(!super::is_oom_kill_of(line, "a-b-1.service"));
        assert!(!super::is_oom_kill_of(line, "nomad-a-b-10.service"));
        assert!(!super::is_oom_kill_of(
            "Memory cgroup out of memory: Killed process 7 task_memcg=/nomad-a-b-1.service",
            "nomad-a-b-1.service"
        ));
    }

    #[test]
    fn oom_kill_counter() {
        let of = super::oom_kills;
        assert_eq!(of("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), Some(2));
        assert_eq!(of("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(of("oom_kill 0\n"), Some(0));
    }
}
