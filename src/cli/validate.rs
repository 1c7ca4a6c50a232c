//! `validate`: placeholder until the CLI lands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(_config: Option<&Path>, _files: &[PathBuf], _json: bool) -> ExitCode {
    ExitCode::from(2)
}
