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

/// The `oom_kill` counter of a v1 `memory.oom_control` (absent before Linux 4.13).
fn oom_kills(text: &str) -> Option<u64> {
    crate::stats::parse_flat_keyed(text)
        .get("oom_kill")
        .copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn oom_kill_counter() {
        let of = super::oom_kills;
        assert_eq!(of("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), Some(2));
        assert_eq!(of("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(of("oom_kill 0\n"), Some(0));
    }
}
