//! The property table: one line per systemd property a job may name, and the few the planner
//! types for Nomad's own resources. Adding a property is adding a line here (see ARCHITECTURE.md,
//! "Adding a property"); a new value syntax also needs a [`Kind`] and its parser in `parse/`.
//!
//! Columns: the unit-file name; its [`Kind`] (value syntax, parser and D-Bus signature); its
//! security [`Class`]; the first systemd version that has it ([`ANY`] when it predates every
//! systemd the driver runs on); and an example value, which `tests.rs` parses, checks against
//! systemd's D-Bus signatures and round-trips through a drop-in. `.dbus(…)` gives the D-Bus name
//! where it differs from the unit-file name; `.unit_section()` puts a drop-in line under `[Unit]`.

use super::kind::Kind::{
    AbsPath, Bool, BoolOrEnum, Capabilities, CpuQuota, CpuSet, DeviceAllow, Enum, EnumI32, Filter,
    I32, Label, LabelStr, Memory, Namespaces, PathList, Rlimit, TasksMax, Text, TimeSpan, U32,
    Weight, Words,
};
use super::kind::RlimitKind::{Bytes, Count, Micros, Nice, Seconds};
use super::kind::WordKind::{AddressFamily, Arch, Group, Syscall};
use super::kind::{Kind, RlimitKind};
use Class::{Allowed, Denied, DriverOwned};

/// The unit-file section a property belongs to (for drop-ins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[Unit]`
    Unit,
    /// `[Service]` (service, execution, kill and cgroup settings of a service unit).
    Service,
}

impl Section {
    /// The section header as written in a unit file.
    pub fn header(self) -> &'static str {
        match self {
            Section::Unit => "[Unit]",
            Section::Service => "[Service]",
        }
    }
}

/// A property's security class: what the built-in policy does with a job that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Allowed unless the operator lists it in `denied_properties`: sandboxing tighteners,
    /// resource limits, rlimits, timeouts, logging.
    Allowed,
    /// Denied unless the operator lists it in `allowed_properties`: what escalates privilege or
    /// reaches beyond the task's own share of the host (see the module docs of `properties`).
    Denied,
    /// Never settable by a job: the planner sets it from what Nomad asked for. In the table only
    /// so that the planner can type it.
    DriverOwned,
}

/// `since` for a property older than any systemd this driver supports (243 and newer).
pub const ANY: u32 = 0;

/// One property this driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyDef {
    /// The unit-file name, as jobs write it.
    pub name: &'static str,
    /// The D-Bus name `StartTransientUnit` takes (the primary one, for kinds that expand to two).
    pub dbus: &'static str,
    /// Where the property goes in a drop-in.
    pub section: Section,
    /// Value syntax and D-Bus type.
    pub kind: Kind,
    /// What the built-in policy does with it.
    pub class: Class,
    /// The first systemd version that knows it ([`ANY`]: every version the driver supports).
    pub since: u32,
    /// A valid example value (documentation, tests and the live check use it).
    pub example: &'static str,
}

/// A table line: D-Bus name = unit-file name, `[Service]` section.
const fn p(
    name: &'static str,
    kind: Kind,
    class: Class,
    since: u32,
    example: &'static str,
) -> PropertyDef {
    PropertyDef {
        name,
        dbus: name,
        section: Section::Service,
        kind,
        class,
        since,
        example,
    }
}

/// An rlimit line (`LimitNOFILE`, …).
const fn rl(name: &'static str, k: RlimitKind, class: Class, example: &'static str) -> PropertyDef {
    p(name, Rlimit(k), class, ANY, example)
}

impl PropertyDef {
    /// The D-Bus name, where it differs from the unit-file name.
    const fn dbus(self, dbus: &'static str) -> Self {
        PropertyDef { dbus, ..self }
    }

    /// Written under `[Unit]` in a drop-in.
    const fn unit_section(self) -> Self {
        PropertyDef {
            section: Section::Unit,
            ..self
        }
    }
}

