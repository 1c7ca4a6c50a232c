//! The systemd side: a narrow async trait over the Manager/Unit D-Bus API, a real
//! implementation on zbus (the only module that names zbus) and, in unit tests only, an in-memory
//! fake.

pub mod dbus;
#[cfg(test)]
pub mod fake;

use std::future::Future;

use tokio::sync::watch;

use crate::vocab::DValue;

pub use dbus::DbusSystemd;
#[cfg(test)]
pub use fake::FakeSystemd;

/// systemd's major version from its `Version` property: `"252.38-1~deb12u1"` → 252.
pub fn major_version(version: &str) -> Option<u32> {
    let v = version.trim().trim_start_matches('v');
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    v[..end].parse().ok()
}

/// What the driver needs to know about one unit, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// The service's `Result` (`success`, `exit-code`, `signal`, `oom-kill`, ...).
    pub result: String,
    /// Current main process (0 once it exited).
    pub main_pid: u32,
    /// `CLD_EXITED` (1), `CLD_KILLED` (2), `CLD_DUMPED` (3); 0 while running.
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    /// Hex of the 128-bit invocation id.
    pub invocation_id: String,
    pub control_group: String,
    /// µs since the epoch; 0 when unknown.
    pub exec_main_start_usec: u64,
    pub exec_main_exit_usec: u64,
    pub memory_current: Option<u64>,
    pub cpu_usage_nsec: Option<u64>,
}

/// A unit as `ListUnits*` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
}

/// What `nomad-driver-systemd list` shows about a unit, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitInfo {
    pub description: String,
    pub slice: String,
    pub active_state: String,
    pub sub_state: String,
    /// µs since the epoch of the last active-state change (`StateChangeTimestamp`); 0 if unknown.
    pub state_change_usec: u64,
    /// The unit file (empty for transient units).
    pub fragment_path: String,
    /// The service's `LogExtraFields=` (`KEY=value`): the driver puts the task's `NOMAD_*`
    /// identity there (never the environment, which holds secrets).
    pub log_fields: Vec<String>,
    /// `StandardOutput` and `StandardError` as systemd reports them (`journal`, `file`, `null`,
    /// …), so that `list` can say where the unit's logs go.
    pub stdout: String,
    pub stderr: String,
    pub memory_current: Option<u64>,
    pub cpu_usage_nsec: Option<u64>,
    /// The unit's cgroup (`ControlGroup`), for reading usage from cgroupfs where systemd
    /// publishes none (cgroup v1 and hybrid hosts).
    pub control_group: String,
}

/// `siginfo` codes systemd reports in `ExecMainCode`.
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;
pub const CLD_DUMPED: i32 = 3;

impl UnitStatus {
    /// The main process has run and is gone.
    pub fn main_exited(&self) -> bool {
        self.main_pid == 0 && self.exec_main_code != 0
    }

    /// Whether the values agree with each other as one reading of a service would: a dead unit
    /// (inactive or failed) has no main process; the sub state matches the active state
    /// (`running` only while active, `dead` only while inactive, `failed` only while failed);
    /// a main process that exited has no pid. Values gathered from signals (see
    /// [`Systemd::signalled`]) that fail this are stale or mixed, and are read again.
    pub fn is_consistent(&self) -> bool {
        let sub_fits = match self.sub_state.as_str() {
            "running" => self.active_state == "active",
            "dead" => self.active_state == "inactive",
            "failed" => self.active_state == "failed",
            _ => true,
        };
        let pid_fits = !(self.is_dead() && self.main_pid != 0);
        let exit_fits = !(self.exec_main_code != 0 && self.main_pid != 0);
        sub_fits && pid_fits && exit_fits
    }

    /// Nothing of the unit runs any more (inactive or failed).
    pub fn is_dead(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed")
    }
}

/// Which processes of a unit a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillWho {
    Main,
    All,
}

impl KillWho {
    pub fn as_str(self) -> &'static str {
        match self {
            KillWho::Main => "main",
            KillWho::All => "all",
        }
    }
}

/// Errors from systemd or the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemdError {
    /// The bus or systemd cannot be reached right now; a retry may succeed.
    #[error("systemd is unreachable: {0}")]
    Unreachable(String),
    #[error("unit {0} is not loaded")]
    NoSuchUnit(String),
    #[error("unit {0} already exists")]
    UnitExists(String),
    /// The unit's job ended with a result other than `done`.
    #[error("starting unit {unit} failed: job result {result}")]
    JobFailed { unit: String, result: String },
    /// systemd refused the request (bad property, permission, ...).
    #[error("systemd refused: {0}")]
    Refused(String),
    #[error("drop-in for {unit}: {message}")]
    DropIn { unit: String, message: String },
    /// A call or a job did not finish within its deadline; nothing waits for it any more.
    #[error("systemd did not answer in time: {0}")]
    Timeout(String),
}

