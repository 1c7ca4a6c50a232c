//! Namespace and capability sets as the 64-bit masks systemd takes over D-Bus.

use super::scalar::parse_bool;
use super::words::split_words;
use super::{Res, Typed, fail};
use crate::properties::error::Q;
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `t`: `RestrictNamespaces`: a boolean, or optionally `~`-prefixed namespace names.
pub(super) fn namespaces(def: &PropertyDef, v: &str) -> Res<Typed> {
    let flags = if let Some(b) = parse_bool(v) {
        if b { 0 } else { NAMESPACE_ALL }
    } else {
        let (invert, rest) = match v.strip_prefix('~') {
            Some(r) => (true, r),
            None => (false, v),
        };
        let mut flags = 0u64;
        let words = split_words(rest)?;
        if words.is_empty() {
            return fail("no namespaces");
        }
        for w in &words {
            match NAMESPACES.iter().find(|(n, _)| *n == w.as_str()) {
                Some((_, f)) => flags |= f,
                None => {
                    let names: Vec<&str> = NAMESPACES.iter().map(|(n, _)| *n).collect();
                    return fail(format!(
                        "unknown namespace {}: expected a boolean or {}",
                        Q(w),
                        names.join(", ")
                    ));
                }
            }
        }
        if invert {
            NAMESPACE_ALL & !flags
        } else {
            flags
        }
    };
    Ok(Typed::one(def, DValue::U64(flags), namespaces_text(flags)))
}

/// `t`: capability names, optionally `~`-prefixed.
pub(super) fn capabilities(def: &PropertyDef, v: &str) -> Res<Typed> {
    let (invert, rest) = match v.strip_prefix('~') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let words = split_words(rest)?;
    if words.is_empty() {
        return fail("no capabilities");
    }
    let mut sum = 0u64;
    let mut names = Vec::new();
    for w in &words {
        let lower = w.to_ascii_lowercase();
        let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
        match CAPABILITIES.iter().position(|c| *c == bare) {
            Some(i) => {
                sum |= 1u64 << i;
                names.push(format!("CAP_{}", bare.to_ascii_uppercase()));
            }
            None => return fail(format!("unknown capability {}", Q(w))),
        }
    }
    let mask = if invert { !sum } else { sum };
    let text = format!("{}{}", if invert { "~" } else { "" }, names.join(" "));
    Ok(Typed::one(def, DValue::U64(mask), text))
}

const NAMESPACES: &[(&str, u64)] = &[
    ("cgroup", 0x0200_0000),
    ("ipc", 0x0800_0000),
    ("net", 0x4000_0000),
    ("mnt", 0x0002_0000),
    ("pid", 0x2000_0000),
    ("user", 0x1000_0000),
    ("uts", 0x0400_0000),
];
const NAMESPACE_ALL: u64 =
    0x0200_0000 | 0x0800_0000 | 0x4000_0000 | 0x0002_0000 | 0x2000_0000 | 0x1000_0000 | 0x0400_0000;

fn namespaces_text(flags: u64) -> String {
    match flags {
        0 => "yes".into(),
        NAMESPACE_ALL => "no".into(),
        f => NAMESPACES
            .iter()
            .filter(|(_, x)| f & x != 0)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Linux capabilities by number.
const CAPABILITIES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

    use super::NAMESPACE_ALL;

    #[test]
    fn namespaces() {
        const NET: u64 = 0x4000_0000;
        const USER: u64 = 0x1000_0000;
        assert_eq!(
            ok("RestrictNamespaces", "yes"),
            one("RestrictNamespaces", DValue::U64(0))
        );
        assert_eq!(
            ok("RestrictNamespaces", "no"),
            one("RestrictNamespaces", DValue::U64(NAMESPACE_ALL))
        );
        assert_eq!(
            ok("RestrictNamespaces", "net user"),
            one("RestrictNamespaces", DValue::U64(NET | USER))
        );
        assert_eq!(
            ok("RestrictNamespaces", "~user net"),
            one(
                "RestrictNamespaces",
                DValue::U64(NAMESPACE_ALL & !(NET | USER))
            )
        );
        assert_eq!(line("RestrictNamespaces", "true"), "RestrictNamespaces=yes");
        assert_eq!(
            line("RestrictNamespaces", "user net"),
            "RestrictNamespaces=net user"
        );
        assert!(err("RestrictNamespaces", "time").contains("unknown namespace"));
        assert!(err("RestrictNamespaces", "~").contains("no namespaces"));
    }

    #[test]
    fn capabilities() {
        assert_eq!(
            ok("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
            one("AmbientCapabilities", DValue::U64(1 << 10))
        );
        assert_eq!(
            ok("CapabilityBoundingSet", "cap_chown CAP_KILL"),
            one("CapabilityBoundingSet", DValue::U64(1 | 1 << 5))
        );
        assert_eq!(
            ok("CapabilityBoundingSet", "~CAP_SYS_ADMIN"),
            one("CapabilityBoundingSet", DValue::U64(!(1 << 21)))
        );
        assert_eq!(
            ok("CapabilityBoundingSet", "checkpoint_restore"),
            one("CapabilityBoundingSet", DValue::U64(1 << 40))
        );
        assert_eq!(
            line("CapabilityBoundingSet", "~cap_sys_admin"),
            "CapabilityBoundingSet=~CAP_SYS_ADMIN"
        );
        assert!(err("AmbientCapabilities", "CAP_EVERYTHING").contains("unknown capability"));
        assert!(err("AmbientCapabilities", "~").contains("no capabilities"));
    }
}
