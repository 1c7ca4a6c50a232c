//! Where a unit's environment file lives: the planner names it in `EnvironmentFile=`, the systemd
//! client writes it (root-only) before the start and removes it with the unit.

/// Where the driver keeps each task's environment file (root-only directory, files 0600).
pub const ENV_DIR: &str = "/run/nomad-driver-systemd/env";

/// The environment file of a unit: its name with anything but `[A-Za-z0-9:_.@-]` made `_`
/// (a transient name may carry `\x..` escapes of the task name).
pub fn env_file_path(unit: &str) -> String {
    let name: String = unit
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ":_.@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{ENV_DIR}/{name}.env")
}

#[cfg(test)]
mod tests {
    use super::env_file_path;

    #[test]
    fn env_file_paths_are_plain() {
        assert_eq!(
            env_file_path("nomad-a-my\\x2dtask-0a1b2c3d.service"),
            "/run/nomad-driver-systemd/env/nomad-a-my_x2dtask-0a1b2c3d.service.env"
        );
        assert_eq!(
            env_file_path("web@x.service"),
            "/run/nomad-driver-systemd/env/web@x.service.env"
        );
    }
}
