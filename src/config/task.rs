//! The job's `config {}` block for `driver = "systemd"` (README.md, "Job specification").

use std::collections::BTreeMap;

use super::ConfigError;
use super::cty::Fields;

/// What the job author wrote, decoded and checked for shape (policy is the planner's job).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskUserConfig {
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub unit: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub work_dir: Option<String>,
}

impl TaskUserConfig {
    /// Decodes `TaskConfig.msgpack_driver_config`.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() {
            return Err(ConfigError::Decode(
                "task config is empty (exactly one of command or unit is required)".into(),
            ));
        }
        Self::from_fields(Fields::from_msgpack(bytes, "config.")?)
    }

    /// Reads an already decoded `config {}` object (used by the CLI for HCL and JSON jobs).
    pub fn from_fields(mut f: Fields) -> Result<Self, ConfigError> {
        let cfg = Self {
            command: f.string("command")?,
            args: f.string_list("args")?.unwrap_or_default(),
            unit: f.string("unit")?,
            properties: f.string_map("properties")?.unwrap_or_default(),
            work_dir: f.string("work_dir")?,
        };
        f.finish()?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.command, &self.unit) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "config.unit",
                    "command and unit are exclusive: set exactly one",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "config.command",
                    "exactly one of command or unit is required",
                ));
            }
            _ => {}
        }
        if self.command.as_deref() == Some("") {
            return Err(ConfigError::invalid("config.command", "must not be empty"));
        }
        if self.unit.is_some() && !self.args.is_empty() {
            return Err(ConfigError::invalid(
                "config.args",
                "args only apply to command; a unit brings its own ExecStart",
            ));
        }
        if let Some(dir) = &self.work_dir
            && !dir.starts_with('/')
        {
            return Err(ConfigError::invalid(
                "config.work_dir",
                format!("{dir:?} must be an absolute path"),
            ));
        }
        self.check_sizes()?;
        for (what, s) in self
            .command
            .iter()
            .map(|c| ("config.command", c))
            .chain(self.args.iter().map(|a| ("config.args", a)))
            .chain(self.work_dir.iter().map(|w| ("config.work_dir", w)))
        {
            if s.contains('\0') {
                return Err(ConfigError::invalid(what, "must not contain a NUL byte"));
            }
        }
        Ok(())
    }
}

impl TaskUserConfig {
    /// Bounds on what a job may send, so that no input makes the driver (or systemd, which
    /// keeps every property of every unit in memory) hold arbitrarily much.
    fn check_sizes(&self) -> Result<(), ConfigError> {
        let too_long = |key: String, len: usize, max: usize| {
            Err(ConfigError::invalid(
                key,
                format!("is {len} bytes long, at most {max} are accepted"),
            ))
        };
        for (key, s) in [
            ("config.command", &self.command),
            ("config.unit", &self.unit),
        ]
        .into_iter()
        .chain([("config.work_dir", &self.work_dir)])
        {
            if let Some(s) = s.as_ref().filter(|s| s.len() > limits::PATH) {
                return too_long(key.into(), s.len(), limits::PATH);
            }
        }
        if self.args.len() > limits::ARGS {
            return Err(ConfigError::invalid(
                "config.args",
                format!(
                    "has {} entries, at most {} are accepted",
                    self.args.len(),
                    limits::ARGS
                ),
            ));
        }
        for (i, a) in self.args.iter().enumerate() {
            if a.len() > limits::ARG {
                return too_long(format!("config.args[{i}]"), a.len(), limits::ARG);
            }
        }
        let total: usize = self.args.iter().map(String::len).sum();
        if total > limits::ARGV {
            return too_long("config.args".into(), total, limits::ARGV);
        }
        if self.properties.len() > limits::PROPERTIES {
            return Err(ConfigError::invalid(
                "config.properties",
                format!(
                    "has {} entries, at most {} are accepted",
                    self.properties.len(),
                    limits::PROPERTIES
                ),
            ));
        }
        for (name, value) in &self.properties {
            let key = format!("config.properties.{}", name.escape_debug());
            if name.len() > limits::PROPERTY_NAME {
                return too_long(key, name.len(), limits::PROPERTY_NAME);
            }
            if value.len() > limits::PROPERTY_VALUE {
                return too_long(key, value.len(), limits::PROPERTY_VALUE);
            }
        }
        Ok(())
    }
}

