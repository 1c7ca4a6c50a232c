//! The operator CLI through the real binary. `validate` over every file in examples/
//! (valid jobs pass; each invalid fixture fails with the error its `# expect:` lines name), and
//! `list` against a private systemd with tasks started through the plugin.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::nomad::{Alloc, JobConfig};
use common::session::{Session, plugin_config};
use common::systemd::require;
use rmpv::Value;

/// Output of one CLI run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn cli(args: &[&str], env: &[(&str, String)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_nomad-driver-systemd"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nomad-driver-systemd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The files of `examples/<dir>`, relative to the crate, sorted.
fn examples(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(dir),
    )
    .unwrap()
    .flatten()
    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
    .map(|e| format!("examples/{dir}/{}", e.file_name().to_string_lossy()))
    .collect();
    files.sort();
    assert!(!files.is_empty(), "examples/{dir} is empty");
    files
}

/// The `# expect: ...` lines at the top of a fixture.
fn expectations(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

fn validate(extra: &[&str], files: &[String]) -> Run {
    let mut args = vec!["validate", "--config", "examples/config.toml"];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(String::as_str));
    cli(&args, &[])
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn validate_accepts_every_example_job() {
    let files = examples("jobs");
    let r = validate(&[], &files);
    assert_eq!(r.code, 0, "{}", r.all());
    for f in &files {
        assert!(
            r.stdout.contains(&format!("{f}: group ")),
            "{f} missing:\n{}",
            r.stdout
        );
    }
    // interpolations Nomad resolves at run time are shown unresolved
    assert!(
        r.stdout.contains("web@${NOMAD_ALLOC_ID}.service"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("nomad-${NOMAD_ALLOC_ID}-hello-<id>.service"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("all valid"), "{}", r.stdout);
}

#[test]
fn validate_json_describes_every_task() {
    let files = examples("jobs");
    let r = validate(&["--json"], &files);
    assert_eq!(r.code, 0, "{}", r.all());
    let doc = json(&r.stdout);
    let tasks = doc.as_array().expect("an array");
    assert_eq!(
        tasks.len(),
        files.len(),
        "one systemd task per example: {doc:#}"
    );
    for t in tasks {
        assert_eq!(t["valid"], true, "{t:#}");
        assert_eq!(t["errors"], serde_json::json!([]), "{t:#}");
        for key in ["file", "group", "task", "unit", "mode", "settings"] {
            assert!(!t[key].is_null(), "{key} in {t:#}");
        }
    }
    let by_file = |f: &str| {
        tasks
            .iter()
            .find(|t| t["file"] == format!("examples/jobs/{f}"))
            .unwrap_or_else(|| panic!("{f} not reported"))
    };
    let web = by_file("web-template.nomad.hcl");
    assert_eq!(web["mode"], "unit");
    assert_eq!(web["unit"], "web@${NOMAD_ALLOC_ID}.service");
    // the resources example carries what nixos-tests/resources.nix checks in the VM
    let res = &by_file("resources.nomad.hcl")["settings"];
    assert_eq!(res["MemoryLow"], (128u64 << 20).to_string());
    assert_eq!(res["MemoryMax"], (256u64 << 20).to_string());
    assert!(
        res["CPUWeight"]
            .as_str()
            .is_some_and(|w| w.parse::<u32>().is_ok())
    );
    let props = &by_file("properties.nomad.hcl")["settings"];
    assert_eq!(props["ProtectSystem"], "strict");
    assert_eq!(props["LimitNOFILE"], "65536");
    let hello = by_file("hello.nomad.hcl");
    assert_eq!(hello["mode"], "transient");
    assert_eq!(hello["settings"]["Slice"], "nomad_tasks.slice");
}

#[test]
fn each_invalid_example_fails_with_its_expected_error() {
    for file in examples("invalid") {
        let expect = expectations(&file);
        assert!(!expect.is_empty(), "{file} has no `# expect:` line");
        let r = validate(&[], std::slice::from_ref(&file));
        assert_eq!(r.code, 1, "{file} should be refused:\n{}", r.all());
        for e in &expect {
            assert!(
                r.stderr.contains(e),
                "{file}: expected {e:?} in:\n{}",
                r.all()
            );
        }
        // errors lead with the file (and group/task when the file parsed)
        assert!(r.stderr.starts_with(&format!("{file}: ")), "{}", r.stderr);

        let r = validate(&["--json"], std::slice::from_ref(&file));
        assert_eq!(r.code, 1, "{file} --json:\n{}", r.all());
        let doc = json(&r.stdout);
        let entries = doc.as_array().expect("an array");
        assert!(!entries.is_empty(), "{file}: {doc:#}");
        let messages: Vec<String> = entries
            .iter()
            .flat_map(|t| t["errors"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                format!(
                    "{}: {}",
                    e["key"].as_str().unwrap(),
                    e["message"].as_str().unwrap()
                )
            })
            .collect();
        assert!(entries.iter().all(|t| t["valid"] == false), "{doc:#}");
        assert!(
            messages.iter().any(|m| m.contains(&expect[0])),
            "{file}: {:?} not in {messages:?}",
            expect[0]
        );
    }
}

#[test]
fn one_bad_file_fails_the_whole_run() {
    let mut files = examples("jobs");
    files.push("examples/invalid/unit-not-allowed.nomad.hcl".into());
    let r = validate(&[], &files);
    assert_eq!(r.code, 1, "{}", r.all());
    // the good ones are still reported
    assert!(
        r.stdout
            .contains("examples/jobs/hello.nomad.hcl: group \"hello\" task \"hello\": valid")
    );
}

#[test]
fn without_an_allow_list_unit_mode_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let r = cli(
        &[
            "validate",
            "--config",
            empty.to_str().unwrap(),
            "examples/jobs/web-template.nomad.hcl",
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("config.unit: "), "{}", r.stderr);
    assert!(r.stderr.contains("allowed_units"), "{}", r.stderr);
}

#[test]
fn a_bad_config_file_stops_before_judging() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "slice = \"nomad.slice\"\n").unwrap();
    for config in [bad.clone(), dir.path().join("missing.toml")] {
        let r = cli(
            &[
                "validate",
                "--config",
                config.to_str().unwrap(),
                "examples/jobs/hello.nomad.hcl",
            ],
            &[],
        );
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains(config.to_str().unwrap()), "{}", r.stderr);
    }
    let r = cli(&["list", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("slice"), "{}", r.stderr);
}

#[test]
fn list_without_a_bus_says_so() {
    let r = cli(
        &["list", "--config", "examples/config.toml"],
        &[(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/nds-no-bus".into(),
        )],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("system bus"), "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/nds-no-bus"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

const TEMPLATE: &str = "[Unit]\nDescription=cli test %i\n\n[Service]\nExecStart=/bin/sleep 300\n";

#[tokio::test]
async fn list_shows_the_drivers_units_with_alloc_ids_and_states() {
    if !require() {
        return;
    }
    let s = Session::new(plugin_config(&[(
        "allowed_units",
        Value::Array(vec![Value::from("ndscli@*.service")]),
    )]))
    .await;
    let system = s.sd.runtime_dir().join("system");
    std::fs::write(system.join("ndscli@.service"), TEMPLATE).unwrap();
    s.sd.exec(&["systemctl", "daemon-reload"]);

    let worker = Alloc::new("worker");
    let transient = worker.task_config(1, &JobConfig::sh("sleep 300"));
    s.start(transient.clone()).await.expect("transient start");
    let web = Alloc::new("web");
    let unit = format!("ndscli@{}.service", web.id);
    let job = JobConfig {
        unit: Some(unit.clone()),
        ..JobConfig::default()
    };
    let templated = web.task_config(1, &job);
    s.start(templated.clone()).await.expect("unit-mode start");
    // a unit in the slice that is not the driver's
    s.sd.exec(&[
        "systemd-run",
        "--unit=ndscli-foreign",
        "--slice=nomad_tasks.slice",
        "/bin/sleep",
        "300",
    ]);

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let env = s.env();
    let r = cli(&["list", "--config", &config], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    eprintln!("{}", r.stdout);
    let row = |alloc: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(alloc))
            .unwrap_or_else(|| panic!("{alloc} not listed:\n{}", r.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let t = row(&worker.id);
    assert_eq!(
        &t[1..6],
        ["test", "group", "worker", "transient", "active/running"],
        "{t:?}"
    );
    let u = row(&web.id);
    assert_eq!(
        &u[1..6],
        ["test", "group", "web", "unit", "active/running"],
        "{u:?}"
    );
    assert_eq!(u.last(), Some(&unit.as_str()));
    assert!(!r.stdout.contains("ndscli-foreign"), "{}", r.stdout);

    let r = cli(&["list", "--json", "--config", &config], &env);
    assert_eq!(r.code, 0, "{}", r.all());
    let doc = json(&r.stdout);
    let entries = doc.as_array().expect("an array");
    assert_eq!(entries.len(), 2, "{doc:#}");
    let entry = |alloc: &str| {
        entries
            .iter()
            .find(|e| e["alloc_id"] == alloc)
            .unwrap_or_else(|| panic!("{alloc} not in {doc:#}"))
    };
    let t = entry(&worker.id);
    assert_eq!(t["mode"], "transient");
    assert_eq!(
        (t["job"].as_str(), t["group"].as_str(), t["task"].as_str()),
        (Some("test"), Some("group"), Some("worker"))
    );
    assert_eq!(
        (t["active_state"].as_str(), t["sub_state"].as_str()),
        (Some("active"), Some("running"))
    );
    assert!(
        t["unit"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("nomad-{}-worker-", worker.id)))
    );
    let u = entry(&web.id);
    assert_eq!(u["mode"], "unit");
    assert_eq!(u["unit"], unit.as_str());
    assert_eq!(u["task"], "web");
    assert_eq!(u["active_state"], "active");
    for e in entries {
        assert!(
            e["since"].as_str().is_some_and(|s| s.ends_with('Z')),
            "{e:#}"
        );
        assert!(e["since_usec"].as_u64().is_some_and(|us| us > 0), "{e:#}");
        for key in ["memory_bytes", "cpu_nsec"] {
            assert!(e.get(key).is_some(), "{key} in {e:#}");
        }
    }

    s.sd.exec(&["systemctl", "stop", "ndscli-foreign.service"]);
    for task in [&transient, &templated] {
        s.stop(&task.id, Duration::from_secs(5), "SIGTERM").await;
        s.destroy(&task.id).await;
    }
    // nothing of the driver's is left to list
    let r = cli(&["list", "--json", "--config", &config], &env);
    assert_eq!(json(&r.stdout), serde_json::json!([]), "{}", r.all());
    s.finish().await;
}

/// An operator config with the default slice (and no reliance on the host's /etc).
fn write_config(dir: &Path) -> String {
    let path: PathBuf = dir.join("config.toml");
    std::fs::write(&path, "allowed_units = [\"ndscli@*.service\"]\n").unwrap();
    path.display().to_string()
}
