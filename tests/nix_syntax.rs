//! Every `.nix` file of the flake parses. `tests/nix_eval.rs` evaluates them; building the
//! package and running the NixOS VM tests needs nixpkgs and KVM: `nix flake check`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if p.is_dir() {
            nix_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "nix") {
            out.push(p);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    nix_files(root, &mut files);
    assert!(
        files.len() >= 5,
        "expected flake.nix, nix/*.nix and nixos-tests/*.nix: {files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with("flake.nix")));
    if Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("NDS_SKIP_NIX").is_some() {
            eprintln!("skipping: nix-instantiate is not installed (NDS_SKIP_NIX is set)");
            return;
        }
        panic!(
            "nix-instantiate is missing: install Debian's nix-bin (or set NDS_SKIP_NIX=1 locally)"
        );
    }
    for f in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_nixos_test_is_a_runnable_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos-tests");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        assert!(
            text.contains("runNixOSTest"),
            "{} is not a runNixOSTest",
            e.path().display()
        );
        assert!(
            text.contains("testScript"),
            "{} has no testScript",
            e.path().display()
        );
        n += 1;
    }
    assert!(n >= 5, "one file per scenario: {n}");
}