/// Size bounds on job input (bytes unless said otherwise). Generous for real jobs: the
/// kernel's own limits are `PATH_MAX` 4096, `MAX_ARG_STRLEN` 128 KiB per argument and
/// `ARG_MAX` typically 2 MiB for the whole argv and environment.
pub mod limits {
    /// `command`, `unit`, `work_dir`.
    pub const PATH: usize = 4096;
    /// One argument, and one environment variable (`KEY=value`).
    pub const ARG: usize = 128 * 1024;
    /// Number of arguments.
    pub const ARGS: usize = 4096;
    /// All arguments together, and the whole environment.
    pub const ARGV: usize = 2 * 1024 * 1024;
    /// Number of `properties`.
    pub const PROPERTIES: usize = 256;
    pub const PROPERTY_NAME: usize = 64;
    /// One property value (systemd reads unit-file lines of up to 1 MiB).
    pub const PROPERTY_VALUE: usize = 64 * 1024;
    /// Environment variables.
    pub const ENV_VARS: usize = 4096;
    /// A gRPC request from Nomad (its largest, StartTask, carries the task's environment).
    pub const GRPC_MESSAGE: usize = 16 * 1024 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cty::tests::hex;

    #[test]
    fn sizes_are_bounded_by_key() {
        let base = || TaskUserConfig {
            command: Some("/bin/true".into()),
            ..TaskUserConfig::default()
        };
        let err = |c: TaskUserConfig| c.validate().unwrap_err().to_string();
        let mut c = base();
        c.command = Some(format!("/{}", "x".repeat(limits::PATH)));
        assert!(err(c).starts_with("config.command: is 4097 bytes long"));
        let mut c = base();
        c.args = vec!["a".into(), "b".repeat(limits::ARG + 1)];
        assert!(err(c).starts_with("config.args[1]: is 131073 bytes long"));
        let mut c = base();
        c.args = vec![String::new(); limits::ARGS + 1];
        assert!(err(c).starts_with("config.args: has 4097 entries"));
        let mut c = base();
        c.args = vec!["a".repeat(limits::ARG); 17];
        assert!(err(c).starts_with("config.args: is 2228224 bytes long"));
        let mut c = base();
        c.properties = (0..=limits::PROPERTIES)
            .map(|i| (format!("P{i}"), "1".to_string()))
            .collect();
        assert!(err(c).starts_with("config.properties: has 257 entries"));
        let mut c = base();
        c.properties = [("Nice".to_string(), "1".repeat(limits::PROPERTY_VALUE + 1))].into();
        assert!(err(c).starts_with("config.properties.Nice: is 65537 bytes long"));
        let mut c = base();
        c.args = vec!["a".repeat(limits::ARG); 8];
        assert!(c.validate().is_ok(), "1 MiB of arguments is fine");
    }

    fn vector(hexbytes: &str) -> TaskUserConfig {
        TaskUserConfig::from_msgpack(&hex(hexbytes)).unwrap()
    }

    #[test]
    fn golden_command_only() {
        let c = vector(
            "85a461726773c0a7636f6d6d616e64a92f62696e2f74727565aa70726f70657274696573c0a4756e6974c0a8776f726b5f646972c0",
        );
        assert_eq!(c.command.as_deref(), Some("/bin/true"));
        assert!(c.args.is_empty() && c.properties.is_empty() && c.unit.is_none());
    }

