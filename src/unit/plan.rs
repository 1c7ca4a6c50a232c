//! The unit planner: task spec + job config + plugin config → the unit's name and settings.
//! Pure: no I/O. Transient units get typed D-Bus properties; unit mode gets drop-in text.

use std::fmt;

use super::name::{unit_name, valid_unit_name};
use crate::config::plugin::{Logs, Sandbox, is_root_user, valid_user_name};
use crate::config::task::limits;
use crate::config::{PluginConfig, TaskUserConfig};
use crate::properties::{self, PropertyPolicy, SANDBOX, Section, strictness};
use crate::task::spec::{Resources, TaskSpec};
use crate::vocab::{DValue, ENV_DIR, Mode, env_file_path};

/// Hidden from every sandboxed task: the driver's own state (other tasks' environment files).
/// `-`: no error where the path does not exist.
fn hidden_paths() -> Vec<String> {
    vec![format!("-{}", ENV_DIR.trim_end_matches("/env"))]
}

/// systemd's own inaccessible directory (mode 0000, root-owned, empty; PID 1 makes it at boot),
/// the node `InaccessiblePaths=` itself mounts over a hidden directory.
pub const INACCESSIBLE_DIR: &str = "/run/systemd/inaccessible/dir";

/// The node's allocation root (other allocations' directories; the task's own are bound at
/// `/alloc`, `/local`, `/secrets`), hidden by a non-recursive read-only bind of
/// [`INACCESSIBLE_DIR`] over it rather than by `InaccessiblePaths=`: systemd unmounts everything
/// under an inaccessible path first, one mount at a time, re-reading `mountinfo` after each
/// (systemd 252 `umount_recursive`), and Nomad mounts two tmpfs per task there, so that start
/// cost grew with the square of the node's task count. The bind leaves those mounts beneath it,
/// unreachable by path; ARCHITECTURE.md, *Start cost at density*. An error when the alloc dir
/// has no parent a bind can name: the task does not start with the root visible.
fn alloc_root(task: &TaskSpec) -> Result<String, String> {
    let alloc_dir = task.alloc_dir.trim_end_matches('/');
    match alloc_dir.rsplit_once('/') {
        Some((root, _)) if !root.is_empty() => {
            raw_path(root).map_err(|why| format!("its parent {root:?} {why}"))?;
            Ok(root.to_string())
        }
        _ => Err("has no parent directory to hide from the task".into()),
    }
}

/// Whether `path` is `root` or lies beneath it.
fn under(path: &str, root: &str) -> bool {
    path.trim_end_matches('/') == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Settings systemd adds to rather than replaces: a job's value joins the driver's.
const ADDITIVE: &[&str] = &["InaccessiblePaths"];

fn sandbox(b: &mut Builder, task: &TaskSpec) {
    let hidden = hidden_paths();
    b.settings.push(Setting {
        name: "InaccessiblePaths".into(),
        text: hidden.join(" "),
        dbus: vec![("InaccessiblePaths".into(), DValue::StrList(hidden))],
        section: Section::Service,
    });
    // `validate` plans with a placeholder; a relative alloc dir never starts (its binds are
    // refused by systemd)
    if !task.alloc_dir.starts_with('/') {
        return;
    }
    let root = match alloc_root(task) {
        Ok(root) => root,
        Err(why) => {
            b.error("alloc_dir", format!("{:?} {why}", task.alloc_dir));
            return;
        }
    };
    // A bind beneath the cover would make systemd create its mount point inside the host's
    // inaccessible directory (the cover is made read-only only after every mount).
    let beneath = task
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("mounts[{i}].task_path"), &m.task_path))
        .chain(
            task.devices
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("devices[{i}].task_path"), d.path_in_task())),
        );
    for (key, path) in beneath.filter(|(_, p)| under(p, &root)) {
        b.error(
            key,
            format!("{path:?} lies in the node's allocation root {root:?}, which tasks cannot see"),
        );
    }
    // Not ignored when missing: a start fails rather than run with the root visible.
    b.set(
        "BindReadOnlyPaths",
        format!("{}:{}:norbind", quote(INACCESSIBLE_DIR), quote(&root)),
        DValue::Array {
            sig: "(ssbt)".into(),
            items: vec![DValue::Struct(vec![
                DValue::Str(INACCESSIBLE_DIR.into()),
                DValue::Str(root),
                DValue::Bool(false),
                DValue::U64(0),
            ])],
        },
    );
    for (name, value) in SANDBOX {
        if b.has(name) {
            continue; // e.g. PrivateDevices for devices
        }
        match properties::to_dbus(name, value) {
            Ok(dbus) => b.settings.push(Setting {
                name: (*name).to_string(),
                text: (*value).to_string(),
                dbus,
                section: Section::Service,
            }),
            Err(e) => b.error("sandbox", e.to_string()),
        }
    }
}

/// Working directory when the job names none.
pub const DEFAULT_WORK_DIR: &str = "/local";
/// `MS_REC` for BindPaths' flags.
const MS_REC: u64 = 0x4000;

/// What the driver will ask systemd for.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPlan {
    pub unit: String,
    pub mode: Mode,
    /// Typed properties for `StartTransientUnit` (transient mode).
    pub properties: Vec<(String, DValue)>,
    /// Drop-in file text (unit mode).
    pub dropin: Option<String>,
    /// The task's environment as an `EnvironmentFile=` (both modes), which the driver writes
    /// root-only at [`env_file_path`] before the start: D-Bus properties and drop-ins are
    /// world-readable, and the environment carries Nomad's secrets (`VAULT_TOKEN`, …).
    pub env_file: String,
    /// Every setting in unit-file spelling, for people (`validate`, logs).
    pub settings: Vec<(String, String)>,
    /// What the planner dropped rather than refused (e.g. env names systemd cannot hold).
    pub warnings: Vec<String>,
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
    warnings: Vec<String>,
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

/// What the planner knows about the host the unit will run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Host {
    /// systemd's major version (`252`), when known: a job property that version lacks is refused
    /// by key. `None` checks no versions.
    pub systemd_version: Option<u32>,
    /// Nomad passed FIFO-style log paths that do not exist: the agent runs with
    /// `disable_log_collection` (no logmon, no FIFOs). The driver learns it with a `stat`, never
    /// an `open` (docs/nomad-contract.md, *Log FIFOs*); the output then goes to the journal.
    pub log_fifos_missing: bool,
}

/// Plans the unit for one task start on a host whose systemd version is unknown.
pub fn plan(
    task: &TaskSpec,
    cfg: &TaskUserConfig,
    plugin: &PluginConfig,
) -> Result<UnitPlan, PlanErrors> {
    plan_on(task, cfg, plugin, Host::default())
}

