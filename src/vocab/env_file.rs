//! Where a unit's environment file lives: the planner names it in `EnvironmentFile=`, the systemd
//! client writes it (root-only) before the start and removes it with the unit.

/// Where the driver keeps each task's environment file (root-only directory, files 0600).
pub const ENV_DIR: &str = "/run/nomad-driver-systemd/env";

/// The environment file of a unit: its name with `[A-Za-z0-9:.@-]` kept, `_` doubled and any
/// other byte written `_xHH` (a transient name may carry `\x..` escapes of the task name), so
/// that two unit names never share a file.
pub fn env_file_path(unit: &str) -> String {
    let mut name = String::with_capacity(unit.len());
    for b in unit.bytes() {
        match b {
            b'_' => name.push_str("__"),
            b if b.is_ascii_alphanumeric() || b":.@-".contains(&b) => name.push(char::from(b)),
            b => name.push_str(&format!("_x{b:02x}")),
        }
    }
    format!("{ENV_DIR}/{name}.env")
}

#[cfg(test)]
mod tests {
    use super::env_file_path;

    #[test]
    fn env_file_paths_are_plain() {
        assert_eq!(
            env_file_path("nomad-a-my\\x2dtask-0a1b2c3d.service"),
            "/run/nomad-driver-systemd/env/nomad-a-my_x5cx2dtask-0a1b2c3d.service.env"
        );
        // injective: an escape and an underscore spelling of one name stay apart
        assert_ne!(
            env_file_path("a\\b.service"),
            env_file_path("a_x5cb.service")
        );
        assert_eq!(
            env_file_path("a_b.service"),
            "/run/nomad-driver-systemd/env/a__b.service.env"
        );
        assert_eq!(
            env_file_path("web@x.service"),
            "/run/nomad-driver-systemd/env/web@x.service.env"
        );
    }
}
