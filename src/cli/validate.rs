//! `validate`: judges the systemd tasks of Nomad job files exactly as the plugin would, with the
//! plugin's own decoder (`config::cty::Fields` + `TaskUserConfig`) and planner (`unit::plan`),
//! under the operator's config (`/etc/nomad-driver-systemd/config.toml` or `--config`).
//!
//! Job properties the target's systemd lacks are refused by key, as the plugin refuses them at
//! StartTask: the version is `--systemd-version`, else the host's systemd when it answers on the
//! system bus, else unknown (no version check).
//!
//! What Nomad only knows at run time is stood in for by placeholders ([`super::interp`]): the
//! alloc id, the alloc dir, the per-start id, `${...}` interpolations. Resources missing from the
//! job take Nomad's defaults (cpu 100 MHz, memory 300 MB). Output maps placeholders back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use super::interp::{ALLOC_DIR, ALLOC_ID, Interp, NETNS, START_ID};
use super::job::{self, Group, Job, Problem, Task};
use crate::config::cty::Fields;
use crate::config::{ConfigError, PluginConfig, TaskUserConfig};
use crate::task::TaskSpec;
use crate::task::spec::Resources;
use crate::unit::{Host, plan_on};
use crate::vocab::Mode;

/// Nomad's resources for a task whose job names none.
const DEFAULT_CPU_MHZ: i64 = 100;
const DEFAULT_MEMORY_MB: i64 = 300;

/// The verdict on one systemd task, or on a file that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub file: String,
    /// `None` for problems with the file itself.
    pub group: Option<String>,
    pub task: Option<String>,
    pub unit: Option<String>,
    pub mode: Option<Mode>,
    /// Where the task's output will go (`nomad`, `journal`, `nomad+journal`), as `list` says it.
    pub logs: Option<String>,
    /// The unit's settings in unit-file spelling, in the planner's order.
    pub settings: Vec<(String, String)>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.errors.is_empty() && self.task.is_some()
    }

    fn file_problem(file: &str, problem: Problem) -> Self {
        Self {
            file: file.to_string(),
            group: None,
            task: None,
            unit: None,
            mode: None,
            logs: None,
            settings: Vec::new(),
            errors: vec![problem],
            warnings: Vec::new(),
        }
    }

    /// `file: group "g" task "t"` (or just the file).
    pub fn place(&self) -> String {
        match (&self.group, &self.task) {
            (Some(g), Some(t)) => format!("{}: group {g:?} task {t:?}", self.file),
            _ => self.file.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        let settings: serde_json::Map<String, Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "file": self.file,
            "group": self.group,
            "task": self.task,
            "valid": self.valid(),
            "unit": self.unit,
            "mode": self.mode,
            "logs": self.logs,
            "settings": settings,
            "errors": self.errors,
            "warnings": self.warnings,
        })
    }
}

/// The verdicts on one file: one report per systemd task, or one for the file's own problem.
pub fn check_file(path: &Path, plugin: &PluginConfig, host: Host) -> Vec<Report> {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![Report::file_problem(
                &file,
                Problem::new("file", e.to_string()),
            )];
        }
    };
    match job::parse(&text) {
        Ok(job) => check_job(&file, &job, plugin, host),
        Err(p) => vec![Report::file_problem(&file, p)],
    }
}

/// One report per task with `driver = "systemd"`.
pub fn check_job(file: &str, job: &Job, plugin: &PluginConfig, host: Host) -> Vec<Report> {
    job.groups
        .iter()
        .flat_map(|g| g.tasks.iter().map(move |t| (g, t)))
        .filter(|(_, t)| t.driver == "systemd")
        .map(|(g, t)| check_task(file, job, g, t, plugin, host))
        .collect()
}

fn check_task(
    file: &str,
    job: &Job,
    group: &Group,
    task: &Task,
    plugin: &PluginConfig,
    host: Host,
) -> Report {
    let mut interp = Interp::new();
    let mut errors = task.problems.clone();
    let mut warnings = task.warnings.clone();
    let spec = task_spec(job, group, task, &mut interp, &mut errors, &mut warnings);
    let mut report = Report {
        file: file.to_string(),
        group: Some(group.name.clone()),
        task: Some(task.name.clone()),
        unit: None,
        mode: None,
        logs: None,
        settings: Vec::new(),
        errors,
        warnings,
    };
    match decode_config(&task.config, &mut interp) {
        Ok(cfg) => match plan_on(&spec, &cfg, plugin, host) {
            Ok(p) => {
                report.unit = Some(p.unit);
                report.mode = Some(p.mode);
                report.logs = Some(logs_of(&p.settings, plugin));
                report.settings = p.settings;
            }
            Err(e) => report
                .errors
                .extend(e.0.into_iter().map(|pe| Problem::new(pe.key, pe.message))),
        },
        Err(p) => report.errors.push(p),
    }
    restore(&mut report, &interp, &spec);
    report
}

