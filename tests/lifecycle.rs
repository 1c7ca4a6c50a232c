//! The task lifecycle through the real binary on a real private systemd.

mod common;

use std::time::Duration;

use common::nomad::{Alloc, JobConfig};
use common::session::{Session, plugin_config, recover_request};
use common::systemd::require;
use nomad_driver_systemd::proto::drivers::{
    InspectTaskRequest, SignalTaskRequest, TaskState, WaitTaskRequest,
};
use tonic::Code;

const SECS: Duration = Duration::from_secs(10);

async fn session() -> Option<Session> {
    if !require() {
        return None;
    }
    Some(Session::new(Vec::new()).await)
}

#[tokio::test]
async fn exit_code_and_logs_reach_nomad() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("web");
    let task = alloc.task_config(1, &JobConfig::sh("echo out; echo err >&2; exit 3"));
    let resp = s.start(task.clone()).await.unwrap();
    let handle = resp.handle.expect("handle");
    assert_eq!(
        handle.config.as_ref().map(|c| c.id.as_str()),
        Some(task.id.as_str())
    );
    assert!(handle.version >= 1);
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.as_ref().unwrap().exit_code, 3, "{w:?}");
    assert_eq!(w.err, "");
    assert!(
        alloc.stdout.wait_for("out", SECS),
        "stdout: {:?}",
        alloc.stdout.text()
    );
    assert!(
        alloc.stderr.wait_for("err", SECS),
        "stderr: {:?}",
        alloc.stderr.text()
    );
    assert!(!alloc.stdout.text().contains("err"));
    // the stored result stays until DestroyTask
    assert_eq!(s.wait(&task.id).await.result.unwrap().exit_code, 3);
    s.destroy(&task.id).await;
    let err = s
        .plugin()
        .driver()
        .wait_task(WaitTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.finish().await;
}

#[tokio::test]
async fn task_dirs_env_and_isolation() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("files");
    let script = "echo task > $NOMAD_TASK_DIR/t.txt && echo alloc > $NOMAD_ALLOC_DIR/data/a.txt \
                  && env > $NOMAD_TASK_DIR/env.txt && pwd > $NOMAD_TASK_DIR/pwd.txt \
                  && printf '%s' \"$1\" > $NOMAD_TASK_DIR/arg.txt";
    let job = JobConfig::command("/bin/sh", &["-c", script, "sh", "$HOME $$ ✓"]);
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(
        w.result.unwrap().exit_code,
        0,
        "stderr: {}",
        alloc.stderr.text()
    );
    let read =
        |p: &str| std::fs::read_to_string(alloc.dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("files/local/t.txt"), "task\n");
    assert_eq!(read("alloc/data/a.txt"), "alloc\n");
    assert_eq!(read("files/local/pwd.txt"), "/local\n");
    // args reach the process byte for byte: systemd expands nothing
    assert_eq!(read("files/local/arg.txt"), "$HOME $$ ✓");
    let env = read("files/local/env.txt");
    assert!(
        env.contains(&format!("NOMAD_ALLOC_ID={}", alloc.id)),
        "{env}"
    );
    assert!(!env.contains("NOMAD_PLUGIN_MAGIC_COOKIE"), "{env}");
    assert!(!env.contains("PLUGIN_PROTOCOL_VERSIONS"), "{env}");
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn stop_delivers_the_signal_the_task_traps() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("trap");
    let job = JobConfig::sh(
        "trap 'echo got-int; exit 0' INT; echo ready; while true; do sleep 0.1; done",
    );
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    assert!(alloc.stdout.wait_for("ready", SECS));
    s.stop(&task.id, Duration::from_secs(10), "SIGINT").await;
    let w = s.wait(&task.id).await;
    assert!(
        alloc.stdout.wait_for("got-int", SECS),
        "{}",
        alloc.stdout.text()
    );
    assert_eq!(w.result.unwrap().exit_code, 0);
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn a_task_ignoring_sigterm_is_killed_after_the_timeout() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("stubborn");
    let job = JobConfig::sh("trap '' TERM; echo ready; while true; do sleep 0.1; done");
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    assert!(alloc.stdout.wait_for("ready", SECS));
    let t0 = std::time::Instant::now();
    s.stop(&task.id, Duration::from_secs(1), "SIGTERM").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let r = s.wait(&task.id).await.result.unwrap();
    assert_eq!((r.signal, r.exit_code), (9, 137));
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn signal_task_and_forced_destroy() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("sig");
    let job =
        JobConfig::sh("trap 'echo got-usr1' USR1; echo ready; while true; do sleep 0.1; done");
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    assert!(alloc.stdout.wait_for("ready", SECS));
    s.plugin()
        .driver()
        .signal_task(SignalTaskRequest {
            task_id: task.id.clone(),
            signal: "SIGUSR1".into(),
        })
        .await
        .unwrap();
    assert!(
        alloc.stdout.wait_for("got-usr1", SECS),
        "{}",
        alloc.stdout.text()
    );
    let unit = s.sd.nomad_units();
    assert_eq!(unit.len(), 1);
    let insp = s
        .plugin()
        .driver()
        .inspect_task(InspectTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(insp.task.unwrap().state, TaskState::Running as i32);
    // DestroyTask(force) on a running task kills it
    s.destroy(&task.id).await;
    assert_eq!(s.sd.show(&unit[0], "ActiveState"), "inactive");
    s.finish().await;
}