const PROTECT_SYSTEM: &[&str] = &["full", "strict"];
const PROTECT_HOME: &[&str] = &["read-only", "tmpfs"];
const PROTECT_PROC: &[&str] = &["noaccess", "invisible", "ptraceable", "default"];
const PROC_SUBSET: &[&str] = &["all", "pid"];
const KEYRING_MODE: &[&str] = &["inherit", "private", "shared"];
const DEVICE_POLICY: &[&str] = &["auto", "closed", "strict"];
/// Accepted `Type=` values (see module docs for why `oneshot` and `dbus` are not).
const SERVICE_TYPE: &[&str] = &["simple", "exec", "forking", "notify", "idle"];
/// Accepted `KillMode=` values (see module docs for why `process` and `none` are not).
const KILL_MODE: &[&str] = &["control-group", "mixed"];
const SCHED_POLICY: &[(&str, i32)] = &[
    ("other", 0),
    ("fifo", 1),
    ("rr", 2),
    ("batch", 3),
    ("idle", 5),
];
const IOPRIO_CLASS: &[(&str, i32)] = &[
    ("none", 0),
    ("realtime", 1),
    ("best-effort", 2),
    ("idle", 3),
];
const LOG_LEVEL: &[(&str, i32)] = &[
    ("emerg", 0),
    ("alert", 1),
    ("crit", 2),
    ("err", 3),
    ("warning", 4),
    ("notice", 5),
    ("info", 6),
    ("debug", 7),
];
const PERSONALITY: &[&str] = &[
    "x86",
    "x86-64",
    "arm",
    "arm-be",
    "arm64",
    "arm64-be",
    "ppc",
    "ppc-le",
    "ppc64",
    "ppc64-le",
    "s390",
    "s390x",
    "riscv32",
    "riscv64",
    "mips",
    "mips-le",
    "mips64",
    "mips64-le",
    "alpha",
    "ia64",
    "loongarch64",
    "sparc",
    "sparc64",
    "parisc",
    "parisc64",
    "sh",
    "sh64",
    "m68k",
    "tilegx",
    "cris",
    "arc",
    "arc-be",
    "nios2",
];