/// Where the planned unit's output goes, in `list`'s words.
fn logs_of(settings: &[(String, String)], plugin: &PluginConfig) -> String {
    let kind = |name: &str| {
        let v = settings
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str());
        v.split(':').next().unwrap_or("").to_string()
    };
    let to = super::list::logs_to(&kind("StandardOutput"), &kind("StandardError"));
    if to == "nomad" && plugin.logs == crate::config::plugin::Logs::Both {
        "nomad+journal".into()
    } else {
        to
    }
}

/// The job's `config {}` through the plugin's own decoder.
fn decode_config(
    config: &Result<Value, Problem>,
    interp: &mut Interp,
) -> Result<TaskUserConfig, Problem> {
    let value = match config {
        Ok(Value::Null) => rmpv::Value::Map(Vec::new()),
        Ok(v) => to_rmpv(v, interp),
        Err(p) => return Err(p.clone()),
    };
    Fields::from_value(value, "config.")
        .and_then(TaskUserConfig::from_fields)
        .map_err(|e| match e {
            ConfigError::Invalid { key, message } => Problem::new(key, message),
            other => Problem::new("config", other.to_string()),
        })
}

/// A JSON-like value as the cty-msgpack tree the plugin decodes, interpolations replaced.
fn to_rmpv(v: &Value, interp: &mut Interp) -> rmpv::Value {
    match v {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => rmpv::Value::from(i),
            (_, Some(u), _) => rmpv::Value::from(u),
            (_, _, f) => rmpv::Value::from(f.unwrap_or(f64::NAN)),
        },
        Value::String(s) => rmpv::Value::from(interp.resolve(s)),
        Value::Array(items) => {
            rmpv::Value::Array(items.iter().map(|i| to_rmpv(i, interp)).collect())
        }
        Value::Object(map) => rmpv::Value::Map(
            map.iter()
                .map(|(k, v)| (rmpv::Value::from(k.as_str()), to_rmpv(v, interp)))
                .collect(),
        ),
    }
}