#[tokio::test]
async fn unknown_ids_and_duplicates() {
    let Some(s) = session().await else { return };
    let d = s.plugin().driver();
    let err = d
        .clone()
        .wait_task(WaitTaskRequest {
            task_id: "nope/x/00000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "task not found for given id");
    // stop and destroy of unknown ids are fine
    s.stop("nope/x/00000000", SECS, "").await;
    s.destroy("nope/x/00000000").await;
    let alloc = Alloc::new("dup");
    let task = alloc.task_config(1, &JobConfig::command("/bin/sleep", &["30"]));
    s.start(task.clone()).await.unwrap();
    let err = s.start(task.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn a_missing_binary_fails_the_start_and_leaves_nothing() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("missing");
    let task = alloc.task_config(1, &JobConfig::command("/nonexistent/bin", &[]));
    let err = s.start(task).await.unwrap_err();
    assert!(err.message().contains("failed"), "{err:?}");
    s.finish().await;
}

#[tokio::test]
async fn agent_restart_keeps_the_task_running_and_stoppable() {
    let Some(mut s) = session().await else { return };
    let alloc = Alloc::new("survivor");
    let task = alloc.task_config(1, &JobConfig::sh("echo ready; exec sleep 300"));
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    assert!(alloc.stdout.wait_for("ready", SECS));
    let unit = s.sd.nomad_units().pop().unwrap();
    let pid = s.sd.show(&unit, "MainPID");
    s.stop_plugin().await;
    assert_eq!(s.sd.show(&unit, "ActiveState"), "active");
    s.relaunch().await;
    s.plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap();
    // idempotent
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
    s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
    let r = s.wait(&task.id).await.result.unwrap();
    assert_eq!(r.signal, 15);
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn plugin_crash_during_wait_then_recover_and_wait_again() {
    let Some(mut s) = session().await else { return };
    let alloc = Alloc::new("crash");
    let task = alloc.task_config(1, &JobConfig::sh("echo ready; sleep 3; exit 7"));
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    assert!(alloc.stdout.wait_for("ready", SECS));
    let mut waiter = s.plugin().driver();
    let id = task.id.clone();
    let pending =
        tokio::spawn(async move { waiter.wait_task(WaitTaskRequest { task_id: id }).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.plugin.take().unwrap().crash();
    // the outstanding WaitTask ends with an error, never with a fake exit
    assert!(pending.await.unwrap().is_err());
    // the task ends while no plugin runs
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.relaunch().await;
    s.plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 7, "{}", w.err);
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn a_unit_restarted_outside_nomad_is_not_recovered() {
    let Some(mut s) = session().await else { return };
    let alloc = Alloc::new("restarted");
    let task = alloc.task_config(1, &JobConfig::command("/bin/sleep", &["300"]));
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    let unit = s.sd.nomad_units().pop().unwrap();
    let before = s.sd.show(&unit, "InvocationID");
    s.stop_plugin().await;
    // the same name, a new run: not the task Nomad started
    s.sd.exec(&["systemctl", "restart", &unit]);
    let after = s.sd.show(&unit, "InvocationID");
    assert_ne!(before, after);
    assert_eq!(s.sd.show(&unit, "ActiveState"), "active");
    // the record RecoverTask reads instead of D-Bus follows the new run (systemd 252)
    let link = format!("/run/systemd/units/invocation:{unit}");
    assert_eq!(s.sd.exec(&["readlink", &link]).trim(), after);
    s.relaunch().await;
    let err = s
        .plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap_err();
    assert!(err.message().contains("not ours"), "{err:?}");
    s.sd.exec(&["systemctl", "stop", &unit]);
    s.finish().await;
}

#[tokio::test]
async fn recovering_a_vanished_unit_is_an_error() {
    let Some(mut s) = session().await else { return };
    let alloc = Alloc::new("gone");
    let task = alloc.task_config(1, &JobConfig::command("/bin/sleep", &["300"]));
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    let unit = s.sd.nomad_units().pop().unwrap();
    s.stop_plugin().await;
    s.sd.exec(&["systemctl", "stop", &unit]);
    s.relaunch().await;
    let err = s
        .plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap_err();
    assert!(err.message().contains("no longer exists"), "{err:?}");
    assert_ne!(err.code(), Code::Unavailable);
    s.finish().await;
}

#[tokio::test]
async fn users_dynamic_named_and_root_refused() {
    if !require() {
        return;
    }
    let s = Session::new(plugin_config(&[(
        "allowed_users",
        rmpv::Value::Array(vec!["daemon".into()]),
    )]))
    .await;
    let alloc = Alloc::new("who");
    // no user: the allocation's dynamic user, never root; a restart (and any other task of the
    // allocation) gets the same uid and can keep writing the files the first run left
    let mut uids = Vec::new();
    for n in 1..=2 {
        let script = format!("id -u > $NOMAD_TASK_DIR/uid{n}; echo run{n} >> /alloc/data/shared");
        let task = alloc.task_config(n, &JobConfig::sh(&script));
        s.start(task.clone()).await.unwrap();
        assert_eq!(s.wait(&task.id).await.result.unwrap().exit_code, 0);
        let uid: u32 = std::fs::read_to_string(alloc.dir.join(format!("who/local/uid{n}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            (61184..65520).contains(&uid),
            "dynamic users live in 61184..65519, got {uid}"
        );
        uids.push(uid);
        s.destroy(&task.id).await;
    }
    assert_eq!(uids[0], uids[1], "one uid per allocation");
    assert_eq!(
        std::fs::read_to_string(alloc.dir.join("alloc/data/shared")).unwrap(),
        "run1\nrun2\n",
        "the restart wrote to the file its first run created"
    );
    // a named user outside allowed_users is refused by key, and nothing is left
    let mut task = alloc.task_config(3, &JobConfig::sh("true"));
    task.user = "nobody".into();
    let err = s.start(task).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("user:") && err.message().contains("allowed_users"),
        "{}",
        err.message()
    );
    assert!(s.sd.nomad_units().is_empty());
    // an allowed one runs with its own uid and its primary group set explicitly
    let mut task = alloc.task_config(
        4,
        &JobConfig::sh("id -u > $NOMAD_TASK_DIR/u; id -g >> $NOMAD_TASK_DIR/u"),
    );
    task.user = "daemon".into();
    s.start(task.clone()).await.unwrap();
    assert_eq!(s.wait(&task.id).await.result.unwrap().exit_code, 0);
    let ids = std::fs::read_to_string(alloc.dir.join("who/local/u")).unwrap();
    assert_eq!(ids, "1\n1\n", "daemon is 1:1 on Debian");
    let unit = s.sd.nomad_units().pop().unwrap();
    assert_eq!(s.sd.show(&unit, "Group"), "1");
    s.destroy(&task.id).await;
    // root without allow_root
    let mut task = alloc.task_config(5, &JobConfig::sh("true"));
    task.user = "root".into();
    let err = s.start(task).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("user:"), "{}", err.message());
    s.finish().await;
}

#[tokio::test]
async fn a_bus_restart_is_not_a_task_exit() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("bus");
    let task = alloc.task_config(
        1,
        &JobConfig::sh("echo ready; read line < /local/go; exit 5"),
    );
    std::process::Command::new("mkfifo")
        .arg(alloc.dir.join("bus/local/go"))
        .status()
        .unwrap();
    std::fs::set_permissions(
        alloc.dir.join("bus/local/go"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    s.start(task.clone()).await.unwrap();
    assert!(alloc.stdout.wait_for("ready", SECS));
    // the plugin's bus connection goes away and comes back
    s.sd.exec(&["systemctl", "restart", "dbus.service"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let insp = s
        .plugin()
        .driver()
        .inspect_task(InspectTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        insp.task.unwrap().state,
        TaskState::Running as i32,
        "a bus restart ended the task"
    );
    // now let the task finish: the reconnected watcher must see it
    std::fs::write(alloc.dir.join("bus/local/go"), "go\n").unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(
        w.result.unwrap().exit_code,
        5,
        "{}",
        s.plugin().stderr_text()
    );
    let log = s.plugin().stderr_text();
    assert!(
        log.contains("system bus connection restored"),
        "the bus never went away: {log}"
    );
    s.destroy(&task.id).await;
    s.finish().await;
}

/// Nomad puts secrets (VAULT_TOKEN, NOMAD_TOKEN, template env) into the task environment:
/// the task gets them, nobody else does. An unprivileged local user reads neither D-Bus
/// properties nor the environment file; the file goes with the task.
#[tokio::test]
async fn secrets_stay_secret() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("secret");
    let secret = "s.9f8e7d6c5b4a-vault-token $HOME \"q\" `x`\nline2\\n \\ back\\slash\r # 'single' %n trailing  ";
    let mut task = alloc.task_config(
        1,
        &JobConfig::sh("printf %s \"$VAULT_TOKEN\" > $NOMAD_TASK_DIR/seen; exec sleep 300"),
    );
    task.env.insert("VAULT_TOKEN".into(), secret.into());
    s.start(task.clone()).await.unwrap();
    let seen = alloc.dir.join("secret/local/seen");
    let end = std::time::Instant::now() + SECS;
    // the shell creates the file before printf writes it: wait until it has the bytes
    let written = || std::fs::metadata(&seen).is_ok_and(|m| m.len() >= secret.len() as u64);
    while !written() && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        secret,
        "the task gets its environment byte for byte"
    );
    let unit = s.sd.nomad_units().pop().unwrap();
    let env_file = format!("/run/nomad-driver-systemd/env/{unit}.env");
    let as_nobody = |cmd: &[&str]| {
        let mut argv = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ];
        argv.extend_from_slice(cmd);
        s.sd.exec(&argv)
    };
    let shown = as_nobody(&["systemctl", "show", &unit]);
    assert!(shown.contains("EnvironmentFiles="), "{shown}");
    assert!(
        shown.contains("NOMAD_ALLOC_ID="),
        "identity is public: {shown}"
    );
    assert!(!shown.contains("vault-token"), "secret in systemctl show");
    let busctl = as_nobody(&[
        "busctl",
        "get-property",
        "org.freedesktop.systemd1",
        &nomad_driver_systemd::systemd::unit_object_path(&unit),
        "org.freedesktop.systemd1.Service",
        "Environment",
    ]);
    assert!(busctl.starts_with("as "), "the property was read: {busctl}");
    assert!(!busctl.contains("vault-token"), "{busctl}");
    let denied = as_nobody(&["sh", "-c", &format!("cat {env_file} 2>&1; echo rc=$?")]);
    assert!(
        denied.contains("Permission denied") && denied.contains("rc=1"),
        "nobody reads the file: {denied}"
    );
    let mode = s.sd.exec(&["stat", "-c", "%a %U", &env_file]);
    assert_eq!(mode.trim(), "600 root");
    let dir =
        s.sd.exec(&["stat", "-c", "%a %U", "/run/nomad-driver-systemd/env"]);
    assert_eq!(dir.trim(), "700 root");
    s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
    s.destroy(&task.id).await;
    assert!(
        s.sd.exec(&["ls", "/run/nomad-driver-systemd/env"])
            .trim()
            .is_empty(),
        "the environment file goes with the task"
    );
    s.finish().await;
}

/// The default sandbox: even a root task cannot write the host's /etc or /usr nor read /root,
/// nor reach another allocation's files or its `secrets/` tmpfs by path, and still writes its own
/// directories; a task as its dynamic user is held the same way.
#[tokio::test]
async fn the_host_is_read_only_to_tasks() {
    if !require() {
        return;
    }
    let s = Session::new(plugin_config(&[("allow_root", rmpv::Value::from(true))])).await;
    // another allocation on the node, with a file its own tasks could read and a secret in the
    // tmpfs Nomad mounts on its `secrets/` (written inside the private systemd's namespace,
    // where that mount is)
    let other = Alloc::new("other");
    std::fs::write(other.dir.join("alloc/data/private"), "other alloc\n").unwrap();
    let secret = other.dir.join("other/secrets/token");
    s.sd.exec(&[
        "sh",
        "-c",
        &format!("echo s3cret > {0} && chmod 644 {0}", secret.display()),
    ]);
    assert_eq!(
        s.sd.exec(&["cat", secret.to_str().unwrap()]).trim(),
        "s3cret"
    );
    let script = format!(
        "exec > /local/out 2>&1; \
        for p in /etc/nds-probe /usr/nds-probe /var/lib/nds-probe; do \
          if touch $p 2>/dev/null; then echo $p-writable; rm -f $p; else echo $p-refused; fi; done; \
        if [ -n \"$(ls -A /root 2>/dev/null)\" ]; then echo root-visible; else echo root-hidden; fi; \
        if cat {0}/alloc/data/private 2>/dev/null; then echo other-alloc-readable; else echo other-alloc-hidden; fi; \
        if cat {1} 2>/dev/null; then echo other-secret-readable; else echo other-secret-hidden; fi; \
        if [ -n \"$(ls -A {2} 2>/dev/null)\" ]; then echo alloc-root-visible; else echo alloc-root-hidden; fi; \
        if ls /run/nomad-driver-systemd/env >/dev/null 2>&1; then echo env-dir-visible; else echo env-dir-hidden; fi; \
        touch /local/ok /alloc/data/ok /tmp/ok && echo own-dirs-writable",
        other.dir.display(),
        secret.display(),
        other.dir.parent().unwrap().display(),
    );
    for user in ["root", ""] {
        let alloc = Alloc::new("box");
        let mut task = alloc.task_config(1, &JobConfig::sh(&script));
        task.user = user.into();
        s.start(task.clone()).await.unwrap();
        assert_eq!(s.wait(&task.id).await.result.unwrap().exit_code, 0);
        let out = std::fs::read_to_string(alloc.dir.join("box/local/out")).unwrap();
        for want in [
            "/etc/nds-probe-refused",
            "/usr/nds-probe-refused",
            "/var/lib/nds-probe-refused",
            "root-hidden",
            "other-alloc-hidden",
            "other-secret-hidden",
            "alloc-root-hidden",
            "env-dir-hidden",
            "own-dirs-writable",
        ] {
            assert!(out.contains(want), "user {user:?}: {want} in {out}");
        }
        s.destroy(&task.id).await;
    }
    assert!(!std::path::Path::new("/etc/nds-probe").exists());
    assert!(
        std::fs::read_dir("/root").unwrap().next().is_some(),
        "the probe needs a non-empty /root on the host"
    );
    s.finish().await;
}

/// The stand-in builds alloc dirs as the Nomad client does as root: `secrets/` and `private/`
/// are 1 MiB noexec tmpfs mounts in the private systemd's mount namespace (not on the host), the
/// task's `/secrets` is that tmpfs, and dropping the alloc unmounts both.
#[tokio::test]
async fn alloc_dirs_have_nomads_tmpfs_mounts() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("mnt");
    let dirs = [alloc.dir.join("mnt/secrets"), alloc.dir.join("mnt/private")];
    let mount_of = |p: &std::path::Path| {
        s.sd.exec(&[
            "findmnt",
            "-n",
            "-o",
            "FSTYPE,OPTIONS",
            "--mountpoint",
            p.to_str().unwrap(),
        ])
    };
    for d in &dirs {
        let m = mount_of(d);
        assert!(
            m.starts_with("tmpfs") && m.contains("noexec") && m.contains("size=1024k"),
            "{}: {m:?}",
            d.display()
        );
    }
    let job = JobConfig::sh(
        "stat -f -c %T $NOMAD_SECRETS_DIR > $NOMAD_TASK_DIR/fs; echo s > $NOMAD_SECRETS_DIR/s; \
         echo ready; exec sleep 300",
    );
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    assert!(
        alloc.stdout.wait_for("ready", SECS),
        "{}",
        alloc.stderr.text()
    );
    let fs = std::fs::read_to_string(alloc.dir.join("mnt/local/fs")).unwrap();
    assert_eq!(fs.trim(), "tmpfs", "the task's /secrets is the tmpfs");
    assert!(
        !dirs[0].join("s").exists(),
        "the host sees the plain directory under the mount, not the secret"
    );
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    drop(alloc);
    for d in &dirs {
        assert_eq!(mount_of(d).trim(), "", "{} still mounted", d.display());
    }
    s.finish().await;
}