/// Every property this driver can type, with its real D-Bus name and signature (checked against
/// systemd 252 by `tests.rs` and by starting a transient unit with every example).
#[rustfmt::skip]
pub static PROPERTIES: &[PropertyDef] = &[
    // name                       kind                                   class     since example
    p("Description",              Text,                                  Allowed,  ANY, "Nomad task web").unit_section(),
    // --- sandboxing ---
    p("ProtectSystem",            BoolOrEnum(PROTECT_SYSTEM),            Allowed,  ANY, "strict"),
    p("ProtectHome",              BoolOrEnum(PROTECT_HOME),              Allowed,  ANY, "read-only"),
    p("ProtectProc",              Enum(PROTECT_PROC),                    Allowed,  247, "invisible"),
    p("ProcSubset",               Enum(PROC_SUBSET),                     Allowed,  247, "pid"),
    p("PrivateDevices",           Bool,                                  Allowed,  ANY, "yes"),
    p("PrivateNetwork",           Bool,                                  Allowed,  ANY, "true"),
    p("PrivateUsers",             Bool,                                  Allowed,  ANY, "on"),
    p("PrivateIPC",               Bool,                                  Allowed,  248, "1"),
    p("PrivateMounts",            Bool,                                  Allowed,  ANY, "yes"),
    p("ProtectKernelTunables",    Bool,                                  Allowed,  ANY, "yes"),
    p("ProtectKernelModules",     Bool,                                  Allowed,  ANY, "yes"),
    p("ProtectKernelLogs",        Bool,                                  Allowed,  244, "yes"),
    p("ProtectControlGroups",     Bool,                                  Allowed,  ANY, "yes"),
    p("ProtectClock",             Bool,                                  Allowed,  245, "yes"),
    p("ProtectHostname",          Bool,                                  Allowed,  ANY, "yes"),
    p("NoNewPrivileges",          Bool,                                  Allowed,  ANY, "true"),
    p("RestrictRealtime",         Bool,                                  Allowed,  ANY, "yes"),
    p("RestrictSUIDSGID",         Bool,                                  Allowed,  ANY, "yes"),
    p("LockPersonality",          Bool,                                  Allowed,  ANY, "yes"),
    p("MemoryDenyWriteExecute",   Bool,                                  Allowed,  ANY, "yes"),
    p("RemoveIPC",                Bool,                                  Allowed,  ANY, "yes"),
    p("RestrictNamespaces",       Namespaces,                            Allowed,  ANY, "~user net"),
    p("ReadOnlyPaths",            PathList,                              Allowed,  ANY, "/usr -/opt/nonexistent"),
    p("InaccessiblePaths",        PathList,                              Allowed,  ANY, "-/var/lib/private-nothing /root"),
    p("NoExecPaths",              PathList,                              Allowed,  248, "/var/tmp"),
    p("ReadWritePaths",           PathList,                              Denied,   ANY, "/var/tmp"),
    p("ExecPaths",                PathList,                              Denied,   248, "/usr/bin"),
    p("SystemCallArchitectures",  Words(Arch),                           Allowed,  ANY, "native"),
    p("SystemCallFilter",         Filter(Syscall),                       Allowed,  ANY, "@system-service"),
    p("RestrictAddressFamilies",  Filter(AddressFamily),                 Allowed,  ANY, "AF_UNIX AF_INET AF_INET6"),
    p("UMask",                    Kind::Mode,                            Allowed,  ANY, "0027"),
    p("KeyringMode",              Enum(KEYRING_MODE),                    Denied,   ANY, "private"),
    // --- resources ---
    p("MemoryMax",                Memory,                                Allowed,  ANY, "1G"),
    p("MemoryHigh",               Memory,                                Allowed,  ANY, "768M"),
    p("MemorySwapMax",            Memory,                                Allowed,  ANY, "0"),
    p("MemoryLow",                Memory,                                Denied,   ANY, "256M"),
    p("MemoryMin",                Memory,                                Denied,   ANY, "128M"),
    p("TasksMax",                 TasksMax,                              Allowed,  ANY, "512"),
    p("CPUQuota",                 CpuQuota,                              Allowed,  ANY, "50%").dbus("CPUQuotaPerSecUSec"),
    p("CPUWeight",                Weight { min: 1, max: 10000, allow_idle: true },  DriverOwned, ANY, "100"),
    p("IOWeight",                 Weight { min: 1, max: 10000, allow_idle: false }, Allowed,     ANY, "100"),
    p("AllowedCPUs",              CpuSet,                                DriverOwned, 244, "0"),
    p("Nice",                     I32 { min: -20, max: 19 },             Allowed,  ANY, "5"),
    p("OOMScoreAdjust",           I32 { min: -1000, max: 1000 },         Denied,   ANY, "500"),
    p("IOSchedulingClass",        EnumI32(IOPRIO_CLASS),                 Denied,   ANY, "best-effort"),
    p("IOSchedulingPriority",     I32 { min: 0, max: 7 },                Allowed,  ANY, "4"),
    p("CPUSchedulingPolicy",      EnumI32(SCHED_POLICY),                 Denied,   ANY, "batch"),
    p("CPUSchedulingPriority",    I32 { min: 0, max: 99 },               Denied,   ANY, "0"),
    // --- rlimits ---
    rl("LimitCPU",                Seconds,                               Allowed,  "1h"),
    rl("LimitFSIZE",              Bytes,                                 Allowed,  "1G"),
    rl("LimitDATA",               Bytes,                                 Allowed,  "infinity"),
    rl("LimitSTACK",              Bytes,                                 Allowed,  "8M"),
    rl("LimitCORE",               Bytes,                                 Allowed,  "0"),
    rl("LimitRSS",                Bytes,                                 Allowed,  "infinity"),
    rl("LimitNOFILE",             Count,                                 Allowed,  "1024:65536"),
    rl("LimitAS",                 Bytes,                                 Allowed,  "infinity"),
    rl("LimitNPROC",              Count,                                 Allowed,  "4096"),
    rl("LimitMEMLOCK",            Bytes,                                 Allowed,  "64M"),
    rl("LimitLOCKS",              Count,                                 Allowed,  "infinity"),
    rl("LimitSIGPENDING",         Count,                                 Allowed,  "1024"),
    rl("LimitMSGQUEUE",           Bytes,                                 Allowed,  "800K"),
    rl("LimitNICE",               Nice,                                  Allowed,  "-5"),
    rl("LimitRTPRIO",             Count,                                 Denied,   "0"),
    rl("LimitRTTIME",             Micros,                                Allowed,  "200ms"),
    // --- timeouts ---
    p("TimeoutStartSec",          TimeSpan { zero_is_infinity: true },   Allowed,  ANY, "90s").dbus("TimeoutStartUSec"),
    p("TimeoutStopSec",           TimeSpan { zero_is_infinity: true },   Allowed,  ANY, "30s").dbus("TimeoutStopUSec"),
    p("RuntimeMaxSec",            TimeSpan { zero_is_infinity: false },  Allowed,  ANY, "1h 30min").dbus("RuntimeMaxUSec"),
    p("WatchdogSec",              TimeSpan { zero_is_infinity: false },  Allowed,  ANY, "1min").dbus("WatchdogUSec"),
    // --- service behaviour, logging ---
    p("Type",                     Enum(SERVICE_TYPE),                    Allowed,  ANY, "exec"),
    p("KillMode",                 Enum(KILL_MODE),                       Allowed,  ANY, "mixed"),
    p("KillSignal",               Kind::Signal,                          Denied,   ANY, "SIGINT"),
    p("SyslogIdentifier",         Text,                                  Allowed,  ANY, "web"),
    p("LogLevelMax",              EnumI32(LOG_LEVEL),                    Allowed,  ANY, "info"),
    p("LogRateLimitIntervalSec",  TimeSpan { zero_is_infinity: false },  Allowed,  ANY, "30s").dbus("LogRateLimitIntervalUSec"),
    p("LogRateLimitBurst",        U32 { min: 0, max: u32::MAX },         Allowed,  ANY, "1000"),
    // --- privilege ---
    p("SupplementaryGroups",      Words(Group),                          Denied,   ANY, "adm"),
    p("AmbientCapabilities",      Capabilities,                          Denied,   ANY, "CAP_NET_BIND_SERVICE"),
    p("CapabilityBoundingSet",    Capabilities,                          Denied,   ANY, "~CAP_SYS_ADMIN CAP_SYS_PTRACE"),
    p("Delegate",                 Bool,                                  Denied,   ANY, "yes"),
    p("PermissionsStartOnly",     Bool,                                  Denied,   ANY, "yes"),
    p("DeviceAllow",              DeviceAllow,                           Denied,   ANY, "/dev/null rw"),
    p("DevicePolicy",             Enum(DEVICE_POLICY),                   Denied,   ANY, "closed"),
    p("RootDirectory",            AbsPath,                               Denied,   ANY, "/"),
    p("RootImage",                AbsPath,                               Denied,   ANY, "/var/lib/machines/image.raw"),
    p("SELinuxContext",           LabelStr,                              Denied,   ANY, "system_u:system_r:svirt_t:s0"),
    p("AppArmorProfile",          Label,                                 Denied,   ANY, "-nomad-task"),
    p("SmackProcessLabel",        Label,                                 Denied,   ANY, "-nomad"),
    p("Personality",              Enum(PERSONALITY),                     Denied,   ANY, "x86-64"),
];

/// The table entry for a unit-file property name (exact, case-sensitive, as systemd).
pub fn lookup(name: &str) -> Option<&'static PropertyDef> {
    PROPERTIES.iter().find(|d| d.name == name)
}

/// The names of one class, in table order.
pub fn names_of(class: Class) -> impl Iterator<Item = &'static str> {
    PROPERTIES
        .iter()
        .filter(move |d| d.class == class)
        .map(|d| d.name)
}