impl SystemdError {
    /// Worth retrying (Nomad's RecoverableError).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SystemdError::Unreachable(_) | SystemdError::Timeout(_)
        )
    }
}

pub type Result<T, E = SystemdError> = std::result::Result<T, E>;

/// The operations the driver performs on systemd. Every method is cancel-safe to drop.
pub trait Systemd: Send + Sync + 'static {
    /// systemd's version string; also proves the bus works.
    fn version(&self) -> impl Future<Output = Result<String>> + Send;
    /// `StartTransientUnit` (mode `fail`), waiting for the start job to finish.
    fn start_transient(
        &self,
        unit: &str,
        properties: &[(String, DValue)],
    ) -> impl Future<Output = Result<()>> + Send;
    /// `StartUnit` (mode `fail`), waiting for the start job.
    fn start_unit(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// `StopUnit`, waiting for the job; OK when the unit is not loaded.
    fn stop_unit(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    fn kill_unit(
        &self,
        unit: &str,
        who: KillWho,
        signal: i32,
    ) -> impl Future<Output = Result<()>> + Send;
    /// `ResetFailedUnit`; OK when the unit is not loaded or not failed.
    fn reset_failed(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// The unit's status, `None` when systemd has no such unit loaded.
    fn status(&self, unit: &str) -> impl Future<Output = Result<Option<UnitStatus>>> + Send;
    /// A receiver that changes whenever the unit's properties change or the bus reconnects.
    /// Subscribe first, then read [`Systemd::status`]: no change is missed.
    fn watch(&self, unit: &str) -> impl Future<Output = Result<watch::Receiver<u64>>> + Send;
    /// The unit's status as the `PropertiesChanged` signals received since [`Systemd::watch`]
    /// was first called for it (or since the last bus reconnect) told it, without a D-Bus call;
    /// `None` until every field [`UnitStatus`] judges a task by (states, invocation, main
    /// process, exit status, result) has been signalled. `control_group` and the timestamps
    /// may be empty. systemd sends every such property of an interface in each signal, so the
    /// latest signals are as current as a read made when they arrived.
    fn signalled(&self, _unit: &str) -> Option<UnitStatus> {
        None
    }
    /// The unit's `InvocationID` (hex; empty while it has none); `None` when it is not loaded.
    /// One D-Bus call.
    fn invocation_id(&self, unit: &str) -> impl Future<Output = Result<Option<String>>> + Send {
        async move { Ok(self.status(unit).await?.map(|st| st.invocation_id)) }
    }
    /// The unit's `ControlGroup` (empty while it has none); `None` when it is not loaded.
    /// One D-Bus call.
    fn control_group(&self, unit: &str) -> impl Future<Output = Result<Option<String>>> + Send {
        async move { Ok(self.status(unit).await?.map(|st| st.control_group)) }
    }
    /// The unit's load, active and sub state as `ListUnitsByNames` lists it, `None` when it
    /// is not loaded (or its file is not found). Concurrent callers share one call that began
    /// after each of them asked (so a caller that subscribed with [`Systemd::watch`] first
    /// misses no change).
    fn unit_state(&self, unit: &str) -> impl Future<Output = Result<Option<UnitState>>> + Send {
        async move {
            Ok(self.status(unit).await?.map(|st| UnitState {
                load_state: st.load_state,
                active_state: st.active_state,
                sub_state: st.sub_state,
            }))
        }
    }
    /// The invocation id systemd recorded for the unit's current run outside D-Bus (the
    /// `invocation:<unit>` symlink under `/run/systemd/units/`, which systemd writes for
    /// journald when it starts the run); `None` when there is none to read.
    fn recorded_invocation(&self, _unit: &str) -> Option<String> {
        None
    }
    /// `daemon-reload`; concurrent callers share reloads (one that starts after the call).
    fn reload(&self) -> impl Future<Output = Result<()>> + Send;
    /// Writes the task environment file of `unit` (see [`crate::vocab::env_file_path`]): root
    /// only, created 0600 in a 0700 directory, replaced atomically.
    fn write_env_file(&self, unit: &str, text: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes it; OK if absent.
    fn remove_env_file(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// Writes the driver's runtime drop-in for `unit`.
    fn write_dropin(&self, unit: &str, text: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes it; OK if absent.
    fn remove_dropin(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// Whether the driver's drop-in exists for `unit`.
    fn has_dropin(&self, unit: &str) -> impl Future<Output = Result<bool>> + Send;
    /// The driver's drop-in for `unit`, `None` when it does not exist.
    fn read_dropin(&self, unit: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Names of loaded units matching the glob patterns.
    fn list_units(&self, patterns: &[&str]) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Units that are children of the slice (by their `Slice` property).
    fn slice_units(&self, slice: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// What `list` shows about a unit; `None` when systemd has no such unit loaded.
    fn unit_info(&self, unit: &str) -> impl Future<Output = Result<Option<UnitInfo>>> + Send;
    /// Units that carry the driver's drop-in (unit mode), whoever's task they belong to.
    fn dropin_units(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// How long [`Systemd::start_transient`] and [`Systemd::start_unit`] wait for the start
    /// job (the plugin's `start_timeout`); a client without its own deadline ignores it.
    fn set_start_timeout(&self, _within: std::time::Duration) {}
    /// Records, root-only and beside the environment files (so on the same `/run`, surviving
    /// the plugin but not a reboot), that the driver is removing `unit`; `record` is the
    /// driver's description of the removal. Replaces an earlier record of the unit.
    fn persist_removal(&self, _unit: &str, _record: &str) -> Result<()> {
        Ok(())
    }
    /// Drops the record of [`Systemd::persist_removal`]; fine if there is none.
    fn forget_removal(&self, _unit: &str) {}
    /// Every record of [`Systemd::persist_removal`] still present.
    fn pending_removals(&self) -> Vec<String> {
        Vec::new()
    }
    /// How many daemon-reloads this client has performed.
    fn reload_count(&self) -> u64;
    /// The client's own bookkeeping, to prove it returns to idle: live unit watchers and
    /// callers waiting for a job.
    fn bookkeeping(&self) -> Bookkeeping {
        Bookkeeping::default()
    }
}

/// See [`Systemd::bookkeeping`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bookkeeping {
    pub watchers: usize,
    pub job_waiters: usize,
}

/// File name of the driver's drop-in inside `<unit>.d/`.
pub const DROPIN_FILE: &str = "50-nomad-driver-systemd.conf";

/// D-Bus object path label escaping, as systemd does for unit paths.
pub fn unit_object_path(unit: &str) -> String {
    let mut out = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        out.push('_');
    }
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_escape_like_systemd() {
        assert_eq!(
            unit_object_path("web@a-b.service"),
            "/org/freedesktop/systemd1/unit/web_40a_2db_2eservice"
        );
        assert_eq!(
            unit_object_path("nomad-x\\x2dy.service"),
            "/org/freedesktop/systemd1/unit/nomad_2dx_5cx2dy_2eservice"
        );
    }

    #[test]
    fn mixed_or_stale_readings_are_inconsistent() {
        let running = UnitStatus {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 42,
            invocation_id: "ab".into(),
            ..UnitStatus::default()
        };
        let exited = UnitStatus {
            active_state: "failed".into(),
            sub_state: "failed".into(),
            main_pid: 0,
            exec_main_code: CLD_EXITED,
            exec_main_status: 3,
            result: "exit-code".into(),
            ..running.clone()
        };
        assert!(running.is_consistent());
        assert!(exited.is_consistent());
        // a dropped MainPID change: failed, yet a main process
        assert!(
            !UnitStatus {
                main_pid: 42,
                ..exited.clone()
            }
            .is_consistent()
        );
        // states from two moments
        for (active, sub) in [
            ("failed", "running"),
            ("active", "dead"),
            ("inactive", "failed"),
        ] {
            let st = UnitStatus {
                active_state: active.into(),
                sub_state: sub.into(),
                ..exited.clone()
            };
            assert!(!st.is_consistent(), "{active}/{sub}");
        }
        // an exit status beside a live main process
        assert!(
            !UnitStatus {
                exec_main_code: CLD_KILLED,
                ..running.clone()
            }
            .is_consistent()
        );
        // transitions are not contradictions
        for (active, sub) in [("activating", "start"), ("deactivating", "stop-sigterm")] {
            let st = UnitStatus {
                active_state: active.into(),
                sub_state: sub.into(),
                ..running.clone()
            };
            assert!(st.is_consistent(), "{active}/{sub}");
        }
    }

    #[test]
    fn major_versions() {
        assert_eq!(super::major_version("252.38-1~deb12u1"), Some(252));
        assert_eq!(super::major_version("v255.4"), Some(255));
        assert_eq!(super::major_version("256"), Some(256));
        assert_eq!(super::major_version("git"), None);
    }
}
