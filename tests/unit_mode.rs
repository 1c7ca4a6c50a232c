//! Unit mode (installed templates instantiated per alloc with a Nomad drop-in) and the
//! job property policy, through the real binary on a real private systemd.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::nomad::{Alloc, JobConfig};
use common::session::{Session, plugin_config, recover_request};
use common::systemd::{PrivateSystemd, require};
use futures::StreamExt;
use nomad_driver_systemd::proto::drivers::TaskConfig;
use nomad_driver_systemd::systemd::DROPIN_FILE;
use rmpv::Value;
use tonic::Code;

const SECS: Duration = Duration::from_secs(10);

/// A python web server on the port Nomad hands the task; it serves its working directory.
const WEB: &str = "[Unit]\nDescription=test web server %i\n\n[Service]\n\
ExecStart=/bin/sh -c 'exec /usr/bin/python3 -m http.server \"$NOMAD_PORT_http\" --bind 127.0.0.1'\n";
/// A unit that leaves a mark in the host's /var/tmp, as an operator's unit may rely on.
const TMPW: &str = "[Unit]\nDescription=test /var/tmp writer %i\n\n[Service]\n\
ExecStart=/bin/sh -c 'echo %i > /var/tmp/nds-tmpw-%i && exec sleep infinity'\n";
/// A unit that only sleeps, for counts and ownership.
const IDLE: &str =
    "[Unit]\nDescription=test idler %i\n\n[Service]\nExecStart=/bin/sleep infinity\n";

