//! journald's native protocol, for the log forwarder of `logs = "both"` (ARCHITECTURE.md,
//! *Task logs*): one datagram per entry to `/run/systemd/journal/socket`, and the newest entry
//! of a match read back with `journalctl`, so that the journal itself is the forwarder's cursor.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Longest MESSAGE sent in one entry; longer lines are split. Well below the datagram size
/// journald accepts without a memfd.
pub const MAX_MESSAGE: usize = 48 * 1024;

/// One entry in the native format: `KEY=value\n`, or, for values with a newline,
/// `KEY\n<u64 LE length><value>\n`.
pub fn encode(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        if v.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Where journald listens and where its files are, for one systemd (the host's, or a private
/// one's seen through `/proc/<pid>/root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalPaths {
    pub socket: PathBuf,
    /// `None`: the default journal (`journalctl` without `-D`).
    pub directory: Option<PathBuf>,
}

impl JournalPaths {
    /// From systemd's runtime directory (normally `/run/systemd`).
    pub fn from_runtime_dir(runtime_dir: &Path) -> Self {
        let socket = runtime_dir.join("journal/socket");
        let directory = (runtime_dir != Path::new("/run/systemd"))
            .then(|| runtime_dir.parent().map(|run| run.join("log/journal")))
            .flatten();
        Self { socket, directory }
    }
}

impl Default for JournalPaths {
    fn default() -> Self {
        Self::from_runtime_dir(Path::new("/run/systemd"))
    }
}

/// A connectionless sender to journald.
pub struct Sender {
    sock: UnixDatagram,
    path: PathBuf,
    /// `path` as a socket address, for `sendmmsg`.
    addr: libc::sockaddr_un,
}

/// Datagrams handed to the kernel per `sendmmsg` call.
pub const BATCH: usize = 64;

impl Sender {
    pub fn new(path: &Path) -> io::Result<Self> {
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or(1);
        let bytes = path.as_os_str().as_encoded_bytes();
        if bytes.len() >= addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("journal socket path too long: {}", path.display()),
            ));
        }
        for (d, b) in addr.sun_path.iter_mut().zip(bytes) {
            *d = libc::c_char::from_ne_bytes([*b]);
        }
        Ok(Self {
            sock: UnixDatagram::unbound()?,
            path: path.to_path_buf(),
            addr,
        })
    }

    pub fn send(&self, fields: &[(&str, &[u8])]) -> io::Result<()> {
        self.sock.send_to(&encode(fields), &self.path).map(|_| ())
    }

    /// Sends the datagrams `buf[ends[i-1]..ends[i]]` (the first from 0) in `sendmmsg` calls of
    /// at most [`BATCH`]; how many were sent, and the error that stopped the rest, if any.
    pub fn send_many(&self, buf: &[u8], ends: &[usize]) -> (usize, Option<io::Error>) {
        let mut sent = 0;
        let namelen =
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).unwrap_or(0);
        while sent < ends.len() {
            let n = (ends.len() - sent).min(BATCH);
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let start = if sent + i == 0 { 0 } else { ends[sent + i - 1] };
                let end = ends[sent + i];
                iov[i].iov_base = buf[start..end].as_ptr() as *mut libc::c_void;
                iov[i].iov_len = end - start;
                let h = &mut msgs[i].msg_hdr;
                h.msg_name = std::ptr::addr_of!(self.addr) as *mut libc::c_void;
                h.msg_namelen = namelen;
                h.msg_iov = std::ptr::addr_of_mut!(iov[i]);
                h.msg_iovlen = 1;
            }
            // SAFETY: every header points at a live iovec over `buf` and at `self.addr`, all
            // outliving the call; the kernel only reads them (and writes msg_len).
            let r = unsafe {
                libc::sendmmsg(
                    std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                    msgs.as_mut_ptr(),
                    libc::c_uint::try_from(n).unwrap_or(1),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return (sent, Some(e));
            }
            match usize::try_from(r) {
                Ok(k) if k > 0 => sent += k,
                _ => return (sent, Some(io::Error::from(io::ErrorKind::WouldBlock))),
            }
        }
        (sent, None)
    }
}

/// The cgroup path of a `/proc/<pid>/cgroup`: the unified line (`0::`), else the v1 hierarchy
/// systemd names its units in.
fn cgroup_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/")
        .or_else(|| {
            proc_cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })
}

