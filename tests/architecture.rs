//! The layering ARCHITECTURE.md promises, checked over the source text: no module imports a
//! module of a higher layer, only `systemd/dbus.rs` names zbus, only the transport modules name
//! tonic or prost, and the in-memory systemd is compiled only for unit tests.

use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use its own layer and those below.
const LAYERS: &[&[&str]] = &[
    &["vocab", "proto"],
    &["properties"],
    &["config", "systemd", "stats", "logging", "journal"],
    &["task"],
    &["unit", "exec"],
    &["driver"],
    &["grpc"],
    &["plugin"],
    &["nomad_standin"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(top-level module, file path relative to src/, text)` for every file of the library.
fn sources() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = rel.split(['/', '.']).next().unwrap().to_string();
            (module != "main" && module != "lib")
                .then(|| (module, rel, fs::read_to_string(&path).unwrap()))
        })
        .collect()
}

/// The top-level modules a file names as `crate::<module>`.
fn crate_paths(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    for (module, rel, _) in sources() {
        assert!(
            layer(&module).is_some(),
            "{rel}: module {module} has no layer"
        );
    }
}

#[test]
fn no_import_runs_up_a_layer() {
    let mut up = Vec::new();
    for (module, rel, text) in sources() {
        let own = layer(&module).unwrap();
        for target in crate_paths(&text) {
            if layer(&target).is_some_and(|l| l > own) {
                up.push(format!("{rel} uses crate::{target}"));
            }
        }
    }
    assert!(up.is_empty(), "imports up a layer:\n{}", up.join("\n"));
}

#[test]
fn only_the_systemd_client_names_zbus() {
    for (_, rel, text) in sources() {
        if rel != "systemd/dbus.rs" {
            assert!(!text.contains("zbus::"), "{rel} names zbus");
        }
    }
}

#[test]
fn only_the_transports_name_tonic_or_prost() {
    let transport = |rel: &str| {
        [
            "grpc/",
            "plugin/",
            "proto.rs",
            "nomad_standin/",
            "cli/run.rs",
        ]
        .iter()
        .any(|p| rel.starts_with(p))
    };
    for (_, rel, text) in sources() {
        if !transport(&rel) {
            for name in ["tonic::", "prost::", "prost_types::"] {
                assert!(!text.contains(name), "{rel} names {name}");
            }
        }
    }
}

#[test]
fn the_fake_systemd_is_compiled_for_unit_tests_only() {
    let (_, _, text) = sources()
        .into_iter()
        .find(|(_, rel, _)| rel == "systemd/mod.rs")
        .unwrap();
    assert!(text.contains("#[cfg(test)]\npub mod fake;"), "{text}");
    for (_, rel, text) in sources() {
        if text.contains("FakeSystemd") && !rel.starts_with("systemd/fake.rs") {
            assert!(
                rel.ends_with("tests.rs") || text.contains("#[cfg(test)]"),
                "{rel} uses FakeSystemd outside tests"
            );
        }
    }
}
