//! Plays the Nomad agent's side of go-plugin: launches the real binary with Nomad's
//! environment, checks the handshake and every stderr line, connects over the unix socket, and
//! kills the plugin the way go-plugin does.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nomad_driver_systemd::nomad_standin::client;
use nomad_driver_systemd::proto::base::base_plugin_client::BasePluginClient;
use nomad_driver_systemd::proto::drivers::driver_client::DriverClient;
use nomad_driver_systemd::proto::plugin::Empty;
use nomad_driver_systemd::proto::plugin::grpc_controller_client::GrpcControllerClient;
use tonic::transport::Channel;

pub use nomad_driver_systemd::plugin::{
    MAGIC_COOKIE_KEY as COOKIE_KEY, MAGIC_COOKIE_VALUE as COOKIE,
};

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-systemd"))
}

/// A running plugin process and a client connection to it.
pub struct Plugin {
    pub child: Child,
    pub socket: PathBuf,
    pub channel: Channel,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Anything written to stdout after the handshake (must stay empty).
    pub stdout_extra: Arc<Mutex<String>>,
    /// exec → handshake line read.
    pub handshake_time: Duration,
}

/// Checks one stderr line against what the Nomad agent's log reader accepts
/// (docs/nomad-contract.md, *Logs on stderr*).
pub fn check_hclog_line(line: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let level = v["@level"]
        .as_str()
        .ok_or(format!("@level not a string: {line}"))?;
    if !["trace", "debug", "info", "warn", "error"].contains(&level) {
        return Err(format!("bad @level {level}: {line}"));
    }
    if !v["@message"].is_string() {
        return Err(format!("@message not a string: {line}"));
    }
    let ts = v["@timestamp"]
        .as_str()
        .ok_or(format!("@timestamp not a string: {line}"))?;
    // 2006-01-02T15:04:05.000000Z
    let ok = ts.len() == 27
        && ts.as_bytes()[19] == b'.'
        && ts.ends_with('Z')
        && ts[20..26].bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!("bad @timestamp {ts}: {line}"));
    }
    Ok(())
}

/// The environment Nomad gives a plugin (docs/nomad-contract.md, *Launch and handshake*), plus
/// `extra`, at debug log level.
pub fn nomad_command(extra: &[(&str, String)]) -> Command {
    let mut cmd = client::nomad_command(&binary(), extra);
    cmd.arg("--log-level=debug");
    cmd
}

impl Plugin {
    /// Launches the binary and connects; panics with stderr on failure.
    pub async fn launch(extra: &[(&str, String)]) -> Self {
        Self::launch_command(nomad_command(extra)).await
    }

    /// Launches `cmd` (which runs the binary, e.g. through a wrapper) and connects.
    pub async fn launch_command(mut cmd: Command) -> Self {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn plugin");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout_extra = Arc::new(Mutex::new(String::new()));
        let extra_sink = Arc::clone(&stdout_extra);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // like go-plugin: keep draining (and discarding) stdout, remembering anything
            let mut rest = String::new();
            while reader.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {
                extra_sink.lock().unwrap().push_str(&rest);
                rest.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no handshake; stderr: {:?}", stderr.lock().unwrap()));
        let handshake_time = started.elapsed();
        let socket = client::parse_handshake(&line).unwrap_or_else(|e| panic!("{e}"));
        let channel = client::connect(&socket)
            .await
            .expect("connect to plugin socket");
        Self {
            child,
            socket,
            channel,
            stderr,
            stdout_extra,
            handshake_time,
        }
    }

    pub fn driver(&self) -> DriverClient<Channel> {
        DriverClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    pub fn base(&self) -> BasePluginClient<Channel> {
        BasePluginClient::new(self.channel.clone())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// go-plugin's Kill: Controller/Shutdown, close, wait ≤ 2 s, else SIGKILL. Returns whether
    /// the exit was graceful (status 0 within 2 s), after checking every stderr line.
    pub async fn kill(mut self) -> bool {
        let _ = GrpcControllerClient::new(self.channel.clone())
            .shutdown(Empty {})
            .await;
        // close our connection, as go-plugin does before waiting for the exit
        drop(std::mem::replace(
            &mut self.channel,
            tonic::transport::Endpoint::from_static("http://unused").connect_lazy(),
        ));
        let deadline = Instant::now() + Duration::from_secs(2);
        let graceful = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        std::thread::sleep(Duration::from_millis(50));
        check_stderr(&self.stderr.lock().unwrap());
        assert_eq!(
            *self.stdout_extra.lock().unwrap(),
            "",
            "stdout after the handshake"
        );
        graceful
    }

    /// SIGKILL with no warning (a plugin crash).
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        check_stderr(&self.stderr.lock().unwrap());
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

pub fn check_stderr(lines: &[String]) {
    for l in lines {
        if let Err(e) = check_hclog_line(l) {
            panic!("stderr line Nomad would mishandle: {e}");
        }
    }
}

impl Drop for Plugin {
    /// A test that fails midway must not leave its plugin running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
