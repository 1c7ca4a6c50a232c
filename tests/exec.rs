//! ExecTask and ExecTaskStreaming into a running task (the cases of Nomad's own exec harness,
//! docs/nomad-contract.md, *How Nomad tests drivers*), group network namespaces, volumes and devices, on a real private systemd through
//! the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::nomad::{Alloc, JobConfig};
use common::session::{Session, plugin_config};
use common::systemd::require;
use nomad_driver_systemd::proto::drivers::{
    CapabilitiesRequest, Device, ExecTaskRequest, ExecTaskResponse, ExecTaskStreamingIoOperation,
    ExecTaskStreamingRequest, ExecTaskStreamingResponse, Mount, NetworkIsolationSpec,
    exec_task_streaming_request::{Setup, TerminalSize},
    network_isolation_spec::NetworkIsolationMode,
};
use tokio_stream::StreamExt;
use tonic::Code;

const SECS: Duration = Duration::from_secs(10);
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

async fn session() -> Option<Session> {
    if !require() {
        return None;
    }
    Some(Session::new(Vec::new()).await)
}

/// Waits for a host file to have content.
async fn read_eventually(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// ExecTask, bounded so that a hang fails with the plugin's log.
async fn exec_argv(
    s: &Session,
    id: &str,
    command: Vec<String>,
    timeout: Option<Duration>,
) -> Result<ExecTaskResponse, tonic::Status> {
    let mut client = s.plugin().driver();
    let call = client.exec_task(ExecTaskRequest {
        task_id: id.into(),
        command,
        timeout: timeout.map(|t| t.try_into().unwrap()),
    });
    s.bounded("ExecTask", call)
        .await
        .map(tonic::Response::into_inner)
}

async fn exec(s: &Session, id: &str, script: &str, timeout: Duration) -> ExecTaskResponse {
    exec_argv(s, id, sh(script), Some(timeout))
        .await
        .unwrap_or_else(|e| panic!("ExecTask {script:?}: {e}"))
}

fn stdin(data: &str, close: bool) -> ExecTaskStreamingRequest {
    ExecTaskStreamingRequest {
        stdin: Some(ExecTaskStreamingIoOperation {
            data: data.as_bytes().to_vec(),
            close,
        }),
        ..ExecTaskStreamingRequest::default()
    }
}

fn setup(id: &str, command: Vec<String>, tty: bool) -> ExecTaskStreamingRequest {
    ExecTaskStreamingRequest {
        setup: Some(Setup {
            task_id: id.into(),
            command,
            tty,
        }),
        ..ExecTaskStreamingRequest::default()
    }
}

/// The messages Nomad's conformance harness sends: setup, two resizes (tty), a heartbeat,
/// stdin, and stdin close (no tty only); then the client half-closes.
fn conformance_input(
    id: &str,
    script: &str,
    tty: bool,
    data: &str,
) -> Vec<ExecTaskStreamingRequest> {
    let mut msgs = vec![setup(id, sh(script), tty)];
    if tty {
        for (height, width) in [(50, 40), (100, 100)] {
            msgs.push(ExecTaskStreamingRequest {
                tty_size: Some(TerminalSize { height, width }),
                ..ExecTaskStreamingRequest::default()
            });
        }
    }
    // a heartbeat: every field unset
    msgs.push(ExecTaskStreamingRequest::default());
    msgs.push(stdin(data, false));
    if !tty {
        msgs.push(stdin("", true));
    }
    msgs
}

#[derive(Debug)]
struct Streamed {
    stdout: String,
    stderr: String,
    exit_code: i32,
}

/// Checks the frame order (data, both closes, exited last) and collects the output.
fn collect(frames: &[ExecTaskStreamingResponse]) -> Streamed {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut out_closed, mut err_closed, mut exit) = (false, false, None);
    for (i, f) in frames.iter().enumerate() {
        assert!(exit.is_none(), "frame after exited: {frames:?}");
        if let Some(o) = &f.stdout {
            assert!(!out_closed, "stdout after its close: {frames:?}");
            assert!(o.data.len() <= 1024);
            out.extend_from_slice(&o.data);
            out_closed |= o.close;
        }
        if let Some(e) = &f.stderr {
            assert!(!err_closed, "stderr after its close: {frames:?}");
            err.extend_from_slice(&e.data);
            err_closed |= e.close;
        }
        if f.exited {
            assert!(
                out_closed && err_closed,
                "exited before closes at {i}: {frames:?}"
            );
            exit = Some(
                f.result
                    .as_ref()
                    .expect("exited frame carries result")
                    .exit_code,
            );
        }
    }
    Streamed {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        exit_code: exit.expect("an exited frame"),
    }
}

