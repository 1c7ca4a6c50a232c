//! The unit planner: task spec + job config + plugin config → the unit's name and settings.
//! Pure: no I/O. Transient units get typed D-Bus properties; unit mode gets drop-in text.

use std::fmt;

use super::name::{unit_name, valid_unit_name};
use super::properties::{self, PropertyPolicy, Section};
use super::value::DValue;
use crate::config::plugin::{is_root_user, valid_user_name};
use crate::config::{PluginConfig, TaskUserConfig};
use crate::task::spec::{Resources, TaskSpec};

/// Working directory when the job names none.
pub const DEFAULT_WORK_DIR: &str = "/local";
/// `MS_REC` for BindPaths' flags.
const MS_REC: u64 = 0x4000;

/// How the unit comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `StartTransientUnit` from `command`.
    Transient,
    /// An installed unit (or template instance) from `unit`, with a runtime drop-in.
    Unit,
}

/// What the driver will ask systemd for.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPlan {
    pub unit: String,
    pub mode: Mode,
    /// Typed properties for `StartTransientUnit` (transient mode).
    pub properties: Vec<(String, DValue)>,
    /// Drop-in file text (unit mode).
    pub dropin: Option<String>,
    /// Every setting in unit-file spelling, for people (`validate`, logs).
    pub settings: Vec<(String, String)>,
}

/// One refused input, naming the job key or property at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every refused input of one task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// A setting in both spellings: unit-file text and typed D-Bus values.
struct Setting {
    name: String,
    text: String,
    dbus: Vec<(String, DValue)>,
    section: Section,
}

struct Builder {
    settings: Vec<Setting>,
    errors: Vec<PlanError>,
}

impl Builder {
    fn set(&mut self, name: &str, text: impl Into<String>, dbus: DValue) {
        self.settings.push(Setting {
            name: name.to_string(),
            text: text.into(),
            dbus: vec![(name.to_string(), dbus)],
            section: Section::Service,
        });
    }

    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PlanError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn has(&self, name: &str) -> bool {
        self.settings.iter().any(|s| s.name == name)
    }
}

/// Plans the unit for one task start. All problems are collected, not just the first.
pub fn plan(
    task: &TaskSpec,
    cfg: &TaskUserConfig,
    plugin: &PluginConfig,
) -> Result<UnitPlan, PlanErrors> {
    let mut b = Builder {
        settings: Vec::new(),
        errors: Vec::new(),
    };
    let (unit, mode) = match &cfg.unit {
        Some(u) => {
            check_unit(&mut b, u, plugin);
            (u.clone(), Mode::Unit)
        }
        None => (
            unit_name(&task.alloc_id, &task.name, task.id_suffix()),
            Mode::Transient,
        ),
    };
    if mode == Mode::Transient {
        let desc = format!(
            "Nomad task {}/{}/{} (alloc {})",
            task.job_name, task.group, task.name, task.alloc_id
        );
        b.set("Description", desc.clone(), DValue::Str(desc));
    }
    b.set(
        "Slice",
        plugin.slice.clone(),
        DValue::Str(plugin.slice.clone()),
    );
    b.set("Restart", "no", DValue::Str("no".into()));
    b.set("RemainAfterExit", "yes", DValue::Bool(true));
    if let Some(command) = &cfg.command {
        exec_start(&mut b, command, &cfg.args);
    }
    environment(&mut b, task);
    let work_dir = match (&cfg.work_dir, mode) {
        (Some(d), _) => Some(d.clone()),
        (None, Mode::Transient) => Some(DEFAULT_WORK_DIR.to_string()),
        (None, Mode::Unit) => None,
    };
    if let Some(dir) = work_dir {
        b.set("WorkingDirectory", dir.clone(), DValue::Str(dir));
    }
    identity(&mut b, task, plugin, mode);
    filesystem(&mut b, task);
    logs(&mut b, task);
    resources(&mut b, &task.resources);
    if let Some(ns) = &task.network_ns {
        b.set("NetworkNamespacePath", ns.clone(), DValue::Str(ns.clone()));
    }
    job_properties(&mut b, cfg, plugin);
    if mode == Mode::Transient && !b.has("Type") {
        // exec: a missing or non-executable binary fails the start job instead of exiting later.
        b.set("Type", "exec", DValue::Str("exec".into()));
    }
    if !b.errors.is_empty() {
        return Err(PlanErrors(b.errors));
    }
    let settings = b
        .settings
        .iter()
        .map(|s| (s.name.clone(), s.text.clone()))
        .collect();
    let (properties, dropin) = match mode {
        Mode::Transient => (b.settings.into_iter().flat_map(|s| s.dbus).collect(), None),
        Mode::Unit => (Vec::new(), Some(render_dropin(&b.settings))),
    };
    Ok(UnitPlan {
        unit,
        mode,
        properties,
        dropin,
        settings,
    })
}

