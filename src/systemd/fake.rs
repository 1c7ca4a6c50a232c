//! An in-memory systemd for unit tests of the driver core: units "run" until a test makes them
//! exit, signals kill unless the test says the unit ignores them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{CLD_EXITED, CLD_KILLED, KillWho, Result, Systemd, SystemdError, UnitInfo, UnitStatus};
use crate::vocab::DValue;

#[derive(Default)]
struct Unit {
    status: UnitStatus,
    properties: Vec<(String, DValue)>,
    ignored: HashSet<i32>,
    tx: Option<watch::Sender<u64>>,
}

#[derive(Default)]
struct State {
    units: HashMap<String, Unit>,
    installed: HashSet<String>,
    dropins: HashMap<String, String>,
    env_files: HashMap<String, String>,
    fail_next_start: Option<SystemdError>,
    /// The next started unit exits with this status before its start job finishes.
    exit_during_start: Option<i32>,
    time_out_next_start: bool,
    unreachable: bool,
    /// The bus goes away right after the next start created its unit.
    lose_bus_after_start: bool,
    /// What `version()` reports; empty: "252 (fake)".
    version: String,
    signals: Vec<(String, KillWho, i32)>,
}

/// A fake systemd. Clones share state.
#[derive(Clone, Default)]
pub struct FakeSystemd {
    state: Arc<Mutex<State>>,
    next_pid: Arc<AtomicU32>,
    reloads: Arc<AtomicU64>,
}