/// What Nomad would send in `TaskConfig`, with placeholders for what only it knows.
fn task_spec(
    job: &Job,
    group: &Group,
    task: &Task,
    interp: &mut Interp,
    errors: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> TaskSpec {
    let name = task.name.clone();
    let logs = format!("{ALLOC_DIR}/alloc/logs/.{name}");
    TaskSpec {
        id: format!("{ALLOC_ID}/{name}/{START_ID}"),
        alloc_id: ALLOC_ID.to_string(),
        alloc_dir: ALLOC_DIR.to_string(),
        job_name: job.name.clone(),
        job_id: job.id.clone(),
        group: group.name.clone(),
        namespace: job.namespace.clone(),
        env: task
            .env
            .iter()
            .map(|(k, v)| (k.clone(), interp.resolve(v)))
            .collect(),
        user: interp.resolve(&task.user),
        resources: resources(task, errors, warnings),
        stdout_path: format!("{logs}.stdout.fifo"),
        stderr_path: format!("{logs}.stderr.fifo"),
        network_ns: group
            .network_mode
            .as_deref()
            .filter(|m| *m == "bridge" || m.starts_with("cni/"))
            .map(|_| NETNS.to_string()),
        name,
        ..TaskSpec::default()
    }
}

fn resources(task: &Task, errors: &mut Vec<Problem>, warnings: &mut Vec<Problem>) -> Resources {
    let ask = &task.resources;
    let cores = ask.cores.filter(|c| *c != 0);
    let cpu = ask.cpu.filter(|c| *c != 0);
    if cores.is_some() && cpu.is_some() {
        errors.push(Problem::new(
            "resources.cores",
            "a task asks for cpu or cores, not both",
        ));
    }
    let cpuset_cpus = match cores {
        Some(n) if n > 0 => {
            if n == 1 {
                "0".to_string()
            } else {
                format!("0-{}", n - 1)
            }
        }
        Some(n) => {
            errors.push(Problem::new(
                "resources.cores",
                format!("{n} is not a number of cores"),
            ));
            String::new()
        }
        None => String::new(),
    };
    let memory_max = ask.memory_max.unwrap_or(0);
    if memory_max != 0 {
        warnings.push(Problem::new(
            "resources.memory_max",
            "Nomad passes memory_max on only when memory oversubscription is enabled in the scheduler",
        ));
    }
    Resources {
        // with cores, Nomad derives the shares from the reserved cores' speed
        cpu_mhz: cpu.unwrap_or(if cores.is_some() { 0 } else { DEFAULT_CPU_MHZ }),
        memory_mb: ask.memory.filter(|m| *m != 0).unwrap_or(DEFAULT_MEMORY_MB),
        memory_max_mb: memory_max,
        cpuset_cpus,
    }
}

/// Maps placeholders back to what the job wrote (or to `<markers>`).
fn restore(report: &mut Report, interp: &Interp, spec: &TaskSpec) {
    report.unit = report.unit.as_deref().map(|u| interp.restore(u));
    for (name, value) in &mut report.settings {
        *value = match name.as_str() {
            "EnvironmentFile" => format!("{value} <Nomad's task environment, root-only>"),
            "AllowedCPUs" => format!("<the cores Nomad reserves: {}>", spec.resources.cpuset_cpus),
            _ => interp.restore(value),
        };
    }
    for p in report.errors.iter_mut().chain(report.warnings.iter_mut()) {
        p.key = interp.restore(&p.key);
        p.message = interp.restore(&p.message);
    }
}

/// `nomad-driver-systemd validate [--config F] [--json] [--systemd-version N] FILES...`
pub fn run(
    config: Option<&Path>,
    files: &[PathBuf],
    json: bool,
    systemd_version: Option<u32>,
) -> ExitCode {
    let plugin = match PluginConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            super::say_err(&format!("validate: {e}"));
            return ExitCode::from(2);
        }
    };
    let host = Host {
        systemd_version: systemd_version.or_else(super::host_systemd_version),
        ..Host::default()
    };
    let mut reports = Vec::new();
    let mut empty = Vec::new();
    for f in files {
        let r = check_file(f, &plugin, host);
        if r.is_empty() {
            empty.push(f.display().to_string());
        }
        reports.extend(r);
    }
    let ok = reports.iter().all(Report::valid);
    if json {
        let doc = Value::Array(reports.iter().map(Report::to_json).collect());
        super::say(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_human(&reports, &empty);
    }
    if ok && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_human(reports: &[Report], empty: &[String]) {
    for r in reports {
        if r.task.is_none() {
            for e in &r.errors {
                super::say_err(&format!("{}: {e}", r.place()));
            }
            continue;
        }
        for w in &r.warnings {
            super::say_err(&format!("{}: warning: {w}", r.place()));
        }
        for e in &r.errors {
            super::say_err(&format!("{}: {e}", r.place()));
        }
        super::say(&task_text(r));
    }
    for f in empty {
        super::say(&format!("{f}: no tasks with driver = \"systemd\""));
    }
    let tasks = reports.iter().filter(|r| r.task.is_some()).count();
    let bad = reports.iter().filter(|r| !r.valid()).count();
    super::say(&match bad {
        0 => format!("{tasks} systemd task(s) checked: all valid"),
        n => format!("{tasks} systemd task(s) checked: {n} problem(s) in tasks or files"),
    });
}

/// One task's verdict with its unit and settings as a table.
pub fn task_text(r: &Report) -> String {
    let mut out = String::new();
    let verdict = if r.valid() {
        "valid".to_string()
    } else {
        format!("INVALID ({} error(s))", r.errors.len())
    };
    out.push_str(&format!("{}: {verdict}\n", r.place()));
    if let (Some(unit), Some(mode)) = (&r.unit, r.mode) {
        let mode = match mode {
            Mode::Transient => "transient",
            Mode::Unit => "unit",
        };
        let mut rows: Vec<(String, String)> =
            vec![("unit".into(), unit.clone()), ("mode".into(), mode.into())];
        if let Some(logs) = &r.logs {
            rows.push(("logs".into(), logs.clone()));
        }
        rows.extend(r.settings.iter().cloned());
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
    }
    out
}

/// Settings by name (tests, callers that want lookups).
pub fn settings_map(r: &Report) -> BTreeMap<&str, &str> {
    r.settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(toml: &str) -> PluginConfig {
        PluginConfig::from_toml(toml).unwrap()
    }

    fn check(hcl: &str, cfg: &PluginConfig) -> Vec<Report> {
        let job = job::parse(hcl).unwrap();
        check_job("job.hcl", &job, cfg, Host::default())
    }

    fn task(config: &str, extra: &str) -> String {
        format!(
            "job \"j\" {{\n group \"g\" {{\n task \"t\" {{\n driver = \"systemd\"\n config {{\n{config}\n }}\n{extra}\n }}\n }}\n}}\n"
        )
    }

    #[test]
    fn logs_setting_shows_where_output_goes() {
        let job = task("command = \"/bin/true\"", "");
        let r = &check(&job, &plugin("logs = \"journal\""))[0];
        let s = settings_map(r);
        assert_eq!(s["StandardOutput"], "journal");
        assert_eq!(s["StandardError"], "journal");
        assert_eq!(s["SyslogIdentifier"], "t");
        assert_eq!(r.logs.as_deref(), Some("journal"));
        let r = &check(&job, &plugin(""))[0];
        assert!(settings_map(r)["StandardError"].starts_with("file:"));
        assert_eq!(r.logs.as_deref(), Some("nomad"));
        let r = &check(&job, &plugin("logs = \"both\""))[0];
        assert_eq!(r.logs.as_deref(), Some("nomad+journal"));
        assert!(task_text(r).contains("  logs "), "{}", task_text(r));
        assert_eq!(r.to_json()["logs"], "nomad+journal");
    }

    #[test]
    fn transient_task_plans_with_placeholders_shown() {
        let r = &check(
            &task(
                "command = \"${NOMAD_TASK_DIR}/run\"\nargs = [\"--port\", \"${NOMAD_PORT_http}\"]",
                "env { GREETING = \"hi ${node.unique.name}\" }\nresources {\n cpu = 200\n memory = 128\n }",
            ),
            &PluginConfig::default(),
        )[0];
        assert!(r.valid(), "{:?}", r.errors);
        assert_eq!(r.mode, Some(Mode::Transient));
        assert_eq!(
            r.unit.as_deref(),
            Some("nomad-${NOMAD_ALLOC_ID}-t-<id>.service")
        );
        let s = settings_map(r);
        assert_eq!(
            s["ExecStart"],
            ":${NOMAD_TASK_DIR}/run --port ${NOMAD_PORT_http}"
        );
        assert_eq!(
            s["Description"],
            "Nomad task j/g/t (alloc ${NOMAD_ALLOC_ID})"
        );
        assert_eq!(s["MemoryMax"], (128u64 << 20).to_string());
        assert_eq!(s["DynamicUser"], "yes");
        assert_eq!(
            s["StandardOutput"],
            "file:<alloc_dir>/alloc/logs/.t.stdout.fifo"
        );
        assert!(
            s["BindPaths"].contains("<alloc_dir>/alloc"),
            "{}",
            s["BindPaths"]
        );
        assert!(
            s["EnvironmentFile"].ends_with(".env <Nomad's task environment, root-only>"),
            "{}",
            s["EnvironmentFile"]
        );
        assert!(
            !s.contains_key("Environment"),
            "no environment in a property"
        );
        assert!(s.contains_key("CPUWeight"));
    }

    #[test]
    fn unit_mode_keeps_the_interpolated_name() {
        let cfg = plugin("allowed_units = [\"web@*.service\"]");
        let r = &check(&task("unit = \"web@${NOMAD_ALLOC_ID}.service\"", ""), &cfg)[0];
        assert!(r.valid(), "{:?}", r.errors);
        assert_eq!(r.unit.as_deref(), Some("web@${NOMAD_ALLOC_ID}.service"));
        assert_eq!(r.mode, Some(Mode::Unit));
        // Nomad's default memory applies
        assert_eq!(settings_map(r)["MemoryMax"], (300u64 << 20).to_string());
    }

    #[test]
    fn errors_name_the_key() {
        let allow = plugin("allowed_units = [\"web@*.service\"]");
        let cases: &[(&str, &str, &str)] = &[
            (
                "unit = \"db.service\"",
                "",
                "config.unit: \"db.service\" does not match the plugin's allowed_units [\"web@*.service\"]",
            ),
            (
                "command = \"/bin/true\"",
                "user = \"root\"",
                "user: \"root\" refused",
            ),
            (
                "command = \"/bin/true\"\nproperties { User = \"root\" }",
                "",
                "config.properties.User:",
            ),
            (
                "command = \"/bin/true\"\nunit = \"web@x.service\"",
                "",
                "config.unit: command and unit are exclusive",
            ),
            (
                "command = \"/bin/true\"\nimage = \"x\"",
                "",
                "config.image: unknown key",
            ),
            (
                "command = \"/bin/true\"\nproperties { LimitNOFILE = \"lots\" }",
                "",
                "config.properties.LimitNOFILE:",
            ),
            (
                "command = \"/bin/true\"\nproperties { Description = \"a\\nExecStartPre=/bin/sh\" }",
                "",
                "config.properties.Description:",
            ),
            (
                "command = 5",
                "",
                "config.command: expected a string, found a number",
            ),
            (
                "",
                "",
                "config.command: exactly one of command or unit is required",
            ),
            (
                "command = \"/bin/true\"",
                "resources {\n cpu = 100\n cores = 2\n }",
                "resources.cores:",
            ),
        ];
        for (config, extra, want) in cases {
            let reports = check(&task(config, extra), &allow);
            let r = &reports[0];
            assert!(!r.valid(), "{config}");
            let all: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
            assert!(all.iter().any(|e| e.starts_with(want)), "{config}: {all:?}");
        }
    }

    #[test]
    fn unit_mode_without_allow_list_names_allowed_units() {
        let r = &check(
            &task("unit = \"web@${NOMAD_ALLOC_ID}.service\"", ""),
            &PluginConfig::default(),
        )[0];
        assert!(
            r.errors[0].message.contains("allowed_units"),
            "{:?}",
            r.errors
        );
        assert!(
            r.errors[0]
                .message
                .contains("web@${NOMAD_ALLOC_ID}.service")
        );
    }

    #[test]
    fn resources_and_network_reach_the_plan() {
        let hcl = "job \"j\" {\n group \"g\" {\n network { mode = \"bridge\" }\n task \"t\" {\n driver = \"systemd\"\n config { command = \"/bin/true\" }\n resources {\n memory = 128\n memory_max = 256\n cores = 2\n }\n }\n }\n}\n";
        let r = &check(hcl, &PluginConfig::default())[0];
        assert!(r.valid(), "{:?}", r.errors);
        let s = settings_map(r);
        assert_eq!(s["MemoryLow"], (128u64 << 20).to_string());
        assert_eq!(s["MemoryMax"], (256u64 << 20).to_string());
        assert_eq!(s["NetworkNamespacePath"], "<netns>");
        assert_eq!(s["AllowedCPUs"], "<the cores Nomad reserves: 0-1>");
        assert_eq!(r.warnings[0].key, "resources.memory_max");
    }

    #[test]
    fn only_systemd_tasks_are_judged_and_json_has_every_field() {
        let hcl = "job \"j\" {\n group \"g\" {\n task \"a\" {\n driver = \"exec\"\n config { x = 1 }\n }\n task \"b\" {\n driver = \"systemd\"\n config { command = \"/bin/true\" }\n }\n }\n}\n";
        let reports = check(hcl, &PluginConfig::default());
        assert_eq!(reports.len(), 1);
        let j = reports[0].to_json();
        for key in [
            "file", "group", "task", "valid", "unit", "mode", "settings", "errors",
        ] {
            assert!(j.get(key).is_some(), "{key}");
        }
        assert_eq!(j["mode"], "transient");
        assert_eq!(j["settings"]["Type"], "exec");
    }

    #[test]
    fn unreadable_files_are_reported_as_files() {
        let r = check_file(
            Path::new("/nonexistent/job.hcl"),
            &PluginConfig::default(),
            Host::default(),
        );
        assert_eq!(r.len(), 1);
        assert!(!r[0].valid());
        assert_eq!(r[0].errors[0].key, "file");
    }

    #[test]
    fn properties_the_target_systemd_lacks_are_refused_by_key() {
        let hcl = task(
            "command = \"/bin/true\"\nproperties = { ProtectProc = \"invisible\" }",
            "",
        );
        let job = job::parse(&hcl).unwrap();
        let old = Host {
            systemd_version: Some(245),
            ..Host::default()
        };
        let r = &check_job("job.hcl", &job, &PluginConfig::default(), old)[0];
        assert!(!r.valid());
        assert_eq!(r.errors[0].key, "config.properties.ProtectProc");
        assert_eq!(
            r.errors[0].message,
            "property \"ProtectProc\" needs systemd 247 or newer; the target runs systemd 245"
        );
        let new = Host {
            systemd_version: Some(252),
            ..Host::default()
        };
        assert!(check_job("job.hcl", &job, &PluginConfig::default(), new)[0].valid());
    }
}
