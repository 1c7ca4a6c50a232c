//! `list`: the units this driver manages on this host, read over the system bus.
//!
//! A unit is the driver's when it lives in the configured slice and either its name follows the
//! transient scheme (`nomad-<alloc>-<task>-<id>.service`) or it carries the driver's drop-in
//! (unit mode). Job, group and task come from the transient unit's description
//! (`Nomad task <job>/<group>/<task> (alloc <id>)`) or, in unit mode, from the `NOMAD_*`
//! journal fields (`LogExtraFields=`) the drop-in sets. MEMORY and CPU come from systemd
//! (`MemoryCurrent`, `CPUUsageNSec`) or, where it publishes none (cgroup v1 and hybrid hosts),
//! from the unit's cgroup through the same readers the plugin's TaskStats use.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::{human_bytes, human_cpu, say, say_err, table, utc_timestamp};
use crate::config::PluginConfig;
use crate::stats::{detect_layout, read_cgroup};
use crate::systemd::{DbusSystemd, Systemd, SystemdError, UnitInfo};
use crate::unit::name::{ParsedName, parse_unit_name};
use crate::vocab::Mode;

/// The longest `list` waits for systemd.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One unit of the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub alloc_id: String,
    pub job: String,
    pub group: String,
    pub task: String,
    pub unit: String,
    pub mode: Mode,
    pub active_state: String,
    pub sub_state: String,
    /// µs since the epoch of the last state change; 0 if unknown.
    pub since_usec: u64,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    /// Where the unit's output goes: `nomad`, `journal`, `none`, or per stream.
    pub logs: String,
}

impl Entry {
    pub fn to_json(&self) -> Value {
        json!({
            "alloc_id": self.alloc_id,
            "job": self.job,
            "group": self.group,
            "task": self.task,
            "unit": self.unit,
            "mode": self.mode,
            "active_state": self.active_state,
            "sub_state": self.sub_state,
            "since": utc_timestamp(self.since_usec),
            "since_usec": self.since_usec,
            "memory_bytes": self.memory_bytes,
            "cpu_nsec": self.cpu_nsec,
            "logs": self.logs,
        })
    }

    fn row(&self) -> Vec<String> {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".into()
            } else {
                s.to_string()
            }
        };
        vec![
            or_dash(&self.alloc_id),
            or_dash(&self.job),
            or_dash(&self.group),
            or_dash(&self.task),
            match self.mode {
                Mode::Transient => "transient".into(),
                Mode::Unit => "unit".into(),
            },
            format!("{}/{}", self.active_state, self.sub_state),
            utc_timestamp(self.since_usec).unwrap_or_else(|| "-".into()),
            self.memory_bytes.map_or_else(|| "-".into(), human_bytes),
            self.cpu_nsec.map_or_else(|| "-".into(), human_cpu),
            self.logs.clone(),
            self.unit.clone(),
        ]
    }
}

/// The driver's units in `slice`, sorted by alloc id, task and unit. Usage systemd does not
/// publish is read from the cgroup hierarchy under `cgroup_root`.
pub async fn collect<S: Systemd>(
    sd: &S,
    slice: &str,
    cgroup_root: &Path,
) -> Result<Vec<Entry>, SystemdError> {
    let mut out = Vec::new();
    for unit in sd.slice_units(slice).await? {
        let parsed = parse_unit_name(&unit);
        let mode = if parsed.is_some() {
            Mode::Transient
        } else if sd.has_dropin(&unit).await? {
            Mode::Unit
        } else {
            continue; // someone else's unit in our slice
        };
        // gone since the listing: nothing to show
        let Some(info) = sd.unit_info(&unit).await? else {
            continue;
        };
        let mut e = entry(unit, mode, parsed, &info);
        usage_from_cgroupfs(&mut e, cgroup_root, &info.control_group);
        out.push(e);
    }
    out.sort_by(|a, b| (&a.alloc_id, &a.task, &a.unit).cmp(&(&b.alloc_id, &b.task, &b.unit)));
    Ok(out)
}

fn entry(unit: String, mode: Mode, parsed: Option<ParsedName>, info: &UnitInfo) -> Entry {
    let env: BTreeMap<&str, &str> = info
        .log_fields
        .iter()
        .filter_map(|e| e.split_once('='))
        .collect();
    let described = parse_description(&info.description);
    let pick = |from_desc: Option<&String>, var: &str| {
        from_desc
            .cloned()
            .or_else(|| env.get(var).map(|v| (*v).to_string()))
    };
    let d = described.as_ref();
    let alloc_id = pick(d.map(|d| &d.alloc_id), "NOMAD_ALLOC_ID")
        .or_else(|| parsed.as_ref().map(|p| p.alloc_id.clone()))
        .or_else(|| instance_alloc_id(&unit))
        .unwrap_or_default();
    let task = pick(d.map(|d| &d.task), "NOMAD_TASK_NAME")
        .or_else(|| parsed.as_ref().map(|p| p.task.clone()))
        .unwrap_or_default();
    Entry {
        alloc_id,
        job: pick(d.map(|d| &d.job), "NOMAD_JOB_NAME").unwrap_or_default(),
        group: pick(d.map(|d| &d.group), "NOMAD_GROUP_NAME").unwrap_or_default(),
        task,
        unit,
        mode,
        active_state: info.active_state.clone(),
        sub_state: info.sub_state.clone(),
        since_usec: info.state_change_usec,
        memory_bytes: info.memory_current,
        cpu_nsec: info.cpu_usage_nsec,
        logs: logs_to(&info.stdout, &info.stderr),
    }
}