async fn stream(s: &Session, msgs: Vec<ExecTaskStreamingRequest>) -> Streamed {
    let run = async {
        let mut frames = s
            .plugin()
            .driver()
            .exec_task_streaming(tokio_stream::iter(msgs))
            .await
            .expect("ExecTaskStreaming")
            .into_inner();
        let mut all = Vec::new();
        while let Some(f) = frames.next().await {
            all.push(f.expect("frame"));
        }
        all
    };
    let frames = match tokio::time::timeout(CASE_TIMEOUT, run).await {
        Ok(f) => f,
        Err(_) => panic!(
            "exec stream hung; plugin log:\n{}",
            s.plugin().stderr_text()
        ),
    };
    collect(&frames)
}

/// A task that records its uid, gid and its view of /tmp, then idles.
const IDLE_TASK: &str = "id -u > /local/uid; id -g > /local/gid; \
    while true; do { echo listing; ls /tmp; } > /local/tmpls.new; mv /local/tmpls.new /local/tmpls; sleep 0.2; done";

/// One of Nomad's exec conformance cases (`plugins/drivers/testutils/exec_testing.go`).
struct Case {
    name: &'static str,
    script: &'static str,
    tty: bool,
    stdin: &'static str,
    stdout: &'static str,
    /// `None`: stty's "Inappropriate ioctl" complaint about standard input.
    stderr: Option<&'static str>,
    exit_code: i32,
}

const CASES: &[Case] = &[
    Case {
        name: "notty: basic",
        script: "echo hello stdout; echo hello stderr >&2; exit 43",
        tty: false,
        stdin: "",
        stdout: "hello stdout\n",
        stderr: Some("hello stderr\n"),
        exit_code: 43,
    },
    Case {
        name: "notty: streaming",
        script: "for n in 1 2 3; do echo $n; sleep 1; done",
        tty: false,
        stdin: "",
        stdout: "1\n2\n3\n",
        stderr: Some(""),
        exit_code: 0,
    },
    Case {
        name: "notty: stty check",
        script: "stty size",
        tty: false,
        stdin: "",
        stdout: "",
        stderr: None,
        exit_code: 1,
    },
    Case {
        name: "notty: stdin passing",
        script: "echo hello from command; head -n1",
        tty: false,
        stdin: "hello from stdin\n",
        stdout: "hello from command\nhello from stdin\n",
        stderr: Some(""),
        exit_code: 0,
    },
    Case {
        name: "tty: basic",
        script: "echo hello stdout; echo hello stderr >&2; exit 43",
        tty: true,
        stdin: "",
        stdout: "hello stdout\r\nhello stderr\r\n",
        stderr: Some(""),
        exit_code: 43,
    },
    Case {
        name: "tty: streaming",
        script: "for n in 1 2 3; do echo $n; sleep 1; done",
        tty: true,
        stdin: "",
        stdout: "1\r\n2\r\n3\r\n",
        stderr: Some(""),
        exit_code: 0,
    },
    Case {
        name: "tty: stty check",
        script: "sleep 1; stty size",
        tty: true,
        stdin: "",
        stdout: "100 100\r\n",
        stderr: Some(""),
        exit_code: 0,
    },
    Case {
        name: "tty: stdin passing",
        script: "head -n1",
        tty: true,
        stdin: "hello from stdin\n",
        // echoed by the terminal, then printed by head
        stdout: "hello from stdin\r\nhello from stdin\r\n",
        stderr: Some(""),
        exit_code: 0,
    },
    Case {
        name: "tty: children processes",
        script: "(( sleep 3; echo from background ) & ); echo from main; exec sleep 1",
        tty: true,
        stdin: "",
        // only the lead process is waited for
        stdout: "from main\r\n",
        stderr: Some(""),
        exit_code: 0,
    },
];

