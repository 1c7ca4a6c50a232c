//! Checks over the whole table: consistency, every example against systemd's D-Bus signatures
//! and through a drop-in and back, injection attempts, unknown names and error wording.

use std::collections::BTreeSet;

use super::kind::Kind;
use super::parse::SIZE_HINT;
use super::test_support::*;
use super::{ANY, DRIVER_OWNED, PROPERTIES, Section, dropin_line, lookup, to_dbus, valid_name};

/// The signatures systemd 252 takes for each D-Bus name we send: as `busctl introspect`
/// reports them, except the write-only ones (`*Scale`, `PermissionsStartOnly`) and
/// `SELinuxContext` (reported as `(bs)`, set as `s`). Checked live against systemd 252.
const SYSTEMD_252: &[(&str, &str)] = &[
    ("AllowedCPUs", "ay"),
    ("AmbientCapabilities", "t"),
    ("AppArmorProfile", "(bs)"),
    ("CPUQuotaPerSecUSec", "t"),
    ("CPUSchedulingPolicy", "i"),
    ("CPUSchedulingPriority", "i"),
    ("CPUWeight", "t"),
    ("CapabilityBoundingSet", "t"),
    ("Delegate", "b"),
    ("Description", "s"),
    ("DeviceAllow", "a(ss)"),
    ("DevicePolicy", "s"),
    ("ExecPaths", "as"),
    ("IOSchedulingClass", "i"),
    ("IOSchedulingPriority", "i"),
    ("IOWeight", "t"),
    ("InaccessiblePaths", "as"),
    ("KeyringMode", "s"),
    ("KillMode", "s"),
    ("KillSignal", "i"),
    ("LimitAS", "t"),
    ("LimitASSoft", "t"),
    ("LimitCORE", "t"),
    ("LimitCORESoft", "t"),
    ("LimitCPU", "t"),
    ("LimitCPUSoft", "t"),
    ("LimitDATA", "t"),
    ("LimitDATASoft", "t"),
    ("LimitFSIZE", "t"),
    ("LimitFSIZESoft", "t"),
    ("LimitLOCKS", "t"),
    ("LimitLOCKSSoft", "t"),
    ("LimitMEMLOCK", "t"),
    ("LimitMEMLOCKSoft", "t"),
    ("LimitMSGQUEUE", "t"),
    ("LimitMSGQUEUESoft", "t"),
    ("LimitNICE", "t"),
    ("LimitNICESoft", "t"),
    ("LimitNOFILE", "t"),
    ("LimitNOFILESoft", "t"),
    ("LimitNPROC", "t"),
    ("LimitNPROCSoft", "t"),
    ("LimitRSS", "t"),
    ("LimitRSSSoft", "t"),
    ("LimitRTPRIO", "t"),
    ("LimitRTPRIOSoft", "t"),
    ("LimitRTTIME", "t"),
    ("LimitRTTIMESoft", "t"),
    ("LimitSIGPENDING", "t"),
    ("LimitSIGPENDINGSoft", "t"),
    ("LimitSTACK", "t"),
    ("LimitSTACKSoft", "t"),
    ("LockPersonality", "b"),
    ("LogLevelMax", "i"),
    ("LogRateLimitBurst", "u"),
    ("LogRateLimitIntervalUSec", "t"),
    ("MemoryDenyWriteExecute", "b"),
    ("MemoryHigh", "t"),
    ("MemoryHighScale", "u"),
    ("MemoryLow", "t"),
    ("MemoryLowScale", "u"),
    ("MemoryMax", "t"),
    ("MemoryMaxScale", "u"),
    ("MemoryMin", "t"),
    ("MemoryMinScale", "u"),
    ("MemorySwapMax", "t"),
    ("MemorySwapMaxScale", "u"),
    ("Nice", "i"),
    ("NoExecPaths", "as"),
    ("NoNewPrivileges", "b"),
    ("OOMScoreAdjust", "i"),
    ("PermissionsStartOnly", "b"),
    ("Personality", "s"),
    ("PrivateDevices", "b"),
    ("PrivateIPC", "b"),
    ("PrivateMounts", "b"),
    ("PrivateNetwork", "b"),
    ("PrivateUsers", "b"),
    ("ProcSubset", "s"),
    ("ProtectClock", "b"),
    ("ProtectControlGroups", "b"),
    ("ProtectHome", "s"),
    ("ProtectHostname", "b"),
    ("ProtectKernelLogs", "b"),
    ("ProtectKernelModules", "b"),
    ("ProtectKernelTunables", "b"),
    ("ProtectProc", "s"),
    ("ProtectSystem", "s"),
    ("ReadOnlyPaths", "as"),
    ("ReadWritePaths", "as"),
    ("RemoveIPC", "b"),
    ("RestrictAddressFamilies", "(bas)"),
    ("RestrictNamespaces", "t"),
    ("RestrictRealtime", "b"),
    ("RestrictSUIDSGID", "b"),
    ("RootDirectory", "s"),
    ("RootImage", "s"),
    ("RuntimeMaxUSec", "t"),
    ("SELinuxContext", "s"),
    ("SmackProcessLabel", "(bs)"),
    ("SupplementaryGroups", "as"),
    ("SyslogIdentifier", "s"),
    ("SystemCallArchitectures", "as"),
    ("SystemCallFilter", "(bas)"),
    ("TasksMax", "t"),
    ("TasksMaxScale", "u"),
    ("TimeoutStartUSec", "t"),
    ("TimeoutStopUSec", "t"),
    ("Type", "s"),
    ("UMask", "u"),
    ("WatchdogUSec", "t"),
];

