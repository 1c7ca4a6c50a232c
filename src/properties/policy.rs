//! The operator's property policy: which names a job may set.
//!
//! A name must be valid, not driver-owned, known (in the table), not denied and allowed:
//! allowed = the table's [`Class::Allowed`] names ∪ the operator's `allowed_properties`;
//! denied = (the table's [`Class::Denied`] names ∪ the operator's `denied_properties`) minus the
//! operator's `allowed_properties` (an operator allow wins over a built-in deny). Driver-owned
//! names ([`DRIVER_OWNED`] and [`Class::DriverOwned`] entries) are refused whatever the operator
//! says. The policy also answers whether the running systemd has a property
//! ([`check_version`]).

use std::collections::BTreeSet;
use std::time::Duration;

use super::error::PropertyError;
use super::table::{ANY, Class, PROPERTIES, lookup, names_of};
use super::{known, valid_name};
use crate::vocab::DValue;

/// Never settable by a job, whatever the policy, and not typed by the table: the driver sets
/// these itself (lifetime, exit status, command, identity, logs, task directories, environment,
/// cgroup placement and the resources Nomad schedules by) or relies on their defaults. The
/// table's own [`Class::DriverOwned`] entries (`CPUWeight`, `AllowedCPUs`) are refused too.
pub const DRIVER_OWNED: &[&str] = &[
    // lifetime and exit status
    "Restart",
    "RestartSec",
    "RemainAfterExit",
    "SuccessExitStatus",
    "RestartPreventExitStatus",
    "RestartForceExitStatus",
    "CollectMode",
    "SendSIGKILL",
    // commands
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecStop",
    "ExecStopPost",
    "ExecReload",
    "ExecCondition",
    "ExecStartEx",
    "ExecStartPreEx",
    "ExecStartPostEx",
    "ExecStopEx",
    "ExecStopPostEx",
    "ExecReloadEx",
    "ExecConditionEx",
    // identity
    "User",
    "Group",
    "DynamicUser",
    "PAMName",
    // logs
    "StandardInput",
    "StandardOutput",
    "StandardError",
    "StandardInputText",
    "StandardInputData",
    "LogExtraFields",
    // filesystem: task directories, volumes, private /tmp
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "PrivateTmp",
    "WorkingDirectory",
    // environment
    "Environment",
    "EnvironmentFile",
    "PassEnvironment",
    "UnsetEnvironment",
    // placement, network, Nomad's resources
    "Slice",
    "NetworkNamespacePath",
    "StartupCPUWeight",
    "CPUShares",
    "StartupCPUShares",
    "StartupAllowedCPUs",
    "CPUAccounting",
    "MemoryAccounting",
    "TasksAccounting",
    "IOAccounting",
];

/// Whether the driver sets this name itself.
pub fn is_driver_owned(name: &str) -> bool {
    DRIVER_OWNED.contains(&name) || lookup(name).is_some_and(|d| d.class == Class::DriverOwned)
}

/// Whether systemd `running` has this property. Unknown names pass (the policy refuses them).
pub fn check_version(name: &str, running: u32) -> Result<(), PropertyError> {
    match lookup(name) {
        Some(d) if d.since != ANY && d.since > running => Err(PropertyError::TooNew {
            name: name.to_string(),
            since: d.since,
            running,
        }),
        _ => Ok(()),
    }
}

/// Which job properties the plugin accepts (`allowed_properties` / `denied_properties`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyPolicy {
    allowed: BTreeSet<String>,
    denied: BTreeSet<String>,
    caps: Vec<TimeCap>,
}

/// An operator's ceiling on a time-span property (see [`PropertyPolicy::with_cap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimeCap {
    property: &'static str,
    max: Duration,
    key: &'static str,
    /// `max` as the operator's config spells durations (`5m`), for errors.
    shown: String,
}

impl Default for PropertyPolicy {
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

impl PropertyPolicy {
    /// allowed = the table's [`Class::Allowed`] names ∪ `extra_allowed`;
    /// denied = (the table's [`Class::Denied`] names ∪ `extra_denied`) minus `extra_allowed`.
    pub fn new(extra_allowed: &[String], extra_denied: &[String]) -> Self {
        let allowed: BTreeSet<String> = names_of(Class::Allowed)
            .map(str::to_string)
            .chain(extra_allowed.iter().cloned())
            .collect();
        let denied = names_of(Class::Denied)
            .map(str::to_string)
            .chain(extra_denied.iter().cloned())
            .filter(|n| !extra_allowed.contains(n))
            .collect();
        Self {
            allowed,
            denied,
            caps: Vec::new(),
        }
    }

