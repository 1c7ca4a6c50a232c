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
/// cgroup `cgroup` (the unit's full `ControlGroup` path, see [`unit_cgroup`]) logged after
/// `since` (the run's start): on cgroup v1 the only trace of an OOM kill that ended the task
/// before its cgroup could be watched (the plugin was down, or the task died at once), once
/// systemd has pruned the cgroup with its `oom_kill` counter. Only the kernel's own records
/// count (facility 0: a process writing to `/dev/kmsg` logs as `user`), only a victim in
/// `cgroup` or below it, and only records newer than `since` (an installed unit's cgroup path
/// is the same for each run). False when the record has left the ring buffer or kmsg cannot
/// be read. Reads the whole buffer: call it off the async thread.
pub(super) fn kernel_logged_oom(cgroup: &str, since: std::time::SystemTime) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if cgroup.is_empty() {
        return false;
    }
    let since_usec = monotonic_usec_at(since);
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
                if is_oom_record_of(&String::from_utf8_lossy(&buf[..n]), cgroup, since_usec) {
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

/// `CLOCK_MONOTONIC` (what kmsg stamps its records with) in µs at the wall-clock time `at`.
fn monotonic_usec_at(at: std::time::SystemTime) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_mono = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000;
    let ago = std::time::SystemTime::now()
        .duration_since(at)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    now_mono.saturating_sub(ago)
}

/// One `/dev/kmsg` record (`<prefix>,<seq>,<µs>,<flags>[,…];<message>`): the kernel's
/// (facility 0) `oom-kill:` record of a victim in `cgroup` or below, stamped at or after
/// `since_usec`.
fn is_oom_record_of(record: &str, cgroup: &str, since_usec: u64) -> bool {
    let Some((header, message)) = record.split_once(';') else {
        return false;
    };
    let mut fields = header.split(',');
    let prefix = fields.next().and_then(|p| p.parse::<u32>().ok());
    let stamp = fields.nth(1).and_then(|t| t.parse::<u64>().ok());
    let (Some(prefix), Some(stamp)) = (prefix, stamp) else {
        return false;
    };
    // the prefix is facility * 8 + level
    prefix >> 3 == 0 && stamp >= since_usec && is_oom_kill_of(message, cgroup)
}

/// A kernel `oom-kill:` message whose victim lived in `cgroup` or a cgroup below it. The
/// kernel names cgroups from its root; a systemd that is not at the root (in a container, a
/// private one) gives its units paths under its own cgroup, which [`unit_cgroup`] cannot know:
/// such a path is marked by a leading `*`, and may follow any whole leading path.
fn is_oom_kill_of(message: &str, cgroup: &str) -> bool {
    let Some(fields) = message
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("oom-kill:"))
    else {
        return false;
    };
    let (cgroup, anywhere) = match cgroup.strip_prefix('*') {
        Some(tail) => (tail.trim_end_matches('/'), true),
        None => (cgroup.trim_end_matches('/'), false),
    };
    let at = |cg: &str| {
        cg == cgroup
            || cg
                .strip_prefix(cgroup)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    fields.split(',').any(|f| {
        f.strip_prefix("task_memcg=").is_some_and(|cg| {
            // `cgroup` begins with `/`, so each candidate starts at a whole path component
            at(cg) || (anywhere && cg.match_indices('/').any(|(i, _)| at(&cg[i..])))
        })
    })
}

/// The cgroup systemd gives `unit` in `slice` (`a-b.slice` → `*/a.slice/a-b.slice/<unit>`),
/// below systemd's own cgroup (the `*`, see [`is_oom_kill_of`]), for a unit whose
/// `ControlGroup` is gone (systemd clears it when it prunes the cgroup).
pub(super) fn unit_cgroup(slice: &str, unit: &str) -> String {
    let mut path = String::from("*");
    if !slice.is_empty() && slice != "-.slice" {
        let stem = slice.strip_suffix(".slice").unwrap_or(slice);
        let mut prefix = String::new();
        for part in stem.split('-') {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            path.push('/');
            path.push_str(&cgroup_escape(&format!("{prefix}.slice")));
        }
    }
    path.push('/');
    path.push_str(&cgroup_escape(unit));
    path
}