fn list(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

/// Installs the templates into the namespace's /run/systemd/system and reloads once.
fn install_templates(sd: &PrivateSystemd) {
    let dir = sd.runtime_dir().join("system");
    std::fs::write(dir.join("web@.service"), WEB).unwrap();
    std::fs::write(dir.join("idle@.service"), IDLE).unwrap();
    std::fs::write(dir.join("tmpw@.service"), TMPW).unwrap();
    sd.exec(&["systemctl", "daemon-reload"]);
}

/// A session whose plugin may start `web@*`, `idle@*` and (never installed) `ghost@*` units.
async fn unit_session(extra: &[(&str, Value)]) -> Option<Session> {
    if !require() {
        return None;
    }
    let mut pairs = vec![(
        "allowed_units",
        list(&[
            "web@*.service",
            "idle@*.service",
            "tmpw@*.service",
            "ghost@*.service",
        ]),
    )];
    pairs.extend(extra.iter().cloned());
    let s = Session::new(plugin_config(&pairs)).await;
    install_templates(&s.sd);
    Some(s)
}

fn dropin_dir(sd: &PrivateSystemd, unit: &str) -> PathBuf {
    sd.runtime_dir().join("system").join(format!("{unit}.d"))
}

fn dropin_path(sd: &PrivateSystemd, unit: &str) -> PathBuf {
    dropin_dir(sd, unit).join(DROPIN_FILE)
}

/// Instances of our test templates that are loaded and not inactive.
fn live_instances(sd: &PrivateSystemd) -> Vec<String> {
    sd.exec(&[
        "systemctl",
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "web@*",
        "idle@*",
        "tmpw@*",
        "ghost@*",
    ])
    .lines()
    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
    .filter(|u| sd.show(u, "ActiveState") != "inactive")
    .collect()
}

/// `*.d` drop-in directories under the namespace's /run/systemd/system.
fn dropin_dirs(sd: &PrivateSystemd) -> Vec<String> {
    std::fs::read_dir(sd.runtime_dir().join("system"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".d"))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port, retried until the server answers or `timeout` passes.
fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(SECS)).unwrap();
            let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut body = String::new();
            if c.write_all(req.as_bytes()).is_ok() && c.read_to_string(&mut body).is_ok() {
                return Some(body);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The web template instantiated for this alloc, serving the task's /local on `port`.
fn web_task(alloc: &Alloc, n: u32, port: u16) -> (TaskConfig, String) {
    let unit = format!("web@{}.service", alloc.id);
    let job = JobConfig {
        unit: Some(unit.clone()),
        work_dir: Some("/local".into()),
        ..JobConfig::default()
    };
    let mut task = alloc.task_config(n, &job);
    task.env.insert("NOMAD_PORT_http".into(), port.to_string());
    std::fs::write(
        alloc.dir.join(&alloc.task).join("local/index.html"),
        format!("hello from {}\n", alloc.id),
    )
    .unwrap();
    (task, unit)
}

/// The environment of a process of the namespace, one `K=V` per entry.
fn environ(sd: &PrivateSystemd, pid: &str) -> Vec<String> {
    sd.exec(&["cat", &format!("/proc/{pid}/environ")])
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_template_instance_serves_with_nomads_env_and_is_cleaned_up() {
    let Some(s) = unit_session(&[]).await else {
        return;
    };
    let alloc = Alloc::new("web");
    let port = free_port();
    let (mut task, unit) = web_task(&alloc, 1, port);
    let evil = "x\n[Service]\nExecStartPre=/bin/false";
    task.env.insert("EVIL".into(), evil.into());
    task.env.insert("PERCENT".into(), "100%n \"q\" \\".into());
    s.start(task.clone()).await.unwrap();

    let body = http_get(port, "/", SECS).expect("the web server answers");
    assert!(body.contains(&format!("hello from {}", alloc.id)), "{body}");
    assert!(
        alloc.stderr.wait_for("\"GET / HTTP/1.0\" 200", SECS),
        "request log reaches Nomad's stderr FIFO: {:?}",
        alloc.stderr.text()
    );

    // the drop-in: where systemd reads it, with Nomad's env and the driver's settings
    let path = dropin_path(&s.sd, &unit);
    let text = std::fs::read_to_string(&path).expect("drop-in exists");
    println!("drop-in {}:\n{text}", path.display());
    for want in [
        format!("EnvironmentFile=/run/nomad-driver-systemd/env/{unit}.env"),
        format!("StandardOutput=file:{}", alloc.stdout.path.display()),
        "Restart=no".into(),
        "RemainAfterExit=yes".into(),
        "Slice=nomad_tasks.slice".into(),
        "WorkingDirectory=/local".into(),
    ] {
        assert!(text.lines().any(|l| l == want), "{want:?} in\n{text}");
    }
    // the drop-in is world-readable: it holds no value of the environment
    assert!(
        !text.contains("ExecStartPre") && !text.contains("PERCENT"),
        "{text}"
    );
    let unprivileged = s.sd.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "cat",
        &format!("/run/nomad-driver-systemd/env/{unit}.env"),
        &format!("/run/systemd/system/{unit}.d/{DROPIN_FILE}"),
    ]);
    assert!(unprivileged.contains("EnvironmentFile="), "{unprivileged}");
    assert!(!unprivileged.contains("NOMAD_PORT_http"), "{unprivileged}");
    assert_eq!(
        s.sd.show(&unit, "DropInPaths"),
        format!("/run/systemd/system/{unit}.d/{DROPIN_FILE}")
    );
    assert_eq!(s.sd.show(&unit, "ActiveState"), "active");
    assert_eq!(s.sd.show(&unit, "Slice"), "nomad_tasks.slice");
    assert_eq!(s.sd.show(&unit, "Restart"), "no");
    assert_eq!(s.sd.show(&unit, "RemainAfterExit"), "yes");
    assert_eq!(
        s.sd.show(&unit, "User"),
        "",
        "the template's identity is kept"
    );
    // a newline in a value stays inside the value: no directive was added
    assert_eq!(s.sd.show(&unit, "ExecStartPre"), "");
    let env = environ(&s.sd, &s.sd.show(&unit, "MainPID"));
    for want in [
        format!("EVIL={evil}"),
        "PERCENT=100%n \"q\" \\".into(),
        format!("NOMAD_PORT_http={port}"),
        format!("NOMAD_ALLOC_ID={}", alloc.id),
    ] {
        assert!(env.contains(&want), "{want:?} not in {env:?}");
    }

    s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
    let r = s.wait(&task.id).await.result.unwrap();
    assert_eq!(r.signal, 15, "{r:?}");
    assert!(http_get(port, "/", Duration::from_millis(300)).is_none());
    s.destroy(&task.id).await;
    assert!(!path.exists(), "drop-in removed");
    assert!(
        !dropin_dir(&s.sd, &unit).exists(),
        "drop-in directory removed"
    );
    assert_eq!(s.sd.show(&unit, "ActiveState"), "inactive");
    assert_eq!(
        s.sd.show(&unit, "DropInPaths"),
        "",
        "systemd no longer uses it"
    );
    assert!(live_instances(&s.sd).is_empty());
    s.finish().await;
}

/// The drop-in adds what Nomad owns and nothing of the driver's own sandboxing: an installed
/// unit that writes to the host's /var/tmp still does (a private /tmp would hide it).
#[tokio::test]
async fn an_installed_unit_keeps_its_own_sandboxing() {
    let Some(s) = unit_session(&[]).await else {
        return;
    };
    let alloc = Alloc::new("tmpw");
    let unit = format!("tmpw@{}.service", alloc.id);
    let job = JobConfig {
        unit: Some(unit.clone()),
        ..JobConfig::default()
    };
    let task = alloc.task_config(1, &job);
    let mark = PathBuf::from(format!("/var/tmp/nds-tmpw-{}", alloc.id));
    let _ = std::fs::remove_file(&mark);
    s.start(task.clone()).await.unwrap();
    let end = Instant::now() + SECS;
    // the shell creates the file before it writes to it: wait for the line, not the file
    let written = || std::fs::read_to_string(&mark).is_ok_and(|t| t.ends_with('\n'));
    while !written() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&mark);
    let _ = std::fs::remove_file(&mark);
    assert_eq!(
        text.ok().as_deref().map(str::trim),
        Some(alloc.id.as_str()),
        "the unit's write reached the host's /var/tmp"
    );
    for (property, own) in [
        ("PrivateTmp", "no"),
        ("ProtectSystem", "no"),
        ("ProtectHome", "no"),
        ("PrivateDevices", "no"),
        ("DynamicUser", "no"),
    ] {
        assert_eq!(s.sd.show(&unit, property), own, "{property}");
    }
    let dropin = std::fs::read_to_string(dropin_path(&s.sd, &unit)).unwrap();
    assert!(!dropin.contains("PrivateTmp"), "{dropin}");
    s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
    s.destroy(&task.id).await;
    assert!(live_instances(&s.sd).is_empty());
    s.finish().await;
}

