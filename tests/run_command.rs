//! The README's "main job" command: `run --private-systemd` plays the Nomad client for a job file
//! through the real plugin, on a private systemd.

mod common;

use std::process::Command;

#[test]
fn run_executes_the_hello_example_and_stops_it() {
    if !common::systemd::require() {
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("nds-run-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let out = Command::new(common::plugin::binary())
        .args([
            "run",
            "--private-systemd",
            "--stop-after",
            "3",
            "--alloc-dir",
        ])
        .arg(root.path())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/jobs/hello.nomad.hcl"
        ))
        .env_remove(common::plugin::COOKIE_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("[hello] hello from systemd"), "{stdout}");
    assert!(stdout.contains("started as nomad-"), "{stdout}");
    // stopped with Nomad's default signal after --stop-after
    assert!(
        stdout.contains("hello: exited: exit code 130, signal 2"),
        "{stdout}"
    );
    // alloc dirs are cleaned up
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn run_refuses_a_job_without_systemd_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("docker.nomad.hcl");
    std::fs::write(
        &job,
        "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      driver = \"docker\"\n      config { image = \"x\" }\n    }\n  }\n}\n",
    )
    .unwrap();
    let out = Command::new(common::plugin::binary())
        .arg("run")
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task with driver = \"systemd\""));
}