#[tokio::test]
async fn exec_streaming_conformance() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("web");
    let task = alloc.task_config(1, &JobConfig::sh(IDLE_TASK));
    s.start(task.clone()).await.unwrap();
    read_eventually(&alloc.dir.join("web/local/tmpls")).await;
    let caps = s
        .plugin()
        .driver()
        .capabilities(CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .unwrap();
    assert!(caps.exec);

    for c in CASES {
        let r = stream(&s, conformance_input(&task.id, c.script, c.tty, c.stdin)).await;
        assert_eq!(r.exit_code, c.exit_code, "{}: {r:?}", c.name);
        assert_eq!(r.stdout, c.stdout, "{}: {r:?}", c.name);
        match c.stderr {
            Some(e) => assert_eq!(r.stderr, e, "{}: {r:?}", c.name),
            // coreutils quotes the name in some versions: stty: 'standard input': ...
            None => assert!(
                r.stderr.starts_with("stty: ")
                    && r.stderr
                        .trim_end_matches('\n')
                        .trim_end_matches("Inappropriate ioctl for device")
                        .trim_end_matches(": ")
                        .trim_matches('\'')
                        .ends_with("standard input"),
                "{}: {r:?}",
                c.name
            ),
        }
    }

    // fs isolation: a file made in the task's /tmp is the task's, not the host's
    let text = "hello from the other side";
    let made = stream(
        &s,
        conformance_input(
            &task.id,
            &format!("FILE=$(mktemp); echo \"$FILE\"; echo {text:?} >> \"$FILE\""),
            false,
            "",
        ),
    )
    .await;
    assert_eq!(made.exit_code, 0, "{made:?}");
    let file = made.stdout.trim().to_string();
    assert!(file.starts_with("/tmp/"), "{made:?}");
    assert!(
        !Path::new(&file).exists(),
        "{file} leaked to the host's /tmp"
    );
    let back = stream(
        &s,
        conformance_input(&task.id, &format!("cat {file:?}"), false, ""),
    )
    .await;
    assert_eq!((back.exit_code, back.stdout.trim()), (0, text), "{back:?}");
    let name = file.trim_start_matches("/tmp/");
    let mut seen = false;
    for _ in 0..100 {
        seen = std::fs::read_to_string(alloc.dir.join("web/local/tmpls"))
            .is_ok_and(|l| l.lines().any(|l| l == name));
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the task's own /tmp does not show {name}");

    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn exec_runs_as_the_task_in_its_context() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("ctx");
    // a program that exists only inside the task: /local/bin is the task dir's bind mount
    let bin = alloc.dir.join("ctx/local/bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("hello-task"),
        "#!/bin/sh\necho hello from $0 as $(id -u)\n",
    )
    .unwrap();
    for p in [bin.clone(), bin.join("hello-task")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut task = alloc.task_config(1, &JobConfig::sh(IDLE_TASK));
    let path = task.env["PATH"].clone();
    task.env.insert("PATH".into(), format!("/local/bin:{path}"));
    s.start(task.clone()).await.unwrap();
    let uid = read_eventually(&alloc.dir.join("ctx/local/uid")).await;
    let gid = read_eventually(&alloc.dir.join("ctx/local/gid")).await;
    assert_ne!(uid.trim(), "0", "the task runs with DynamicUser");

    let r = exec(
        &s,
        &task.id,
        "id -u; id -g; pwd; printenv NOMAD_ALLOC_ID; cat /proc/self/cgroup; echo oops >&2; exit 3",
        SECS,
    )
    .await;
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], uid.trim(), "{out}");
    assert_eq!(lines[1], gid.trim(), "{out}");
    assert_eq!(lines[2], "/local", "{out}");
    assert_eq!(lines[3], alloc.id, "{out}");
    let unit = s.sd.nomad_units().pop().expect("the task's unit");
    assert!(
        lines[4..].iter().any(|l| l.ends_with(&format!("/{unit}"))),
        "exec is not in the unit's cgroup: {out}"
    );
    assert_eq!(r.stderr, b"oops\n");
    assert_eq!(r.result.unwrap().exit_code, 3);

    // no_new_privs and the task's capability bounding set
    let r = exec(
        &s,
        &task.id,
        "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status",
        SECS,
    )
    .await;
    let status = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");

    // timeout: the command is killed and the result says so
    let started = std::time::Instant::now();
    let r = exec(
        &s,
        &task.id,
        "echo before; sleep 30",
        Duration::from_millis(500),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let res = r.result.unwrap();
    assert_eq!((res.signal, res.exit_code), (9, 137), "{res:?}");
    assert_eq!(r.stdout, b"before\n");

    // a bare program name is looked up in the task's PATH, inside the task's mount namespace
    let r = exec_argv(&s, &task.id, vec!["hello-task".into()], None)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        format!("hello from /local/bin/hello-task as {}", uid.trim())
    );

    // with a tty, stdin close sends the terminal's end-of-file
    let r = stream(
        &s,
        vec![
            setup(&task.id, vec!["cat".into()], true),
            stdin("hi\n", false),
            stdin("", true),
        ],
    )
    .await;
    assert_eq!(
        (r.exit_code, r.stdout.as_str()),
        (0, "hi\r\nhi\r\n"),
        "{r:?}"
    );

    // a missing program is an error status, not a result
    let err = exec_argv(&s, &task.id, vec!["/no/such/program".into()], None)
        .await
        .unwrap_err();
    assert!(err.message().contains("/no/such/program"), "{err:?}");

    // cancelling a streaming session kills the command
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(setup(
        &task.id,
        sh("echo $$ > /tmp/exec.pid; echo started; exec sleep 1000"),
        false,
    ))
    .await
    .unwrap();
    let mut client = s.plugin().driver();
    let call = client.exec_task_streaming(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut frames = s
        .bounded("ExecTaskStreaming", call)
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("started") {
        let f = tokio::time::timeout(SECS, frames.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        out.extend(f.stdout.map(|o| o.data).unwrap_or_default());
    }
    let alive = "kill -0 $(cat /tmp/exec.pid)";
    assert_eq!(
        exec(&s, &task.id, alive, SECS)
            .await
            .result
            .unwrap()
            .exit_code,
        0
    );
    // a half-close is no cancellation: the command keeps running
    drop(tx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        exec(&s, &task.id, alive, SECS)
            .await
            .result
            .unwrap()
            .exit_code,
        0
    );
    // the client goes away: the RPC is cancelled
    drop(frames);
    let mut gone = false;
    for _ in 0..100 {
        if exec(&s, &task.id, alive, SECS)
            .await
            .result
            .unwrap()
            .exit_code
            != 0
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the cancelled exec is still running");

    // a stream must start with setup
    let mut client = s.plugin().driver();
    let call = client.exec_task_streaming(tokio_stream::iter(vec![stdin("x", false)]));
    let err = s.bounded("ExecTaskStreaming", call).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // unknown and exited tasks
    let err = exec_argv(&s, "nope", sh("true"), None).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    s.stop(&task.id, SECS, "SIGKILL").await;
    s.wait(&task.id).await;
    let err = exec_argv(&s, &task.id, sh("true"), None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{err:?}");

    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn group_network_namespace_is_joined() {
    let Some(s) = session().await else { return };
    let caps = s
        .plugin()
        .driver()
        .capabilities(CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .unwrap();
    assert!(
        caps.network_isolation_modes
            .contains(&(NetworkIsolationMode::Group as i32))
    );
    // made where the private systemd (playing the host) sees it, as Nomad's network hook does
    let name = format!("nds-test-{}", &common::nomad::alloc_id().unwrap()[..8]);
    s.sd.exec(&["ip", "netns", "add", &name]);
    let alloc = Alloc::new("net");
    let mut task = alloc.task_config(
        1,
        &JobConfig::sh("cat /proc/net/dev > /local/netdev.new && mv /local/netdev.new /local/netdev; exec sleep 1000"),
    );
    task.network_isolation_spec = Some(NetworkIsolationSpec {
        mode: NetworkIsolationMode::Group as i32,
        path: format!("/var/run/netns/{name}"),
        ..NetworkIsolationSpec::default()
    });
    s.start(task.clone()).await.unwrap();
    let ifaces = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_once(':').map(|(i, _)| i.trim().to_string()))
            .filter(|i| !i.contains('|'))
            .collect()
    };
    let dev = read_eventually(&alloc.dir.join("net/local/netdev")).await;
    assert_eq!(ifaces(&dev), ["lo"], "{dev}");
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert!(ifaces(&host).len() > 1, "the host has more than lo: {host}");
    // exec joins the same namespace
    let r = exec(&s, &task.id, "cat /proc/net/dev", SECS).await;
    assert_eq!(ifaces(&String::from_utf8_lossy(&r.stdout)), ["lo"]);
    s.destroy(&task.id).await;
    s.sd.exec(&["ip", "netns", "delete", &name]);
    s.finish().await;
}

#[tokio::test]
async fn volumes_honour_read_only() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("vol");
    let (ro, rw) = (alloc.dir.join("vol-ro"), alloc.dir.join("vol-rw"));
    for d in [&ro, &rw] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::write(ro.join("hello"), "from the host\n").unwrap();
    let script = "exec > /local/out 2>&1; echo x > /local/vol-rw/w.txt && echo rw-ok; \
                  if echo y > /local/vol-ro/w.txt; then echo ro-writable; else echo ro-refused; fi; \
                  cat /local/vol-ro/hello";
    let mut task = alloc.task_config(1, &JobConfig::sh(script));
    task.mounts = vec![
        Mount {
            task_path: "/local/vol-ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Mount::default()
        },
        Mount {
            task_path: "/local/vol-rw".into(),
            host_path: rw.display().to_string(),
            readonly: false,
            ..Mount::default()
        },
    ];
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    let out = std::fs::read_to_string(alloc.dir.join("vol/local/out")).unwrap();
    assert_eq!(w.result.unwrap().exit_code, 0, "{out}");
    assert!(out.contains("rw-ok"), "{out}");
    assert!(
        out.contains("ro-refused") && out.contains("Read-only file system"),
        "{out}"
    );
    assert!(out.contains("from the host"), "{out}");
    assert_eq!(std::fs::read_to_string(rw.join("w.txt")).unwrap(), "x\n");
    assert!(!ro.join("w.txt").exists());
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn devices_are_usable_only_when_allowed() {
    if !require() {
        return;
    }
    // the task runs as root, so file modes allow everything and only the cgroup device
    // policy decides; opening /dev/fuse or /dev/net/tun does nothing without ioctls
    let s = Session::new(plugin_config(&[("allow_root", rmpv::Value::from(true))])).await;
    let alloc = Alloc::new("dev");
    let open = |path: &str, mode: &str| {
        format!(
            "if (exec 3{mode} {path}) 2>/dev/null; then echo '{path}{mode}ok'; else echo '{path}{mode}refused'; fi"
        )
    };
    let script = [
        open("/dev/mydev", "<"),
        open("/dev/mydev", ">"),
        open("/dev/net/tun", "<"),
        open("/dev/null", ">"),
    ]
    .join("; ");
    let mut task = alloc.task_config(
        1,
        &JobConfig::sh(&format!(
            "({script}) > /local/out.new 2>&1; mv /local/out.new /local/out; exec sleep 1000"
        )),
    );
    task.user = "root".into();
    task.devices = vec![Device {
        task_path: "/dev/mydev".into(),
        host_path: "/dev/fuse".into(),
        cgroup_permissions: "r".into(),
    }];
    s.start(task.clone()).await.unwrap();
    let out = read_eventually(&alloc.dir.join("dev/local/out")).await;
    assert!(out.contains("/dev/mydev<ok"), "{out}");
    assert!(
        out.contains("/dev/mydev>refused"),
        "write is not allowed: {out}"
    );
    assert!(out.contains("/dev/net/tun<refused"), "{out}");
    assert!(out.contains("/dev/null>ok"), "{out}");
    // a private /dev: the device's task path never appears in the host's /dev
    assert!(!Path::new("/dev/mydev").exists());
    // exec is under the same device policy
    let r = exec(
        &s,
        &task.id,
        &format!("{}; {}", open("/dev/mydev", "<"), open("/dev/net/tun", "<")),
        SECS,
    )
    .await;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("/dev/mydev<ok") && out.contains("/dev/net/tun<refused"),
        "{out}"
    );
    s.destroy(&task.id).await;
    s.finish().await;
}

/// A device plugin may hand over a symlink (`/dev/disk/by-id/...`) or a node it made outside
/// `/dev`: both are allowed by number and bound; a path that is no device node is refused by
/// key and leaves nothing behind.
#[tokio::test]
async fn devices_by_any_host_path() {
    if !require() {
        return;
    }
    let s = Session::new(plugin_config(&[("allow_root", rmpv::Value::from(true))])).await;
    let alloc = Alloc::new("devpath");
    // a symlink to /dev/fuse, and a node for tun (10:200) outside /dev
    let by_id = alloc.dir.join("by-id");
    std::fs::create_dir(&by_id).unwrap();
    std::os::unix::fs::symlink("/dev/fuse", by_id.join("fuse-link")).unwrap();
    let node = alloc.dir.join("tun-node");
    let c = std::ffi::CString::new(node.display().to_string()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(10, 200)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    let open = |path: &str, mode: &str| {
        format!(
            "if (exec 3{mode} {path}) 2>/dev/null; then echo '{path}{mode}ok'; else echo '{path}{mode}refused'; fi"
        )
    };
    let script = [
        open("/dev/linked", "<"),
        open("/dev/linked", ">"),
        open("/dev/mytun", "<"),
        open("/dev/fuse", "<"),
    ]
    .join("; ");
    let mut task = alloc.task_config(
        1,
        &JobConfig::sh(&format!(
            "({script}) > /local/out.new 2>&1; mv /local/out.new /local/out; exec sleep 1000"
        )),
    );
    task.user = "root".into();
    task.devices = vec![
        Device {
            task_path: "/dev/linked".into(),
            host_path: by_id.join("fuse-link").display().to_string(),
            cgroup_permissions: "r".into(),
        },
        Device {
            task_path: "/dev/mytun".into(),
            host_path: node.display().to_string(),
            cgroup_permissions: "rw".into(),
        },
    ];
    s.start(task.clone()).await.unwrap();
    let out = read_eventually(&alloc.dir.join("devpath/local/out")).await;
    assert!(out.contains("/dev/linked<ok"), "{out}");
    assert!(
        out.contains("/dev/linked>refused"),
        "write not allowed: {out}"
    );
    assert!(out.contains("/dev/mytun<ok"), "{out}");
    // only what was bound exists in the task's private /dev
    assert!(out.contains("/dev/fuse<refused"), "{out}");
    s.destroy(&task.id).await;

    // a regular file is no device: refused by key, no unit left
    let plain = alloc.dir.join("not-a-device");
    std::fs::write(&plain, "x").unwrap();
    let mut bad = alloc.task_config(2, &JobConfig::sh("exec sleep 1000"));
    bad.user = "root".into();
    bad.devices = vec![Device {
        task_path: "/dev/x".into(),
        host_path: plain.display().to_string(),
        cgroup_permissions: "r".into(),
    }];
    let err = s.start(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("devices[0].host_path")
            && err
                .message()
                .contains("is not a character or block device node"),
        "{}",
        err.message()
    );
    assert!(s.sd.nomad_units().is_empty(), "{:?}", s.sd.nomad_units());
    s.finish().await;
}

/// Exec runs under the task's own seccomp filters (systemd compiles `SystemCallFilter=`, and the
/// sandbox's `RestrictSUIDSGID`/`LockPersonality`, into them): a system call the job forbade is
/// forbidden to `nomad alloc exec` too.
#[tokio::test]
async fn exec_runs_under_the_tasks_seccomp_filters() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("sec");
    let mut job = JobConfig::sh("exec sleep 1000");
    job.properties = Some(vec![("SystemCallFilter".into(), "~mkdir mkdirat".into())]);
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let unit = s.sd.nomad_units().pop().unwrap();
    let main_pid = s.sd.show(&unit, "MainPID");
    let filters = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let task_filters = filters(&s.sd.exec(&["cat", &format!("/proc/{main_pid}/status")]));
    assert!(
        task_filters.parse::<u32>().unwrap_or(0) > 0,
        "the task has filters: {task_filters:?}"
    );
    let r = exec(
        &s,
        &task.id,
        "mkdir /tmp/nds-seccomp-probe; echo rc=$?; cat /proc/self/status",
        SECS,
    )
    .await;
    let out = String::from_utf8_lossy(&r.stdout);
    // SIGSYS (31) kills the forbidden mkdir: 128 + 31
    assert!(out.contains("rc=159"), "mkdir was not stopped: {out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert_eq!(filters(&out), task_filters, "the same filter stack");
    // the task itself keeps running: reading its filters did not disturb it
    assert_eq!(s.sd.show(&unit, "MainPID"), main_pid);
    assert_eq!(s.sd.show(&unit, "ActiveState"), "active");
    s.destroy(&task.id).await;
    s.finish().await;
}