#[tokio::test]
async fn unit_mode_survives_an_agent_restart() {
    let Some(mut s) = unit_session(&[]).await else {
        return;
    };
    let alloc = Alloc::new("web");
    let port = free_port();
    let (task, unit) = web_task(&alloc, 1, port);
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    assert!(http_get(port, "/", SECS).is_some());
    let pid = s.sd.show(&unit, "MainPID");
    s.stop_plugin().await;
    assert_eq!(s.sd.show(&unit, "ActiveState"), "active");
    assert!(dropin_path(&s.sd, &unit).exists());
    s.relaunch().await;
    s.plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap();
    assert_eq!(
        s.sd.show(&unit, "MainPID"),
        pid,
        "the task was not restarted"
    );
    assert!(http_get(port, "/", SECS).is_some());
    s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
    assert_eq!(s.wait(&task.id).await.result.unwrap().signal, 15);
    s.destroy(&task.id).await;
    assert!(!dropin_path(&s.sd, &unit).exists());
    assert_eq!(s.sd.show(&unit, "ActiveState"), "inactive");
    s.finish().await;
}

#[tokio::test]
async fn units_that_are_not_ours_are_refused_and_left_alone() {
    let Some(s) = unit_session(&[]).await else {
        return;
    };
    let alloc = Alloc::new("web");
    let start = |unit: &str| {
        let job = JobConfig {
            unit: Some(unit.into()),
            ..JobConfig::default()
        };
        s.start(alloc.task_config(1, &job))
    };

    // outside allowed_units
    let err = start("other@x.service").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.unit") && err.message().contains("allowed_units"),
        "{err:?}"
    );

    // active, allowed, but started by someone else: refused and NOT stopped
    let manual = "idle@manual.service";
    s.sd.exec(&["systemctl", "start", manual]);
    assert_eq!(s.sd.show(manual, "ActiveState"), "active");
    let pid = s.sd.show(manual, "MainPID");
    let err = start(manual).await.unwrap_err();
    assert!(
        err.message().contains("config.unit")
            && err.message().contains("not started by this driver"),
        "{err:?}"
    );
    assert_eq!(s.sd.show(manual, "ActiveState"), "active", "left running");
    assert_eq!(s.sd.show(manual, "MainPID"), pid, "not restarted");
    assert!(!dropin_dir(&s.sd, manual).exists(), "no drop-in written");

    // allowed but not installed: the start fails and its drop-in goes again
    let err = start("ghost@x.service").await.unwrap_err();
    assert!(err.message().contains("ghost@x.service"), "{err:?}");
    assert!(!dropin_dir(&s.sd, "ghost@x.service").exists());

    // injection in unit names never reaches the file system
    for bad in ["web@x\n.service", "../x.service", "web@x/../../y.service"] {
        let err = start(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(
            err.message().starts_with("config.unit: ")
                && err.message().contains("not a service unit name"),
            "{bad:?}: {err:?}"
        );
        assert!(!err.message().contains('\n'), "{err:?}");
    }
    assert!(!s.sd.runtime_dir().join("x.service.d").exists());

    // a value that tries to add a directive, in unit mode
    let job = JobConfig {
        unit: Some(format!("web@{}.service", alloc.id)),
        properties: Some(vec![(
            "ProtectSystem".into(),
            "strict\n[Service]\nExecStartPre=/bin/false".into(),
        )]),
        ..JobConfig::default()
    };
    let err = s.start(alloc.task_config(2, &job)).await.unwrap_err();
    assert!(
        err.message()
            .contains("config.properties.ProtectSystem: property \"ProtectSystem\": value")
            && err.message().contains("contains a control character"),
        "{err:?}"
    );

    assert_eq!(live_instances(&s.sd), [manual.to_string()]);
    assert_eq!(dropin_dirs(&s.sd), Vec::<String>::new());
    s.sd.exec(&["systemctl", "stop", manual]);
    s.finish().await;
}