/// The unit journald files a process's messages under, from its `/proc/<pid>/cgroup` and PID 1's
/// as journald reads them: below systemd's root (PID 1's cgroup without `/init.scope`), the
/// first path component that is not a slice; `None` outside a unit.
pub fn own_unit(proc_self_cgroup: &str, proc_1_cgroup: &str) -> Option<String> {
    let path = cgroup_path(proc_self_cgroup)?;
    let root = cgroup_path(proc_1_cgroup).unwrap_or("/");
    let root = root.strip_suffix("/init.scope").unwrap_or(root);
    let path = path
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(path);
    let unit = path
        .split('/')
        .find(|c| !c.is_empty() && !c.ends_with(".slice"))?;
    (unit.ends_with(".service") || unit.ends_with(".scope")).then(|| unit.to_string())
}

/// Whether journald applies its default rate limit to `unit`: systemd tells journald a unit's
/// own `LogRateLimitIntervalSec=` through `<runtime_dir>/units/log-rate-limit-interval:<unit>`,
/// and only when it is not 0 (`unit_export_log_rate_limit_interval` in systemd's `unit.c`;
/// journald reads it in `client_context_read_log_rate_limit_interval`).
pub fn default_rate_limit(runtime_dir: &Path, unit: &str) -> bool {
    std::fs::symlink_metadata(runtime_dir.join(format!("units/log-rate-limit-interval:{unit}")))
        .is_err()
}

/// `field` of the newest entry matching every `KEY=value` of `matches` that `accept` takes
/// (given the entry as `journalctl -o json` prints it, with `_PID`, `_UID` and `_SYSTEMD_UNIT`,
/// the fields journald sets itself and no client can); `None` if there is none or `journalctl`
/// cannot be run. Reads newest first and stops at the first accepted entry.
pub fn newest_field(
    paths: &JournalPaths,
    matches: &[String],
    field: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> Option<String> {
    use std::io::BufRead;
    let mut cmd = Command::new("journalctl");
    if let Some(d) = &paths.directory {
        cmd.arg("-D").arg(d);
    }
    let mut child = cmd
        .args(["--no-pager", "-o", "json", "-r", "--output-fields"])
        .arg(format!("{field},_PID,_UID,_SYSTEMD_UNIT"))
        .args(matches)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut found = None;
    if let Some(out) = child.stdout.take() {
        for line in io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if accept(&v) {
                found = v.get(field).and_then(|f| f.as_str()).map(str::to_string);
                break;
            }
        }
    }
    // journalctl, our child, may still be printing older entries
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_format() {
        assert_eq!(
            encode(&[("MESSAGE", b"hi"), ("PRIORITY", b"6")]),
            b"MESSAGE=hi\nPRIORITY=6\n"
        );
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(encode(&[("MESSAGE", b"a\nb")]), want);
    }

    #[test]
    fn own_unit_is_the_first_component_below_the_slices() {
        let init = "0::/init.scope\n";
        assert_eq!(
            own_unit("0::/system.slice/nomad.service\n", init).as_deref(),
            Some("nomad.service")
        );
        let hybrid = "12:memory:/system.slice/nomad.service\n1:name=systemd:/system.slice/nomad.service\n0::/system.slice/nomad.service\n";
        assert_eq!(own_unit(hybrid, init).as_deref(), Some("nomad.service"));
        let v1 = "4:cpu:/x\n1:name=systemd:/user.slice/user-0.slice/session-3.scope\n";
        assert_eq!(
            own_unit(v1, "1:name=systemd:/init.scope\n").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(own_unit("0::/\n", init), None);
        // a systemd whose root is a subtree (the tests' private one)
        let sub = "0::/nds-test-1/init.scope\n";
        assert_eq!(own_unit(sub, sub).as_deref(), Some("init.scope"));
        assert_eq!(own_unit("0::/nds-test-1\n", sub), None);
        assert_eq!(
            own_unit("0::/nds-test-1/system.slice/nomad.service\n", sub).as_deref(),
            Some("nomad.service")
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("units")).unwrap();
        assert!(default_rate_limit(dir.path(), "nomad.service"));
        std::os::unix::fs::symlink(
            "1",
            dir.path()
                .join("units/log-rate-limit-interval:nomad.service"),
        )
        .unwrap();
        assert!(!default_rate_limit(dir.path(), "nomad.service"));
    }

    #[test]
    fn paths_follow_the_runtime_dir() {
        let host = JournalPaths::default();
        assert_eq!(host.socket, Path::new("/run/systemd/journal/socket"));
        assert_eq!(host.directory, None);
        let private = JournalPaths::from_runtime_dir(Path::new("/proc/7/root/run/systemd"));
        assert_eq!(
            private.socket,
            Path::new("/proc/7/root/run/systemd/journal/socket")
        );
        assert_eq!(
            private.directory.as_deref(),
            Some(Path::new("/proc/7/root/run/log/journal"))
        );
    }
}