    /// A job may set the time-span `property` to at most `max` (`infinity`, and `0` where it
    /// means infinity, are longer than any); `key` is the operator's setting that says so,
    /// `shown` its value as errors print it (the config's spelling, e.g. `5m`).
    #[must_use]
    pub fn with_cap(
        mut self,
        property: &'static str,
        max: Duration,
        key: &'static str,
        shown: impl Into<String>,
    ) -> Self {
        self.caps.push(TimeCap {
            property,
            max,
            key,
            shown: shown.into(),
        });
        self
    }

    /// Whether a job's value, typed by [`super::to_dbus`], stays within the operator's caps.
    /// `value` is the job's spelling, for the message.
    pub fn check_value(
        &self,
        name: &str,
        value: &str,
        dbus: &[(String, DValue)],
    ) -> Result<(), PropertyError> {
        for cap in self.caps.iter().filter(|c| c.property == name) {
            let max_usec = u64::try_from(cap.max.as_micros()).unwrap_or(u64::MAX);
            let over = dbus
                .iter()
                .any(|(_, v)| matches!(v, DValue::U64(usec) if *usec > max_usec));
            if over {
                return Err(PropertyError::AboveCap {
                    name: name.to_string(),
                    value: value.to_string(),
                    key: cap.key,
                    cap: cap.shown.clone(),
                });
            }
        }
        Ok(())
    }