#[tokio::test]
async fn one_unit_serves_one_task_at_a_time() {
    let Some(mut s) = unit_session(&[]).await else {
        return;
    };
    let unit = "idle@shared.service";
    let job = JobConfig {
        unit: Some(unit.into()),
        ..JobConfig::default()
    };
    let (a, b) = (Alloc::new("idle"), Alloc::new("idle"));
    let first = a.task_config(1, &job);
    s.start(first.clone()).await.unwrap();
    let pid = s.sd.show(unit, "MainPID");
    let owner = std::fs::read_to_string(dropin_path(&s.sd, unit)).unwrap();
    let env_file = format!("/run/nomad-driver-systemd/env/{unit}.env");
    let env = s.sd.exec(&["cat", &env_file]);
    assert!(
        env.contains(&format!("NOMAD_ALLOC_ID=\"{}\"", a.id)),
        "{env}"
    );

    // another alloc naming the same unit is refused; the first task is untouched
    let second = b.task_config(1, &job);
    let err = s.start(second.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("is in use by another task") && err.message().contains(&first.id),
        "{err:?}"
    );
    assert_eq!(s.sd.show(unit, "MainPID"), pid);
    assert_eq!(
        std::fs::read_to_string(dropin_path(&s.sd, unit)).unwrap(),
        owner
    );
    assert_eq!(
        s.sd.exec(&["cat", &env_file]),
        env,
        "the refused start left the first task's environment alone"
    );

    // Nomad retries StartTask with the same id after a plugin crash: the unit is adopted
    s.plugin.take().unwrap().crash();
    s.relaunch().await;
    s.start(first.clone()).await.unwrap();
    assert_eq!(s.sd.show(unit, "MainPID"), pid, "adopted, not restarted");
    s.stop(&first.id, Duration::from_secs(5), "SIGTERM").await;
    assert_eq!(s.wait(&first.id).await.result.unwrap().signal, 15);
    s.destroy(&first.id).await;

    // released: the other alloc may have it now
    s.start(second.clone()).await.unwrap();
    assert_ne!(s.sd.show(unit, "MainPID"), pid);
    s.stop(&second.id, Duration::from_secs(5), "SIGTERM").await;
    s.wait(&second.id).await;
    s.destroy(&second.id).await;
    assert!(live_instances(&s.sd).is_empty());
    assert!(dropin_dirs(&s.sd).is_empty());
    s.finish().await;
}

#[tokio::test]
async fn unit_mode_is_off_without_allowed_units() {
    if !require() {
        return;
    }
    let s = Session::new(Vec::new()).await;
    install_templates(&s.sd);
    let alloc = Alloc::new("web");
    let job = JobConfig {
        unit: Some(format!("idle@{}.service", alloc.id)),
        ..JobConfig::default()
    };
    let err = s.start(alloc.task_config(1, &job)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.unit") && err.message().contains("allowed_units"),
        "{err:?}"
    );
    assert!(live_instances(&s.sd).is_empty());
    assert!(dropin_dirs(&s.sd).is_empty());
    s.finish().await;
}

