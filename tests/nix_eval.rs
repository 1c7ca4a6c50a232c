//! The Nix side, evaluated as far as a machine without nixpkgs can go. With Debian's
//! Nix and `../shared/nix/` (nixpkgs' `lib` and its real `services.nomad` module):
//!
//! - `tests/nix/module.nix`: `nix/module.nix` in several configurations, checked in Nix;
//! - the module's `settings` options against `nomad-driver-systemd schema --json`, both ways;
//! - `tests/nix/flake-outputs.nix`: every flake output with stub inputs, and each VM test's node;
//! - each VM test's `testScript` as Python against the test driver's names;
//! - every ```nix snippet of the Markdown docs parses, and whole examples evaluate;
//! - and each check fails on a seeded break.
//!
//! Building the package and running the VM tests needs nixpkgs and KVM: `nix flake check`.
//! Set `NDS_SKIP_NIX=1` to skip where `nix-instantiate`, `python3` or `../shared` are missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nomad_driver_systemd::config::PluginConfig;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/nix` (or `$NDS_SHARED_DIR/nix`), or `None` when the checks are skipped.
fn nix_setup() -> Option<PathBuf> {
    let shared = std::env::var_os("NDS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
        .join("nix");
    let mut missing = Vec::new();
    for tool in ["nix-instantiate", "python3"] {
        if Command::new(tool).arg("--version").output().is_err() {
            missing.push(format!("`{tool}`"));
        }
    }
    if !shared.join("nomad-module.nix").is_file() {
        missing.push(format!("{}", shared.display()));
    }
    if missing.is_empty() {
        return Some(shared.canonicalize().unwrap());
    }
    let what = missing.join(", ");
    if std::env::var_os("NDS_SKIP_NIX").is_some() {
        eprintln!("skipping the Nix evaluation: missing {what} (NDS_SKIP_NIX is set)");
        return None;
    }
    panic!(
        "the Nix evaluation needs {what}: install Debian's nix-bin and python3, keep shared/ \
         beside the clone (or set NDS_SHARED_DIR), or set NDS_SKIP_NIX=1 locally"
    );
}

/// A Nix expression for an absolute path (safe whatever characters it holds).
fn nix_path(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 path");
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("/. + \"{escaped}\"")
}

/// `nix-instantiate --eval --strict --json FILE --arg shared ... --arg NAME PATH...`: the JSON,
/// or Nix's error message.
fn nix_eval(shared: &Path, file: &str, args: &[(&str, &Path)]) -> Result<Value, String> {
    let mut cmd = Command::new("nix-instantiate");
    cmd.args(["--readonly-mode", "--eval", "--strict", "--json"])
        .arg(root().join(file))
        .args(["--arg", "shared"])
        .arg(nix_path(shared))
        // Debian's nix.conf names a build group that need not exist; nothing is built here.
        .env("NIX_CONFIG", "build-users-group =");
    for (name, path) in args {
        cmd.args(["--arg", name]).arg(nix_path(path));
    }
    let out = cmd.output().expect("run nix-instantiate");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate --json prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn nix_parses(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snippet.nix");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&file)
        .env("NIX_CONFIG", "build-users-group =")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// A copy of these parts of the repository, to break without touching the real one.
fn copy_of(parts: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for part in parts {
        copy_tree(&root().join(part), &dir.path().join(part));
    }
    dir
}

/// Replaces `from` (which must occur) by `to` in `file`.
fn seed_break(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The module

#[test]
fn the_module_evaluates_in_every_configuration() {
    let Some(shared) = nix_setup() else { return };
    let out = nix_eval(&shared, "tests/nix/module.nix", &[]).unwrap_or_else(|e| panic!("{e}"));
    let configs = out["configs"].as_object().unwrap();
    for name in ["on", "full", "off", "dropPrivileges"] {
        assert!(configs.contains_key(name), "no configuration {name}");
    }
    assert!(out["checked"].as_u64().unwrap() >= 40, "{}", out["checked"]);

    // What the module writes is what the driver accepts: config.toml (and the identical plugin
    // block) through the driver's own parser.
    for name in ["on", "full", "dropPrivileges"] {
        let block = &configs[name]["configToml"];
        assert_eq!(block, &configs[name]["pluginBlock"], "{name}");
        let text = toml::to_string(block).unwrap();
        PluginConfig::from_toml(&text)
            .unwrap_or_else(|e| panic!("{name}: the driver refuses config.toml {text}: {e}"));
    }
    let full =
        PluginConfig::from_toml(&toml::to_string(&configs["full"]["configToml"]).unwrap()).unwrap();
    assert_eq!(full.slice, "batch-nomad.slice");
    assert!(full.allowed_units.contains(&"web@*.service".to_string()));
    assert_eq!(configs["off"]["pluginBlock"], Value::Null);

    // The plugin dir on ExecStart is the join of extraSettingsPlugins, which hold the driver.
    let on = &configs["on"];
    let exec = on["execStart"].as_str().unwrap();
    assert!(exec.contains(&format!(
        "-plugin-dir={}",
        on["pluginDir"].as_str().unwrap()
    )));
    assert!(
        on["plugins"][0]
            .as_str()
            .unwrap()
            .contains("nomad-driver-systemd")
    );
    assert_eq!(
        configs["full"]["units"]["web@.service"],
        std::fs::read_to_string(root().join("examples/units/web@.service")).unwrap()
    );

    // Every option is documented; every literalExpression (defaults, examples) parses.
    let docs = out["docs"].as_array().unwrap();
    assert!(docs.len() >= 10, "{docs:?}");
    for o in docs {
        let d = o["description"].as_str().unwrap_or("");
        assert!(!d.trim().is_empty(), "{} has no description", o["name"]);
    }
    // (Nix's parser also refuses undefined names: a module's arguments are in scope.)
    for text in out["literalExpressions"].as_array().unwrap() {
        let text = text.as_str().unwrap();
        nix_parses(&format!("{{ config, lib, pkgs, ... }}:\n(\n{text}\n)"))
            .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
    }
}

#[test]
fn the_module_check_fails_on_a_seeded_break() {
    let Some(shared) = nix_setup() else { return };
    let breaks: [(&str, &str, &str); 3] = [
        // The driver needs root: without mkForce, a user's dropPrivileges = true conflicts.
        (
            "dropPrivileges = lib.mkForce false;",
            "dropPrivileges = false;",
            "dropPrivileges",
        ),
        // An assertion lost.
        (
            "assertion = nomadCfg.settings.client.enabled or false;",
            "assertion = true;",
            "clientOff: assertion",
        ),
        // Templates no longer allow-listed.
        (
            "++ map unitGlob (lib.attrNames cfg.unitTemplates)",
            "",
            "full: plugin block",
        ),
    ];
    for (from, to, expect) in breaks {
        let copy = copy_of(&["nix", "Cargo.toml", "Cargo.lock"]);
        let module = copy.path().join("nix/module.nix");
        seed_break(&module, from, to);
        let err = nix_eval(&shared, "tests/nix/module.nix", &[("module", &module)])
            .expect_err(&format!("the check passed with {from:?} → {to:?}"));
        assert!(err.contains(expect), "break {from:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// One source of truth for the plugin's keys

/// The module option type that holds an HCL type, e.g. `list(string)` → `listOf(str)`.
fn module_type(hcl: &str) -> Option<String> {
    let inner = |prefix: &str| hcl.strip_prefix(prefix)?.strip_suffix(')');
    Some(match hcl {
        "bool" => "bool".into(),
        "string" => "str".into(),
        "number" => "number".into(),
        _ => {
            if let Some(t) = inner("list(").or_else(|| inner("set(")) {
                format!("listOf({})", module_type(t)?)
            } else if let Some(t) = inner("map(") {
                format!("attrsOf({})", module_type(t)?)
            } else {
                return None;
            }
        }
    })
}

/// What disagrees between the plugin's keys (`schema --json`) and the module's `settings`
/// options (tests/nix/module.nix's `settingsOptions`).
fn schema_mismatches(schema: &Value, options: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let options = options.as_object().unwrap();
    let mut keys = BTreeMap::new();
    for key in schema["plugin"].as_array().unwrap() {
        keys.insert(key["key"].as_str().unwrap(), key);
    }
    for (name, key) in &keys {
        let ty = key["type"].as_str().unwrap();
        let Some(opt) = options.get(*name) else {
            problems.push(format!(
                "plugin key `{name}` ({ty}) has no option services.nomad.systemdDriver.settings.{name} in nix/module.nix"
            ));
            continue;
        };
        let opt_type = opt["type"].as_str().unwrap();
        let default_null = opt["default"].is_null();
        let got = match opt_type.strip_prefix("nullOr(") {
            Some(t) if default_null => t.strip_suffix(')').unwrap_or(t),
            _ => opt_type,
        };
        match module_type(ty) {
            None => problems.push(format!(
                "plugin key `{name}`: teach tests/nix_eval.rs which option type holds HCL `{ty}`"
            )),
            Some(want) if want == "number" => {
                if !["int", "float", "number"].contains(&got) {
                    problems.push(format!(
                        "option `{name}` is {opt_type}, the plugin key is {ty}"
                    ));
                }
            }
            // an enum of strings is a string key whose values the module already narrows
            Some(want) if want == "str" && got == "enum" => {}
            Some(want) if want != got => {
                problems.push(format!(
                    "option `{name}` is {opt_type}, the plugin key is {ty} (want {want})"
                ));
            }
            Some(_) => {}
        }
        if opt["description"].as_str().unwrap_or("").trim().is_empty() {
            problems.push(format!("option `{name}` has no description"));
        }
        if !opt["hasDefault"].as_bool().unwrap_or(false) && !key["required"].as_bool().unwrap() {
            problems.push(format!(
                "option `{name}` has no default, but the plugin key is optional"
            ));
        }
        // A non-null default must be the driver's (null leaves the key out: the driver's applies).
        if let (false, Some(literal)) = (default_null, key["default"].as_str())
            && let Ok(driver_default) = serde_json::from_str::<Value>(literal)
            && driver_default != opt["default"]
        {
            problems.push(format!(
                "option `{name}` defaults to {}, the driver to {literal}",
                opt["default"]
            ));
        }
    }
    for name in options.keys() {
        if !keys.contains_key(name.as_str()) {
            problems.push(format!(
                "option settings.{name} is not a plugin key (nomad-driver-systemd schema)"
            ));
        }
    }
    problems
}

fn schema_json() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nomad-driver-systemd"))
        .args(["schema", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_plugin_key_has_a_typed_documented_option_and_no_option_lacks_a_key() {
    let schema = schema_json();
    assert!(schema["plugin"].as_array().unwrap().len() >= 7, "{schema}");
    let Some(shared) = nix_setup() else { return };
    let out = nix_eval(&shared, "tests/nix/module.nix", &[]).unwrap_or_else(|e| panic!("{e}"));
    let options = &out["settingsOptions"];
    let problems = schema_mismatches(&schema, options);
    assert!(
        problems.is_empty(),
        "nix/module.nix is out of step with the plugin's keys:\n  {}",
        problems.join("\n  ")
    );

    // Seeded: a key added in Rust without its option is named …
    let mut added = schema.clone();
    added["plugin"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "key": "seeded_key", "type": "list(string)", "required": false, "default": "[]"
        }));
    let problems = schema_mismatches(&added, options);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`seeded_key`"), "{problems:?}");
    // … and so is an option the plugin does not have, a wrong type and a wrong default.
    let mut opts = options.clone();
    opts["seeded_option"] = serde_json::json!({"type": "bool", "description": "x", "hasDefault": true, "default": false});
    opts["allow_root"]["type"] = "str".into();
    opts["slice"]["default"] = "nomad.slice".into();
    let problems = schema_mismatches(&schema, &opts).join("\n");
    for want in [
        "settings.seeded_option",
        "option `allow_root` is str",
        "`slice` defaults to",
    ] {
        assert!(problems.contains(want), "{want}: {problems}");
    }
}

// ---------------------------------------------------------------------------------------------
// The flake and its VM tests

/// Problems of each VM test's testScript (Python, and only the test driver's names).
fn vm_script_problems(shared: &Path, vm_tests: &Value) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (name, test) in vm_tests.as_object().unwrap() {
        let script = dir.path().join(format!("{name}.py"));
        std::fs::write(&script, test["testScript"].as_str().unwrap()).unwrap();
        let nodes: Vec<&str> = test["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let out = Command::new("python3")
            .arg(root().join("tests/nix/check_test_script.py"))
            .arg(shared.join("nixos_test_driver_api.py"))
            .arg(&script)
            .args(&nodes)
            .output()
            .unwrap();
        if !out.status.success() {
            problems.push(format!(
                "nixos-tests/{name}.nix: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    problems
}

#[test]
fn the_flake_outputs_evaluate_and_the_vm_test_scripts_use_the_driver_api() {
    let Some(shared) = nix_setup() else { return };
    let out =
        nix_eval(&shared, "tests/nix/flake-outputs.nix", &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut files: Vec<String> = std::fs::read_dir(root().join("nixos-tests"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".nix")
                .map(str::to_string)
        })
        .collect();
    files.sort();
    let vm_tests = out["vmTests"].as_object().unwrap();
    assert_eq!(vm_tests.keys().cloned().collect::<Vec<_>>(), files);
    assert!(files.len() >= 5);
    assert_eq!(out["package"]["mainProgram"], "nomad-driver-systemd");
    assert_eq!(out["app"]["type"], "app");
    assert_eq!(
        vm_tests["template-unit"]["units"]["machine"],
        serde_json::json!(["web@.service"])
    );
    let problems = vm_script_problems(&shared, &out["vmTests"]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_flake_checks_fail_on_a_seeded_break() {
    let Some(shared) = nix_setup() else { return };
    let parts = [
        "flake.nix",
        "nix",
        "nixos-tests",
        "examples",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto",
        "src",
    ];

    // An output broken: `nix run .#dev` would not find an app.
    let copy = copy_of(&parts);
    let flake = copy.path().join("flake.nix");
    seed_break(&flake, "type = \"app\";", "type = \"application\";");
    let err = nix_eval(&shared, "tests/nix/flake-outputs.nix", &[("flake", &flake)])
        .expect_err("the flake check passed with a broken app");
    assert!(err.contains("apps.dev type"), "{err}");

    // A VM test's node that NixOS would refuse: a misspelt option of services.nomad.
    let copy = copy_of(&parts);
    let flake = copy.path().join("flake.nix");
    seed_break(
        &copy.path().join("nix/vm-test-common.nix"),
        "enableDocker = false;",
        "enableDocker = false;\n        enableDockr = false;",
    );
    let err = nix_eval(&shared, "tests/nix/flake-outputs.nix", &[("flake", &flake)])
        .expect_err("the flake check passed with a misspelt option");
    assert!(err.contains("enableDockr"), "{err}");

    // A VM test script calling a Machine method that does not exist, and an undefined name.
    let copy = copy_of(&parts);
    let flake = copy.path().join("flake.nix");
    let test = copy.path().join("nixos-tests/transient-command.nix");
    seed_break(
        &test,
        "machine.wait_until_fails(",
        "machine.wait_until_fail(",
    );
    seed_break(&test, "with subtest(", "with sub_test(");
    let out = nix_eval(&shared, "tests/nix/flake-outputs.nix", &[("flake", &flake)])
        .unwrap_or_else(|e| panic!("{e}"));
    let problems = vm_script_problems(&shared, &out["vmTests"]).join("\n");
    assert!(
        problems.contains("`machine.wait_until_fail` is not a Machine method"),
        "{problems}"
    );
    assert!(problems.contains("`sub_test` is not defined"), "{problems}");

    // A script that is not Python at all.
    seed_break(&test, "wait_for_driver()", "wait_for_driver(");
    let out = nix_eval(&shared, "tests/nix/flake-outputs.nix", &[("flake", &flake)])
        .unwrap_or_else(|e| panic!("{e}"));
    let problems = vm_script_problems(&shared, &out["vmTests"]).join("\n");
    assert!(problems.contains("not Python"), "{problems}");
}

// ---------------------------------------------------------------------------------------------
// The docs' Nix snippets

/// Every ```nix block of the repository's Markdown files: (file, first line, text).
fn nix_snippets() -> Vec<(PathBuf, usize, String)> {
    fn markdown(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            if p.is_dir() {
                markdown(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    markdown(root(), &mut files);
    files.sort();
    let mut snippets = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut current: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut current {
                None if line.trim_start() == "```nix" => current = Some((i + 2, String::new())),
                Some(_) if line.trim_start() == "```" => {
                    let (start, body) = current.take().unwrap();
                    snippets.push((file.clone(), start, body));
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    snippets
}

#[test]
fn the_docs_nix_snippets_parse_and_whole_examples_evaluate() {
    let Some(shared) = nix_setup() else { return };
    let snippets = nix_snippets();
    assert!(
        snippets.iter().any(|(f, _, _)| f.ends_with("README.md")),
        "the README's NixOS example is gone"
    );
    let mut evaluated = 0;
    for (file, line, text) in &snippets {
        let at = format!("{}:{line}", file.strip_prefix(root()).unwrap().display());
        nix_parses(text).unwrap_or_else(|e| panic!("{at}: the snippet does not parse: {e}"));
        // A whole NixOS flake example: evaluate it beside a copy of examples/units.
        if text.contains("nixosConfigurations") {
            let dir = copy_of(&["examples"]);
            copy_tree(&root().join("examples/units"), &dir.path().join("units"));
            let example = dir.path().join("flake.nix");
            std::fs::write(&example, text).unwrap();
            let out = nix_eval(
                &shared,
                "tests/nix/readme-example.nix",
                &[("example", &example)],
            )
            .unwrap_or_else(|e| panic!("{at}: the example does not evaluate: {e}"));
            for (name, host) in out.as_object().unwrap() {
                assert_eq!(
                    host["failedAssertions"],
                    serde_json::json!([]),
                    "{at}: {name}"
                );
                assert_eq!(host["warnings"], serde_json::json!([]), "{at}: {name}");
                assert_eq!(host["dropPrivileges"], false, "{at}: {name}");
                assert!(host["pluginBlock"].is_object(), "{at}: {name}: {host}");
            }
            evaluated += 1;
        }
    }
    assert!(evaluated >= 1, "no whole NixOS example was evaluated");
}

#[test]
fn the_snippet_check_fails_on_the_old_readme_example() {
    if nix_setup().is_none() {
        return;
    }
    // `@` cannot stand in a Nix path literal: the README's example once had this line.
    let err = nix_parses("{ unitTemplates.\"web@.service\" = ./web@.service; }")
        .expect_err("a path literal with @ parsed");
    assert!(err.contains("syntax error"), "{err}");
    nix_parses("{ unitTemplates.\"web@.service\" = ./units + \"/web@.service\"; }").unwrap();
}