    #[test]
    fn golden_args_with_dollar_and_unicode() {
        let c = vector(
            "85a46172677392a22d63b16563686f2024484f4d4520242420e29c93a7636f6d6d616e64a72f62696e2f7368aa70726f70657274696573c0a4756e6974c0a8776f726b5f646972c0",
        );
        assert_eq!(c.args, ["-c", "echo $HOME $$ ✓"]);
    }

    #[test]
    fn golden_unit_mode() {
        let c = vector(
            "85a461726773c0a7636f6d6d616e64c0aa70726f70657274696573c0a4756e6974d9367765627365727665724038663363326431652d313131312d323232322d333333332d3434343435353535363636362e73657276696365a8776f726b5f646972c0",
        );
        assert_eq!(
            c.unit.as_deref(),
            Some("webserver@8f3c2d1e-1111-2222-3333-444455556666.service")
        );
    }

    #[test]
    fn golden_properties_and_work_dir() {
        let c = vector(
            "85a461726773c0a7636f6d6d616e64ac2f7573722f62696e2f656e76aa70726f7065727469657383ab4c696d69744e4f46494c45a53635353336ad4d656d6f7279537761704d6178a130ad50726f7465637453797374656da6737472696374a4756e6974c0a8776f726b5f646972a62f6c6f63616c",
        );
        assert_eq!(c.properties["ProtectSystem"], "strict");
        assert_eq!(c.properties["LimitNOFILE"], "65536");
        assert_eq!(c.properties["MemorySwapMax"], "0");
        assert_eq!(c.work_dir.as_deref(), Some("/local"));
    }

    #[test]
    fn golden_empty_properties() {
        let c = vector(
            "85a461726773c0a7636f6d6d616e64a92f62696e2f74727565aa70726f7065727469657380a4756e6974c0a8776f726b5f646972c0",
        );
        assert!(c.properties.is_empty());
    }

    #[test]
    fn spec_worked_example_decodes() {
        // docs/nomad-contract.md, *Schemas and config encoding*, worked example:
        // {args:[a,b], properties:{MemoryMax:1G}, unit:web@x.service}
        let bytes = hex(concat!(
            "83a461726773",
            "92a161a162",
            "aa70726f70657274696573",
            "81a94d656d6f72794d6178a23147",
            "a4756e6974",
            "ad77656240782e73657276696365"
        ));
        let err = TaskUserConfig::from_msgpack(&bytes)
            .unwrap_err()
            .to_string();
        // args are refused with unit mode; the rest decoded fine
        assert_eq!(
            err,
            "config.args: args only apply to command; a unit brings its own ExecStart"
        );
    }

    #[test]
    fn list_wrapped_properties_are_unwrapped() {
        // {"command":"/bin/true","properties":[{"A":"b"}]}
        let bytes = hex("82a7636f6d6d616e64a92f62696e2f74727565aa70726f706572746965739181a141a162");
        let c = TaskUserConfig::from_msgpack(&bytes).unwrap();
        assert_eq!(c.properties["A"], "b");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            // {"command": 5}
            (
                "81a7636f6d6d616e6405",
                "config.command: expected a string, found a number",
            ),
            // {}
            (
                "80",
                "config.command: exactly one of command or unit is required",
            ),
            // {"command":"x","unit":"y"}
            (
                "82a7636f6d6d616e64a178a4756e6974a179",
                "config.unit: command and unit are exclusive: set exactly one",
            ),
            // {"command":"x","bogus":1}
            (
                "82a7636f6d6d616e64a178a5626f67757301",
                "config.bogus: unknown key",
            ),
            // {"command":"x","work_dir":"rel"}
            (
                "82a7636f6d6d616e64a178a8776f726b5f646972a372656c",
                "config.work_dir: \"rel\" must be an absolute path",
            ),
        ];
        for (bytes, want) in cases {
            let err = TaskUserConfig::from_msgpack(&hex(bytes))
                .unwrap_err()
                .to_string();
            assert_eq!(err, want);
        }
    }
}