    /// Problems in an operator's lists, one error per offending entry: names that are not valid or
    /// not known, driver-owned names in `allowed_properties`, and names in both lists.
    pub fn check_config(
        extra_allowed: &[String],
        extra_denied: &[String],
    ) -> Result<(), Vec<PropertyError>> {
        let mut errors = Vec::new();
        for name in extra_allowed {
            if is_driver_owned(name) {
                errors.push(PropertyError::DriverOwned { name: name.clone() });
            } else if let Err(e) = known(name) {
                errors.push(e);
            } else if extra_denied.contains(name) {
                errors.push(PropertyError::Conflicting { name: name.clone() });
            }
        }
        for name in extra_denied {
            if !is_driver_owned(name)
                && let Err(e) = known(name)
            {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Whether a job may set this property: valid name, not driver-owned, known, not denied,
    /// allowed — checked in that order, so the error says the most fundamental reason.
    pub fn check(&self, name: &str) -> Result<(), PropertyError> {
        valid_name(name)?;
        if is_driver_owned(name) {
            return Err(PropertyError::DriverOwned {
                name: name.to_string(),
            });
        }
        known(name)?;
        if self.denied.contains(name) {
            return Err(PropertyError::Denied {
                name: name.to_string(),
            });
        }
        if !self.allowed.contains(name) {
            return Err(PropertyError::NotAllowed {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// The names a job may set under this policy, sorted.
    pub fn allowed_names(&self) -> Vec<&'static str> {
        PROPERTIES
            .iter()
            .map(|d| d.name)
            .filter(|n| self.check(n).is_ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::PropertyError;

    #[test]
    fn policy_defaults() {
        let p = PropertyPolicy::default();
        for n in names_of(Class::Allowed) {
            assert_eq!(p.check(n), Ok(()), "{n}");
        }
        for n in names_of(Class::Denied) {
            assert_eq!(
                p.check(n),
                Err(PropertyError::Denied {
                    name: n.to_string()
                }),
                "{n}"
            );
        }
        for n in DRIVER_OWNED
            .iter()
            .copied()
            .chain(names_of(Class::DriverOwned))
        {
            assert_eq!(
                p.check(n),
                Err(PropertyError::DriverOwned {
                    name: n.to_string()
                }),
                "{n}"
            );
        }
        for n in [
            "ProtectSystem",
            "MemorySwapMax",
            "LimitNOFILE",
            "CPUQuota",
            "TimeoutStopSec",
            "NoNewPrivileges",
        ] {
            assert_eq!(p.check(n), Ok(()), "{n}");
        }
        for n in [
            "User",
            "Group",
            "ExecStart",
            "ExecStartPre",
            "Restart",
            "StandardOutput",
            "BindPaths",
            "PrivateTmp",
            "CPUWeight",
            "AllowedCPUs",
        ] {
            assert!(
                matches!(p.check(n), Err(PropertyError::DriverOwned { .. })),
                "{n}"
            );
        }
        for n in [
            "AmbientCapabilities",
            "CapabilityBoundingSet",
            "Delegate",
            "PermissionsStartOnly",
            "DeviceAllow",
            "ReadWritePaths",
            "SupplementaryGroups",
        ] {
            assert!(
                matches!(p.check(n), Err(PropertyError::Denied { .. })),
                "{n}"
            );
        }
        assert!(matches!(
            p.check("Wants"),
            Err(PropertyError::Unknown { .. })
        ));
        assert_eq!(p.allowed_names().len(), names_of(Class::Allowed).count());
    }

    #[test]
    fn policy_operator_lists() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // the operator allows a default-denied property and denies a default-allowed one
        let p = PropertyPolicy::new(&v(&["DeviceAllow"]), &v(&["MemoryMax", "LimitNOFILE"]));
        assert_eq!(p.check("DeviceAllow"), Ok(()));
        assert_eq!(
            p.check("MemoryMax"),
            Err(PropertyError::Denied {
                name: "MemoryMax".into()
            })
        );
        assert_eq!(
            p.check("LimitNOFILE"),
            Err(PropertyError::Denied {
                name: "LimitNOFILE".into()
            })
        );
        assert_eq!(
            p.check("AmbientCapabilities"),
            Err(PropertyError::Denied {
                name: "AmbientCapabilities".into()
            })
        );
        assert_eq!(p.check("ProtectSystem"), Ok(()));
        // allowed wins over denied when an operator lists both (and check_config reports it)
        let p = PropertyPolicy::new(&v(&["OOMScoreAdjust"]), &v(&["OOMScoreAdjust"]));
        assert_eq!(p.check("OOMScoreAdjust"), Ok(()));
        // driver-owned stays refused even if the operator allows it
        let p = PropertyPolicy::new(&v(&["User", "ExecStart", "CPUWeight"]), &[]);
        for n in ["User", "ExecStart", "CPUWeight"] {
            assert_eq!(
                p.check(n),
                Err(PropertyError::DriverOwned { name: n.into() })
            );
        }
        // unknown names stay unknown
        let p = PropertyPolicy::new(&v(&["Conflicts"]), &[]);
        assert!(matches!(
            p.check("Conflicts"),
            Err(PropertyError::Unknown { .. })
        ));
    }

    #[test]
    fn policy_config_check() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            PropertyPolicy::check_config(&v(&["DeviceAllow"]), &v(&["MemoryMax"])),
            Ok(())
        );
        let errs = PropertyPolicy::check_config(
            &v(&["User", "Bogus", "Nice", "Foo\n"]),
            &v(&["Nice", "Wat", "User"]),
        )
        .unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "property \"User\" is owned by the driver",
                "property \"Bogus\" is not a systemd property this driver knows",
                "property \"Nice\" is listed in both allowed_properties and denied_properties",
                "property name \"Foo\\n\" is invalid: names are ASCII letters and digits only",
                "property \"Wat\" is not a systemd property this driver knows",
            ]
        );
    }

    #[test]
    fn time_caps() {
        let p = PropertyPolicy::default()
            .with_cap(
                "TimeoutStopSec",
                Duration::from_secs(300),
                "max_stop_timeout",
                "5m",
            )
            .with_cap(
                "TimeoutStartSec",
                Duration::from_secs(120),
                "start_timeout",
                "2m",
            );
        let check = |name: &str, value: &str| {
            p.check_value(
                name,
                value,
                &crate::properties::to_dbus(name, value).unwrap(),
            )
        };
        for (name, value) in [
            ("TimeoutStopSec", "5min"),
            ("TimeoutStopSec", "1s"),
            ("TimeoutStartSec", "2min"),
            ("RuntimeMaxSec", "infinity"),
        ] {
            assert_eq!(check(name, value), Ok(()), "{name}={value}");
        }
        assert_eq!(
            check("TimeoutStopSec", "infinity").unwrap_err().to_string(),
            "property \"TimeoutStopSec\": \"infinity\" is longer than the plugin's max_stop_timeout (5m)"
        );
        // 0 means infinity there
        assert!(matches!(
            check("TimeoutStopSec", "0"),
            Err(PropertyError::AboveCap {
                key: "max_stop_timeout",
                ..
            })
        ));
        assert!(check("TimeoutStopSec", "5min 1us").is_err());
        assert_eq!(
            check("TimeoutStartSec", "121s").unwrap_err().to_string(),
            "property \"TimeoutStartSec\": \"121s\" is longer than the plugin's start_timeout (2m)"
        );
        // no cap without an operator's
        assert_eq!(
            PropertyPolicy::default().check_value(
                "TimeoutStopSec",
                "infinity",
                &crate::properties::to_dbus("TimeoutStopSec", "infinity").unwrap()
            ),
            Ok(())
        );
    }

    #[test]
    fn versions() {
        assert_eq!(check_version("ProtectProc", 247), Ok(()));
        assert_eq!(
            check_version("ProtectProc", 246),
            Err(PropertyError::TooNew {
                name: "ProtectProc".into(),
                since: 247,
                running: 246
            })
        );
        assert_eq!(
            check_version("ProtectProc", 245).unwrap_err().to_string(),
            "property \"ProtectProc\" needs systemd 247 or newer; the target runs systemd 245"
        );
        // older than every systemd the driver runs on, and unknown names (the policy's job)
        assert_eq!(check_version("MemoryMax", 1), Ok(()));
        assert_eq!(check_version("Bogus", 1), Ok(()));
    }
}