/// Where a unit's output goes, from its `StandardOutput`/`StandardError`: `nomad` (a file,
/// which for the driver's units is Nomad's FIFO), `journal`, `none`, or `stdout:X,stderr:Y`
/// when the two differ.
pub fn logs_to(stdout: &str, stderr: &str) -> String {
    fn one(output: &str) -> &str {
        match output {
            "file" | "append" | "truncate" => "nomad",
            "journal" | "journal+console" | "kmsg" | "kmsg+console" => "journal",
            "null" => "none",
            "" => "-",
            other => other,
        }
    }
    let (out, err) = (one(stdout), one(stderr));
    // stderr = inherit: the same place as stdout
    if out == err || err == "inherit" {
        out.to_string()
    } else {
        format!("stdout:{out},stderr:{err}")
    }
}

/// Fills MEMORY and CPU from the unit's cgroup where systemd left them unset.
fn usage_from_cgroupfs(e: &mut Entry, root: &Path, cgroup: &str) {
    if (e.memory_bytes.is_some() && e.cpu_nsec.is_some()) || cgroup.is_empty() {
        return;
    }
    let Some(reading) = detect_layout(root).and_then(|l| read_cgroup(root, l, cgroup).ok()) else {
        return;
    };
    e.memory_bytes = e.memory_bytes.or(reading.mem_usage);
    e.cpu_nsec = e.cpu_nsec.or(reading.cpu_total_ns);
}

/// Job, group, task and alloc id from a transient unit's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub job: String,
    pub group: String,
    pub task: String,
    pub alloc_id: String,
}

/// Parses `Nomad task <job>/<group>/<task> (alloc <id>)` (the planner's `Description=`).
pub fn parse_description(description: &str) -> Option<Described> {
    let rest = description.strip_prefix("Nomad task ")?.strip_suffix(')')?;
    let (path, alloc_id) = rest.rsplit_once(" (alloc ")?;
    let mut parts = path.rsplitn(3, '/');
    let task = parts.next()?;
    let group = parts.next()?;
    let job = parts.next()?;
    Some(Described {
        job: job.to_string(),
        group: group.to_string(),
        task: task.to_string(),
        alloc_id: alloc_id.to_string(),
    })
}

/// The instance of `name@<uuid>.service`, when it is UUID-shaped (as `${NOMAD_ALLOC_ID}` is).
fn instance_alloc_id(unit: &str) -> Option<String> {
    let instance = unit.split_once('@')?.1.strip_suffix(".service")?;
    let uuid = instance.len() == 36
        && instance.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    uuid.then(|| instance.to_string())
}

