//! The plugin's own configuration (`plugin "nomad-driver-systemd" { config {} }` and the CLI's TOML).

use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::cty::{self, Fields};
use super::duration;
use globset::{Glob, GlobSet, GlobSetBuilder};

pub const DEFAULT_SLICE: &str = "nomad_tasks.slice";
pub const DEFAULT_CONFIG_FILE: &str = "/etc/nomad-driver-systemd/config.toml";
/// `max_stop_timeout`'s default: ten times Nomad's own default cap on a task's `kill_timeout`
/// (the client's `max_kill_timeout`, "30s" in command/agent/config.go, DefaultConfig).
pub const DEFAULT_MAX_STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// `start_timeout`'s default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Validated plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub enabled: bool,
    pub slice: String,
    pub allowed_units: Vec<String>,
    pub allowed_properties: Vec<String>,
    pub denied_properties: Vec<String>,
    pub default_user: String,
    /// Host users a job may name in `user`; empty: none (a job without a user runs as its
    /// allocation's dynamic user).
    pub allowed_users: Vec<String>,
    /// Whether a named user's supplementary groups (which systemd always adds) are acceptable;
    /// when false a user that has any is refused.
    pub allow_supplementary_groups: bool,
    pub allow_root: bool,
    /// The isolation every transient task gets unless the job tightens it further.
    pub sandbox: Sandbox,
    /// Sandbox settings a job's `properties` may loosen (by property name); empty: none.
    pub allow_loosening: Vec<String>,
    /// Where task output goes (`logs`).
    pub logs: Logs,
    /// The longest `TimeoutStopSec` a job's `properties` may set (`infinity` and `0` are
    /// longer than any); a job asking for more is refused, naming the property and this key.
    pub max_stop_timeout: Duration,
    /// How long StartTask waits for systemd's start job; also the longest `TimeoutStartSec` a
    /// job may set.
    pub start_timeout: Duration,
}

/// Where a task's stdout and stderr go (plugin key `logs`; ARCHITECTURE.md, *Task logs*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Logs {
    /// Nomad's FIFOs, opened by systemd in the unit's exec context (`StandardOutput=file:`):
    /// `nomad alloc logs` sees them, the journal does not.
    #[default]
    Nomad,
    /// The journal (`StandardOutput=journal`), with the unit's `NOMAD_*` fields: `journalctl`
    /// sees them, `nomad alloc logs` does not.
    Journal,
    /// Nomad's FIFOs as with `Nomad`, and the plugin's one forwarder copies logmon's files
    /// into the journal: both views, stdout and stderr apart.
    Both,
}

impl Logs {
    /// The values the key accepts, in documentation order.
    pub const VALUES: [&'static str; 3] = ["nomad", "journal", "both"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nomad => "nomad",
            Self::Journal => "journal",
            Self::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nomad" => Some(Self::Nomad),
            "journal" => Some(Self::Journal),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

/// `sandbox = "strict" | "none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// The host is read-only to the task, `/home`, `/root`, `/run/user` are hidden, kernel
    /// knobs, cgroups and devices are out of reach, no privilege can be gained.
    #[default]
    Strict,
    /// Only what the task's binds and identity imply: for hosts that need the old view.
    None,
}

impl Sandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Strict => "strict",
            Sandbox::None => "none",
        }
    }
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            slice: DEFAULT_SLICE.to_string(),
            allowed_units: Vec::new(),
            allowed_properties: Vec::new(),
            denied_properties: Vec::new(),
            default_user: String::new(),
            allowed_users: Vec::new(),
            allow_supplementary_groups: false,
            allow_root: false,
            sandbox: Sandbox::Strict,
            allow_loosening: Vec::new(),
            logs: Logs::default(),
            max_stop_timeout: DEFAULT_MAX_STOP_TIMEOUT,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

