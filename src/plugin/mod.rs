//! The go-plugin side of the wire (docs/nomad-contract.md, *Launch and handshake*): cookie check, protocol negotiation, the unix
//! socket, the one handshake line on stdout, and `serve(listener, shutdown)`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::driver::Driver;
use crate::grpc;
use crate::systemd::Systemd;

pub const MAGIC_COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
/// go-plugin's core protocol version.
pub const CORE_PROTOCOL: u32 = 1;
/// Nomad's plugin protocol version.
pub const APP_PROTOCOL: u32 = 2;

/// What a human sees when running the binary by hand.
pub const NOT_A_PLUGIN_HOST: &str = "This binary is a plugin for HashiCorp Nomad (task driver \"systemd\"). \
It is not meant to be run directly: put it in the Nomad agent's plugin_dir and add a \
plugin \"nomad-driver-systemd\" {} block. Operator commands: `nomad-driver-systemd validate` and \
`nomad-driver-systemd list` (see --help).";

/// Reads a variable from an environment snapshot.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// True when Nomad (go-plugin) launched us.
pub fn launched_by_nomad(env: Env<'_>) -> bool {
    env(MAGIC_COOKIE_KEY).as_deref() == Some(MAGIC_COOKIE_VALUE)
}

/// Picks protocol 2 from `PLUGIN_PROTOCOL_VERSIONS`.
pub fn negotiate(env: Env<'_>) -> Result<u32, String> {
    let offered = env("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_default();
    if offered
        .split(',')
        .any(|v| v.trim().parse::<u32>() == Ok(APP_PROTOCOL))
    {
        Ok(APP_PROTOCOL)
    } else {
        Err(format!(
            "plugin protocol version {APP_PROTOCOL} is not among those offered by the host ({offered:?})"
        ))
    }
}

/// `<PLUGIN_UNIX_SOCKET_DIR | TMPDIR | /tmp>/plugin<random>`.
/// Raises the soft `RLIMIT_NOFILE` to the hard limit, returning `(before, after)`. Nomad's
/// agent (Go) raises its own soft limit but gives the processes it starts the limit it was
/// started with (Go's `syscall` restores the original soft limit in `forkExec`), typically
/// 1024; each task's stats stream holds up to 11 cgroup files open on cgroup v1, so 70-odd
/// v1 tasks would run out.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

pub fn socket_path(env: Env<'_>) -> PathBuf {
    let dir = env("PLUGIN_UNIX_SOCKET_DIR")
        .filter(|d| !d.is_empty())
        .or_else(|| env("TMPDIR").filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/tmp".into());
    let mut buf = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map(|()| u64::from_ne_bytes(buf))
        .unwrap_or_else(|_| u64::from(std::process::id()) << 20 ^ nanos());
    Path::new(&dir).join(format!("plugin{}", random % 10_000_000_000))
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}

/// Binds the socket (removing a stale file first) and applies `PLUGIN_UNIX_SOCKET_GROUP`.
pub fn listen(path: &Path, env: Env<'_>) -> std::io::Result<UnixListener> {
    if path.as_os_str().len() >= 108 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is too long for a unix socket",
                path.display()
            ),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    if let Some(group) = env("PLUGIN_UNIX_SOCKET_GROUP").filter(|g| !g.is_empty()) {
        set_group(path, &group)?;
    }
    Ok(listener)
}

fn set_group(path: &Path, group: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let gid = match group.parse::<u32>() {
        Ok(g) => g,
        Err(_) => lookup_group(group).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("group {group:?} not found"),
            )
        })?,
    };
    std::os::unix::fs::chown(path, None, Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
}

fn lookup_group(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.split(':');
        (parts.next()? == name).then_some(())?;
        parts.nth(1)?.parse().ok()
    })
}

/// The handshake line (without newline).
pub fn handshake_line(socket: &Path) -> String {
    format!(
        "{CORE_PROTOCOL}|{APP_PROTOCOL}|unix|{}|grpc|",
        socket.display()
    )
}

/// Writes the handshake exactly once and flushes; stdout is never written again.
pub fn write_handshake(socket: &Path) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", handshake_line(socket))?;
    out.flush()
}

/// Serves every service on `listener` until `shutdown` fires (GRPCController/Shutdown does).
pub async fn serve<S: Systemd>(
    listener: UnixListener,
    driver: Arc<Driver<S>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;
    let routes = grpc::routes(driver, shutdown.clone()).add_service(health);
    let stop = shutdown.clone();
    tonic::transport::Server::builder()
        // every task holds WaitTask and TaskStats streams open (docs/nomad-contract.md,
        // *Concurrent streams*)
        .max_concurrent_streams(u32::MAX)
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            stop.cancelled().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn cookie_and_protocol() {
        let ok = env_of(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "1,2"),
        ]);
        assert!(launched_by_nomad(&ok));
        assert_eq!(negotiate(&ok), Ok(2));
        let wrong = env_of(&[
            (MAGIC_COOKIE_KEY, "nope"),
            ("PLUGIN_PROTOCOL_VERSIONS", "3"),
        ]);
        assert!(!launched_by_nomad(&wrong));
        assert!(negotiate(&wrong).is_err());
    }

    #[test]
    fn socket_dir_precedence() {
        let both = env_of(&[("PLUGIN_UNIX_SOCKET_DIR", "/a"), ("TMPDIR", "/b")]);
        assert!(socket_path(&both).starts_with("/a"));
        let tmp = env_of(&[("TMPDIR", "/b")]);
        assert!(socket_path(&tmp).starts_with("/b"));
        let none = env_of(&[]);
        assert!(socket_path(&none).starts_with("/tmp"));
        assert!(
            socket_path(&none)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("plugin")
        );
    }

    #[test]
    fn handshake_format() {
        assert_eq!(
            handshake_line(Path::new("/tmp/plugin123")),
            "1|2|unix|/tmp/plugin123|grpc|"
        );
    }
}