/// systemd's escaping of a cgroup name: a `_` in front of names the kernel's own files
/// could clash with (leading `_` or `.`, `cgroup.*`, `tasks`, …, or `<controller>.<x>`).
fn cgroup_escape(name: &str) -> String {
    const CONTROLLERS: [&str; 13] = [
        "cpu",
        "cpuacct",
        "cpuset",
        "io",
        "blkio",
        "memory",
        "devices",
        "pids",
        "bpf-firewall",
        "bpf-devices",
        "bpf-foreign",
        "bpf-socket-bind",
        "bpf-restrict-network-interfaces",
    ];
    let clashes = name.starts_with(['_', '.'])
        || name.starts_with("cgroup.")
        || ["notify_on_release", "release_agent", "tasks"].contains(&name)
        || name
            .rsplit_once('.')
            .is_some_and(|(head, _)| CONTROLLERS.contains(&head));
    if clashes {
        format!("_{name}")
    } else {
        name.to_string()
    }
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
    fn kernel_oom_records_name_their_cgroup() {
        let cg = "/s.slice/nomad-a-b-1.service";
        let msg = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/s.slice/nomad-a-b-1.service,task_memcg=/s.slice/nomad-a-b-1.service,task=perl,pid=7,uid=0\n";
        let of = super::is_oom_record_of;
        assert!(of(&format!("6,812,5000,-;{msg}"), cg, 4000));
        // a victim in a cgroup below the unit's
        assert!(of(
            &format!(
                "6,812,5000,-;{}",
                msg.replace(
                    "task_memcg=/s.slice/nomad-a-b-1.service",
                    "task_memcg=/s.slice/nomad-a-b-1.service/inner"
                )
            ),
            cg,
            4000
        ));
        // only the whole path: not another slice's unit of that name, not a longer name
        assert!(!of(
            &format!("6,812,5000,-;{msg}"),
            "/nomad-a-b-1.service",
            4000
        ));
        assert!(!of(
            &format!("6,812,5000,-;{msg}"),
            "/s.slice/a-b-1.service",
            4000
        ));
        assert!(!of(
            &format!("6,812,5000,-;{msg}"),
            "/s.slice/nomad-a-b-1.servic",
            4000
        ));
        // a path derived from the slice: below whatever cgroup systemd itself runs in
        let nested = msg.replace("task_memcg=/s.slice", "task_memcg=/ct-1/s.slice");
        let derived = "*/s.slice/nomad-a-b-1.service";
        assert!(of(&format!("6,812,5000,-;{nested}"), derived, 4000));
        assert!(of(&format!("6,812,5000,-;{msg}"), derived, 4000));
        assert!(!of(&format!("6,812,5000,-;{nested}"), cg, 4000));
        assert!(!of(&format!("6,812,5000,-;{msg}"), "*/b-1.service", 4000));
        assert!(!of(
            &format!("6,812,5000,-;{msg}"),
            "*/t.slice/nomad-a-b-1.service",
            4000
        ));
        // written by a process (facility user = 1: prefix 14), not by the kernel
        assert!(!of(&format!("14,812,5000,-;{msg}"), cg, 4000));
        // logged before the run began (an earlier run of an installed unit)
        assert!(!of(&format!("6,812,3999,-;{msg}"), cg, 4000));
        // not an oom-kill record, or not a record at all
        assert!(!of(
            "6,813,5000,-;Memory cgroup out of memory: Killed process 7 task_memcg=/s.slice/nomad-a-b-1.service",
            cg,
            0
        ));
        assert!(!of(msg, cg, 0));
    }

    #[test]
    fn unit_cgroups_follow_their_slice() {
        let cg = super::unit_cgroup;
        assert_eq!(
            cg("nomad_tasks.slice", "t.service"),
            "*/nomad_tasks.slice/t.service"
        );
        assert_eq!(
            cg("a-b-c.slice", "web@x.service"),
            "*/a.slice/a-b.slice/a-b-c.slice/web@x.service"
        );
        assert_eq!(cg("-.slice", "t.service"), "*/t.service");
        assert_eq!(cg("", "t.service"), "*/t.service");
        // names systemd prefixes with `_`
        assert_eq!(cg("cpu.slice", "tasks"), "*/_cpu.slice/_tasks");
        assert_eq!(cg("x.slice", "_a.service"), "*/x.slice/__a.service");
    }

    #[test]
    fn oom_kill_counter() {
        let of = super::oom_kills;
        assert_eq!(of("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), Some(2));
        assert_eq!(of("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(of("oom_kill 0\n"), Some(0));
    }
}
