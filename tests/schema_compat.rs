//! The task config schema stays backward-compatible: job configs as the first release's
//! TaskConfigSchema had Nomad encode them (go-cty bytes in `tests/fixtures/task-config-v1/`,
//! written and checked by `tests/nomad-client/schema_compat_test.go`) decode with the current
//! driver to the same meaning, and every attribute of that recorded schema still exists with
//! the same kind and type. (A recovered task whose config no longer decodes is stopped by
//! Nomad; the shared spec, §12.1.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use nomad_driver_systemd::config::TaskUserConfig;
use nomad_driver_systemd::config::schema::{Spec, task_schema};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/task-config-v1")
}

fn decode(name: &str) -> TaskUserConfig {
    let bytes = std::fs::read(fixtures().join(format!("{name}.msgpack"))).unwrap();
    TaskUserConfig::from_msgpack(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn first_release_task_configs_decode_with_the_same_meaning() {
    assert_eq!(
        decode("command"),
        TaskUserConfig {
            command: Some("/bin/sleep".into()),
            args: strings(&["300"]),
            ..TaskUserConfig::default()
        }
    );
    assert_eq!(
        decode("full"),
        TaskUserConfig {
            command: Some("/usr/bin/python3".into()),
            args: strings(&["-c", "print(1)", "$HOME", "%n", "", "a b"]),
            unit: None,
            properties: BTreeMap::from([
                ("MemoryMax".to_string(), "1G".to_string()),
                ("Nice".to_string(), "5".to_string()),
            ]),
            work_dir: Some("/local".into()),
        }
    );
    assert_eq!(
        decode("unit"),
        TaskUserConfig {
            unit: Some("web@x.service".into()),
            properties: BTreeMap::from([("CPUQuota".to_string(), "50%".to_string())]),
            ..TaskUserConfig::default()
        }
    );
}

/// (kind, type) of each top-level attribute of a schema.
fn attributes(spec: &Spec) -> BTreeMap<String, (String, String)> {
    fn kind_type(s: &Spec) -> Option<(String, String)> {
        match s {
            Spec::Attr { ty, .. } => Some(("attr".into(), (*ty).to_string())),
            Spec::BlockAttrs { ty, .. } => Some(("block_attrs".into(), (*ty).to_string())),
            Spec::Default { primary, .. } => kind_type(primary),
            _ => None,
        }
    }
    let Spec::Object(fields) = spec else {
        panic!("the task schema is an object")
    };
    fields
        .iter()
        .filter_map(|(k, s)| Some(((*k).to_string(), kind_type(s)?)))
        .collect()
}

#[test]
fn every_attribute_of_the_first_release_schema_still_exists_with_its_type() {
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("schema.json")).unwrap())
            .unwrap();
    let current = attributes(&task_schema());
    let mut problems = Vec::new();
    for a in recorded["attributes"].as_array().unwrap() {
        let key = a["key"].as_str().unwrap();
        let want = (
            a["kind"].as_str().unwrap().to_string(),
            a["type"].as_str().unwrap().to_string(),
        );
        match current.get(key) {
            None => problems.push(format!("{key} was removed")),
            Some(got) if *got != want => {
                problems.push(format!("{key} was {want:?}, is now {got:?}"));
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{problems:?}");
    // and no attribute became required: a config without it would no longer decode
    let Spec::Object(fields) = task_schema() else {
        unreachable!()
    };
    for (key, s) in fields {
        if let Spec::Attr { required: true, .. } = s {
            panic!("{key} is required; the first release's configs may lack it");
        }
    }
}