impl PluginConfig {
    /// Decodes `SetConfigRequest.msgpack_config`; empty bytes mean defaults.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        Self::from_fields(Fields::from_msgpack(bytes, "")?)
    }

    /// Encodes the config as Nomad would send it (cty-msgpack object, every key present).
    pub fn to_msgpack(&self) -> Vec<u8> {
        use rmpv::Value;
        let list = |l: &[String]| Value::Array(l.iter().map(|s| Value::from(s.as_str())).collect());
        let map = Value::Map(vec![
            (Value::from("allow_loosening"), list(&self.allow_loosening)),
            (Value::from("allow_root"), Value::from(self.allow_root)),
            (
                Value::from("allow_supplementary_groups"),
                Value::from(self.allow_supplementary_groups),
            ),
            (
                Value::from("allowed_properties"),
                list(&self.allowed_properties),
            ),
            (Value::from("allowed_units"), list(&self.allowed_units)),
            (Value::from("allowed_users"), list(&self.allowed_users)),
            (
                Value::from("default_user"),
                Value::from(self.default_user.as_str()),
            ),
            (
                Value::from("denied_properties"),
                list(&self.denied_properties),
            ),
            (Value::from("enabled"), Value::from(self.enabled)),
            (Value::from("logs"), Value::from(self.logs.as_str())),
            (
                Value::from("max_stop_timeout"),
                Value::from(duration::format(self.max_stop_timeout)),
            ),
            (Value::from("sandbox"), Value::from(self.sandbox.as_str())),
            (Value::from("slice"), Value::from(self.slice.as_str())),
            (
                Value::from("start_timeout"),
                Value::from(duration::format(self.start_timeout)),
            ),
        ]);
        let mut out = Vec::new();
        // writing into a Vec cannot fail
        let _ = rmpv::encode::write_value(&mut out, &map);
        out
    }

    /// Parses the TOML file the CLI and the NixOS module share.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Decode(e.to_string()))?;
        Self::from_fields(Fields::from_value(
            cty::from_toml(toml::Value::Table(table)),
            "",
        )?)
    }

    /// Reads `path` if given, else the default file if it exists, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    fn from_fields(mut f: Fields) -> Result<Self, ConfigError> {
        let d = Self::default();
        let cfg = Self {
            enabled: f.bool("enabled")?.unwrap_or(d.enabled),
            slice: f.string("slice")?.unwrap_or(d.slice),
            allowed_units: f.string_list("allowed_units")?.unwrap_or_default(),
            allowed_properties: f.string_list("allowed_properties")?.unwrap_or_default(),
            denied_properties: f.string_list("denied_properties")?.unwrap_or_default(),
            default_user: f.string("default_user")?.unwrap_or_default(),
            allowed_users: f.string_list("allowed_users")?.unwrap_or_default(),
            allow_supplementary_groups: f
                .bool("allow_supplementary_groups")?
                .unwrap_or(d.allow_supplementary_groups),
            allow_root: f.bool("allow_root")?.unwrap_or(d.allow_root),
            logs: match f.string("logs")? {
                None => d.logs,
                Some(v) => Logs::parse(&v).ok_or_else(|| {
                    ConfigError::invalid(
                        "logs",
                        format!("{v:?} is not one of \"{}\"", Logs::VALUES.join("\", \"")),
                    )
                })?,
            },
            sandbox: match f.string("sandbox")?.as_deref() {
                None | Some("strict") => Sandbox::Strict,
                Some("none") => Sandbox::None,
                Some(other) => {
                    return Err(ConfigError::invalid(
                        "sandbox",
                        format!("{other:?} is not one of \"strict\", \"none\""),
                    ));
                }
            },
            allow_loosening: f.string_list("allow_loosening")?.unwrap_or_default(),
            max_stop_timeout: timeout(&mut f, "max_stop_timeout")?.unwrap_or(d.max_stop_timeout),
            start_timeout: timeout(&mut f, "start_timeout")?.unwrap_or(d.start_timeout),
        };
        f.finish()?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_slice(&self.slice)?;
        self.unit_globs()?;
        for (key, list) in [
            ("allowed_properties", &self.allowed_properties),
            ("denied_properties", &self.denied_properties),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(ConfigError::invalid(
                    key,
                    format!("{bad:?} is not a systemd property name"),
                ));
            }
        }
        use crate::properties::PropertyPolicy;
        for (key, result) in [
            (
                "allowed_properties",
                PropertyPolicy::check_config(&self.allowed_properties, &[]),
            ),
            (
                "denied_properties",
                PropertyPolicy::check_config(&[], &self.denied_properties),
            ),
            (
                "allowed_properties",
                PropertyPolicy::check_config(&self.allowed_properties, &self.denied_properties),
            ),
        ] {
            if let Err(errors) = result {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Err(ConfigError::invalid(key, all.join("; ")));
            }
        }
        if !self.default_user.is_empty() && !valid_user_name(&self.default_user) {
            return Err(ConfigError::invalid(
                "default_user",
                format!("{:?} is not a valid user name", self.default_user),
            ));
        }
        if let Some(bad) = self
            .allow_loosening
            .iter()
            .find(|p| !crate::properties::SANDBOX.iter().any(|(n, _)| n == p))
        {
            return Err(ConfigError::invalid(
                "allow_loosening",
                format!(
                    "{bad:?} is not one of the sandbox's settings ({})",
                    crate::properties::SANDBOX
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(bad) = self.allowed_users.iter().find(|u| !valid_user_name(u)) {
            return Err(ConfigError::invalid(
                "allowed_users",
                format!("{bad:?} is not a valid user name"),
            ));
        }
        if let Some(root) = self.allowed_users.iter().find(|u| is_root_user(u)) {
            return Err(ConfigError::invalid(
                "allowed_users",
                format!("{root:?}: root is governed by allow_root, not allowed_users"),
            ));
        }
        if !self.allow_root && is_root_user(&self.default_user) {
            return Err(ConfigError::invalid(
                "default_user",
                "root is refused unless allow_root = true",
            ));
        }
        Ok(())
    }

    /// The compiled `allowed_units` globs.
    pub fn unit_globs(&self) -> Result<GlobSet, ConfigError> {
        let mut b = GlobSetBuilder::new();
        for g in &self.allowed_units {
            if g.is_empty() || g.contains('/') {
                return Err(ConfigError::invalid(
                    "allowed_units",
                    format!("{g:?} is not a unit name glob"),
                ));
            }
            let glob = Glob::new(g).map_err(|e| {
                ConfigError::invalid("allowed_units", format!("{g:?}: {}", e.kind()))
            })?;
            b.add(glob);
        }
        b.build()
            .map_err(|e| ConfigError::invalid("allowed_units", e.to_string()))
    }
}

/// A timeout key: a positive Go duration (Nomad's own spelling, as in `kill_timeout`).
fn timeout(f: &mut Fields, key: &str) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = f.string(key)? else {
        return Ok(None);
    };
    match duration::parse(&text) {
        Some(d) if !d.is_zero() => Ok(Some(d)),
        Some(_) => Err(ConfigError::invalid(key, "must be longer than 0")),
        None => Err(ConfigError::invalid(
            key,
            format!("{text:?} is not a duration such as \"30s\", \"5m\" or \"1h30m\""),
        )),
    }
}

fn validate_slice(slice: &str) -> Result<(), ConfigError> {
    let err = |m: &str| Err(ConfigError::invalid("slice", format!("{slice:?} {m}")));
    let Some(stem) = slice.strip_suffix(".slice") else {
        return err("must end in .slice");
    };
    if stem.is_empty()
        || !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    {
        return err("is not a valid slice name");
    }
    if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return err("is not a valid slice name ('-' means nesting)");
    }
    // `-` nests: nomad-x.slice lives inside nomad.slice, which Nomad manages itself.
    if stem.split('-').next() == Some("nomad") {
        return err("would live inside nomad.slice, which Nomad manages itself");
    }
    Ok(())
}

