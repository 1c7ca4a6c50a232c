//! The go-plugin client side: Nomad's environment for the plugin, the handshake line, and a
//! gRPC channel over the plugin's unix socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::plugin::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};

/// The plugin command with the environment Nomad gives it (docs/nomad-contract.md, *Launch and
/// handshake*) plus `extra`.
pub fn nomad_command(binary: &Path, extra: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "2")
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Parses the handshake line as go-plugin's client does; returns the socket path.
pub fn parse_handshake(line: &str) -> Result<PathBuf, String> {
    let fields: Vec<&str> = line.trim().split('|').collect();
    match fields.as_slice() {
        ["1", "2", "unix", addr, "grpc", ""] => Ok(PathBuf::from(addr)),
        _ => Err(format!("unexpected handshake line {line:?}")),
    }
}

/// A gRPC channel over the plugin's socket (`:authority` is a dummy, as in go-plugin).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://unused")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn handshake_lines() {
        assert_eq!(
            super::parse_handshake("1|2|unix|/tmp/plugin1|grpc|\n").unwrap(),
            std::path::PathBuf::from("/tmp/plugin1")
        );
        assert!(super::parse_handshake("1|2|unix|/tmp/p|netrpc|").is_err());
        assert!(super::parse_handshake("hello").is_err());
    }
}
