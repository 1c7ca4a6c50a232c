//! The Nomad side, played with the code Nomad runs. Builds the Go conformance client
//! (`tests/nomad-client`, go-plugin + hcl/v2 + go-cty, stubs generated from our own `proto/`),
//! runs its unit tests (which include the fixture proving it refuses an unnamed `Attr` under
//! `Default`), and runs it against the RELEASE plugin binary inside a private systemd's
//! namespaces, so the plugin finds that systemd on `/run/dbus/system_bus_socket` and the
//! client's tmpfs mounts (secrets/, private/) are visible to it.
//!
//! Needs root, `go` (1.26) and `protoc` with the well-known protos (`protobuf-compiler`,
//! `libprotobuf-dev`); `.ci/run` installs the latter. `NDS_CONFORMANCE_BINARY` overrides the
//! plugin binary (otherwise `cargo build --release --locked` provides it);
//! `NDS_CONFORMANCE_VERBOSE=1` shows go-plugin's log, with the plugin's stderr.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::systemd::{PrivateSystemd, require};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn client_dir() -> PathBuf {
    repo().join("tests/nomad-client")
}

/// The target directory this test binary was built into (`<target>/<profile>/deps/<exe>`), so
/// that `CARGO_TARGET_DIR` is honoured.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"))
}

fn go(args: &[&str]) -> Command {
    let mut cmd = Command::new("go");
    cmd.args(args)
        .current_dir(client_dir())
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOTOOLCHAIN", "local");
    cmd
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn release_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NDS_CONFORMANCE_BINARY") {
        // absolute: entering the namespace's mount namespace moves the working directory to /
        return std::fs::canonicalize(&p).unwrap_or_else(|e| {
            panic!(
                "NDS_CONFORMANCE_BINARY {}: {e}",
                PathBuf::from(&p).display()
            )
        });
    }
    // Under `cargo test --release` the binary cargo built for this test is the release one (and
    // a nested release build would wait forever on the lock this run holds).
    let exe = std::env::current_exe().expect("current_exe");
    if exe.ancestors().nth(2).and_then(Path::file_name) == Some("release".as_ref()) {
        return PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-systemd"));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(
        "cargo build --release",
        Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--bin",
                "nomad-driver-systemd",
            ])
            .current_dir(repo()),
    );
    target_dir().join("release/nomad-driver-systemd")
}

/// Builds the client: stubs from proto/ (never stale: regenerated every run), `go vet`, its
/// unit tests, the binary.
fn build_client() -> PathBuf {
    // Two `cargo test` runs in one tree must not regenerate pb/ under each other's `go build`.
    let lock = std::fs::File::create(target_dir().join("nomad-conformance-client.lock"))
        .expect("lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    let version = go(&["version"]).output();
    match version {
        Ok(o) if o.status.success() => {}
        _ => panic!("the Go toolchain (`go`, 1.26) is missing: the conformance client needs it"),
    }
    run(
        "generate Go stubs from proto/",
        Command::new("bash")
            .arg(client_dir().join("scripts/gen-proto.sh"))
            .env("GOFLAGS", "-buildvcs=false")
            .env("GOTOOLCHAIN", "local"),
    );
    run("go vet", &mut go(&["vet", "./..."]));
    let tests = run("go test", &mut go(&["test", "-count=1", "-v", "./..."]));
    println!("{tests}");
    let bin = target_dir().join("nomad-conformance-client");
    run(
        "go build",
        &mut go(&["build", "-o", bin.to_str().expect("utf-8 path"), "."]),
    );
    drop(lock);
    bin
}

#[test]
fn nomad_side_conformance() {
    if !require() {
        return;
    }
    let plugin = release_binary();
    assert!(plugin.exists(), "{} is missing", plugin.display());
    let client = build_client();
    let sd = PrivateSystemd::start();
    let alloc_root = format!("/var/lib/nds-tests/conformance-{}", std::process::id());
    let mut child = Command::new("nsenter")
        .args(["--target", &sd.pid.to_string()])
        .args(["--mount", "--pid", "--uts", "--ipc", "--"])
        .arg(&client)
        .arg("-binary")
        .arg(&plugin)
        .arg("-repo")
        .arg(repo())
        .args(["-alloc-root", &alloc_root, "-install-units"])
        // NDS_CONFORMANCE_VERBOSE=1: go-plugin's log and the plugin's stderr on stderr
        .args(std::env::var_os("NDS_CONFORMANCE_VERBOSE").map(|_| "-v"))
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("NOMAD_DRIVER_SYSTEMD_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the conformance client");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            // only the client we started, by its pid
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&alloc_root);
    drop(sd);
    println!("{stdout}");
    if !stderr.is_empty() {
        println!("--- client stderr ---\n{stderr}");
    }
    let status = status.expect("the conformance client did not finish within 10 minutes");
    let last = stdout.lines().last().unwrap_or_default();
    let counts: Vec<&str> = last.split_whitespace().collect();
    assert!(
        matches!(counts.as_slice(), [_, "passed,", "0", "failed"]),
        "conformance client: last line {last:?} (exit {status})"
    );
    assert!(status.success(), "conformance client exit {status}");
}