impl FakeSystemd {
    pub fn new() -> Self {
        Self {
            next_pid: Arc::new(AtomicU32::new(1000)),
            ..Self::default()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn check_reachable(&self) -> Result<()> {
        if self.with(|s| s.unreachable) {
            Err(SystemdError::Unreachable("fake bus is down".into()))
        } else {
            Ok(())
        }
    }

    /// Makes `version()` report this version string.
    pub fn set_version(&self, version: &str) {
        self.with(|s| s.version = version.to_string());
    }

    /// Makes the main process exit with `code`.
    pub fn exit(&self, unit: &str, code: i32) {
        self.finish(
            unit,
            CLD_EXITED,
            code,
            if code == 0 { "success" } else { "exit-code" },
        );
    }

    /// Makes the main process die of `signal` (as the OOM killer would with `result = "oom-kill"`).
    pub fn die(&self, unit: &str, signal: i32, result: &str) {
        self.finish(unit, CLD_KILLED, signal, result);
    }

    fn finish(&self, unit: &str, code: i32, status: i32, result: &str) {
        self.with(|s| {
            if let Some(u) = s.units.get_mut(unit)
                && u.status.main_pid != 0
            {
                u.status.main_pid = 0;
                u.status.exec_main_code = code;
                u.status.exec_main_status = status;
                u.status.result = result.to_string();
                let ok = result == "success";
                u.status.active_state = if ok { "active" } else { "failed" }.into();
                u.status.sub_state = if ok { "exited" } else { "failed" }.into();
                u.status.exec_main_exit_usec = 2;
                if let Some(tx) = &u.tx {
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
    }

    /// The unit will not die of `signal`.
    pub fn ignore_signal(&self, unit: &str, signal: i32) {
        self.with(|s| {
            if let Some(u) = s.units.get_mut(unit) {
                u.ignored.insert(signal);
            }
        });
    }

    /// The next started unit's main process exits with `code` before the start job finishes,
    /// so the job fails (systemd's behaviour for a fast exit under load).
    pub fn exit_during_next_start(&self, code: i32) {
        self.with(|s| s.exit_during_start = Some(code));
    }

    /// The next start job times out: systemd kills the process (SIGTERM) and the job ends
    /// with result `timeout`.
    pub fn time_out_next_start(&self) {
        self.with(|s| s.time_out_next_start = true);
    }

    /// The next start creates its unit, then the bus goes away before the start's reply.
    pub fn lose_bus_after_next_start(&self) {
        self.with(|s| s.lose_bus_after_start = true);
    }

    /// Whether the environment file of `unit` exists.
    pub fn has_env_file(&self, unit: &str) -> bool {
        self.with(|s| s.env_files.contains_key(unit))
    }

    /// The next start fails with `err`.
    pub fn fail_next_start(&self, err: SystemdError) {
        self.with(|s| s.fail_next_start = Some(err));
    }

    /// Simulates a lost bus (`true`) or its return (`false`, waking every watcher).
    pub fn set_unreachable(&self, down: bool) {
        self.with(|s| {
            s.unreachable = down;
            if !down {
                for u in s.units.values() {
                    if let Some(tx) = &u.tx {
                        tx.send_modify(|n| *n += 1);
                    }
                }
            }
        });
    }

    /// Marks a unit file as installed (unit mode).
    pub fn install(&self, unit: &str) {
        self.with(|s| s.installed.insert(unit.to_string()));
    }

    /// Forgets a unit as if someone reset it behind the driver's back.
    pub fn forget(&self, unit: &str) {
        self.with(|s| s.units.remove(unit));
    }

    /// Starts an installed unit behind the driver's back (as an operator would).
    pub fn start_unit_now(&self, unit: &str) {
        let _ = self.run(unit, Vec::new());
    }

    pub fn status_now(&self, unit: &str) -> Option<UnitStatus> {
        self.with(|s| s.units.get(unit).map(|u| u.status.clone()))
    }

    pub fn properties(&self, unit: &str) -> Option<Vec<(String, DValue)>> {
        self.with(|s| s.units.get(unit).map(|u| u.properties.clone()))
    }

    pub fn dropin(&self, unit: &str) -> Option<String> {
        self.with(|s| s.dropins.get(unit).cloned())
    }

    pub fn signals(&self) -> Vec<(String, KillWho, i32)> {
        self.with(|s| s.signals.clone())
    }

    pub fn loaded_units(&self) -> Vec<String> {
        self.with(|s| {
            s.units
                .iter()
                .filter(|(_, u)| u.status.load_state == "loaded")
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    fn run(&self, unit: &str, properties: Vec<(String, DValue)>) -> Result<()> {
        self.check_reachable()?;
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        self.with(|s| {
            if let Some(e) = s.fail_next_start.take() {
                return Err(e);
            }
            let tx = s.units.get_mut(unit).and_then(|u| u.tx.take());
            let unit_entry = s.units.entry(unit.to_string()).or_default();
            unit_entry.status = UnitStatus {
                load_state: "loaded".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                main_pid: pid,
                invocation_id: format!("{pid:032x}"),
                control_group: format!("/fake.slice/{unit}"),
                exec_main_start_usec: 1,
                ..UnitStatus::default()
            };
            unit_entry.properties = properties;
            unit_entry.tx = tx;
            if let Some(tx) = &unit_entry.tx {
                tx.send_modify(|n| *n += 1);
            }
            Ok(())
        })
    }
}

impl Systemd for FakeSystemd {
    async fn version(&self) -> Result<String> {
        self.check_reachable()?;
        let v = self.with(|s| s.version.clone());
        Ok(if v.is_empty() { "252 (fake)".into() } else { v })
    }

    async fn start_transient(&self, unit: &str, properties: &[(String, DValue)]) -> Result<()> {
        if self.with(|s| {
            s.units
                .get(unit)
                .is_some_and(|u| u.status.load_state == "loaded")
        }) {
            return Err(SystemdError::UnitExists(unit.to_string()));
        }
        self.run(unit, properties.to_vec())?;
        if self.with(|s| std::mem::take(&mut s.lose_bus_after_start)) {
            self.set_unreachable(true);
            return Err(SystemdError::Unreachable("fake bus lost mid-start".into()));
        }
        if self.with(|s| std::mem::take(&mut s.time_out_next_start)) {
            self.die(unit, libc::SIGTERM, "timeout");
            return Err(SystemdError::JobFailed {
                unit: unit.to_string(),
                result: "timeout".into(),
            });
        }
        if let Some(code) = self.with(|s| s.exit_during_start.take()) {
            self.exit(unit, code);
            return Err(SystemdError::JobFailed {
                unit: unit.to_string(),
                result: "failed".into(),
            });
        }
        Ok(())
    }

    async fn start_unit(&self, unit: &str) -> Result<()> {
        if !self.with(|s| s.installed.contains(unit)) {
            return Err(SystemdError::NoSuchUnit(unit.to_string()));
        }
        self.run(unit, Vec::new())
    }

    async fn stop_unit(&self, unit: &str) -> Result<()> {
        self.check_reachable()?;
        self.die(unit, libc::SIGTERM, "success");
        self.with(|s| {
            if let Some(u) = s.units.get_mut(unit)
                && u.status.active_state != "failed"
            {
                u.status.active_state = "inactive".into();
                u.status.sub_state = "dead".into();
                if let Some(tx) = &u.tx {
                    tx.send_modify(|n| *n += 1);
                }
                if !s.installed.contains(unit) {
                    s.units.remove(unit); // garbage-collected
                }
            }
        });
        Ok(())
    }

    async fn kill_unit(&self, unit: &str, who: KillWho, signal: i32) -> Result<()> {
        self.check_reachable()?;
        let dies = self.with(|s| {
            s.signals.push((unit.to_string(), who, signal));
            match s.units.get(unit) {
                None => Err(SystemdError::NoSuchUnit(unit.to_string())),
                Some(u) => Ok(signal == libc::SIGKILL || !u.ignored.contains(&signal)),
            }
        })?;
        if dies && signal != 0 {
            let clean =
                [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE].contains(&signal);
            self.die(unit, signal, if clean { "success" } else { "signal" });
        }
        Ok(())
    }

    async fn reset_failed(&self, unit: &str) -> Result<()> {
        self.check_reachable()?;
        self.with(|s| {
            if s.units.get(unit).is_some_and(|u| u.status.is_dead()) && !s.installed.contains(unit)
            {
                s.units.remove(unit);
            }
        });
        Ok(())
    }

    async fn status(&self, unit: &str) -> Result<Option<UnitStatus>> {
        self.check_reachable()?;
        Ok(self.with(|s| {
            s.units
                .get(unit)
                .filter(|u| u.status.load_state == "loaded")
                .map(|u| u.status.clone())
        }))
    }

    async fn watch(&self, unit: &str) -> Result<watch::Receiver<u64>> {
        self.check_reachable()?;
        Ok(self.with(|s| {
            let u = s.units.entry(unit.to_string()).or_default();
            if u.status.load_state.is_empty() {
                // a watch on a unit that is not loaded must not make it appear loaded
                u.status.load_state = "not-found".into();
            }
            u.tx.get_or_insert_with(|| watch::channel(0).0).subscribe()
        }))
    }

    async fn reload(&self) -> Result<()> {
        self.check_reachable()?;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write_env_file(&self, unit: &str, text: &str) -> Result<()> {
        self.with(|s| s.env_files.insert(unit.to_string(), text.to_string()));
        Ok(())
    }

    async fn remove_env_file(&self, unit: &str) -> Result<()> {
        self.with(|s| s.env_files.remove(unit));
        Ok(())
    }

    async fn write_dropin(&self, unit: &str, text: &str) -> Result<()> {
        self.with(|s| s.dropins.insert(unit.to_string(), text.to_string()));
        Ok(())
    }

    async fn remove_dropin(&self, unit: &str) -> Result<()> {
        self.with(|s| s.dropins.remove(unit));
        Ok(())
    }

    async fn has_dropin(&self, unit: &str) -> Result<bool> {
        Ok(self.with(|s| s.dropins.contains_key(unit)))
    }

    async fn read_dropin(&self, unit: &str) -> Result<Option<String>> {
        Ok(self.with(|s| s.dropins.get(unit).cloned()))
    }

    async fn dropin_units(&self) -> Result<Vec<String>> {
        Ok(self.with(|s| s.dropins.keys().cloned().collect()))
    }

    async fn list_units(&self, _patterns: &[&str]) -> Result<Vec<String>> {
        self.check_reachable()?;
        Ok(self.loaded_units())
    }

    async fn slice_units(&self, _slice: &str) -> Result<Vec<String>> {
        self.check_reachable()?;
        Ok(self.loaded_units())
    }

    async fn unit_info(&self, unit: &str) -> Result<Option<UnitInfo>> {
        self.check_reachable()?;
        // as systemd reports it: `StandardOutputFile` makes `StandardOutput` read `file`
        let output = |props: &[(String, DValue)], name: &str| {
            props
                .iter()
                .find_map(|(k, v)| match v {
                    DValue::Str(s) if k == name => Some(s.clone()),
                    _ if *k == format!("{name}File") => Some("file".to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| "inherit".to_string())
        };
        let text = |props: &[(String, DValue)], name: &str| {
            props.iter().find_map(|(k, v)| match v {
                DValue::Str(s) if k == name => Some(s.clone()),
                _ => None,
            })
        };
        Ok(self.with(|s| {
            let u = s
                .units
                .get(unit)
                .filter(|u| u.status.load_state == "loaded")?;
            let log_fields = u
                .properties
                .iter()
                .filter(|(k, _)| k == "LogExtraFields")
                .flat_map(|(_, v)| match v {
                    DValue::Array { items, .. } => items.clone(),
                    _ => Vec::new(),
                })
                .filter_map(|v| match v {
                    DValue::Bytes(b) => String::from_utf8(b).ok(),
                    _ => None,
                })
                .collect();
            Some(UnitInfo {
                description: text(&u.properties, "Description").unwrap_or_default(),
                slice: text(&u.properties, "Slice").unwrap_or_default(),
                active_state: u.status.active_state.clone(),
                sub_state: u.status.sub_state.clone(),
                state_change_usec: u.status.exec_main_start_usec,
                fragment_path: if s.installed.contains(unit) {
                    format!("/etc/systemd/system/{unit}")
                } else {
                    String::new()
                },
                log_fields,
                stdout: output(&u.properties, "StandardOutput"),
                stderr: output(&u.properties, "StandardError"),
                memory_current: u.status.memory_current,
                cpu_usage_nsec: u.status.cpu_usage_nsec,
                control_group: u.status.control_group.clone(),
            })
        }))
    }

    fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}