fn check_unit(b: &mut Builder, unit: &str, plugin: &PluginConfig) {
    if !valid_unit_name(unit) {
        b.error(
            "config.unit",
            format!(
                "{unit:?} is not a service unit name (NAME.service or TEMPLATE@INSTANCE.service)"
            ),
        );
        return;
    }
    if plugin.allowed_units.is_empty() {
        b.error(
            "config.unit",
            format!(
                "{unit:?} refused: unit mode is off because the plugin's allowed_units is empty"
            ),
        );
        return;
    }
    match plugin.unit_globs() {
        Ok(globs) if globs.is_match(unit) => {}
        Ok(_) => b.error(
            "config.unit",
            format!(
                "{unit:?} does not match the plugin's allowed_units {:?}",
                plugin.allowed_units
            ),
        ),
        Err(e) => b.error("allowed_units", e.to_string()),
    }
}

fn exec_start(b: &mut Builder, command: &str, args: &[String]) {
    let mut argv = vec![command.to_string()];
    argv.extend(args.iter().cloned());
    // ExecStartEx with no-env-expand: command and args reach the process byte for byte.
    let entry = DValue::Struct(vec![
        DValue::Str(command.to_string()),
        DValue::StrList(argv.clone()),
        DValue::StrList(vec!["no-env-expand".into()]),
    ]);
    b.settings.push(Setting {
        name: "ExecStart".into(),
        text: format!(":{}", argv.join(" ")),
        dbus: vec![(
            "ExecStartEx".into(),
            DValue::Array {
                sig: "(sasas)".into(),
                items: vec![entry],
            },
        )],
        section: Section::Service,
    });
}

fn environment(b: &mut Builder, task: &TaskSpec) {
    let mut pairs = Vec::with_capacity(task.env.len());
    for (k, v) in &task.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            b.error(format!("env.{k}"), "not a valid environment variable");
            continue;
        }
        pairs.push(format!("{k}={v}"));
    }
    let text = pairs.iter().map(|p| quote(p)).collect::<Vec<_>>().join(" ");
    b.set("Environment", text, DValue::StrList(pairs));
}

fn identity(b: &mut Builder, task: &TaskSpec, plugin: &PluginConfig, mode: Mode) {
    let user = if !task.user.is_empty() {
        task.user.as_str()
    } else if mode == Mode::Unit {
        // an installed unit keeps its own identity unless the task names a user
        return;
    } else {
        plugin.default_user.as_str()
    };
    if user.is_empty() {
        b.set("DynamicUser", "yes", DValue::Bool(true));
        return;
    }
    if !valid_user_name(user) {
        b.error("user", format!("{user:?} is not a valid user name"));
    } else if is_root_user(user) && !plugin.allow_root {
        b.error(
            "user",
            format!("{user:?} refused: running tasks as root needs allow_root = true in the plugin config"),
        );
    } else {
        b.set("User", user, DValue::Str(user.to_string()));
    }
}