/// Counts systemd's own `Reloading(true)` signals on the bus, independently of the plugin.
async fn count_reloads(sd: &PrivateSystemd) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let conn = zbus::connection::Builder::address(sd.bus_address().as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.systemd1.Manager")
        .unwrap()
        .member("Reloading")
        .unwrap()
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    // systemd only sends Manager signals on the system bus while someone is subscribed
    conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        "Subscribe",
        &(),
    )
    .await
    .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let task = tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(msg)) = stream.next().await {
            if msg.body().deserialize::<bool>().unwrap_or(false) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (count, task)
}

#[tokio::test]
async fn concurrent_unit_starts_share_reloads() {
    const N: usize = 20;
    let Some(s) = unit_session(&[]).await else {
        return;
    };
    let (reloads, counter) = count_reloads(&s.sd).await;
    // the counter really sees reloads
    s.sd.exec(&["systemctl", "daemon-reload"]);
    let end = Instant::now() + SECS;
    while reloads.load(Ordering::SeqCst) == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reloads.load(Ordering::SeqCst),
        1,
        "the counter sees a reload"
    );
    reloads.store(0, Ordering::SeqCst);

    let allocs: Vec<Alloc> = (0..N).map(|_| Alloc::new("idle")).collect();
    let tasks: Vec<(TaskConfig, String)> = allocs
        .iter()
        .map(|a| {
            let unit = format!("idle@{}.service", a.id);
            let job = JobConfig {
                unit: Some(unit.clone()),
                ..JobConfig::default()
            };
            (a.task_config(1, &job), unit)
        })
        .collect();
    let started = Instant::now();
    let results = futures::future::join_all(tasks.iter().map(|(t, _)| s.start(t.clone()))).await;
    let took = started.elapsed();
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    for (_, unit) in &tasks {
        assert_eq!(s.sd.show(unit, "ActiveState"), "active", "{unit}");
        assert!(dropin_path(&s.sd, unit).exists());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = reloads.load(Ordering::SeqCst);
    println!("{N} concurrent unit-mode starts in {took:?} caused {n} daemon-reloads");
    assert!((1..=5).contains(&n), "{n} reloads for {N} starts");

    let stops = tasks
        .iter()
        .map(|(t, _)| s.stop(&t.id, Duration::from_secs(5), "SIGTERM"));
    futures::future::join_all(stops).await;
    for (t, unit) in &tasks {
        assert_eq!(s.wait(&t.id).await.result.unwrap().signal, 15);
        s.destroy(&t.id).await;
        assert!(!dropin_path(&s.sd, unit).exists());
    }
    assert!(live_instances(&s.sd).is_empty());
    assert!(dropin_dirs(&s.sd).is_empty());
    counter.abort();
    s.finish().await;
}

/// The hard `RLIMIT_NOFILE` of a process (host pid).
fn hard_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