#[test]
fn table_is_consistent() {
    let mut seen = BTreeSet::new();
    for d in PROPERTIES {
        assert!(seen.insert(d.name), "duplicate {}", d.name);
        assert!(valid_name(d.name).is_ok());
        // one class per name: the table's column, or DRIVER_OWNED for names it does not type
        assert!(
            !DRIVER_OWNED.contains(&d.name),
            "{} has a class in the table and must not be in DRIVER_OWNED",
            d.name
        );
        // every line was checked live against systemd 252; ANY is older than the driver's minimum
        assert!(
            d.since == ANY || (244..=252).contains(&d.since),
            "{}: since {}",
            d.name,
            d.since
        );
        if let Kind::TimeSpan { .. } = d.kind {
            assert_eq!(
                format!("{}USec", d.name.strip_suffix("Sec").unwrap()),
                d.dbus
            );
        } else if d.name != "CPUQuota" {
            assert_eq!(d.name, d.dbus);
        }
        assert_eq!(d.section == Section::Unit, d.name == "Description");
    }
    for n in DRIVER_OWNED {
        assert!(valid_name(n).is_ok(), "{n}");
        assert!(
            lookup(n).is_none(),
            "{n} is driver-owned but typed by the table"
        );
    }
}

#[test]
fn every_example_has_systemds_signatures_and_round_trips() {
    for d in PROPERTIES {
        let props = ok(d.name, d.example);
        assert!(!props.is_empty());
        for (n, v) in &props {
            let want = SYSTEMD_252.iter().find(|(k, _)| k == n).map(|(_, s)| *s);
            assert_eq!(Some(v.signature().as_str()), want, "{}: {n}", d.name);
        }
        assert_eq!(
            reparse(d.name, d.example),
            props,
            "{} drop-in round trip",
            d.name
        );
        assert!(line(d.name, d.example).starts_with(&format!("{}=", d.name)));
    }
}

#[test]
fn injection_attempts_are_refused() {
    for v in [
        "strict\n[Service]\nExecStartPre=/bin/sh",
        "strict\r\nUser=root",
        "strict\0",
        "yes\tno",
        "web\u{1b}[31m",
        "web\u{7f}",
        "web\u{85}User=root",
        "\n",
    ] {
        for name in [
            "ProtectSystem",
            "Description",
            "ReadOnlyPaths",
            "MemoryMax",
            "SyslogIdentifier",
        ] {
            let e = to_dbus(name, v).expect_err(v);
            assert!(
                matches!(e, PropertyError::ControlChar { .. }),
                "{name}={v:?}: {e}"
            );
            assert_eq!(dropin_line(name, v), Err(e.clone()));
            assert!(e.to_string().contains("contains a control character"));
        }
    }
    let e = to_dbus("ProtectSystem", "strict\n[Service]\nExecStartPre=/bin/sh").unwrap_err();
    assert_eq!(
        e.to_string(),
        "property \"ProtectSystem\": value \"strict\\n[Service]\\nExecStartPre=/bin/sh\" contains a control character"
    );
    // a value that merely *looks* like a directive stays one value
    assert_eq!(
        line("Description", "x [Service] ExecStartPre=/bin/sh"),
        "Description=x [Service] ExecStartPre=/bin/sh"
    );
    assert!(err("ReadOnlyPaths", "/a ExecStartPre=/bin/sh").contains("not an absolute path"));
    for name in [
        "Foo\nUser",
        "User=",
        "Memory Max",
        "",
        "ExecStart\0",
        "Mémoire",
        "A-B",
        "[Service]",
    ] {
        let e = to_dbus(name, "1").unwrap_err();
        assert!(
            matches!(e, PropertyError::InvalidName { .. }),
            "{name:?}: {e}"
        );
        assert!(!e.to_string().contains('\n'));
        assert_eq!(dropin_line(name, "1"), Err(e.clone()));
        assert_eq!(PropertyPolicy::default().check(name), Err(e));
    }
    assert_eq!(
        to_dbus("Foo\nUser", "1").unwrap_err().to_string(),
        "property name \"Foo\\nUser\" is invalid: names are ASCII letters and digits only"
    );
    for v in ["", "   "] {
        assert!(err("MemoryMax", v).contains("empty value"));
        assert!(err("ReadOnlyPaths", v).contains("empty value"));
    }
}