fn filesystem(b: &mut Builder, task: &TaskSpec) {
    let alloc = task.alloc_dir.trim_end_matches('/');
    let task_dir = format!("{alloc}/{}", task.name);
    let mut rw = vec![
        (format!("{alloc}/alloc"), "/alloc".to_string()),
        (format!("{task_dir}/local"), "/local".to_string()),
        (format!("{task_dir}/secrets"), "/secrets".to_string()),
    ];
    let mut ro = Vec::new();
    for (i, m) in task.mounts.iter().enumerate() {
        if !m.host_path.starts_with('/') || !m.task_path.starts_with('/') {
            b.error(
                format!("mounts[{i}]"),
                "host and task paths must be absolute",
            );
            continue;
        }
        let pair = (m.host_path.clone(), m.task_path.clone());
        if m.readonly {
            ro.push(pair)
        } else {
            rw.push(pair)
        }
    }
    for (name, list) in [("BindPaths", rw), ("BindReadOnlyPaths", ro)] {
        if list.is_empty() {
            continue;
        }
        if let Some((s, _)) = list.iter().find(|(s, d)| has_control(s) || has_control(d)) {
            b.error("mounts", format!("{s:?} contains a control character"));
            continue;
        }
        let text = list
            .iter()
            .map(|(s, d)| format!("{}:{}", quote(s), quote(d)))
            .collect::<Vec<_>>()
            .join(" ");
        let items = list
            .into_iter()
            .map(|(s, d)| {
                DValue::Struct(vec![
                    DValue::Str(s),
                    DValue::Str(d),
                    DValue::Bool(false),
                    DValue::U64(MS_REC),
                ])
            })
            .collect();
        b.set(
            name,
            text,
            DValue::Array {
                sig: "(ssbt)".into(),
                items,
            },
        );
    }
    b.set("PrivateTmp", "yes", DValue::Bool(true));
}

fn logs(b: &mut Builder, task: &TaskSpec) {
    for (key, name, path) in [
        ("stdout_path", "StandardOutput", &task.stdout_path),
        ("stderr_path", "StandardError", &task.stderr_path),
    ] {
        if path.is_empty() || path == "/dev/null" {
            b.set(name, "null", DValue::Str("null".into()));
        } else if !path.starts_with('/') || has_control(path) {
            b.error(key, format!("{path:?} is not an absolute path"));
        } else {
            // systemd opens Nomad's FIFO as root in the unit's exec context, so the workload
            // holds the writer and logging survives plugin restarts.
            b.settings.push(Setting {
                name: name.into(),
                text: format!("file:{}", specifier_escape(path)),
                dbus: vec![(format!("{name}File"), DValue::Str(path.clone()))],
                section: Section::Service,
            });
        }
    }
}

/// Memory limits from Nomad's allocation (spec pitfall 17): `(MemoryLow, MemoryMax)` in bytes,
/// `u64::MAX` meaning infinity.
pub fn memory_limits(r: &Resources) -> (Option<u64>, Option<u64>) {
    let mib = |mb: i64| {
        u64::try_from(mb)
            .ok()
            .map(|m| m.saturating_mul(1024 * 1024))
    };
    match r.memory_max_mb {
        _ if r.memory_mb <= 0 => (None, None),
        -1 => (mib(r.memory_mb), Some(u64::MAX)),
        max if max > 0 => (mib(r.memory_mb), mib(max.max(r.memory_mb))),
        _ => (None, mib(r.memory_mb)),
    }
}

/// Nomad's CPU MHz shares as a cgroup v2 `cpu.weight` (runc's shares→weight mapping on shares
/// clamped to [2, 262144], as HashiCorp's executors do); `None` when no CPU was asked for.
pub fn cpu_weight(cpu_mhz: i64) -> Option<u64> {
    if cpu_mhz <= 0 {
        return None;
    }
    let shares = u64::try_from(cpu_mhz.clamp(2, 262_144)).ok()?;
    Some(1 + ((shares - 2) * 9999) / 262_142)
}