/// Loose POSIX-ish user name check, or a numeric uid.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `root` or uid 0 in any spelling.
pub fn is_root_user(name: &str) -> bool {
    name == "root" || (!name.is_empty() && name.bytes().all(|b| b == b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cty::tests::hex;

    #[test]
    fn golden_defaults_decode() {
        let bytes = hex(
            "87aa616c6c6f775f726f6f74c2b2616c6c6f7765645f70726f7065727469657390ad616c6c6f7765645f756e69747390ac64656661756c745f75736572a0b164656e6965645f70726f7065727469657390a7656e61626c6564c3a5736c696365b16e6f6d61645f7461736b732e736c696365",
        );
        assert_eq!(
            PluginConfig::from_msgpack(&bytes).unwrap(),
            PluginConfig::default()
        );
    }

    #[test]
    fn golden_operator_settings_decode() {
        let bytes = hex(
            "87aa616c6c6f775f726f6f74c3b2616c6c6f7765645f70726f7065727469657391ab446576696365416c6c6f77ad616c6c6f7765645f756e69747392b3776562736572766572402a2e73657276696365ad6170692d2a2e73657276696365ac64656661756c745f75736572a0b164656e6965645f70726f7065727469657390a7656e61626c6564c3a5736c696365b16e6f6d61645f7461736b732e736c696365",
        );
        let cfg = PluginConfig::from_msgpack(&bytes).unwrap();
        assert!(cfg.allow_root);
        assert_eq!(cfg.allowed_units, ["webserver@*.service", "api-*.service"]);
        assert_eq!(cfg.allowed_properties, ["DeviceAllow"]);
        assert!(cfg.unit_globs().unwrap().is_match("webserver@abc.service"));
    }

    /// The defaults as go-cty encodes our schema: the golden bytes of the seven original keys
    /// with `allow_loosening`, `allow_supplementary_groups`, `allowed_users`, `logs`,
    /// `max_stop_timeout`, `sandbox` and `start_timeout` in their sorted places (a map of 14). The Go conformance client
    /// (tests/nomad-client) checks the real go-cty encoding end to end.
    #[test]
    fn encoding_matches_nomads_bytes() {
        let golden = hex(concat!(
            "8e",
            "af616c6c6f775f6c6f6f73656e696e6790",
            "aa616c6c6f775f726f6f74c2",
            "ba616c6c6f775f737570706c656d656e746172795f67726f757073c2",
            "b2616c6c6f7765645f70726f7065727469657390ad616c6c6f7765645f756e69747390",
            "ad616c6c6f7765645f757365727390",
            "ac64656661756c745f75736572a0b164656e6965645f70726f7065727469657390a7656e61626c6564c3",
            "a46c6f6773a56e6f6d6164",
            "b06d61785f73746f705f74696d656f7574a2356d",
            "a773616e64626f78a6737472696374",
            "a5736c696365b16e6f6d61645f7461736b732e736c696365",
            "ad73746172745f74696d656f7574a2326d",
        ));
        assert_eq!(PluginConfig::default().to_msgpack(), golden);
    }

    #[test]
    fn empty_bytes_mean_defaults() {
        assert_eq!(
            PluginConfig::from_msgpack(&[]).unwrap(),
            PluginConfig::default()
        );
    }

    #[test]
    fn nil_values_take_defaults() {
        // {"enabled": nil, "slice": nil}
        let bytes = hex("82a7656e61626c6564c0a5736c696365c0");
        assert_eq!(
            PluginConfig::from_msgpack(&bytes).unwrap(),
            PluginConfig::default()
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("slice = \"nomad.slice\"", "slice"),
            ("slice = \"nomad-tasks.slice\"", "slice"),
            ("slice = \"tasks\"", "slice"),
            ("allowed_units = [\"web@[.service\"]", "allowed_units"),
            (
                "allowed_properties = [\"Memory Max\"]",
                "allowed_properties",
            ),
            ("default_user = \"root\"", "default_user"),
            ("default_user = \"a b\"", "default_user"),
            ("logs = \"Journal\"", "logs"),
            ("max_stop_timeout = \"5min\"", "max_stop_timeout"),
            ("max_stop_timeout = \"0\"", "max_stop_timeout"),
            ("max_stop_timeout = \"infinity\"", "max_stop_timeout"),
            ("start_timeout = \"-1s\"", "start_timeout"),
            ("start_timeout = \"120\"", "start_timeout"),
        ];
        for (toml, key) in cases {
            let err = PluginConfig::from_toml(toml).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}:")), "{toml}: {err}");
        }
    }

    #[test]
    fn wrong_type_names_the_key() {
        // {"enabled": "yes"}
        let bytes = hex("81a7656e61626c6564a3796573");
        let err = PluginConfig::from_msgpack(&bytes).unwrap_err().to_string();
        assert_eq!(err, "enabled: expected a bool, found a string");
        let err = PluginConfig::from_toml("enabled = \"yes\"")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "enabled: expected a bool, found a string");
        let err = PluginConfig::from_toml("allowed_units = [\"a\", 3]")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "allowed_units[1]: expected a string, found a number");
        let err = PluginConfig::from_toml("slise = \"x.slice\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("slise"), "{err}");
    }

    #[test]
    fn logs_takes_nomad_journal_or_both() {
        assert_eq!(PluginConfig::default().logs, Logs::Nomad);
        let cfg = PluginConfig::from_toml("logs = \"journal\"").unwrap();
        assert_eq!(cfg.logs, Logs::Journal);
        assert_eq!(
            PluginConfig::from_msgpack(&cfg.to_msgpack()).unwrap().logs,
            Logs::Journal
        );
        assert_eq!(
            PluginConfig::from_toml("logs = \"both\"").unwrap().logs,
            Logs::Both
        );
        let err = PluginConfig::from_toml("logs = \"all\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "logs: \"all\" is not one of \"nomad\", \"journal\", \"both\""
        );
    }

    #[test]
    fn timeouts_take_go_durations() {
        let d = PluginConfig::default();
        assert_eq!(d.max_stop_timeout, Duration::from_secs(300));
        assert_eq!(d.start_timeout, Duration::from_secs(120));
        let cfg = PluginConfig::from_toml("max_stop_timeout = \"1h30m\"\nstart_timeout = \"1.5s\"")
            .unwrap();
        assert_eq!(cfg.max_stop_timeout, Duration::from_secs(5400));
        assert_eq!(cfg.start_timeout, Duration::from_millis(1500));
        assert_eq!(PluginConfig::from_msgpack(&cfg.to_msgpack()).unwrap(), cfg);
        let err = PluginConfig::from_toml("start_timeout = \"2 min\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "start_timeout: \"2 min\" is not a duration such as \"30s\", \"5m\" or \"1h30m\""
        );
        let err = PluginConfig::from_toml("max_stop_timeout = 30")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "max_stop_timeout: expected a string, found a number");
    }

    /// The schema's default literals are the defaults the decoder applies.
    #[test]
    fn schema_defaults_are_the_decoders() {
        use crate::config::schema::{Spec, plugin_schema};
        let Spec::Object(fields) = plugin_schema() else {
            panic!("the plugin schema is an object")
        };
        let mut toml = String::new();
        for (key, spec) in fields {
            let Spec::Default { default, .. } = spec else {
                panic!("{key} has no default")
            };
            let Spec::Literal(l) = *default else {
                panic!("{key}: default is not a literal")
            };
            toml.push_str(&format!("{key} = {l}\n"));
        }
        assert_eq!(
            PluginConfig::from_toml(&toml).unwrap(),
            PluginConfig::default(),
            "{toml}"
        );
    }

    #[test]
    fn root_allowed_when_configured() {
        let cfg = PluginConfig::from_toml("default_user = \"root\"\nallow_root = true").unwrap();
        assert_eq!(cfg.default_user, "root");
    }
}
