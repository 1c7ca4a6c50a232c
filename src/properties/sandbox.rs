//! The sandbox floor: the settings every transient task gets with the plugin's
//! `sandbox = "strict"` (the default), and how strict a value of each is, so that the planner
//! lets job `properties` only tighten them (unless the operator's `allow_loosening` names one).
//! Here rather than in the planner because the plugin config checks `allow_loosening` against
//! these names.

use super::parse::parse_bool;

/// The sandbox every transient task gets with `sandbox = "strict"` (the default), in unit-file
/// spelling. Job `properties` may set these only as strictly or more (see [`strictness`]),
/// unless the operator lists the name in `allow_loosening`; the same floor applies to a unit-mode
/// job, whose template's own values the planner cannot see.
pub const SANDBOX: &[(&str, &str)] = &[
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateDevices", "yes"),
    ("NoNewPrivileges", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
];

/// How strict a sandbox value is, comparable within one property: `ProtectSystem`
/// no < yes < full < strict, `ProtectHome` no < read-only < tmpfs < yes, booleans no < yes.
/// `None` for a value that is none of these (the typing step refuses it).
pub fn strictness(name: &str, value: &str) -> Option<u8> {
    let value = value.trim();
    let words: &[&str] = match name {
        "ProtectSystem" => &["no", "yes", "full", "strict"],
        "ProtectHome" => &["no", "read-only", "tmpfs", "yes"],
        _ => &["no", "yes"],
    };
    let word = match parse_bool(value) {
        Some(true) => "yes",
        Some(false) => "no",
        None => value,
    };
    words
        .iter()
        .position(|w| *w == word)
        .and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::{SANDBOX, strictness};
    use crate::properties::to_dbus;

    #[test]
    fn the_floor_is_typed_by_the_table_and_strictest_of_its_own_words() {
        for (name, value) in SANDBOX {
            assert!(to_dbus(name, value).is_ok(), "{name}={value}");
            assert!(strictness(name, value).is_some(), "{name}={value}");
            assert!(strictness(name, "no") < strictness(name, value), "{name}");
        }
        assert!(strictness("ProtectSystem", "full") < strictness("ProtectSystem", "strict"));
        assert!(strictness("ProtectHome", "read-only") < strictness("ProtectHome", "yes"));
        assert_eq!(
            strictness("NoNewPrivileges", "true"),
            strictness("NoNewPrivileges", "yes")
        );
        assert_eq!(strictness("ProtectSystem", "sometimes"), None);
    }
}