fn resources(b: &mut Builder, r: &Resources) {
    for name in ["CPUAccounting", "MemoryAccounting", "TasksAccounting"] {
        b.set(name, "yes", DValue::Bool(true));
    }
    let (low, max) = memory_limits(r);
    let size = |v: u64| {
        if v == u64::MAX {
            "infinity".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(low) = low {
        b.set("MemoryLow", size(low), DValue::U64(low));
    }
    if let Some(max) = max {
        b.set("MemoryMax", size(max), DValue::U64(max));
    }
    if let Some(w) = cpu_weight(r.cpu_mhz) {
        b.set("CPUWeight", w.to_string(), DValue::U64(w));
    }
    if !r.cpuset_cpus.is_empty() {
        match properties::to_dbus("AllowedCPUs", &r.cpuset_cpus) {
            Ok(mut pairs) if pairs.len() == 1 => {
                let (name, value) = pairs.remove(0);
                b.settings.push(Setting {
                    name,
                    text: r.cpuset_cpus.clone(),
                    dbus: vec![("AllowedCPUs".into(), value)],
                    section: Section::Service,
                });
            }
            Ok(_) => b.error("resources.cores", "unexpected AllowedCPUs typing"),
            Err(e) => b.error("resources.cores", e.to_string()),
        }
    }
}

fn job_properties(b: &mut Builder, cfg: &TaskUserConfig, plugin: &PluginConfig) {
    let policy = PropertyPolicy::new(&plugin.allowed_properties, &plugin.denied_properties);
    for (name, value) in &cfg.properties {
        let key = format!("config.properties.{name}");
        if let Err(e) = policy.check(name) {
            b.error(key, e.to_string());
            continue;
        }
        let section = properties::lookup(name).map_or(Section::Service, |d| d.section);
        let typed = properties::to_dbus(name, value)
            .and_then(|dbus| Ok((dbus, properties::dropin_value(name, value)?)));
        let (dbus, text) = match typed {
            Ok(t) => t,
            Err(e) => {
                b.error(key, e.to_string());
                continue;
            }
        };
        if let Some(limit) = exceeds_allocation(b, name, &dbus) {
            b.error(
                key,
                format!("{value:?} exceeds the task's memory allocation ({limit} bytes); raise resources.memory_max instead"),
            );
            continue;
        }
        // A job property replaces a driver default of the same name (e.g. MemoryMax, Type).
        b.settings.retain(|s| s.name != *name);
        b.settings.push(Setting {
            name: name.clone(),
            text,
            dbus,
            section,
        });
    }
}

/// A job may tighten Nomad's memory limit, never loosen it.
fn exceeds_allocation(b: &Builder, name: &str, dbus: &[(String, DValue)]) -> Option<u64> {
    if name != "MemoryMax" && name != "MemoryHigh" && name != "MemorySwapMax" {
        return None;
    }
    let limit = b
        .settings
        .iter()
        .find(|s| s.name == "MemoryMax")
        .and_then(|s| {
            s.dbus.iter().find_map(|(_, v)| match v {
                DValue::U64(v) => Some(*v),
                _ => None,
            })
        })?;
    if limit == u64::MAX || name == "MemorySwapMax" {
        return None;
    }
    match dbus.first() {
        Some((n, DValue::U64(v))) if n == name && *v > limit => Some(limit),
        // percentages of RAM (…Scale) cannot be compared here: refuse them under a limit
        Some((n, _)) if n.ends_with("Scale") => Some(limit),
        _ => None,
    }
}

fn render_dropin(settings: &[Setting]) -> String {
    let mut out =
        String::from("# Written by nomad-driver-systemd; removed when the task is destroyed.\n");
    for (header, section) in [("[Unit]", Section::Unit), ("[Service]", Section::Service)] {
        let lines: Vec<&Setting> = settings.iter().filter(|s| s.section == section).collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(header);
        out.push('\n');
        for s in lines {
            if s.name == "Environment" {
                // one assignment per line keeps long environments readable
                for (_, v) in &s.dbus {
                    if let DValue::StrList(pairs) = v {
                        for p in pairs {
                            out.push_str(&format!("Environment={}\n", quote(p)));
                        }
                    }
                }
                continue;
            }
            out.push_str(&format!("{}={}\n", s.name, s.text));
        }
    }
    out
}

/// Quotes a value for a unit file: `"..."` with C escapes, so no byte can end the line, and
/// `%` doubled so specifiers are not expanded.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '%' => out.push_str("%%"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn specifier_escape(s: &str) -> String {
    s.replace('%', "%%")
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}