/// `nomad-driver-systemd list [--config F] [--json]`
pub fn run(config: Option<&Path>, json: bool) -> ExitCode {
    let plugin = match PluginConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            say_err(&format!("list: {e}"));
            return ExitCode::from(2);
        }
    };
    let runtime_dir = std::env::var(super::RUNTIME_DIR_ENV)
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| super::DEFAULT_RUNTIME_DIR.to_string());
    let entries = match read(&runtime_dir, &plugin.slice, Path::new(super::CGROUP_ROOT)) {
        Ok(mut e) => {
            // with logs = "both" the forwarder copies what goes to Nomad into the journal
            if plugin.logs == crate::config::plugin::Logs::Both {
                for entry in e.iter_mut().filter(|e| e.logs == "nomad") {
                    entry.logs = "nomad+journal".into();
                }
            }
            e
        }
        Err(e) => {
            say_err(&format!("list: {e}"));
            return ExitCode::from(1);
        }
    };
    if json {
        let doc = Value::Array(entries.iter().map(Entry::to_json).collect());
        say(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else if entries.is_empty() {
        say(&format!(
            "no units of nomad-driver-systemd in {}",
            plugin.slice
        ));
    } else {
        let rows: Vec<Vec<String>> = entries.iter().map(Entry::row).collect();
        say(&table(
            &[
                "ALLOC ID", "JOB", "GROUP", "TASK", "MODE", "STATE", "SINCE", "MEMORY", "CPU",
                "LOGS", "UNIT",
            ],
            &rows,
        ));
    }
    ExitCode::SUCCESS
}

/// Connects to the system bus and collects; errors say where the bus was looked for.
fn read(runtime_dir: &str, slice: &str, root: &Path) -> Result<Vec<Entry>, String> {
    let bus = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let sd = DbusSystemd::new(runtime_dir);
    let result =
        runtime.block_on(async { tokio::time::timeout(TIMEOUT, collect(&sd, slice, root)).await });
    sd.close();
    match result {
        Ok(Ok(entries)) => Ok(entries),
        Ok(Err(e)) => Err(format!(
            "cannot list units over the system bus ({bus}): {e}"
        )),
        Err(_) => Err(format!(
            "systemd did not answer within {}s over the system bus ({bus})",
            TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::FakeSystemd;
    use crate::vocab::DValue;

    const ALLOC: &str = "8f3c2d1e-1111-2222-3333-444455556666";

    #[test]
    fn descriptions_parse_back() {
        let d =
            parse_description(&format!("Nomad task my/job/web/server (alloc {ALLOC})")).unwrap();
        assert_eq!(
            d,
            Described {
                job: "my/job".into(),
                group: "web".into(),
                task: "server".into(),
                alloc_id: ALLOC.into()
            }
        );
        for other in ["Web server", "Nomad task x (alloc y)", "Nomad task a/b/c"] {
            assert_eq!(parse_description(other), None, "{other}");
        }
    }

    #[test]
    fn uuid_instances_give_alloc_ids() {
        assert_eq!(
            instance_alloc_id(&format!("web@{ALLOC}.service")).as_deref(),
            Some(ALLOC)
        );
        assert_eq!(instance_alloc_id("web@1.service"), None);
        assert_eq!(instance_alloc_id("web.service"), None);
    }

    #[tokio::test]
    async fn lists_transient_and_unit_mode_units_only() {
        let sd = FakeSystemd::new();
        let transient = crate::unit::name::unit_name(ALLOC, "server", "0a1b2c3d");
        sd.start_transient(
            &transient,
            &[
                (
                    "Description".into(),
                    DValue::Str(format!("Nomad task j/g/server (alloc {ALLOC})")),
                ),
                ("Slice".into(), DValue::Str("nomad_tasks.slice".into())),
                ("StandardOutput".into(), DValue::Str("journal".into())),
                ("StandardError".into(), DValue::Str("journal".into())),
            ],
        )
        .await
        .unwrap();
        let other = format!("web@{ALLOC}.service");
        sd.install(&other);
        sd.write_dropin(&other, "[Service]\n").await.unwrap();
        sd.start_unit(&other).await.unwrap();
        sd.install("foreign.service");
        sd.start_unit("foreign.service").await.unwrap();

        let entries = collect(&sd, "nomad_tasks.slice", Path::new("/nonexistent"))
            .await
            .unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let t = entries.iter().find(|e| e.unit == transient).unwrap();
        assert_eq!(
            (
                t.alloc_id.as_str(),
                t.job.as_str(),
                t.group.as_str(),
                t.task.as_str()
            ),
            (ALLOC, "j", "g", "server")
        );
        assert_eq!(t.mode, Mode::Transient);
        assert_eq!(t.active_state, "active");
        let u = entries.iter().find(|e| e.unit == other).unwrap();
        assert_eq!(u.mode, Mode::Unit);
        assert_eq!(u.alloc_id, ALLOC);
        assert_eq!(t.logs, "journal");
        let j = t.to_json();
        assert_eq!(j["logs"], "journal");
        assert_eq!(j["mode"], "transient");
        assert_eq!(j["alloc_id"], ALLOC);
    }

    #[test]
    fn logs_column_names_the_destination() {
        assert_eq!(logs_to("file", "file"), "nomad");
        assert_eq!(logs_to("journal", "journal"), "journal");
        assert_eq!(logs_to("journal", "inherit"), "journal");
        assert_eq!(logs_to("null", "null"), "none");
        assert_eq!(logs_to("file", "journal"), "stdout:nomad,stderr:journal");
    }

    #[tokio::test]
    async fn an_unreachable_bus_is_an_error() {
        let sd = FakeSystemd::new();
        sd.set_unreachable(true);
        assert!(matches!(
            collect(&sd, "nomad_tasks.slice", Path::new("/nonexistent")).await,
            Err(SystemdError::Unreachable(_))
        ));
    }

    #[tokio::test]
    async fn usage_systemd_does_not_publish_is_read_from_cgroupfs() {
        // a hybrid v1 host: systemd reports neither MemoryCurrent nor CPUUsageNSec
        let root = tempfile::tempdir().unwrap();
        let sd = FakeSystemd::new();
        let unit = crate::unit::name::unit_name(ALLOC, "server", "0a1b2c3d");
        sd.start_transient(
            &unit,
            &[("Slice".into(), DValue::Str("nomad_tasks.slice".into()))],
        )
        .await
        .unwrap();
        let cgroup = sd.status(&unit).await.unwrap().unwrap().control_group;
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("unified/cgroup.controllers", "");
        write("memory/cgroup.procs", "");
        write("cpuacct/cgroup.procs", "");
        write(&format!("memory{cgroup}/memory.usage_in_bytes"), "4096\n");
        write(&format!("cpuacct{cgroup}/cpuacct.usage"), "5000000\n");
        let entries = collect(&sd, "nomad_tasks.slice", root.path())
            .await
            .unwrap();
        assert_eq!(entries[0].memory_bytes, Some(4096));
        assert_eq!(entries[0].cpu_nsec, Some(5_000_000));
        assert_eq!(entries[0].row()[7..9], ["4.0K", "5ms"]);
    }
}