/// Plans the unit for one task start. All problems are collected, not just the first.
pub fn plan_on(
    task: &TaskSpec,
    cfg: &TaskUserConfig,
    plugin: &PluginConfig,
    host: Host,
) -> Result<UnitPlan, PlanErrors> {
    let mut b = Builder {
        settings: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
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
    let env_file = environment(&mut b, task, &unit);
    let work_dir = match (&cfg.work_dir, mode) {
        (Some(d), _) => Some(d.clone()),
        (None, Mode::Transient) => Some(DEFAULT_WORK_DIR.to_string()),
        (None, Mode::Unit) => None,
    };
    if let Some(dir) = work_dir {
        match raw_path(&dir) {
            Ok(text) => b.set("WorkingDirectory", text, DValue::Str(dir)),
            Err(why) => b.error("config.work_dir", format!("{dir:?} {why}")),
        }
    }
    identity(&mut b, task, plugin, mode);
    filesystem(&mut b, task, mode);
    devices(&mut b, task);
    logs(&mut b, task, plugin, host);
    if mode == Mode::Transient && plugin.sandbox == Sandbox::Strict {
        sandbox(&mut b, task);
    }
    resources(&mut b, &task.resources);
    if let Some(ns) = &task.network_ns {
        match raw_path(ns) {
            Ok(text) => b.set("NetworkNamespacePath", text, DValue::Str(ns.clone())),
            Err(why) => b.error("network_isolation.path", format!("{ns:?} {why}")),
        }
    }
    job_properties(&mut b, cfg, plugin, host);
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
        Mode::Unit => (Vec::new(), Some(render_dropin(&task.id, &b.settings))),
    };
    Ok(UnitPlan {
        unit,
        mode,
        properties,
        dropin,
        env_file,
        settings,
        warnings: b.warnings,
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
    if unit.contains('\\') || unit.contains("..") {
        b.error(
            "config.unit",
            format!("{unit:?} refused: unit names may not contain escapes or \"..\""),
        );
        return;
    }
    if let Some((_, instance)) = unit
        .strip_suffix(".service")
        .and_then(|s| s.split_once('@'))
        && !instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        b.error(
            "config.unit",
            format!(
                "{unit:?} refused: an instance may hold only letters, digits, \"-\" and \"_\" (e.g. the alloc id)"
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
    let (path, sd_argv) = exec_argv(&argv);
    let entry = DValue::Struct(vec![
        DValue::Str(path),
        DValue::StrList(sd_argv),
        DValue::Bool(false),
    ]);
    b.settings.push(Setting {
        name: "ExecStart".into(),
        text: format!(":{}", argv.join(" ")),
        dbus: vec![(
            "ExecStart".into(),
            DValue::Array {
                sig: "(sasb)".into(),
                items: vec![entry],
            },
        )],
        section: Section::Service,
    });
}

/// The path and argv of the plain `ExecStart` (`a(sasb)`) that runs `argv` byte for byte, and
/// keeps running it the same after any daemon-reload or daemon-reexec.
///
/// systemd writes a transient unit's settings to `/run/systemd/transient/<unit>` and reads that
/// file back on every reload, and its writer and reader disagree: systemd 252 cannot read back
/// `ExecStartEx` at all (the unit becomes `bad-setting`) and writes `$` and `;` of `ExecStart`
/// as `\$` and `\;`, which it reads back literally; newer versions write `$` as `$$`, so a
/// `$$` sent to escape systemd's exec-time `$VAR` expansion comes back as `$$`. Every other
/// byte survives on every version (`%`, `\`, quotes, control characters, spaces, empty
/// words). So an argv without `$` and `;` goes to systemd as it is: nothing in it is expanded.
/// An argv with them runs through `/bin/sh -c 'exec …'`, single-quoted, with each `$` and `;`
/// made by `printf` at run time: the shell replaces itself with the command (same PID, no
/// helper process), and systemd never sees either character.
pub fn exec_argv(argv: &[String]) -> (String, Vec<String>) {
    if !argv.iter().any(|a| a.contains(['$', ';'])) {
        return (argv[0].clone(), argv.to_vec());
    }
    let words: Vec<String> = argv.iter().map(|a| sh_word(a)).collect();
    (
        SH.to_string(),
        vec![
            SH.to_string(),
            "-c".into(),
            format!("exec {}", words.join(" ")),
        ],
    )
}

const SH: &str = "/bin/sh";

/// One shell word that the POSIX shell turns back into `arg`, without `$` or `;` in it.
fn sh_word(arg: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in arg.chars() {
        let special = match c {
            '$' => Some("\"`printf '\\044'`\""),
            ';' => Some("\"`printf '\\073'`\""),
            '\'' => Some("\\'"),
            _ => None,
        };
        match special {
            Some(s) => {
                if quoted {
                    out.push('\'');
                    quoted = false;
                }
                out.push_str(s);
            }
            None => {
                if !quoted {
                    out.push('\'');
                    quoted = true;
                }
                out.push(c);
            }
        }
    }
    if quoted || out.is_empty() {
        if out.is_empty() {
            out.push('\'');
        }
        out.push('\'');
    }
    out
}

/// The environment goes to a root-only file, never into a property or the drop-in; the unit
/// names the file (`EnvironmentFile=`, read by systemd at exec time) and carries the task's
/// identity as journal fields (`LogExtraFields=NOMAD_*`), which `list` reads back.
fn environment(b: &mut Builder, task: &TaskSpec, unit: &str) -> String {
    let mut text = String::new();
    let mut dropped = Vec::new();
    if task.env.len() > limits::ENV_VARS {
        b.error(
            "env",
            format!(
                "has {} variables, at most {} are accepted",
                task.env.len(),
                limits::ENV_VARS
            ),
        );
        return text;
    }
    for (k, v) in &task.env {
        if k.len() + v.len() + 1 > limits::ARG {
            b.error(
                format!("env.{}", k.escape_debug()),
                format!(
                    "is {} bytes long, at most {} are accepted",
                    k.len() + v.len() + 1,
                    limits::ARG
                ),
            );
        } else if v.contains('\0') {
            b.error(format!("env.{k}"), "value contains a NUL byte");
        } else if valid_env_name(k) {
            text.push_str(&env_file_line(k, v));
        } else {
            // systemd refuses the whole environment block over one such name; Nomad makes them
            // from meta keys and the like, so they are left out rather than failing the task
            dropped.push(k.escape_debug().to_string());
        }
    }
    if !dropped.is_empty() {
        b.warnings.push(format!(
            "environment variables systemd cannot pass were left out: {}",
            dropped.join(", ")
        ));
    }
    if text.len() > limits::ARGV {
        b.error(
            "env",
            format!(
                "is {} bytes long, at most {} are accepted",
                text.len(),
                limits::ARGV
            ),
        );
    }
    let path = env_file_path(unit);
    b.settings.push(Setting {
        name: "EnvironmentFile".into(),
        text: path.clone(),
        dbus: vec![(
            "EnvironmentFiles".into(),
            DValue::Array {
                sig: "(sb)".into(),
                items: vec![DValue::Struct(vec![DValue::Str(path), DValue::Bool(false)])],
            },
        )],
        section: Section::Service,
    });
    let fields: Vec<String> = [
        ("NOMAD_ALLOC_ID", &task.alloc_id),
        ("NOMAD_JOB_NAME", &task.job_name),
        ("NOMAD_GROUP_NAME", &task.group),
        ("NOMAD_TASK_NAME", &task.name),
        ("NOMAD_NAMESPACE", &task.namespace),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty() && !has_control(v))
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    if !fields.is_empty() {
        b.settings.push(Setting {
            name: "LogExtraFields".into(),
            text: fields
                .iter()
                .map(|f| quote(f))
                .collect::<Vec<_>>()
                .join(" "),
            dbus: vec![(
                "LogExtraFields".into(),
                DValue::Array {
                    sig: "ay".into(),
                    items: fields
                        .into_iter()
                        .map(|f| DValue::Bytes(f.into_bytes()))
                        .collect(),
                },
            )],
            section: Section::Service,
        });
    }
    text
}

/// `KEY="value"` as systemd's environment-file reader takes it back byte for byte: inside
/// double quotes a backslash escapes `"`, `\`, `` ` `` and `$`, and a raw newline is part of
/// the value.
fn env_file_line(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 4);
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("\"\n");
    out
}

/// systemd's rule for environment variable names: `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_env_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Who the task runs as. No user (and no `default_user`): a dynamic user named after the
/// allocation, so every task and every restart of one allocation share one uid and can use
/// each other's files in `/alloc`. A named user must be the operator's `default_user` or in
/// `allowed_users`; root also needs `allow_root`. `Group=` is set explicitly to the user's
/// primary group when the driver resolved it.
fn identity(b: &mut Builder, task: &TaskSpec, plugin: &PluginConfig, mode: Mode) {
    let (user, from_job) = if !task.user.is_empty() {
        (task.user.as_str(), true)
    } else if mode == Mode::Unit {
        // an installed unit keeps its own identity unless the task names a user
        return;
    } else {
        (plugin.default_user.as_str(), false)
    };
    if user.is_empty() {
        let name = dynamic_user_name(&task.alloc_id);
        b.set("DynamicUser", "yes", DValue::Bool(true));
        b.set("User", name.clone(), DValue::Str(name));
        return;
    }
    if !valid_user_name(user) {
        b.error("user", format!("{user:?} is not a valid user name"));
        return;
    }
    if is_root_user(user) {
        if !plugin.allow_root {
            b.error(
                "user",
                format!("{user:?} refused: running tasks as root needs allow_root = true in the plugin config"),
            );
            return;
        }
    } else if from_job
        && user != plugin.default_user
        && !plugin.allowed_users.iter().any(|u| u == user)
    {
        b.error(
            "user",
            format!(
                "{user:?} refused: not in the plugin's allowed_users {:?} (tasks without a user run as a dynamic user of their allocation)",
                plugin.allowed_users
            ),
        );
        return;
    }
    if !task.user_groups.is_empty() && !plugin.allow_supplementary_groups {
        b.error(
            "user",
            format!(
                "{user:?} refused: it belongs to supplementary groups {:?}, which systemd would give the task; the operator may allow that with allow_supplementary_groups = true",
                task.user_groups
            ),
        );
        return;
    }
    b.set("User", user, DValue::Str(user.to_string()));
    if let Some(gid) = task.user_gid {
        b.set("Group", gid.to_string(), DValue::Str(gid.to_string()));
    }
}

/// The dynamic user of an allocation: `nomad-` and the first 25 alphanumerics of its id
/// (a valid systemd user name, at most 31 characters; 100 bits of a UUID keep it unique).
pub fn dynamic_user_name(alloc_id: &str) -> String {
    let id: String = alloc_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(25)
        .collect();
    if id.is_empty() {
        "nomad-task".to_string()
    } else {
        format!("nomad-{id}")
    }
}

fn filesystem(b: &mut Builder, task: &TaskSpec, mode: Mode) {
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
        bind_setting(b, name, list, MS_REC);
    }
    // An installed unit keeps the sandboxing its operator wrote (its ExecStart may rely on the
    // host's /tmp or /var/tmp); only a transient unit, which is all ours, gets a private /tmp.
    if mode == Mode::Transient {
        b.set("PrivateTmp", "yes", DValue::Bool(true));
    }
}

/// A `BindPaths=`-style setting from (source, destination) pairs, in both spellings.
fn bind_setting(b: &mut Builder, name: &str, pairs: Vec<(String, String)>, flags: u64) {
    let text = pairs
        .iter()
        .map(|(s, d)| format!("{}:{}", quote(s), quote(d)))
        .collect::<Vec<_>>()
        .join(" ");
    let items = pairs
        .into_iter()
        .map(|(s, d)| {
            DValue::Struct(vec![
                DValue::Str(s),
                DValue::Str(d),
                DValue::Bool(false),
                DValue::U64(flags),
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

/// Device-plugin devices: the cgroup device policy allows exactly these, by number
/// (`/dev/char/M:m`, so a host path may be a symlink or a node outside `/dev`), with their
/// permissions (plus the standard pseudo devices `DevicePolicy=closed` keeps: null, zero, full,
/// random, urandom, tty, ptmx, pts), and each node is bound at its task path into a private
/// `/dev` (`PrivateDevices=yes`), so a task path that does not exist on the host is never
/// created in the host's `/dev`. An empty task path means the host path; empty permissions
/// mean `rwm`.
fn devices(b: &mut Builder, task: &TaskSpec) {
    let mut binds = Vec::new();
    for (i, d) in task.devices.iter().enumerate() {
        let key = format!("devices[{i}]");
        let task_path = d.path_in_task();
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        let mut ok = true;
        for (field, path) in [("host_path", &d.host_path), ("task_path", task_path)] {
            if let Err(why) = raw_path(path) {
                b.error(format!("{key}.{field}"), format!("{path:?} {why}"));
                ok = false;
            }
        }
        let node = d.node.as_ref().filter(|_| ok);
        if ok && node.is_none() {
            b.error(
                format!("{key}.host_path"),
                format!("{:?} is not a character or block device node", d.host_path),
            );
        }
        if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            b.error(
                format!("{key}.cgroup_permissions"),
                format!("{perms:?} must be one or more of r, w, m"),
            );
            ok = false;
        }
        let Some(node) = node.filter(|_| ok) else {
            continue;
        };
        let allow = node.allow_path();
        b.settings.push(Setting {
            name: "DeviceAllow".into(),
            text: format!("{allow} {perms}"),
            dbus: vec![(
                "DeviceAllow".into(),
                DValue::Array {
                    sig: "(ss)".into(),
                    items: vec![DValue::Struct(vec![
                        DValue::Str(allow),
                        DValue::Str(perms.to_string()),
                    ])],
                },
            )],
            section: Section::Service,
        });
        binds.push((node.path.clone(), task_path.clone()));
    }
    if binds.is_empty() {
        return;
    }
    bind_setting(b, "BindPaths", binds, 0);
    b.set("DevicePolicy", "closed", DValue::Str("closed".into()));
    b.set("PrivateDevices", "yes", DValue::Bool(true));
}

/// Where a unit's output goes (ARCHITECTURE.md, *Task logs*): Nomad's FIFOs with
/// `logs = "nomad"` (the default), else the journal. Output whose FIFO Nomad does not collect
/// (`logs { disabled = true }`: `/dev/null`; `disable_log_collection`: a path with no FIFO
/// behind it) goes to the journal whatever the setting, never to `null`.
fn logs(b: &mut Builder, task: &TaskSpec, plugin: &PluginConfig, host: Host) {
    let mut journal = false;
    for (key, name, path) in [
        ("stdout_path", "StandardOutput", &task.stdout_path),
        ("stderr_path", "StandardError", &task.stderr_path),
    ] {
        let collected = !(path.is_empty() || path == "/dev/null" || host.log_fifos_missing);
        if plugin.logs == Logs::Journal || !collected {
            b.set(name, "journal", DValue::Str("journal".into()));
            journal = true;
            continue;
        }
        match raw_path(path) {
            Err(why) => b.error(key, format!("{path:?} {why}")),
            // systemd opens Nomad's FIFO as root in the unit's exec context, so the workload
            // holds the writer and logging survives plugin restarts.
            Ok(text) => b.settings.push(Setting {
                name: name.into(),
                text: format!("file:{text}"),
                dbus: vec![(format!("{name}File"), DValue::Str(path.clone()))],
                section: Section::Service,
            }),
        }
    }
    if !journal {
        return;
    }
    // The task's name tags its lines (`journalctl -t <task>`); a job property may replace it.
    if !task.name.is_empty() && !has_control(&task.name) {
        b.set(
            "SyslogIdentifier",
            task.name.clone(),
            DValue::Str(task.name.clone()),
        );
    }
    // journald's per-unit rate limit would drop lines of a chatty task; a job may set its own.
    // A window of 1 µs lifts it: 0 would leave journald's default in force (systemd exports
    // only a non-zero interval to journald, `unit_export_log_rate_limit_interval`).
    b.settings.push(Setting {
        name: "LogRateLimitIntervalSec".into(),
        text: "1us".into(),
        dbus: vec![("LogRateLimitIntervalUSec".into(), DValue::U64(1))],
        section: Section::Service,
    });
}

/// Memory limits from Nomad's allocation (docs/nomad-contract.md, *Resources*): `(MemoryLow, MemoryMax)` in bytes,
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

fn job_properties(b: &mut Builder, cfg: &TaskUserConfig, plugin: &PluginConfig, host: Host) {
    let policy = PropertyPolicy::new(&plugin.allowed_properties, &plugin.denied_properties)
        .with_cap(
            "TimeoutStopSec",
            plugin.max_stop_timeout,
            "max_stop_timeout",
            crate::config::duration::format(plugin.max_stop_timeout),
        )
        .with_cap(
            "TimeoutStartSec",
            plugin.start_timeout,
            "start_timeout",
            crate::config::duration::format(plugin.start_timeout),
        );
    for (name, value) in &cfg.properties {
        // escaped, so that a name like "Foo\nUser" cannot break the error onto two lines
        let key = format!("config.properties.{}", name.escape_debug());
        let allowed = policy
            .check(name)
            .and_then(|()| match host.systemd_version {
                Some(v) => properties::check_version(name, v),
                None => Ok(()),
            });
        if let Err(e) = allowed {
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
        if let Err(e) = policy.check_value(name, value, &dbus) {
            b.error(key, e.to_string());
            continue;
        }
        if let Some(floor) = loosens_sandbox(name, value, plugin) {
            b.error(
                key,
                format!(
                    "{value:?} would loosen the sandbox ({name}={floor}); the operator may allow it with allow_loosening"
                ),
            );
            continue;
        }
        if let Some(share) = exceeds_io_share(name, &dbus) {
            b.error(
                key,
                format!("{value:?} takes more than the default I/O share ({share})"),
            );
            continue;
        }
        if let Some(limit) = exceeds_allocation(b, name, &dbus) {
            b.error(
                key,
                format!("{value:?} exceeds the task's memory allocation ({limit} bytes); raise resources.memory_max instead"),
            );
            continue;
        }
        // A job property replaces a driver default of the same name (e.g. MemoryMax, Type),
        // except where systemd adds the values up (the sandbox's hidden paths stay hidden).
        if !ADDITIVE.contains(&name.as_str()) {
            b.settings.retain(|s| s.name != *name);
        }
        b.settings.push(Setting {
            name: name.clone(),
            text,
            dbus,
            section,
        });
    }
}

/// The sandbox's value when a job's value for one of its settings is looser and the operator
/// did not allow loosening that name.
fn loosens_sandbox(name: &str, value: &str, plugin: &PluginConfig) -> Option<&'static str> {
    if plugin.sandbox != Sandbox::Strict || plugin.allow_loosening.iter().any(|n| n == name) {
        return None;
    }
    let (_, floor) = SANDBOX.iter().find(|(n, _)| *n == name)?;
    match (strictness(name, value), strictness(name, floor)) {
        (Some(job), Some(ours)) if job < ours => Some(floor),
        _ => None,
    }
}

/// The default I/O weight: a job may take less than its share, never more.
const DEFAULT_IO_WEIGHT: u64 = 100;

fn exceeds_io_share(name: &str, dbus: &[(String, DValue)]) -> Option<u64> {
    if name != "IOWeight" && name != "StartupIOWeight" {
        return None;
    }
    match dbus.first() {
        Some((_, DValue::U64(v))) if *v > DEFAULT_IO_WEIGHT => Some(DEFAULT_IO_WEIGHT),
        _ => None,
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

/// First words of the drop-in's first line; the owning task id follows.
const DROPIN_OWNER: &str = "# Written by nomad-driver-systemd for task ";
const DROPIN_OWNER_END: &str = "; removed when the task is destroyed.";

/// The task id a drop-in was written for (escaped as in the file), from its first line.
pub fn dropin_owner(text: &str) -> Option<&str> {
    text.lines()
        .next()?
        .strip_prefix(DROPIN_OWNER)?
        .strip_suffix(DROPIN_OWNER_END)
}

/// Whether a drop-in was written for this task: a StartTask retried with the same id.
pub fn dropin_belongs_to(text: &str, task_id: &str) -> bool {
    dropin_owner(text) == Some(task_id.escape_debug().to_string().as_str())
}

fn render_dropin(task_id: &str, settings: &[Setting]) -> String {
    // the owner line lets a retried StartTask recognise its own unit, and every other start
    // of the same unit name see that it is taken
    let mut out = format!(
        "{DROPIN_OWNER}{}{DROPIN_OWNER_END}\n",
        task_id.escape_debug()
    );
    for (header, section) in [("[Unit]", Section::Unit), ("[Service]", Section::Service)] {
        let lines: Vec<&Setting> = settings.iter().filter(|s| s.section == section).collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(header);
        out.push('\n');
        for s in lines {
            out.push_str(&format!("{}={}\n", s.name, s.text));
        }
    }
    out
}

/// Quotes a value for a unit file: `"..."` with C escapes, so no byte can end the line, and
/// `%` doubled so specifiers are not expanded.
///
/// Control characters become `\xHH` per UTF-8 byte (systemd copies each such byte verbatim), so
/// a C1 control such as U+0085 comes back as valid UTF-8 rather than as a lone byte that would
/// make systemd drop the whole assignment.
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
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path written as is after `Name=` (`WorkingDirectory=`, `StandardOutput=file:`,
/// `NetworkNamespacePath=`): systemd unquotes nothing there, so what would change the line is
/// refused — a control character ends it, a trailing backslash continues it onto the next line
/// (swallowing the next directive), trailing spaces are stripped — and `%` is doubled.
fn raw_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        Err("is not an absolute path")
    } else if has_control(path) {
        Err("contains a control character")
    } else if path.ends_with('\\') {
        Err("cannot end with a backslash")
    } else if path.ends_with(char::is_whitespace) {
        Err("cannot end with white space")
    } else {
        Ok(specifier_escape(path))
    }
}

fn specifier_escape(s: &str) -> String {
    s.replace('%', "%%")
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod unit_mode_tests {
    //! Unit mode: the drop-in text, read back the way systemd 252 reads it.
    use super::*;

    const ALLOC: &str = "8f3c2d1e-1111-2222-3333-444455556666";

    fn spec() -> TaskSpec {
        TaskSpec {
            id: format!("{ALLOC}/web/0a1b2c3d"),
            name: "web".into(),
            alloc_id: ALLOC.into(),
            alloc_dir: format!("/var/lib/nomad/alloc/{ALLOC}"),
            job_name: "shop".into(),
            group: "front".into(),
            stdout_path: format!("/var/lib/nomad/alloc/{ALLOC}/alloc/logs/.web.stdout.fifo"),
            stderr_path: format!("/var/lib/nomad/alloc/{ALLOC}/alloc/logs/.web.stderr.fifo"),
            env: [("NOMAD_PORT_http", "8080"), ("NOMAD_ALLOC_ID", ALLOC)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..TaskSpec::default()
        }
    }

    fn unit_cfg() -> TaskUserConfig {
        TaskUserConfig {
            unit: Some(format!("web@{ALLOC}.service")),
            ..TaskUserConfig::default()
        }
    }

    fn plugin() -> PluginConfig {
        PluginConfig {
            allowed_units: vec!["web@*.service".into(), "idle.service".into()],
            allowed_users: vec!["nobody".into()],
            ..PluginConfig::default()
        }
    }

    fn dropin(task: &TaskSpec, cfg: &TaskUserConfig) -> String {
        let p = plan(task, cfg, &plugin()).expect("plan");
        assert_eq!(p.mode, Mode::Unit);
        assert!(p.properties.is_empty());
        p.dropin.expect("unit mode renders a drop-in")
    }

    fn errors(task: &TaskSpec, cfg: &TaskUserConfig, plugin: &PluginConfig) -> Vec<String> {
        plan(task, cfg, plugin)
            .expect_err("refused")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// systemd's line reader (`config_parse`): lines end at LF, CR or NUL; a line ending in an
    /// odd number of backslashes continues onto the next one. Returns the logical lines.
    fn systemd_lines(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cont: Option<String> = None;
        for raw in text.split(['\n', '\r', '\0']) {
            let mut line = cont.take().unwrap_or_default();
            line.push_str(raw);
            let trailing = line.chars().rev().take_while(|c| *c == '\\').count();
            if trailing % 2 == 1 {
                line.pop();
                line.push(' ');
                cont = Some(line);
                continue;
            }
            out.push(line);
        }
        out.extend(cont);
        out.retain(|l| !l.trim().is_empty());
        out
    }

    /// `Environment=` as systemd 252 reads one word: `extract_first_word(EXTRACT_CUNESCAPE |
    /// EXTRACT_UNQUOTE)` then specifier expansion (only `%%` is expected here), then the UTF-8
    /// check of `env_assignment_is_valid`. `None` where systemd would ignore the assignment.
    fn systemd_env_word(rvalue: &str) -> Option<String> {
        let s = rvalue.trim();
        let inner = s.strip_prefix('"')?.strip_suffix('"')?;
        let mut bytes = Vec::new();
        let mut it = inner.chars();
        while let Some(c) = it.next() {
            match c {
                '"' => return None, // a second word: not one assignment
                '\\' => match it.next()? {
                    'n' => bytes.push(b'\n'),
                    't' => bytes.push(b'\t'),
                    '"' => bytes.push(b'"'),
                    '\\' => bytes.push(b'\\'),
                    'x' => {
                        let hex: String = [it.next()?, it.next()?].iter().collect();
                        bytes.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    _ => return None,
                },
                '%' => match it.next()? {
                    '%' => bytes.push(b'%'),
                    _ => return None, // an unexpected specifier
                },
                c => bytes.extend_from_slice(c.to_string().as_bytes()),
            }
        }
        String::from_utf8(bytes).ok()
    }

    fn directives(text: &str) -> Vec<String> {
        systemd_lines(text)
            .iter()
            .filter(|l| !l.starts_with('#') && !l.starts_with('['))
            .map(|l| l.split_once('=').map_or(l.clone(), |(k, _)| k.to_string()))
            .collect()
    }

    #[test]
    fn dropin_carries_what_the_driver_owns() {
        let text = dropin(&spec(), &unit_cfg());
        let lines = systemd_lines(&text);
        let alloc = format!("/var/lib/nomad/alloc/{ALLOC}");
        for want in [
            "[Service]".to_string(),
            "Slice=nomad_tasks.slice".into(),
            "Restart=no".into(),
            "RemainAfterExit=yes".into(),
            format!("EnvironmentFile=/run/nomad-driver-systemd/env/web@{ALLOC}.service.env"),
            format!(
                "LogExtraFields=\"NOMAD_ALLOC_ID={ALLOC}\" \"NOMAD_JOB_NAME=shop\" \"NOMAD_GROUP_NAME=front\" \"NOMAD_TASK_NAME=web\""
            ),
            format!(
                "BindPaths=\"{alloc}/alloc\":\"/alloc\" \"{alloc}/web/local\":\"/local\" \"{alloc}/web/secrets\":\"/secrets\""
            ),
            format!("StandardOutput=file:{alloc}/alloc/logs/.web.stdout.fifo"),
            format!("StandardError=file:{alloc}/alloc/logs/.web.stderr.fifo"),
            "CPUAccounting=yes".into(),
            "MemoryAccounting=yes".into(),
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
        // the installed unit keeps its own command, type, identity, description, cwd and
        // sandboxing
        let names = directives(&text);
        for absent in [
            "ExecStart",
            "Type",
            "User",
            "DynamicUser",
            "Description",
            "WorkingDirectory",
            "PrivateTmp",
            "ProtectSystem",
            "ProtectHome",
            "PrivateDevices",
        ] {
            assert!(!names.iter().any(|n| n == absent), "{absent} in\n{text}");
        }
        assert!(text.starts_with("# "), "{text}");
        assert!(!text.contains("[Unit]"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn dropin_identity_only_when_the_task_names_a_user() {
        let mut task = spec();
        task.user = "nobody".into();
        let text = dropin(&task, &unit_cfg());
        assert!(systemd_lines(&text).contains(&"User=nobody".to_string()));
        assert!(!directives(&text).contains(&"DynamicUser".to_string()));
        // a default_user applies to transient units only
        let p = PluginConfig {
            default_user: "nobody".into(),
            ..plugin()
        };
        let d = plan(&spec(), &unit_cfg(), &p).unwrap().dropin.unwrap();
        assert!(!directives(&d).contains(&"User".to_string()), "{d}");
        task.user = "root".into();
        assert_eq!(
            errors(&task, &unit_cfg(), &plugin()),
            [
                "user: \"root\" refused: running tasks as root needs allow_root = true in the plugin config"
            ]
        );
    }

    /// systemd's environment-file reader, as its state machine treats a double-quoted value
    /// (`parse_env_file_internal` in systemd's `env-file.c`): `KEY="value"` per line, where a
    /// backslash before `"`, `\\`, `` ` `` or `$` yields that character, before a newline
    /// joins lines, and before anything else stays; a raw newline is part of the value.
    fn read_env_file(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("KEY=\"");
            assert!(!key.contains(['\n', '"']), "{key:?}");
            let mut value = String::new();
            let mut it = after.char_indices();
            let end = loop {
                let (i, c) = it.next().expect("closing quote");
                match c {
                    '"' => break i,
                    '\\' => match it.next().expect("escaped char").1 {
                        e @ ('"' | '\\' | '`' | '$') => value.push(e),
                        '\n' => {}
                        e => {
                            value.push('\\');
                            value.push(e);
                        }
                    },
                    c => value.push(c),
                }
            };
            out.push(format!("{key}={value}"));
            rest = after[end + 1..]
                .strip_prefix('\n')
                .expect("one assignment per line");
        }
        out
    }

    #[test]
    fn environment_goes_to_a_root_only_file_byte_for_byte() {
        let values = [
            "plain",
            "two\nlines",
            "x\n[Service]\nExecStartPre=/bin/false",
            "crlf\r\nUser=root",
            "nul-free \u{1} soh",
            "nel\u{85}User=root",
            "ls\u{2028}ps\u{2029}",
            "tab\there",
            "say \"hi\"",
            "'single'",
            "back\\slash",
            "ends with backslash\\",
            "ends with two \\\\",
            "100% %n %% %",
            "$HOME ${PATH} $$",
            "",
            " leading and trailing ",
            "ünïcødé ✓",
            "del\u{7f}esc\u{1b}[31m",
        ];
        let mut task = spec();
        task.env = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("V{i:02}"), v.to_string()))
            .collect();
        let p = plan(&task, &unit_cfg(), &plugin()).expect("plan");
        let want: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("V{i:02}={v}"))
            .collect();
        assert_eq!(read_env_file(&p.env_file), want, "{}", p.env_file);
        // the drop-in (world-readable) names the file and holds no value
        let text = p.dropin.unwrap();
        assert!(
            systemd_lines(&text).contains(&format!(
                "EnvironmentFile=/run/nomad-driver-systemd/env/web@{ALLOC}.service.env"
            )),
            "{text}"
        );
        assert!(
            !directives(&text).iter().any(|n| n == "Environment"),
            "{text}"
        );
        for v in values.iter().filter(|v| v.len() > 3) {
            assert!(!text.contains(*v), "{v:?} leaked into\n{text}");
        }
        // nor does any D-Bus property of a transient unit
        let transient = TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        };
        let p = plan(&task, &transient, &plugin()).expect("plan");
        assert!(!p.properties.iter().any(|(n, _)| n == "Environment"));
        let shown = format!("{:?}", p.properties);
        for v in values.iter().filter(|v| v.len() > 3) {
            assert!(!shown.contains(*v), "{v:?} in a property");
        }
        assert_eq!(read_env_file(&p.env_file), want);
    }

    #[test]
    fn quote_table() {
        for (input, want) in [
            ("a", r#""a""#),
            ("a b", r#""a b""#),
            ("a\"b", r#""a\"b""#),
            ("a\\b", r#""a\\b""#),
            ("a\\", r#""a\\""#),
            ("a\nb", r#""a\nb""#),
            ("a\tb", r#""a\tb""#),
            ("a\rb", r#""a\x0db""#),
            ("50%", r#""50%%""#),
            ("%n", r#""%%n""#),
            ("\u{85}", r#""\xc2\x85""#),
            ("\u{7f}", r#""\x7f""#),
            ("ü", "\"ü\""),
            ("", r#""""#),
        ] {
            assert_eq!(quote(input), want, "{input:?}");
            assert_eq!(systemd_env_word(want).as_deref(), Some(input), "{want}");
        }
    }

    #[test]
    fn raw_paths_are_refused_or_escaped() {
        for (dir, want) in [
            ("/srv/100%", Ok("/srv/100%%")),
            ("/srv/a b", Ok("/srv/a b")),
            ("/srv/\"q\"", Ok("/srv/\"q\"")),
            (
                "/srv/x\n[Service]\nUser=root",
                Err("contains a control character"),
            ),
            ("/srv/x\r", Err("contains a control character")),
            ("/srv/x\\", Err("cannot end with a backslash")),
            ("/srv/x ", Err("cannot end with white space")),
            ("srv", Err("is not an absolute path")),
        ] {
            assert_eq!(raw_path(dir), want.map(str::to_string), "{dir:?}");
        }
    }

    #[test]
    fn work_dir_cannot_inject() {
        let mut cfg = unit_cfg();
        cfg.work_dir = Some("/srv\n[Service]\nUser=root".into());
        assert_eq!(
            errors(&spec(), &cfg, &plugin()),
            ["config.work_dir: \"/srv\\n[Service]\\nUser=root\" contains a control character"]
        );
        // a trailing backslash would swallow the next line (e.g. User=) into the path
        let mut task = spec();
        task.user = "nobody".into();
        cfg.work_dir = Some("/srv\\".into());
        assert_eq!(
            errors(&task, &cfg, &plugin()),
            ["config.work_dir: \"/srv\\\\\" cannot end with a backslash"]
        );
        cfg.work_dir = Some("/srv/50%".into());
        let text = dropin(&spec(), &cfg);
        assert!(
            systemd_lines(&text).contains(&"WorkingDirectory=/srv/50%%".to_string()),
            "{text}"
        );
    }

    #[test]
    fn log_paths_are_checked() {
        let mut task = spec();
        task.stdout_path = "/logs/50%.fifo".into();
        task.stderr_path = "/dev/null".into();
        let lines = systemd_lines(&dropin(&task, &unit_cfg()));
        assert!(lines.contains(&"StandardOutput=file:/logs/50%%.fifo".to_string()));
        // logs { disabled = true }: the journal, not null
        assert!(lines.contains(&"StandardError=journal".to_string()));
        task.stdout_path = "/logs/x\\".into();
        task.stderr_path = "logs/relative".into();
        assert_eq!(
            errors(&task, &unit_cfg(), &plugin()),
            [
                "stdout_path: \"/logs/x\\\\\" cannot end with a backslash",
                "stderr_path: \"logs/relative\" is not an absolute path",
            ]
        );
    }

    #[test]
    fn job_properties_go_to_their_section_escaped() {
        let mut cfg = unit_cfg();
        cfg.properties = [
            ("ProtectSystem", "strict"),
            ("Description", "web 100% \"ok\""),
            ("LimitNOFILE", "65536"),
            ("TimeoutStopSec", "30s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let text = dropin(&spec(), &cfg);
        let unit_at = text.find("[Unit]\n").expect("[Unit]");
        let service_at = text.find("[Service]\n").expect("[Service]");
        assert!(unit_at < service_at, "{text}");
        let unit_part = &text[unit_at..service_at];
        assert!(
            unit_part.contains("Description=web 100%% \"ok\"\n"),
            "{text}"
        );
        let service_part = &text[service_at..];
        for want in [
            "ProtectSystem=strict\n",
            "LimitNOFILE=65536\n",
            "TimeoutStopSec=",
        ] {
            assert!(service_part.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn job_properties_cannot_inject_or_take_over() {
        let mut cfg = unit_cfg();
        cfg.properties = [
            (
                "ProtectSystem",
                "strict\n[Service]\nExecStartPre=/bin/false",
            ),
            ("Foo\nUser", "root"),
            ("User", "root"),
            ("Restart", "always"),
            ("StandardOutput", "journal"),
            ("DeviceAllow", "/dev/sda rw"),
            ("ExecStartPre", "/bin/false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let errs = errors(&spec(), &cfg, &plugin());
        assert_eq!(errs.len(), 7, "{errs:#?}");
        for (key, what) in [
            ("DeviceAllow", "is denied by the plugin's property policy"),
            ("ExecStartPre", "is owned by the driver"),
            ("Foo\\nUser", "is invalid"),
            ("ProtectSystem", "contains a control character"),
            ("Restart", "is owned by the driver"),
            ("StandardOutput", "is owned by the driver"),
            ("User", "is owned by the driver"),
        ] {
            let prefix = format!("config.properties.{key}: ");
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&prefix) && e.contains(what)),
                "{key}: {errs:#?}"
            );
        }
        for e in &errs {
            // one error per line, the key included
            assert!(!e.contains('\n'), "{e}");
        }
        // the operator can allow a default-denied one
        let p = PluginConfig {
            allowed_properties: vec!["DeviceAllow".into()],
            ..plugin()
        };
        let mut cfg = unit_cfg();
        cfg.properties = [("DeviceAllow".to_string(), "/dev/null rw".to_string())].into();
        let text = plan(&spec(), &cfg, &p).unwrap().dropin.unwrap();
        assert!(text.contains("\nDeviceAllow=/dev/null rw\n"), "{text}");
    }

    #[test]
    fn unit_names_and_allowed_units() {
        let cfg = |u: &str| TaskUserConfig {
            unit: Some(u.into()),
            ..TaskUserConfig::default()
        };
        for bad in [
            "web@x\n.service",
            "../x.service",
            "web@x/../../etc.service",
            "web@x.socket",
            "web@.service",
            "@x.service",
            "web@a@b.service",
            "web x.service",
            "web@x.service\n[Service]",
            "",
        ] {
            let errs = errors(&spec(), &cfg(bad), &plugin());
            assert_eq!(errs.len(), 1, "{bad:?}: {errs:?}");
            assert!(
                errs[0].starts_with("config.unit: ")
                    && errs[0].contains("is not a service unit name"),
                "{bad:?}: {errs:?}"
            );
        }
        // instances are strict: no escapes, no "..", nothing a template's %I could turn into
        // a path
        for bad in [
            "web@..\\x2f..\\x2fetc.service",
            "web@a\\x2db.service",
            "web@a..b.service",
            "web@a.b.service",
            "web@a:b.service",
        ] {
            let errs = errors(&spec(), &cfg(bad), &plugin());
            assert_eq!(errs.len(), 1, "{bad:?}: {errs:?}");
            assert!(
                errs[0].starts_with("config.unit: ") && errs[0].contains("refused"),
                "{bad:?}: {errs:?}"
            );
        }
        assert_eq!(
            errors(&spec(), &cfg("db@x.service"), &plugin()),
            [
                "config.unit: \"db@x.service\" does not match the plugin's allowed_units [\"web@*.service\", \"idle.service\"]"
            ]
        );
        assert_eq!(
            errors(&spec(), &cfg("web@x.service"), &PluginConfig::default()),
            [
                "config.unit: \"web@x.service\" refused: unit mode is off because the plugin's allowed_units is empty"
            ]
        );
        for ok in ["web@x.service", "web@a_b-c.service", "idle.service"] {
            let p = plan(&spec(), &cfg(ok), &plugin()).expect(ok);
            assert_eq!(p.unit, ok);
            assert_eq!(p.mode, Mode::Unit);
        }
    }

    #[test]
    fn dropin_names_its_task() {
        let text = dropin(&spec(), &unit_cfg());
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                "# Written by nomad-driver-systemd for task {ALLOC}/web/0a1b2c3d; removed when the task is destroyed."
            )
        );
        assert_eq!(
            dropin_owner(&text),
            Some(format!("{ALLOC}/web/0a1b2c3d").as_str())
        );
        assert!(dropin_belongs_to(&text, &spec().id));
        assert!(!dropin_belongs_to(&text, &format!("{ALLOC}/web/ffffffff")));
        assert!(!dropin_belongs_to("[Service]\nRestart=no\n", &spec().id));
        assert_eq!(dropin_owner(""), None);
        // an odd task id cannot break the comment line
        let mut task = spec();
        task.id = format!("{ALLOC}/we\nb\\/1");
        let text = dropin(&task, &unit_cfg());
        assert_eq!(systemd_lines(&text)[0].matches("removed when").count(), 1);
        assert!(systemd_lines(&text)[1] == "[Service]", "{text}");
        assert!(dropin_belongs_to(&text, &task.id));
        assert!(!dropin_belongs_to(&text, &spec().id));
    }

    #[test]
    fn transient_mode_renders_no_dropin() {
        let cfg = TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        };
        let p = plan(&spec(), &cfg, &plugin()).unwrap();
        assert_eq!(p.mode, Mode::Transient);
        assert!(p.dropin.is_none());
        assert!(!p.properties.is_empty());
    }

    /// Plain `ExecStart` (which survives a daemon-reload), with every `$` of argv doubled;
    /// the path and every other byte untouched.
    #[test]
    fn exec_start_is_plain_and_keeps_dollars_and_semicolons_from_systemd() {
        let plain = |args: &[&str]| TaskUserConfig {
            command: Some("/opt/a b/run".into()),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..TaskUserConfig::default()
        };
        let exec_of = |cfg: &TaskUserConfig| {
            let p = plan(&spec(), cfg, &plugin()).unwrap();
            assert!(!p.properties.iter().any(|(n, _)| n == "ExecStartEx"));
            let exec: Vec<_> = p
                .properties
                .iter()
                .filter(|(n, _)| n == "ExecStart")
                .cloned()
                .collect();
            assert_eq!(exec.len(), 1, "{:?}", p.properties);
            let DValue::Array { sig, items } = &exec[0].1 else {
                panic!("{:?}", exec[0].1)
            };
            assert_eq!(sig, "(sasb)");
            items.clone()
        };
        // nothing systemd would expand or mangle: as it is
        let nasty = ["%n", "a\\b \"q\" 'q'\nx", "", "`x`", "#"];
        assert_eq!(
            exec_of(&plain(&nasty)),
            vec![DValue::Struct(vec![
                DValue::Str("/opt/a b/run".into()),
                DValue::StrList(
                    std::iter::once("/opt/a b/run")
                        .chain(nasty)
                        .map(String::from)
                        .collect()
                ),
                DValue::Bool(false),
            ])]
        );
        // `$` or `;` anywhere: through the shell, without either character
        let items = exec_of(&plain(&["$HOME", "it's", "a;b", ""]));
        let DValue::Struct(f) = &items[0] else {
            panic!()
        };
        assert_eq!(f[0], DValue::Str("/bin/sh".into()));
        let DValue::StrList(argv) = &f[1] else {
            panic!()
        };
        assert_eq!(argv[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(
            argv[2],
            "exec '/opt/a b/run' \"`printf '\\044'`\"'HOME' 'it'\\''s' 'a'\"`printf '\\073'`\"'b' ''"
        );
        assert!(!argv.iter().any(|a| a.contains(['$', ';'])));
    }
}

#[cfg(test)]
mod resource_tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn res(memory_mb: i64, memory_max_mb: i64) -> Resources {
        Resources {
            memory_mb,
            memory_max_mb,
            ..Resources::default()
        }
    }

    #[test]
    fn memory_mapping_table() {
        let cases = [
            // (memory, memory_max) → (MemoryLow, MemoryMax)
            ((256, 0), (None, Some(256 * MIB))),
            ((128, 512), (Some(128 * MIB), Some(512 * MIB))),
            ((128, -1), (Some(128 * MIB), Some(u64::MAX))),
            // a max below the reservation is raised to it
            ((256, 100), (Some(256 * MIB), Some(256 * MIB))),
            ((0, 0), (None, None)),
            ((0, -1), (None, None)),
        ];
        for ((mem, max), want) in cases {
            assert_eq!(
                memory_limits(&res(mem, max)),
                want,
                "memory={mem} memory_max={max}"
            );
        }
    }

    #[test]
    fn cpu_weight_table() {
        let cases = [
            (0, None),
            (-5, None),
            (1, Some(1)),
            (2, Some(1)),
            (100, Some(4)),
            (1000, Some(39)),
            (4000, Some(153)),
            (262_144, Some(10_000)),
            (10_000_000, Some(10_000)),
        ];
        for (mhz, want) in cases {
            assert_eq!(cpu_weight(mhz), want, "{mhz} MHz");
        }
    }

    fn task(r: Resources) -> TaskSpec {
        TaskSpec {
            id: "8f3c2d1e-1111-2222-3333-444455556666/web/0a1b2c3d".into(),
            name: "web".into(),
            alloc_id: "8f3c2d1e-1111-2222-3333-444455556666".into(),
            alloc_dir: "/srv/alloc/a".into(),
            resources: r,
            ..TaskSpec::default()
        }
    }

    fn planned(r: Resources) -> Vec<(String, String)> {
        let cfg = TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        };
        plan(&task(r), &cfg, &PluginConfig::default())
            .unwrap()
            .settings
    }

    fn get<'a>(settings: &'a [(String, String)], name: &str) -> Option<&'a str> {
        settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn cores_become_allowed_cpus_only_when_reserved() {
        let with = planned(Resources {
            cpu_mhz: 2000,
            cpuset_cpus: "2,3".into(),
            ..res(64, 0)
        });
        assert_eq!(get(&with, "AllowedCPUs"), Some("2,3"));
        let without = planned(Resources {
            cpu_mhz: 2000,
            ..res(64, 0)
        });
        assert_eq!(get(&without, "AllowedCPUs"), None);
        for s in [&with, &without] {
            assert_eq!(get(s, "CPUAccounting"), Some("yes"));
            assert_eq!(get(s, "MemoryAccounting"), Some("yes"));
            assert_eq!(get(s, "TasksAccounting"), Some("yes"));
        }
    }

    #[test]
    fn env_names_systemd_cannot_hold_are_dropped_with_a_warning() {
        let mut t = task(res(64, 0));
        t.env.insert("GOOD_1".into(), "x".into());
        t.env.insert("NOMAD_META_my.key".into(), "y".into());
        t.env.insert("1BAD".into(), "z".into());
        let cfg = TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        };
        let p = plan(&t, &cfg, &PluginConfig::default()).unwrap();
        let env = &p.env_file;
        assert!(env.contains("GOOD_1=\"x\""), "{env}");
        assert!(!env.contains("my.key") && !env.contains("1BAD"), "{env}");
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("NOMAD_META_my.key") && p.warnings[0].contains("1BAD"));
    }

    #[test]
    fn unlimited_memory_max_is_infinity() {
        let s = planned(res(128, -1));
        assert_eq!(get(&s, "MemoryMax"), Some("infinity"));
        assert_eq!(get(&s, "MemoryLow"), Some("134217728"));
    }
}

#[cfg(test)]
mod device_tests {
    //! Devices: DeviceAllow with permissions, binds into a private /dev, errors per field.
    use super::*;
    use crate::task::spec::{DeviceKind, DeviceNode, DeviceSpec};

    /// A resolved character device 10:229 (what the driver finds for any of the paths).
    /// A resolved character device 10:229 at the path given.
    fn node(path: &str) -> DeviceNode {
        DeviceNode {
            path: path.into(),
            kind: DeviceKind::Char,
            major: 10,
            minor: 229,
        }
    }

    fn task(devices: &[(&str, &str, &str)]) -> TaskSpec {
        TaskSpec {
            id: "a/web/0a1b2c3d".into(),
            name: "web".into(),
            alloc_id: "a".into(),
            alloc_dir: "/var/lib/nomad/alloc/a".into(),
            devices: devices
                .iter()
                .map(|(h, t, p)| DeviceSpec {
                    host_path: (*h).into(),
                    task_path: (*t).into(),
                    permissions: (*p).into(),
                    node: Some(node(h)),
                })
                .collect(),
            ..TaskSpec::default()
        }
    }

    fn cmd() -> TaskUserConfig {
        TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        }
    }

    fn settings(t: &TaskSpec, name: &str) -> Vec<String> {
        plan(t, &cmd(), &PluginConfig::default())
            .expect("plan")
            .settings
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn devices_become_allow_entries_by_number_and_binds() {
        let mut t = task(&[
            ("/dev/disk/by-id/nvme-x", "/dev/nvme0n1", "rw"),
            ("/run/plugin/fuse", "/dev/myfuse", ""),
        ]);
        t.devices[0].node = Some(DeviceNode {
            path: "/dev/nvme0n1".into(),
            kind: DeviceKind::Block,
            major: 259,
            minor: 0,
        });
        assert_eq!(
            settings(&t, "DeviceAllow"),
            ["/dev/block/259:0 rw", "/dev/char/10:229 rwm"]
        );
        let binds = settings(&t, "BindPaths");
        assert_eq!(binds.len(), 2, "{binds:?}");
        assert_eq!(
            binds[1], "\"/dev/nvme0n1\":\"/dev/nvme0n1\" \"/run/plugin/fuse\":\"/dev/myfuse\"",
            "the canonical node is bound, not the symlink"
        );
        assert_eq!(settings(&t, "DevicePolicy"), ["closed"]);
        assert_eq!(settings(&t, "PrivateDevices"), ["yes"]);
        let p = plan(&t, &cmd(), &PluginConfig::default()).unwrap();
        let allow: Vec<&DValue> = p
            .properties
            .iter()
            .filter(|(n, _)| n == "DeviceAllow")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            allow[1],
            &DValue::Array {
                sig: "(ss)".into(),
                items: vec![DValue::Struct(vec![
                    DValue::Str("/dev/char/10:229".into()),
                    DValue::Str("rwm".into())
                ])]
            }
        );
    }

    #[test]
    fn no_devices_no_device_settings() {
        let t = task(&[]);
        for name in ["DeviceAllow", "DevicePolicy"] {
            assert!(settings(&t, name).is_empty(), "{name}");
        }
        // the sandbox's private /dev, once
        assert_eq!(settings(&t, "PrivateDevices"), ["yes"]);
        assert_eq!(settings(&t, "BindPaths").len(), 1);
    }

    #[test]
    fn empty_task_path_means_host_path() {
        let t = task(&[("/dev/kvm", "", "rw")]);
        assert_eq!(settings(&t, "BindPaths")[1], "\"/dev/kvm\":\"/dev/kvm\"");
    }

    #[test]
    fn bad_devices_name_the_field() {
        let mut t = task(&[
            ("dev/x", "/dev/x", "r"),
            ("/dev/y", "/dev/y\n", "r"),
            ("/dev/z", "/dev/z", "rx"),
            ("/var/lib/x", "/dev/x", "r"),
        ]);
        t.devices[3].node = None;
        let errs: Vec<String> = plan(&t, &cmd(), &PluginConfig::default())
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "devices[0].host_path: \"dev/x\" is not an absolute path",
                "devices[1].task_path: \"/dev/y\\n\" contains a control character",
                "devices[2].cgroup_permissions: \"rx\" must be one or more of r, w, m",
                "devices[3].host_path: \"/var/lib/x\" is not a character or block device node",
            ]
        );
    }
}

#[cfg(test)]
mod identity_tests {
    //! Who a task runs as: the allocation's dynamic user, or a user the operator allowed.
    use super::*;

    fn task(alloc: &str, name: &str, user: &str) -> TaskSpec {
        TaskSpec {
            id: format!("{alloc}/{name}/0a1b2c3d"),
            name: name.into(),
            alloc_id: alloc.into(),
            alloc_dir: format!("/var/lib/nomad/alloc/{alloc}"),
            user: user.into(),
            ..TaskSpec::default()
        }
    }

    fn cmd() -> TaskUserConfig {
        TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        }
    }

    fn setting(p: &UnitPlan, name: &str) -> Option<String> {
        p.settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn one_dynamic_user_per_allocation() {
        let alloc = "8f3c2d1e-1111-2222-3333-444455556666";
        let web = plan(&task(alloc, "web", ""), &cmd(), &PluginConfig::default()).unwrap();
        let side = plan(
            &task(alloc, "sidecar", ""),
            &cmd(),
            &PluginConfig::default(),
        )
        .unwrap();
        assert_eq!(setting(&web, "DynamicUser").as_deref(), Some("yes"));
        let user = setting(&web, "User").expect("a named dynamic user");
        assert_eq!(user, "nomad-8f3c2d1e11112222333344445");
        assert!(user.len() <= 31, "systemd user names are at most 31 bytes");
        assert_eq!(
            setting(&side, "User"),
            Some(user.clone()),
            "same alloc, same user"
        );
        let other = plan(
            &task("9f3c2d1e-1111-2222-3333-444455556666", "web", ""),
            &cmd(),
            &PluginConfig::default(),
        )
        .unwrap();
        assert_ne!(setting(&other, "User"), Some(user));
    }

    #[test]
    fn environment_sizes_are_bounded_by_key() {
        let mut t = task("a", "web", "");
        t.env.insert("BIG".into(), "x".repeat(limits::ARG));
        let err = plan(&t, &cmd(), &PluginConfig::default()).unwrap_err();
        assert_eq!(err.0[0].key, "env.BIG");
        assert!(err.0[0].message.contains("at most 131072"), "{err}");
        let mut t = task("a", "web", "");
        t.env = (0..=limits::ENV_VARS)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        let err = plan(&t, &cmd(), &PluginConfig::default()).unwrap_err();
        assert_eq!(err.0[0].key, "env");
    }

    #[test]
    fn named_users_only_from_the_allow_list() {
        let t = task("a", "web", "www-data");
        let err = plan(&t, &cmd(), &PluginConfig::default()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].key, "user");
        assert!(
            err.0[0]
                .message
                .contains("not in the plugin's allowed_users"),
            "{err}"
        );
        let allowed = PluginConfig {
            allowed_users: vec!["www-data".into()],
            ..PluginConfig::default()
        };
        let mut t = t;
        t.user_gid = Some(33);
        let p = plan(&t, &cmd(), &allowed).unwrap();
        assert_eq!(setting(&p, "User").as_deref(), Some("www-data"));
        assert_eq!(setting(&p, "Group").as_deref(), Some("33"));
        assert_eq!(setting(&p, "DynamicUser"), None);
        // the operator's default_user is allowed without listing it
        let default = PluginConfig {
            default_user: "nobody".into(),
            ..PluginConfig::default()
        };
        let p = plan(&task("a", "web", "nobody"), &cmd(), &default).unwrap();
        assert_eq!(setting(&p, "User").as_deref(), Some("nobody"));
        // supplementary groups only when the operator allows them
        let mut grouped = t.clone();
        grouped.user_groups = vec![103];
        let err = plan(&grouped, &cmd(), &allowed).unwrap_err();
        assert_eq!(err.0[0].key, "user");
        assert!(
            err.0[0].message.contains("allow_supplementary_groups"),
            "{err}"
        );
        let lenient = PluginConfig {
            allow_supplementary_groups: true,
            ..allowed.clone()
        };
        assert!(plan(&grouped, &cmd(), &lenient).is_ok());
        // root needs allow_root, whatever the list says
        let err = plan(&task("a", "web", "root"), &cmd(), &allowed).unwrap_err();
        assert!(err.0[0].message.contains("allow_root"), "{err}");
    }
}

#[cfg(test)]
mod sandbox_tests {
    //! The default sandbox of transient tasks, and job properties that may only tighten it.
    use super::*;

    fn task() -> TaskSpec {
        TaskSpec {
            id: "a/web/0a1b2c3d".into(),
            name: "web".into(),
            alloc_id: "a".into(),
            alloc_dir: "/var/lib/nomad/alloc/a".into(),
            ..TaskSpec::default()
        }
    }

    fn cfg(props: &[(&str, &str)]) -> TaskUserConfig {
        TaskUserConfig {
            command: Some("/bin/true".into()),
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            ..TaskUserConfig::default()
        }
    }

    fn get(p: &UnitPlan, name: &str) -> Vec<String> {
        p.settings
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn refused(c: &TaskUserConfig, plugin: &PluginConfig) -> Vec<String> {
        refused_task(c, plugin, &task())
    }

    fn refused_task(c: &TaskUserConfig, plugin: &PluginConfig, t: &TaskSpec) -> Vec<String> {
        plan(t, c, plugin)
            .expect_err("refused")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn transient_tasks_get_the_sandbox_by_default() {
        let p = plan(&task(), &cfg(&[]), &PluginConfig::default()).unwrap();
        for (name, value) in SANDBOX {
            assert_eq!(get(&p, name), [*value], "{name}");
            assert!(
                p.properties.iter().any(|(n, _)| n == name),
                "{name} not sent"
            );
        }
        assert_eq!(get(&p, "PrivateTmp"), ["yes"]);
        let none = PluginConfig {
            sandbox: Sandbox::None,
            ..PluginConfig::default()
        };
        let p = plan(&task(), &cfg(&[]), &none).unwrap();
        for (name, _) in SANDBOX {
            assert!(get(&p, name).is_empty(), "{name} with sandbox = none");
        }
    }

    #[test]
    fn job_properties_only_tighten_unless_allowed() {
        let plugin = PluginConfig::default();
        // tighter or equal: fine, and it replaces the driver's value
        let p = plan(
            &task(),
            &cfg(&[("ProtectHome", "yes"), ("ProtectSystem", "strict")]),
            &plugin,
        )
        .unwrap();
        assert_eq!(get(&p, "ProtectSystem"), ["strict"]);
        for (name, value) in [
            ("ProtectSystem", "full"),
            ("ProtectSystem", "no"),
            ("ProtectHome", "read-only"),
            ("ProtectHome", "tmpfs"),
            ("NoNewPrivileges", "no"),
            ("PrivateDevices", "false"),
            ("ProtectKernelTunables", "off"),
        ] {
            let errs = refused(&cfg(&[(name, value)]), &plugin);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].starts_with(&format!("config.properties.{name}: "))
                    && errs[0].contains("would loosen the sandbox"),
                "{errs:?}"
            );
        }
        let allowed = PluginConfig {
            allow_loosening: vec!["ProtectHome".into()],
            ..PluginConfig::default()
        };
        let p = plan(&task(), &cfg(&[("ProtectHome", "read-only")]), &allowed).unwrap();
        assert_eq!(get(&p, "ProtectHome"), ["read-only"]);
        // the same floor holds for unit mode, whose template the planner cannot see
        let unit = PluginConfig {
            allowed_units: vec!["web@*.service".into()],
            ..PluginConfig::default()
        };
        let mut c = cfg(&[("ProtectSystem", "no")]);
        c.command = None;
        c.unit = Some("web@a.service".into());
        assert!(refused(&c, &unit)[0].contains("would loosen the sandbox"));
        c.properties.clear();
        let text = plan(&task(), &c, &unit).unwrap().dropin.unwrap();
        assert!(
            !text.contains("ProtectSystem"),
            "no sandbox in a drop-in: {text}"
        );
    }

    /// Other allocations are hidden by covering the alloc root, never by `InaccessiblePaths=` on
    /// it (which makes systemd unmount every tmpfs Nomad put under it, one per `mountinfo`
    /// read); a job's own `InaccessiblePaths` still adds to the driver's.
    #[test]
    fn the_alloc_root_is_covered_not_unmounted() {
        let p = plan(&task(), &cfg(&[]), &PluginConfig::default()).unwrap();
        assert_eq!(
            get(&p, "BindReadOnlyPaths"),
            ["\"/run/systemd/inaccessible/dir\":\"/var/lib/nomad/alloc\":norbind"]
        );
        let sent: Vec<&DValue> = p
            .properties
            .iter()
            .filter(|(n, _)| n == "BindReadOnlyPaths")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            sent,
            [&DValue::Array {
                sig: "(ssbt)".into(),
                items: vec![DValue::Struct(vec![
                    DValue::Str(INACCESSIBLE_DIR.into()),
                    DValue::Str("/var/lib/nomad/alloc".into()),
                    DValue::Bool(false), // a missing source fails the start
                    DValue::U64(0),      // not recursive: nothing under it is touched
                ])],
            }]
        );
        assert_eq!(get(&p, "InaccessiblePaths"), ["-/run/nomad-driver-systemd"]);
        let p = plan(
            &task(),
            &cfg(&[("InaccessiblePaths", "/srv")]),
            &PluginConfig::default(),
        )
        .unwrap();
        assert_eq!(
            get(&p, "InaccessiblePaths"),
            ["-/run/nomad-driver-systemd", "/srv"]
        );
        // an alloc dir whose parent cannot be covered is refused, not run with it visible
        let mut top = task();
        top.alloc_dir = "/a".into();
        assert_eq!(
            refused_task(&cfg(&[]), &PluginConfig::default(), &top),
            ["alloc_dir: \"/a\" has no parent directory to hide from the task"]
        );
        // a root with white space is covered all the same (the bind quotes it)
        top.alloc_dir = "/var/lib/no mad/alloc/a".into();
        let p = plan(&top, &cfg(&[]), &PluginConfig::default()).unwrap();
        assert_eq!(
            get(&p, "BindReadOnlyPaths"),
            ["\"/run/systemd/inaccessible/dir\":\"/var/lib/no mad/alloc\":norbind"]
        );
        // a volume or device beneath the cover is refused by key: systemd would make its
        // mount point inside the host's inaccessible directory
        let mut vol = task();
        vol.mounts = vec![crate::task::spec::MountSpec {
            host_path: "/srv/data".into(),
            task_path: "/var/lib/nomad/alloc/x".into(),
            readonly: false,
        }];
        let errs = refused_task(&cfg(&[]), &PluginConfig::default(), &vol);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "mounts[0].task_path: \"/var/lib/nomad/alloc/x\" lies in the node's allocation root"
            ),
            "{errs:?}"
        );
        // a sibling that only shares the prefix is fine
        vol.mounts[0].task_path = "/var/lib/nomad/allocations".into();
        assert!(plan(&vol, &cfg(&[]), &PluginConfig::default()).is_ok());
    }

    #[test]
    fn io_weight_takes_no_more_than_the_default_share() {
        let plugin = PluginConfig::default();
        assert!(plan(&task(), &cfg(&[("IOWeight", "50")]), &plugin).is_ok());
        assert!(plan(&task(), &cfg(&[("IOWeight", "100")]), &plugin).is_ok());
        let errs = refused(&cfg(&[("IOWeight", "1000")]), &plugin);
        assert_eq!(
            errs,
            ["config.properties.IOWeight: \"1000\" takes more than the default I/O share (100)"]
        );
    }

    #[test]
    fn loosening_names_must_be_sandbox_settings() {
        let err = PluginConfig::from_toml("allow_loosening = [\"CPUWeight\"]").unwrap_err();
        assert!(err.to_string().contains("allow_loosening"), "{err}");
        let err = PluginConfig::from_toml("sandbox = \"loose\"").unwrap_err();
        assert!(err.to_string().contains("sandbox"), "{err}");
        let ok = PluginConfig::from_toml("sandbox = \"none\"\nallow_loosening = [\"ProtectHome\"]");
        assert_eq!(ok.unwrap().sandbox, Sandbox::None);
    }
}

#[cfg(test)]
mod log_tests {
    //! Where output goes: `logs`, `/dev/null` paths and missing FIFOs.
    use super::*;

    fn task() -> TaskSpec {
        TaskSpec {
            id: "a1/web/0a1b2c3d".into(),
            name: "web".into(),
            alloc_id: "a1".into(),
            alloc_dir: "/var/lib/nomad/alloc/a1".into(),
            stdout_path: "/var/lib/nomad/alloc/a1/alloc/logs/.web.stdout.fifo".into(),
            stderr_path: "/var/lib/nomad/alloc/a1/alloc/logs/.web.stderr.fifo".into(),
            ..TaskSpec::default()
        }
    }

    fn cmd() -> TaskUserConfig {
        TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        }
    }

    fn logs(task: &TaskSpec, cfg: &TaskUserConfig, logs: Logs, host: Host) -> Vec<String> {
        let plugin = PluginConfig {
            logs,
            ..PluginConfig::default()
        };
        let p = plan_on(task, cfg, &plugin, host).expect("plan");
        p.settings
            .iter()
            .filter(|(n, _)| {
                n.starts_with("Standard") || n.starts_with("Syslog") || n.starts_with("LogRate")
            })
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    }

    #[test]
    fn nomad_is_todays_fifo_path() {
        assert_eq!(
            logs(&task(), &cmd(), Logs::Nomad, Host::default()),
            [
                "StandardOutput=file:/var/lib/nomad/alloc/a1/alloc/logs/.web.stdout.fifo",
                "StandardError=file:/var/lib/nomad/alloc/a1/alloc/logs/.web.stderr.fifo",
            ]
        );
    }

    const JOURNAL: [&str; 4] = [
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=web",
        "LogRateLimitIntervalSec=1us",
    ];

    #[test]
    fn journal_setting_sends_both_streams_to_the_journal() {
        assert_eq!(
            logs(&task(), &cmd(), Logs::Journal, Host::default()),
            JOURNAL
        );
        let p = plan_on(
            &task(),
            &cmd(),
            &PluginConfig {
                logs: Logs::Journal,
                ..PluginConfig::default()
            },
            Host::default(),
        )
        .unwrap();
        assert!(
            p.properties
                .contains(&("LogRateLimitIntervalUSec".to_string(), DValue::U64(1)))
        );
        assert!(
            p.properties
                .contains(&("StandardOutput".to_string(), DValue::Str("journal".into())))
        );
        assert!(!p.properties.iter().any(|(n, _)| n == "StandardOutputFile"));
    }

    #[test]
    fn uncollected_output_goes_to_the_journal() {
        // logs { disabled = true }
        let mut t = task();
        t.stdout_path = "/dev/null".into();
        t.stderr_path = "/dev/null".into();
        assert_eq!(logs(&t, &cmd(), Logs::Nomad, Host::default()), JOURNAL);
        // disable_log_collection: FIFO-style paths with no FIFO, never opened
        let off = Host {
            log_fifos_missing: true,
            ..Host::default()
        };
        assert_eq!(logs(&task(), &cmd(), Logs::Nomad, off), JOURNAL);
    }

    #[test]
    fn job_may_rename_the_identifier_and_rate_limit() {
        let mut cfg = cmd();
        cfg.properties = [
            ("SyslogIdentifier".to_string(), "shop-web".to_string()),
            ("LogRateLimitIntervalSec".to_string(), "30s".to_string()),
        ]
        .into();
        let got = logs(&task(), &cfg, Logs::Journal, Host::default());
        assert!(
            got.contains(&"SyslogIdentifier=shop-web".to_string()),
            "{got:?}"
        );
        assert!(
            !got.contains(&"SyslogIdentifier=web".to_string()),
            "{got:?}"
        );
        assert!(
            !got.contains(&"LogRateLimitIntervalSec=1us".to_string()),
            "{got:?}"
        );
    }
}
