//! `list`: placeholder until the CLI lands.

use std::path::Path;
use std::process::ExitCode;

pub fn run(_config: Option<&Path>, _json: bool) -> ExitCode {
    ExitCode::from(2)
}