#[tokio::test]
async fn job_properties_reach_a_transient_unit() {
    let Some(s) = unit_session(&[
        ("allow_root", Value::from(true)),
        ("allowed_properties", list(&["DeviceAllow"])),
    ])
    .await
    else {
        return;
    };
    let alloc = Alloc::new("props");
    let probe = format!("/usr/nds-probe-{}", alloc.id);
    let script = format!(
        "touch {probe} 2>&1; echo touch=$?; echo nofile=$(ulimit -n); \
         echo ok > $NOMAD_TASK_DIR/written && echo local=writable; echo ready; exec sleep 300"
    );
    let mut job = JobConfig::sh(&script);
    job.properties = Some(
        [
            ("ProtectSystem", "strict"),
            ("LimitNOFILE", "65536"),
            ("MemorySwapMax", "0"),
            ("CPUQuota", "50%"),
            ("TimeoutStopSec", "30s"),
            ("DeviceAllow", "/dev/null rw"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let mut task = alloc.task_config(1, &job);
    // root, so that only ProtectSystem (not file permissions) can stop the write
    task.user = "root".into();
    s.start(task.clone()).await.unwrap();
    let ready = alloc.stdout.wait_for("ready", SECS);
    let out = alloc.stdout.text();
    let host_probe = std::path::Path::new(&probe);
    if host_probe.exists() {
        let _ = std::fs::remove_file(host_probe);
        panic!("ProtectSystem=strict did not stop a root task writing /usr: {out}");
    }
    assert!(ready, "stdout: {out:?} stderr: {:?}", alloc.stderr.text());
    println!("task output:\n{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("touch=1"), "{out}");
    // systemd sets the closest limit the kernel permits: 65536 wherever PID 1 may raise its hard
    // limit (CAP_SYS_RESOURCE); in a sandbox without it, the hard limit systemd itself runs with
    let nofile = 65536.min(hard_nofile(s.sd.pid));
    assert!(
        nofile > 1024,
        "systemd's default soft limit would hide the property"
    );
    assert!(out.contains(&format!("nofile={nofile}\n")), "{out}");
    assert!(out.contains("local=writable"), "{out}");
    let unit = s.sd.nomad_units().pop().unwrap();
    assert_eq!(s.sd.show(&unit, "User"), "root");
    assert_eq!(s.sd.show(&unit, "ProtectSystem"), "strict");
    assert_eq!(s.sd.show(&unit, "LimitNOFILE"), "65536");
    assert_eq!(s.sd.show(&unit, "LimitNOFILESoft"), "65536");
    assert_eq!(s.sd.show(&unit, "MemorySwapMax"), "0");
    assert_eq!(s.sd.show(&unit, "CPUQuotaPerSecUSec"), "500ms");
    assert_eq!(s.sd.show(&unit, "TimeoutStopUSec"), "30s");
    assert_eq!(s.sd.show(&unit, "DeviceAllow"), "/dev/null rw");
    s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
    s.wait(&task.id).await;
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn refused_properties_name_the_property_and_leave_nothing() {
    if !require() {
        return;
    }
    let s = Session::new(plugin_config(&[(
        "allowed_units",
        list(&["idle@*.service"]),
    )]))
    .await;
    install_templates(&s.sd);
    let alloc = Alloc::new("refused");
    let cases: &[(&str, &str, &str)] = &[
        (
            "ProtectSystem",
            "strict\n[Service]\nExecStartPre=/bin/false",
            "config.properties.ProtectSystem: property \"ProtectSystem\": value \"strict\\n[Service]\\nExecStartPre=/bin/false\" contains a control character",
        ),
        (
            "Foo\nUser",
            "root",
            "config.properties.Foo\\nUser: property name \"Foo\\nUser\" is invalid",
        ),
        (
            "User",
            "root",
            "config.properties.User: property \"User\" is owned by the driver",
        ),
        (
            "DeviceAllow",
            "/dev/sda rw",
            "config.properties.DeviceAllow: property \"DeviceAllow\" is denied by the plugin's property policy (denied_properties)",
        ),
        (
            "AmbientCapabilities",
            "CAP_SYS_ADMIN",
            "config.properties.AmbientCapabilities: property \"AmbientCapabilities\" is denied",
        ),
        (
            "Restart",
            "always",
            "config.properties.Restart: property \"Restart\" is owned by the driver",
        ),
    ];
    for (i, (name, value, want)) in cases.iter().enumerate() {
        let props = Some(vec![(name.to_string(), value.to_string())]);
        let n = u32::try_from(i).unwrap() * 2;
        let transient = JobConfig {
            properties: props.clone(),
            ..JobConfig::sh("exit 0")
        };
        let unit = JobConfig {
            unit: Some(format!("idle@{}.service", alloc.id)),
            properties: props,
            ..JobConfig::default()
        };
        for (k, job) in [(n, transient), (n + 1, unit)] {
            let err = s.start(alloc.task_config(k, &job)).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
            assert!(err.message().starts_with(want), "{name:?}: {err:?}");
            assert!(!err.message().contains('\n'), "{err:?}");
        }
    }
    // every offending key gets its own error
    let job = JobConfig {
        properties: Some(vec![
            ("User".into(), "root".into()),
            ("DeviceAllow".into(), "/dev/sda rw".into()),
            ("LimitNOFILE".into(), "lots".into()),
            ("ProtectSystem".into(), "strict".into()),
        ]),
        ..JobConfig::sh("exit 0")
    };
    let err = s.start(alloc.task_config(99, &job)).await.unwrap_err();
    for key in ["User", "DeviceAllow", "LimitNOFILE"] {
        assert!(
            err.message()
                .contains(&format!("config.properties.{key}: ")),
            "{key}: {err:?}"
        );
    }
    assert!(!err.message().contains("config.properties.ProtectSystem"));
    assert!(s.sd.nomad_units().is_empty());
    assert!(live_instances(&s.sd).is_empty());
    assert!(dropin_dirs(&s.sd).is_empty());
    s.finish().await;
}