#[test]
fn unknown_names() {
    assert_eq!(
        to_dbus("Foo", "1").unwrap_err().to_string(),
        "property \"Foo\" is not a systemd property this driver knows"
    );
    assert_eq!(
        to_dbus("memorymax", "1G").unwrap_err().to_string(),
        "property \"memorymax\" is not a systemd property this driver knows (did you mean \"MemoryMax\"?)"
    );
    for n in [
        "Conflicts",
        "OnFailure",
        "ExecStart",
        "User",
        "Environment",
        "BindPaths",
        "Restart",
    ] {
        assert!(
            matches!(to_dbus(n, "x"), Err(PropertyError::Unknown { .. })),
            "{n}"
        );
    }
    assert!(lookup("MemoryMax").is_some());
    assert!(lookup("memorymax").is_none());
}

#[test]
fn round_trips_through_dropin() {
    let cases = [
        (
            "ReadOnlyPaths",
            r#""/tmp/a b" /tmp/100% '/tmp/q"x' /tmp/back\\slash -+/tmp/x /tmp/s;c#h"#,
        ),
        (
            "Description",
            r#"50% of "web" \ back\\slash and 'quotes' ; # %n"#,
        ),
        ("MemoryMax", "12.34%"),
        ("MemoryHigh", "5‰"),
        ("MemoryMax", "1G 512M"),
        ("TasksMax", "10%"),
        ("CPUQuota", "250%"),
        ("TimeoutStopSec", "1.5s"),
        ("TimeoutStopSec", "0"),
        ("RuntimeMaxSec", "1y 2M 3w 4d 5h 6min 7s 8ms 9us"),
        ("LimitNOFILE", "512:infinity"),
        ("LimitCPU", "1.5s"),
        ("LimitNICE", "+5"),
        ("RestrictNamespaces", "~net"),
        ("SystemCallFilter", "~@mount @swap"),
        ("AllowedCPUs", "0-3,5 9"),
        ("KillSignal", "SIGRTMIN+2"),
        ("CapabilityBoundingSet", "~cap_sys_admin cap_sys_ptrace"),
        ("RootDirectory", "/tmp/my root %h"),
        ("UMask", "7"),
        ("CPUWeight", "idle"),
    ];
    for (n, v) in cases {
        assert_eq!(reparse(n, v), ok(n, v), "{n}={v:?}");
    }
}

#[test]
fn error_messages_name_the_property() {
    assert_eq!(
        to_dbus("MemoryMax", "1Q").unwrap_err().to_string(),
        format!("property \"MemoryMax\": invalid size \"1Q\": {SIZE_HINT}")
    );
    let p = PropertyPolicy::default();
    assert_eq!(
        p.check("User").unwrap_err().to_string(),
        "property \"User\" is owned by the driver"
    );
    assert_eq!(
        p.check("DeviceAllow").unwrap_err().to_string(),
        "property \"DeviceAllow\" is denied by the plugin's property policy (denied_properties)"
    );
    assert_eq!(
        p.check("Foo").unwrap_err().to_string(),
        "property \"Foo\" is not a systemd property this driver knows"
    );
    assert_eq!(
        to_dbus("Nice", "x".repeat(500).as_str())
            .unwrap_err()
            .to_string()
            .chars()
            .count(),
        "property \"Nice\": invalid integer \"\"".chars().count() + 120 + 1
    );
}
