//! Job `properties` (unit-file spelling, string values) typed into D-Bus values for
//! `StartTransientUnit` or written as escaped drop-in lines for unit mode, plus the operator's
//! property policy.
//!
//! # What this module decides
//!
//! * **One parser for both paths.** [`to_dbus`] and [`dropin_line`] run the same parser. The
//!   drop-in line is rendered from the *parsed* value in a canonical spelling (sizes in bytes, time
//!   spans in `us`, booleans as `yes`/`no`, …), so systemd reads back exactly what a transient unit
//!   would have received over D-Bus. Free text and paths are escaped: `%` becomes `%%` (values are
//!   literal: systemd specifiers are never expanded), words with unusual characters are
//!   double-quoted with `\"`/`\\` escapes, and a value ending in an odd run of backslashes (which
//!   systemd would read as a line continuation) is refused.
//! * **No control characters, no empty values.** C0 controls (including TAB, CR, LF, NUL), DEL and
//!   C1 controls are refused in every value, so no value can ever start a new line or a new
//!   section of a drop-in. Surrounding spaces are trimmed (as systemd does for unit files). An empty
//!   value is refused: in a unit file it would *reset* the setting, i.e. undo the template's.
//! * **Names** are `[A-Za-z0-9]+` and must be in the table ([`PROPERTIES`]); everything else —
//!   dependencies (`Conflicts=`, `OnFailure=`, …), `Exec*`, credentials, … — is refused as unknown.
//! * **Values that would break the driver are refused by the parser itself**, whatever the policy:
//!   `KillMode` only accepts `control-group` and `mixed` (`process`/`none` leave processes running
//!   after the task was stopped) and `Type` refuses `oneshot` (the start job would last as long as
//!   the task) and `dbus` (needs `BusName=`, which is not settable).
//! * **Policy** ([`PropertyPolicy`]): a name must be allowed (built-in [`DEFAULT_ALLOWED`] ∪ the
//!   operator's `allowed_properties`) and not denied ((built-in [`DEFAULT_DENIED`] ∪ the
//!   operator's `denied_properties`) minus the operator's `allowed_properties`). [`DRIVER_OWNED`]
//!   names are refused whatever the operator says. Every table entry is in exactly one of the three
//!   lists. The table also types a few driver-owned properties (`CPUWeight`, `AllowedCPUs`) so the
//!   planner can use [`to_dbus`] for Nomad's own resources: `to_dbus`/`dropin_line` only type, they
//!   never apply the policy — call [`PropertyPolicy::check`] on every job-supplied name first.
//!
//! Default deny covers what escalates privilege or reaches beyond the task's own share of the
//! host: identities and capabilities, device access, other roots and security labels,
//! `ReadWritePaths`/`ExecPaths` (they can re-open for writing or execution what a read-only Nomad
//! mount or the host made read-only/noexec), realtime CPU/IO scheduling (`CPUSchedulingPolicy`,
//! `CPUSchedulingPriority`, `IOSchedulingClass`, `LimitRTPRIO`), `OOMScoreAdjust` (a negative value
//! shields the task from the OOM killer at its neighbours' expense), memory protection
//! (`MemoryLow`, `MemoryMin`: reserving memory beyond Nomad's reservation), `KeyringMode` (the
//! default `private` is already the tightest), and `KillSignal` (Nomad's `kill_signal` is the knob).
//!
//! Unit mode caveat: a drop-in is read after the operator's template, so an allowed sandboxing
//! name set to a loosening value (`ProtectSystem=no`, `NoNewPrivileges=no`, a positive
//! `RestrictNamespaces` list, which systemd ORs into the template's) can weaken a template.
//! Operators who rely on a template's own sandbox should put those names in `denied_properties`.
//!
//! Signal numbers are Linux's generic ones (x86, arm, riscv, …), capability numbers are Linux's.

use std::collections::BTreeSet;
use std::fmt;

use super::value::DValue;

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

/// How an rlimit's value is spelled (systemd's `rlimit_parse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RlimitKind {
    /// A plain count (`LimitNOFILE`, `LimitNPROC`, …).
    Count,
    /// A size in bytes with K/M/G/… suffixes (`LimitAS`, `LimitCORE`, …).
    Bytes,
    /// A time span, stored in whole seconds, rounded up (`LimitCPU`).
    Seconds,
    /// A time span in microseconds; a bare number is microseconds (`LimitRTTIME`).
    Micros,
    /// `LimitNICE`: `+N`/`-N` nice levels or a raw 0..=40 value.
    Nice,
}

/// Which words a word list accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    /// `SystemCallArchitectures`: `native`, `x86-64`, …
    Arch,
    /// `SupplementaryGroups`: group names or numbers.
    Group,
    /// `SystemCallFilter`: `@group` or syscall names, optionally `:errno`.
    Syscall,
    /// `RestrictAddressFamilies`: `AF_*` names or `none`.
    AddressFamily,
}

/// The value syntax of a property and the D-Bus type it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `b`: yes/no/true/false/on/off/1/0 (and y/n/t/f), any case.
    Bool,
    /// `s`: one of these words.
    Enum(&'static [&'static str]),
    /// `s`: a boolean (sent as `yes`/`no`) or one of these words (`ProtectSystem`, `ProtectHome`).
    BoolOrEnum(&'static [&'static str]),
    /// `i`: one of these names, or its number.
    EnumI32(&'static [(&'static str, i32)]),
    /// `s`: free text.
    Text,
    /// `i`: a decimal integer in the range.
    I32 { min: i32, max: i32 },
    /// `u`: a decimal integer in the range.
    U32 { min: u32, max: u32 },
    /// `t`: a cgroup weight in the range; `idle` → 0 where `allow_idle`.
    Weight {
        min: u64,
        max: u64,
        allow_idle: bool,
    },
    /// `u`: an octal file mode (`UMask`).
    Mode,
    /// `t`: a size (base 1024), `infinity`; a percentage goes to `<Name>Scale` (`u`).
    Memory,
    /// `t`: a count, `infinity`; a percentage goes to `TasksMaxScale` (`u`).
    TasksMax,
    /// `CPUQuota=N%` → `CPUQuotaPerSecUSec` (`t`, µs per second).
    CpuQuota,
    /// `t`: a time span (bare number = seconds), `infinity`; the D-Bus name ends in `USec`.
    /// Where `zero_is_infinity` (`TimeoutStartSec`, `TimeoutStopSec`), `0` means "no timeout" as
    /// in a unit file, and is sent as infinity: over D-Bus systemd would store a literal 0.
    TimeSpan { zero_is_infinity: bool },
    /// `t` + `<Name>Soft` `t`: `value` or `soft:hard`, each a number or `infinity`.
    Rlimit(RlimitKind),
    /// `as`: space-separated absolute paths, each optionally prefixed by `-` (ignore if missing)
    /// then `+` (relative to the root directory); quotes and backslash escapes as in unit files.
    PathList,
    /// `as`: space-separated words.
    Words(WordKind),
    /// `(bas)`: optional leading `~` (deny list instead of allow list), then words.
    Filter(WordKind),
    /// `ay`: a CPU list such as `0-3,5` as a bitmask (bit n of byte n/8 = CPU n).
    CpuSet,
    /// `t`: `RestrictNamespaces`: boolean, or optionally `~`-prefixed namespace names.
    Namespaces,
    /// `t`: capability names, optionally `~`-prefixed.
    Capabilities,
    /// `i`: a signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number.
    Signal,
    /// `(bs)`: a security label, optionally `-`-prefixed (ignore if unavailable).
    Label,
    /// `s`: a security label without the `-` prefix (`SELinuxContext` is set as `s`, although
    /// systemd reports it as `(bs)`, and systemd 252 does not parse the prefix over D-Bus).
    LabelStr,
    /// `a(ss)`: `DEVICE [rwm]`.
    DeviceAllow,
    /// `s`: one absolute, normalized path.
    AbsPath,
}

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
    /// A valid example value (documentation, tests and the live check use it).
    pub example: &'static str,
}

/// Why a property was refused. Messages are lowercase and name the property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// The name is not `[A-Za-z0-9]+`.
    #[error("property name {} is invalid: names are ASCII letters and digits only", Q(.name))]
    InvalidName { name: String },
    /// The driver sets this itself ([`DRIVER_OWNED`]).
    #[error("property {} is owned by the driver", Q(.name))]
    DriverOwned { name: String },
    /// Not in [`PROPERTIES`]; `suggestion` is a case-insensitive match, if any.
    #[error("property {} is not a systemd property this driver knows{}", Q(.name), DidYouMean(*.suggestion))]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },
    /// In the policy's deny set.
    #[error("property {} is denied by the plugin's property policy (denied_properties)", Q(.name))]
    Denied { name: String },
    /// Known, not denied, but not in the policy's allow set.
    #[error("property {} is not allowed by the plugin's property policy (allowed_properties)", Q(.name))]
    NotAllowed { name: String },
    /// Operator configuration: the same name in both lists.
    #[error("property {} is listed in both allowed_properties and denied_properties", Q(.name))]
    Conflicting { name: String },
    /// Empty (or only spaces).
    #[error("property {}: empty value (in a unit file an empty value resets the setting)", Q(.name))]
    Empty { name: String },
    /// The value contains a C0/C1 control character or DEL (newline, NUL, TAB, ESC, …).
    #[error("property {}: value {} contains a control character", Q(.name), Q(.value))]
    ControlChar { name: String, value: String },
    /// The value does not parse as the property's kind.
    #[error("property {}: invalid {what} {}{}", Q(.name), Q(.value), Reason(.reason.as_deref()))]
    InvalidValue {
        name: String,
        what: &'static str,
        value: String,
        reason: Option<String>,
    },
}

/// Displays a string double-quoted, with control characters, quotes and backslashes escaped and
/// long strings shortened, so that an error message is always one line.
struct Q<'a>(&'a str);

impl fmt::Display for Q<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 120;
        f.write_str("\"")?;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX {
                f.write_str("…")?;
                break;
            }
            write!(f, "{}", c.escape_debug())?;
        }
        f.write_str("\"")
    }
}

struct DidYouMean(Option<&'static str>);

impl fmt::Display for DidYouMean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (did you mean {}?)", Q(s)),
            None => Ok(()),
        }
    }
}

struct Reason<'a>(Option<&'a str>);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, ": {s}"),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

const fn def(
    name: &'static str,
    dbus: &'static str,
    kind: Kind,
    example: &'static str,
) -> PropertyDef {
    PropertyDef {
        name,
        dbus,
        section: Section::Service,
        kind,
        example,
    }
}

const fn rl(name: &'static str, k: RlimitKind, example: &'static str) -> PropertyDef {
    def(name, name, Kind::Rlimit(k), example)
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

/// Every property this driver can type, with its real systemd 252 D-Bus name and signature.
pub static PROPERTIES: &[PropertyDef] = &[
    // [Unit]
    PropertyDef {
        name: "Description",
        dbus: "Description",
        section: Section::Unit,
        kind: Kind::Text,
        example: "Nomad task web",
    },
    // --- sandboxing ---
    def(
        "ProtectSystem",
        "ProtectSystem",
        Kind::BoolOrEnum(PROTECT_SYSTEM),
        "strict",
    ),
    def(
        "ProtectHome",
        "ProtectHome",
        Kind::BoolOrEnum(PROTECT_HOME),
        "read-only",
    ),
    def(
        "ProtectProc",
        "ProtectProc",
        Kind::Enum(PROTECT_PROC),
        "invisible",
    ),
    def("ProcSubset", "ProcSubset", Kind::Enum(PROC_SUBSET), "pid"),
    def("PrivateDevices", "PrivateDevices", Kind::Bool, "yes"),
    def("PrivateNetwork", "PrivateNetwork", Kind::Bool, "true"),
    def("PrivateUsers", "PrivateUsers", Kind::Bool, "on"),
    def("PrivateIPC", "PrivateIPC", Kind::Bool, "1"),
    def("PrivateMounts", "PrivateMounts", Kind::Bool, "yes"),
    def(
        "ProtectKernelTunables",
        "ProtectKernelTunables",
        Kind::Bool,
        "yes",
    ),
    def(
        "ProtectKernelModules",
        "ProtectKernelModules",
        Kind::Bool,
        "yes",
    ),
    def("ProtectKernelLogs", "ProtectKernelLogs", Kind::Bool, "yes"),
    def(
        "ProtectControlGroups",
        "ProtectControlGroups",
        Kind::Bool,
        "yes",
    ),
    def("ProtectClock", "ProtectClock", Kind::Bool, "yes"),
    def("ProtectHostname", "ProtectHostname", Kind::Bool, "yes"),
    def("NoNewPrivileges", "NoNewPrivileges", Kind::Bool, "true"),
    def("RestrictRealtime", "RestrictRealtime", Kind::Bool, "yes"),
    def("RestrictSUIDSGID", "RestrictSUIDSGID", Kind::Bool, "yes"),
    def("LockPersonality", "LockPersonality", Kind::Bool, "yes"),
    def(
        "MemoryDenyWriteExecute",
        "MemoryDenyWriteExecute",
        Kind::Bool,
        "yes",
    ),
    def("RemoveIPC", "RemoveIPC", Kind::Bool, "yes"),
    def(
        "RestrictNamespaces",
        "RestrictNamespaces",
        Kind::Namespaces,
        "~user net",
    ),
    def(
        "ReadOnlyPaths",
        "ReadOnlyPaths",
        Kind::PathList,
        "/usr -/opt/nonexistent",
    ),
    def(
        "InaccessiblePaths",
        "InaccessiblePaths",
        Kind::PathList,
        "-/var/lib/private-nothing /root",
    ),
    def("NoExecPaths", "NoExecPaths", Kind::PathList, "/var/tmp"),
    def(
        "ReadWritePaths",
        "ReadWritePaths",
        Kind::PathList,
        "/var/tmp",
    ),
    def("ExecPaths", "ExecPaths", Kind::PathList, "/usr/bin"),
    def(
        "SystemCallArchitectures",
        "SystemCallArchitectures",
        Kind::Words(WordKind::Arch),
        "native",
    ),
    def(
        "SystemCallFilter",
        "SystemCallFilter",
        Kind::Filter(WordKind::Syscall),
        "@system-service",
    ),
    def(
        "RestrictAddressFamilies",
        "RestrictAddressFamilies",
        Kind::Filter(WordKind::AddressFamily),
        "AF_UNIX AF_INET AF_INET6",
    ),
    def("UMask", "UMask", Kind::Mode, "0027"),
    def(
        "KeyringMode",
        "KeyringMode",
        Kind::Enum(KEYRING_MODE),
        "private",
    ),
    // --- resources ---
    def("MemoryMax", "MemoryMax", Kind::Memory, "1G"),
    def("MemoryHigh", "MemoryHigh", Kind::Memory, "768M"),
    def("MemorySwapMax", "MemorySwapMax", Kind::Memory, "0"),
    def("MemoryLow", "MemoryLow", Kind::Memory, "256M"),
    def("MemoryMin", "MemoryMin", Kind::Memory, "128M"),
    def("TasksMax", "TasksMax", Kind::TasksMax, "512"),
    def("CPUQuota", "CPUQuotaPerSecUSec", Kind::CpuQuota, "50%"),
    def(
        "CPUWeight",
        "CPUWeight",
        Kind::Weight {
            min: 1,
            max: 10000,
            allow_idle: true,
        },
        "100",
    ),
    def(
        "IOWeight",
        "IOWeight",
        Kind::Weight {
            min: 1,
            max: 10000,
            allow_idle: false,
        },
        "100",
    ),
    def("AllowedCPUs", "AllowedCPUs", Kind::CpuSet, "0"),
    def("Nice", "Nice", Kind::I32 { min: -20, max: 19 }, "5"),
    def(
        "OOMScoreAdjust",
        "OOMScoreAdjust",
        Kind::I32 {
            min: -1000,
            max: 1000,
        },
        "500",
    ),
    def(
        "IOSchedulingClass",
        "IOSchedulingClass",
        Kind::EnumI32(IOPRIO_CLASS),
        "best-effort",
    ),
    def(
        "IOSchedulingPriority",
        "IOSchedulingPriority",
        Kind::I32 { min: 0, max: 7 },
        "4",
    ),
    def(
        "CPUSchedulingPolicy",
        "CPUSchedulingPolicy",
        Kind::EnumI32(SCHED_POLICY),
        "batch",
    ),
    def(
        "CPUSchedulingPriority",
        "CPUSchedulingPriority",
        Kind::I32 { min: 0, max: 99 },
        "0",
    ),
    // --- rlimits ---
    rl("LimitCPU", RlimitKind::Seconds, "1h"),
    rl("LimitFSIZE", RlimitKind::Bytes, "1G"),
    rl("LimitDATA", RlimitKind::Bytes, "infinity"),
    rl("LimitSTACK", RlimitKind::Bytes, "8M"),
    rl("LimitCORE", RlimitKind::Bytes, "0"),
    rl("LimitRSS", RlimitKind::Bytes, "infinity"),
    rl("LimitNOFILE", RlimitKind::Count, "1024:65536"),
    rl("LimitAS", RlimitKind::Bytes, "infinity"),
    rl("LimitNPROC", RlimitKind::Count, "4096"),
    rl("LimitMEMLOCK", RlimitKind::Bytes, "64M"),
    rl("LimitLOCKS", RlimitKind::Count, "infinity"),
    rl("LimitSIGPENDING", RlimitKind::Count, "1024"),
    rl("LimitMSGQUEUE", RlimitKind::Bytes, "800K"),
    rl("LimitNICE", RlimitKind::Nice, "-5"),
    rl("LimitRTPRIO", RlimitKind::Count, "0"),
    rl("LimitRTTIME", RlimitKind::Micros, "200ms"),
    // --- timeouts ---
    def(
        "TimeoutStartSec",
        "TimeoutStartUSec",
        Kind::TimeSpan {
            zero_is_infinity: true,
        },
        "90s",
    ),
    def(
        "TimeoutStopSec",
        "TimeoutStopUSec",
        Kind::TimeSpan {
            zero_is_infinity: true,
        },
        "30s",
    ),
    def(
        "RuntimeMaxSec",
        "RuntimeMaxUSec",
        Kind::TimeSpan {
            zero_is_infinity: false,
        },
        "1h 30min",
    ),
    def(
        "WatchdogSec",
        "WatchdogUSec",
        Kind::TimeSpan {
            zero_is_infinity: false,
        },
        "1min",
    ),
    // --- service behaviour, logging ---
    def("Type", "Type", Kind::Enum(SERVICE_TYPE), "exec"),
    def("KillMode", "KillMode", Kind::Enum(KILL_MODE), "mixed"),
    def("KillSignal", "KillSignal", Kind::Signal, "SIGINT"),
    def("SyslogIdentifier", "SyslogIdentifier", Kind::Text, "web"),
    def(
        "LogLevelMax",
        "LogLevelMax",
        Kind::EnumI32(LOG_LEVEL),
        "info",
    ),
    def(
        "LogRateLimitIntervalSec",
        "LogRateLimitIntervalUSec",
        Kind::TimeSpan {
            zero_is_infinity: false,
        },
        "30s",
    ),
    def(
        "LogRateLimitBurst",
        "LogRateLimitBurst",
        Kind::U32 {
            min: 0,
            max: u32::MAX,
        },
        "1000",
    ),
    // --- privilege (default deny) ---
    def(
        "SupplementaryGroups",
        "SupplementaryGroups",
        Kind::Words(WordKind::Group),
        "adm",
    ),
    def(
        "AmbientCapabilities",
        "AmbientCapabilities",
        Kind::Capabilities,
        "CAP_NET_BIND_SERVICE",
    ),
    def(
        "CapabilityBoundingSet",
        "CapabilityBoundingSet",
        Kind::Capabilities,
        "~CAP_SYS_ADMIN CAP_SYS_PTRACE",
    ),
    def("Delegate", "Delegate", Kind::Bool, "yes"),
    def(
        "PermissionsStartOnly",
        "PermissionsStartOnly",
        Kind::Bool,
        "yes",
    ),
    def(
        "DeviceAllow",
        "DeviceAllow",
        Kind::DeviceAllow,
        "/dev/null rw",
    ),
    def(
        "DevicePolicy",
        "DevicePolicy",
        Kind::Enum(DEVICE_POLICY),
        "closed",
    ),
    def("RootDirectory", "RootDirectory", Kind::AbsPath, "/"),
    def(
        "RootImage",
        "RootImage",
        Kind::AbsPath,
        "/var/lib/machines/image.raw",
    ),
    def(
        "SELinuxContext",
        "SELinuxContext",
        Kind::LabelStr,
        "system_u:system_r:svirt_t:s0",
    ),
    def(
        "AppArmorProfile",
        "AppArmorProfile",
        Kind::Label,
        "-nomad-task",
    ),
    def(
        "SmackProcessLabel",
        "SmackProcessLabel",
        Kind::Label,
        "-nomad",
    ),
    def(
        "Personality",
        "Personality",
        Kind::Enum(PERSONALITY),
        "x86-64",
    ),
];

/// Never settable by a job, whatever the policy: the driver sets these itself (lifetime, exit
/// status, command, identity, logs, task directories, environment, cgroup placement and the
/// resources Nomad schedules by) or relies on their defaults.
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
    "CPUWeight",
    "StartupCPUWeight",
    "CPUShares",
    "StartupCPUShares",
    "AllowedCPUs",
    "StartupAllowedCPUs",
    "CPUAccounting",
    "MemoryAccounting",
    "TasksAccounting",
    "IOAccounting",
];

/// Built-in allow set: sandboxing tighteners, resource limits, rlimits, timeouts, logging.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "Description",
    "ProtectSystem",
    "ProtectHome",
    "ProtectProc",
    "ProcSubset",
    "PrivateDevices",
    "PrivateNetwork",
    "PrivateUsers",
    "PrivateIPC",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "NoNewPrivileges",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RemoveIPC",
    "RestrictNamespaces",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "NoExecPaths",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "RestrictAddressFamilies",
    "UMask",
    "MemoryMax",
    "MemoryHigh",
    "MemorySwapMax",
    "TasksMax",
    "CPUQuota",
    "IOWeight",
    "Nice",
    "IOSchedulingPriority",
    "LimitCPU",
    "LimitFSIZE",
    "LimitDATA",
    "LimitSTACK",
    "LimitCORE",
    "LimitRSS",
    "LimitNOFILE",
    "LimitAS",
    "LimitNPROC",
    "LimitMEMLOCK",
    "LimitLOCKS",
    "LimitSIGPENDING",
    "LimitMSGQUEUE",
    "LimitNICE",
    "LimitRTTIME",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "RuntimeMaxSec",
    "WatchdogSec",
    "Type",
    "KillMode",
    "SyslogIdentifier",
    "LogLevelMax",
    "LogRateLimitIntervalSec",
    "LogRateLimitBurst",
];

/// Built-in deny set: privilege escalation and reaching beyond the task's share (module docs).
pub const DEFAULT_DENIED: &[&str] = &[
    "SupplementaryGroups",
    "AmbientCapabilities",
    "CapabilityBoundingSet",
    "Delegate",
    "PermissionsStartOnly",
    "DeviceAllow",
    "DevicePolicy",
    "RootDirectory",
    "RootImage",
    "SELinuxContext",
    "AppArmorProfile",
    "SmackProcessLabel",
    "Personality",
    "ReadWritePaths",
    "ExecPaths",
    "KeyringMode",
    "CPUSchedulingPolicy",
    "CPUSchedulingPriority",
    "IOSchedulingClass",
    "OOMScoreAdjust",
    "LimitRTPRIO",
    "MemoryLow",
    "MemoryMin",
    "KillSignal",
];

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// The table entry for a unit-file property name (exact, case-sensitive, as systemd).
pub fn lookup(name: &str) -> Option<&'static PropertyDef> {
    PROPERTIES.iter().find(|d| d.name == name)
}

/// unit-file name + value → (D-Bus name, typed value) pairs (some expand to two, e.g.
/// `LimitNOFILE` → `LimitNOFILE` + `LimitNOFILESoft`, `CPUQuota` → `CPUQuotaPerSecUSec`,
/// `MemoryMax=50%` → `MemoryMaxScale`). Types only: apply [`PropertyPolicy::check`] first.
pub fn to_dbus(name: &str, value: &str) -> Result<Vec<(String, DValue)>, PropertyError> {
    let def = known(name)?;
    Ok(parse(def, value)?.dbus)
}

/// One drop-in line `Name=value`, validated by the same parser first and rendered so that systemd
/// reads back exactly the value [`to_dbus`] would send. Write it under [`PropertyDef::section`].
/// Types only: apply [`PropertyPolicy::check`] first.
pub fn dropin_line(name: &str, value: &str) -> Result<String, PropertyError> {
    Ok(format!("{name}={}", dropin_value(name, value)?))
}

/// The value part of [`dropin_line`]: what to write after `Name=`. Never the job's raw value —
/// always this, so that escaping and canonical spellings apply.
pub fn dropin_value(name: &str, value: &str) -> Result<String, PropertyError> {
    let def = known(name)?;
    Ok(parse(def, value)?.text)
}

fn valid_name(name: &str) -> Result<(), PropertyError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PropertyError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn known(name: &str) -> Result<&'static PropertyDef, PropertyError> {
    valid_name(name)?;
    lookup(name).ok_or_else(|| PropertyError::Unknown {
        name: name.to_string(),
        suggestion: suggest(name),
    })
}

fn suggest(name: &str) -> Option<&'static str> {
    PROPERTIES
        .iter()
        .map(|d| d.name)
        .chain(DRIVER_OWNED.iter().copied())
        .find(|n| n.eq_ignore_ascii_case(name))
}

/// Which job properties the plugin accepts (`allowed_properties` / `denied_properties`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyPolicy {
    allowed: BTreeSet<String>,
    denied: BTreeSet<String>,
}

impl Default for PropertyPolicy {
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

impl PropertyPolicy {
    /// allowed = [`DEFAULT_ALLOWED`] ∪ `extra_allowed`;
    /// denied = ([`DEFAULT_DENIED`] ∪ `extra_denied`) minus `extra_allowed`.
    pub fn new(extra_allowed: &[String], extra_denied: &[String]) -> Self {
        let allowed: BTreeSet<String> = DEFAULT_ALLOWED
            .iter()
            .map(|s| s.to_string())
            .chain(extra_allowed.iter().cloned())
            .collect();
        let denied = DEFAULT_DENIED
            .iter()
            .map(|s| s.to_string())
            .chain(extra_denied.iter().cloned())
            .filter(|n| !extra_allowed.contains(n))
            .collect();
        Self { allowed, denied }
    }

    /// Problems in an operator's lists, one error per offending entry: names that are not valid or
    /// not known, driver-owned names in `allowed_properties`, and names in both lists.
    pub fn check_config(
        extra_allowed: &[String],
        extra_denied: &[String],
    ) -> Result<(), Vec<PropertyError>> {
        let mut errors = Vec::new();
        for name in extra_allowed {
            if DRIVER_OWNED.contains(&name.as_str()) {
                errors.push(PropertyError::DriverOwned { name: name.clone() });
            } else if let Err(e) = known(name) {
                errors.push(e);
            } else if extra_denied.contains(name) {
                errors.push(PropertyError::Conflicting { name: name.clone() });
            }
        }
        for name in extra_denied {
            if !DRIVER_OWNED.contains(&name.as_str())
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
        if DRIVER_OWNED.contains(&name) {
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

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

struct Typed {
    dbus: Vec<(String, DValue)>,
    text: String,
}

impl Typed {
    fn one(def: &PropertyDef, v: DValue, text: String) -> Self {
        Typed {
            dbus: vec![(def.dbus.to_string(), v)],
            text,
        }
    }
}

type Res<T> = Result<T, Option<String>>;

fn fail<T>(reason: impl Into<String>) -> Res<T> {
    Err(Some(reason.into()))
}

fn is_control(c: char) -> bool {
    let u = u32::from(c);
    u < 0x20 || (0x7f..=0x9f).contains(&u)
}

fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Enum(_) | Kind::BoolOrEnum(_) | Kind::EnumI32(_) => "value",
        Kind::Text => "text",
        Kind::I32 { .. } | Kind::U32 { .. } => "integer",
        Kind::Weight { .. } => "weight",
        Kind::Mode => "file mode",
        Kind::Memory => "size",
        Kind::TasksMax => "task limit",
        Kind::CpuQuota => "CPU quota",
        Kind::TimeSpan { .. } => "time span",
        Kind::Rlimit(_) => "resource limit",
        Kind::PathList => "path list",
        Kind::Words(_) | Kind::Filter(_) => "list",
        Kind::CpuSet => "CPU list",
        Kind::Namespaces => "namespace list",
        Kind::Capabilities => "capability list",
        Kind::Signal => "signal",
        Kind::Label | Kind::LabelStr => "label",
        Kind::DeviceAllow => "device rule",
        Kind::AbsPath => "path",
    }
}

fn parse(def: &'static PropertyDef, raw: &str) -> Result<Typed, PropertyError> {
    if raw.chars().any(is_control) {
        return Err(PropertyError::ControlChar {
            name: def.name.to_string(),
            value: raw.to_string(),
        });
    }
    let v = raw.trim_matches(' ');
    if v.is_empty() {
        return Err(PropertyError::Empty {
            name: def.name.to_string(),
        });
    }
    parse_kind(def, v).map_err(|reason| PropertyError::InvalidValue {
        name: def.name.to_string(),
        what: what(def.kind),
        value: v.to_string(),
        reason,
    })
}

fn parse_kind(def: &'static PropertyDef, v: &str) -> Res<Typed> {
    Ok(match def.kind {
        Kind::Bool => {
            let b = parse_bool(v).ok_or(None)?;
            Typed::one(def, DValue::Bool(b), yes_no(b).into())
        }
        Kind::Enum(values) => {
            let s = enum_value(values, v)?;
            Typed::one(def, DValue::Str(s.into()), s.into())
        }
        Kind::BoolOrEnum(values) => {
            let s = match parse_bool(v) {
                Some(b) => yes_no(b),
                None => enum_value(values, v)
                    .map_err(|_| Some(format!("expected a boolean, {}", one_of(values))))?,
            };
            Typed::one(def, DValue::Str(s.into()), s.into())
        }
        Kind::EnumI32(values) => {
            let (name, n) = match values.iter().find(|(n, _)| *n == v) {
                Some(&(name, n)) => (name, n),
                None => match v
                    .parse::<i32>()
                    .ok()
                    .and_then(|n| values.iter().find(|(_, x)| *x == n))
                {
                    Some(&(name, n)) => (name, n),
                    None => {
                        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
                        return fail(one_of(&names));
                    }
                },
            };
            Typed::one(def, DValue::I32(n), name.into())
        }
        Kind::Text => Typed::one(def, DValue::Str(v.into()), escape_text(v)?),
        Kind::I32 { min, max } => {
            let n = parse_i64(v).ok_or(None)?;
            if n < i64::from(min) || n > i64::from(max) {
                return fail(format!("must be between {min} and {max}"));
            }
            let n = i32::try_from(n).map_err(|_| None)?;
            Typed::one(def, DValue::I32(n), n.to_string())
        }
        Kind::U32 { min, max } => {
            let n = parse_u64(v).ok_or(None)?;
            if n < u64::from(min) || n > u64::from(max) {
                return fail(format!("must be between {min} and {max}"));
            }
            let n = u32::try_from(n).map_err(|_| None)?;
            Typed::one(def, DValue::U32(n), n.to_string())
        }
        Kind::Weight {
            min,
            max,
            allow_idle,
        } => {
            if allow_idle && v == "idle" {
                return Ok(Typed::one(def, DValue::U64(0), "idle".into()));
            }
            let n = parse_u64(v).ok_or(None)?;
            if n < min || n > max {
                return fail(format!("must be between {min} and {max}"));
            }
            Typed::one(def, DValue::U64(n), n.to_string())
        }
        Kind::Mode => {
            if v.is_empty() || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return fail("expected an octal mode such as 0027");
            }
            let n = u32::from_str_radix(v, 8).map_err(|_| None)?;
            if n > 0o7777 {
                return fail("must be at most 07777");
            }
            Typed::one(def, DValue::U32(n), format!("{n:04o}"))
        }
        Kind::Memory => {
            if v == "infinity" {
                Typed::one(def, DValue::U64(u64::MAX), "infinity".into())
            } else if is_percentage(v) {
                let p = parse_permyriad(v)?;
                if p == 0 {
                    return fail("a percentage must be above 0%");
                }
                Typed {
                    dbus: vec![(
                        format!("{}Scale", def.dbus),
                        DValue::U32(scale_from_permyriad(p)),
                    )],
                    text: permyriad_text(p),
                }
            } else {
                let n = parse_size(v).ok_or_else(|| Some(SIZE_HINT.to_string()))?;
                Typed::one(def, DValue::U64(n), n.to_string())
            }
        }
        Kind::TasksMax => {
            if v == "infinity" {
                Typed::one(def, DValue::U64(u64::MAX), "infinity".into())
            } else if is_percentage(v) {
                let p = parse_permyriad(v)?;
                if p == 0 {
                    return fail("a percentage must be above 0%");
                }
                Typed {
                    dbus: vec![("TasksMaxScale".into(), DValue::U32(scale_from_permyriad(p)))],
                    text: permyriad_text(p),
                }
            } else {
                let n = parse_u64(v)
                    .ok_or_else(|| Some("expected a number, a percentage or infinity".into()))?;
                if n == 0 || n == u64::MAX {
                    return fail("must be at least 1");
                }
                Typed::one(def, DValue::U64(n), n.to_string())
            }
        }
        Kind::CpuQuota => {
            if !v.ends_with('%') && !v.ends_with('‰') && !v.ends_with('‱') {
                return fail("expected a percentage such as 50% (100% = one CPU)");
            }
            let p = parse_permyriad_unbounded(v)?;
            if p == 0 {
                return fail("must be above 0%");
            }
            let usec = u64::from(p) * 100; // p/10000 of 1_000_000 µs per second
            Typed::one(def, DValue::U64(usec), permyriad_text(p))
        }
        Kind::TimeSpan { zero_is_infinity } => {
            let mut usec =
                parse_time(v, USEC_PER_SEC).ok_or_else(|| Some(TIME_HINT.to_string()))?;
            if zero_is_infinity && usec == 0 {
                usec = u64::MAX;
            }
            Typed::one(def, DValue::U64(usec), usec_text(usec))
        }
        Kind::Rlimit(k) => {
            let (soft, hard) = match v.split_once(':') {
                Some((s, h)) => (
                    rlimit_one(k, s.trim_matches(' '))?,
                    rlimit_one(k, h.trim_matches(' '))?,
                ),
                None => {
                    let x = rlimit_one(k, v)?;
                    (x, x)
                }
            };
            if soft > hard {
                return fail("the soft limit is above the hard limit");
            }
            let text = if soft == hard {
                rlimit_text(hard)
            } else {
                format!("{}:{}", rlimit_text(soft), rlimit_text(hard))
            };
            Typed {
                dbus: vec![
                    (def.dbus.to_string(), DValue::U64(hard)),
                    (format!("{}Soft", def.dbus), DValue::U64(soft)),
                ],
                text,
            }
        }
        Kind::PathList => {
            let words = split_words(v)?;
            if words.is_empty() {
                return fail("no paths");
            }
            for w in &words {
                let p = w.strip_prefix('-').unwrap_or(w);
                let p = p.strip_prefix('+').unwrap_or(p);
                check_path(p)?;
            }
            let text = words
                .iter()
                .map(|w| quote_word(w))
                .collect::<Vec<_>>()
                .join(" ");
            Typed::one(def, DValue::StrList(words), text)
        }
        Kind::Words(k) => {
            let words = split_words(v)?;
            if words.is_empty() {
                return fail("no entries");
            }
            for w in &words {
                check_word(k, w)?;
            }
            let text = words.join(" ");
            Typed::one(def, DValue::StrList(words), text)
        }
        Kind::Filter(k) => {
            let (allow, rest) = match v.strip_prefix('~') {
                Some(r) => (false, r),
                None => (true, v),
            };
            let mut words = split_words(rest)?;
            if words.is_empty() {
                return fail("no entries");
            }
            for w in &words {
                check_word(k, w)?;
            }
            let mut text = if allow {
                String::new()
            } else {
                "~".to_string()
            };
            text.push_str(&words.join(" "));
            if k == WordKind::AddressFamily && words.iter().any(|w| w == "none") {
                // systemd's `RestrictAddressFamilies=none`: an empty allow list over D-Bus.
                if words.len() != 1 || !allow {
                    return fail("\"none\" must stand alone");
                }
                words.clear();
            }
            Typed::one(
                def,
                DValue::Struct(vec![DValue::Bool(allow), DValue::StrList(words)]),
                text,
            )
        }
        Kind::CpuSet => {
            let cpus = parse_cpu_set(v)?;
            Typed::one(def, DValue::Bytes(cpu_bytes(&cpus)), cpu_text(&cpus))
        }
        Kind::Namespaces => {
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
            Typed::one(def, DValue::U64(flags), namespaces_text(flags))
        }
        Kind::Capabilities => {
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
            Typed::one(def, DValue::U64(mask), text)
        }
        Kind::Signal => {
            let (n, name) = parse_signal(v).ok_or_else(|| {
                Some("expected a signal name such as SIGTERM or a number 1..64".into())
            })?;
            Typed::one(def, DValue::I32(n), name)
        }
        Kind::Label | Kind::LabelStr => {
            let (ignore, label) = match v.strip_prefix('-') {
                Some(l) => (true, l),
                None => (false, v),
            };
            if label.is_empty()
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:/@+=,^*-".contains(&b))
            {
                return fail("labels are letters, digits and _ . : / @ + = , ^ * -");
            }
            let value = if def.kind == Kind::LabelStr {
                if ignore {
                    return fail(
                        "the \"-\" prefix cannot be passed to systemd over D-Bus for this property",
                    );
                }
                DValue::Str(v.into())
            } else {
                DValue::Struct(vec![DValue::Bool(ignore), DValue::Str(label.into())])
            };
            Typed::one(def, value, v.into())
        }
        Kind::DeviceAllow => {
            let (dev, rwm) = match v.split_once(' ') {
                Some((d, r)) => (d, r.trim_matches(' ')),
                None => (v, "rwm"),
            };
            check_device(dev)?;
            let mut seen = String::new();
            for c in rwm.chars() {
                if !"rwm".contains(c) || seen.contains(c) {
                    return fail("access must be a combination of r, w and m");
                }
                seen.push(c);
            }
            if seen.is_empty() {
                seen.push_str("rwm");
            }
            let item = DValue::Struct(vec![DValue::Str(dev.into()), DValue::Str(seen.clone())]);
            Typed::one(
                def,
                DValue::Array {
                    sig: "(ss)".into(),
                    items: vec![item],
                },
                format!("{dev} {seen}"),
            )
        }
        Kind::AbsPath => {
            check_path(v)?;
            Typed::one(def, DValue::Str(v.into()), escape_text(v)?)
        }
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn one_of(values: &[&str]) -> String {
    format!("expected one of {}", values.join(", "))
}

fn enum_value(values: &[&'static str], v: &str) -> Res<&'static str> {
    values
        .iter()
        .copied()
        .find(|x| *x == v)
        .ok_or_else(|| Some(one_of(values)))
}

/// systemd's `parse_boolean`.
/// systemd's boolean words (`parse_boolean`).
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    const T: &[&str] = &["1", "yes", "y", "true", "t", "on"];
    const F: &[&str] = &["0", "no", "n", "false", "f", "off"];
    if T.iter().any(|x| x.eq_ignore_ascii_case(v)) {
        Some(true)
    } else if F.iter().any(|x| x.eq_ignore_ascii_case(v)) {
        Some(false)
    } else {
        None
    }
}

fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_i64(v: &str) -> Option<i64> {
    let (neg, digits) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let n = i64::try_from(parse_u64(digits)?).ok()?;
    Some(if neg { -n } else { n })
}

/// Free text for a unit file: `%` → `%%` (no specifier expansion); an odd run of trailing
/// backslashes would make systemd join the next line, so it is refused.
fn escape_text(v: &str) -> Res<String> {
    let trailing = v.bytes().rev().take_while(|b| *b == b'\\').count();
    if trailing % 2 == 1 {
        return fail("a value cannot end with a backslash");
    }
    Ok(v.replace('%', "%%"))
}

// --- sizes -----------------------------------------------------------------------------------

const SIZE_HINT: &str = "expected bytes with an optional K, M, G, T, P or E suffix (base 1024), a percentage or infinity";

/// systemd's `parse_size(t, 1024)`: `1G`, `1.5G`, `1G 512M`, bare bytes.
fn parse_size(t: &str) -> Option<u64> {
    const TABLE: &[(&str, u64)] = &[
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
        ("B", 1),
        ("", 1),
    ];
    let mut p = t;
    let mut total: u64 = 0;
    let mut start = 0;
    loop {
        p = p.trim_start_matches(' ');
        let digits = p.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let l: u64 = p[..digits].parse().ok()?;
        p = &p[digits..];
        let mut frac = 0f64;
        if let Some(rest) = p.strip_prefix('.') {
            p = rest;
            let fd = p.bytes().take_while(u8::is_ascii_digit).count();
            if fd > 0 {
                let l2: u64 = p[..fd].parse().ok()?;
                frac = l2 as f64 / 10f64.powi(i32::try_from(fd).ok()?);
                p = &p[fd..];
            }
        }
        p = p.trim_start_matches(' ');
        let i = (start..TABLE.len()).find(|&i| p.starts_with(TABLE[i].0))?;
        let factor = TABLE[i].1;
        if l + u64::from(frac > 0.0) > u64::MAX / factor {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let tmp = l * factor + (frac * factor as f64) as u64;
        total = total.checked_add(tmp)?;
        p = &p[TABLE[i].0.len()..];
        start = i + 1;
        if p.is_empty() {
            return Some(total);
        }
    }
}

// --- percentages -----------------------------------------------------------------------------

fn is_percentage(v: &str) -> bool {
    v.ends_with('%') || v.ends_with('‰') || v.ends_with('‱')
}

/// systemd's `parse_permyriad_unbounded`: `N‱`, `N[.d]‰`, `N[.d[d]]%`.
fn parse_permyriad_unbounded(v: &str) -> Res<u32> {
    let bad = || Some("expected a percentage such as 50% or 12.5%".to_string());
    let (num, decimals, mult) = if let Some(n) = v.strip_suffix('‱') {
        (n, 0usize, 1u64)
    } else if let Some(n) = v.strip_suffix('‰') {
        (n, 1, 10)
    } else if let Some(n) = v.strip_suffix('%') {
        (n, 2, 100)
    } else {
        return Err(bad());
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > decimals
        || (num.contains('.') && frac.is_empty())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let w: u64 = whole.parse().map_err(|_| bad())?;
    let mut f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    for _ in frac.len()..decimals {
        f *= 10;
    }
    let total = w
        .checked_mul(mult)
        .and_then(|x| x.checked_add(f))
        .ok_or_else(bad)?;
    let total = i32::try_from(total).map_err(|_| bad())?;
    u32::try_from(total).map_err(|_| bad())
}

fn parse_permyriad(v: &str) -> Res<u32> {
    let p = parse_permyriad_unbounded(v)?;
    if p > 10000 {
        return fail("a percentage must be at most 100%");
    }
    Ok(p)
}

/// systemd's `UINT32_SCALE_FROM_PERMYRIAD`: 100% = 2^32-1, rounded to the closest.
fn scale_from_permyriad(p: u32) -> u32 {
    let v = (u64::from(p.min(10000)) * u64::from(u32::MAX) + 5000) / 10000;
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn permyriad_text(p: u32) -> String {
    format!("{}.{:02}%", p / 100, p % 100)
}

// --- time spans ------------------------------------------------------------------------------

const USEC_PER_SEC: u64 = 1_000_000;
const TIME_HINT: &str =
    "expected a time span such as 30s, 5min, 1h 30s, 100ms or infinity (a bare number is seconds)";

/// systemd's `parse_time`: `infinity`, or a sum of `N[.frac][unit]` (bare number = default unit).
fn parse_time(t: &str, default_unit: u64) -> Option<u64> {
    const MIN: u64 = 60 * USEC_PER_SEC;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    const TABLE: &[(&str, u64)] = &[
        ("seconds", USEC_PER_SEC),
        ("second", USEC_PER_SEC),
        ("sec", USEC_PER_SEC),
        ("s", USEC_PER_SEC),
        ("minutes", MIN),
        ("minute", MIN),
        ("min", MIN),
        ("months", 2_629_800 * USEC_PER_SEC),
        ("month", 2_629_800 * USEC_PER_SEC),
        ("M", 2_629_800 * USEC_PER_SEC),
        ("msec", 1000),
        ("ms", 1000),
        ("m", MIN),
        ("hours", HOUR),
        ("hour", HOUR),
        ("hr", HOUR),
        ("h", HOUR),
        ("days", DAY),
        ("day", DAY),
        ("d", DAY),
        ("weeks", 7 * DAY),
        ("week", 7 * DAY),
        ("w", 7 * DAY),
        ("years", 31_557_600 * USEC_PER_SEC),
        ("year", 31_557_600 * USEC_PER_SEC),
        ("y", 31_557_600 * USEC_PER_SEC),
        ("usec", 1),
        ("us", 1),
        ("μs", 1),
        ("µs", 1),
    ];
    let mut p = t.trim_start_matches(' ');
    if let Some(rest) = p.strip_prefix("infinity") {
        return rest.trim_matches(' ').is_empty().then_some(u64::MAX);
    }
    let mut usec: u64 = 0;
    let mut something = false;
    loop {
        p = p.trim_start_matches(' ');
        if p.is_empty() {
            return something.then_some(usec);
        }
        let digits = p.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let l: u64 = p[..digits].parse().ok()?;
        let after_number = &p[digits..];
        let (frac_digits, rest) = match after_number.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return None; // "3." / "3.sec"
                }
                (&r[..n], &r[n..])
            }
            None => ("", after_number),
        };
        let ws = rest.len() - rest.trim_start_matches(' ').len();
        let candidate = &rest[ws..];
        let (multiplier, after) = match TABLE.iter().find(|(s, _)| candidate.starts_with(s)) {
            Some(&(s, m)) => (m, &candidate[s.len()..]),
            None => (default_unit, candidate),
        };
        if after.len() == rest.len() && !after.is_empty() {
            return None; // no unit and no separating whitespace: "12.34.56", "5x"
        }
        if l >= u64::MAX / multiplier {
            return None;
        }
        let k = l * multiplier;
        if k >= u64::MAX - usec {
            return None;
        }
        usec += k;
        something = true;
        let mut m = multiplier / 10;
        for b in frac_digits.bytes() {
            let k = u64::from(b - b'0') * m;
            if k >= u64::MAX - usec {
                return None;
            }
            usec += k;
            m /= 10;
        }
        p = after;
    }
}

fn usec_text(usec: u64) -> String {
    if usec == u64::MAX {
        "infinity".into()
    } else {
        format!("{usec}us")
    }
}

// --- rlimits ---------------------------------------------------------------------------------

fn rlimit_one(k: RlimitKind, v: &str) -> Res<u64> {
    let inf = v == "infinity";
    match k {
        RlimitKind::Count => {
            if inf {
                return Ok(u64::MAX);
            }
            match parse_u64(v) {
                Some(n) if n < u64::MAX => Ok(n),
                _ => fail("expected a number or infinity, optionally as soft:hard"),
            }
        }
        RlimitKind::Bytes => {
            if inf {
                return Ok(u64::MAX);
            }
            match parse_size(v) {
                Some(n) if n < u64::MAX => Ok(n),
                _ => fail(
                    "expected a size (K, M, G, … base 1024) or infinity, optionally as soft:hard",
                ),
            }
        }
        RlimitKind::Seconds => match parse_time(v, USEC_PER_SEC) {
            Some(u64::MAX) => Ok(u64::MAX),
            Some(u) => Ok(u.div_ceil(USEC_PER_SEC)),
            None => fail(
                "expected a time span (bare number = seconds) or infinity, optionally as soft:hard",
            ),
        },
        RlimitKind::Micros => match parse_time(v, 1) {
            Some(u) => Ok(u),
            None => fail(
                "expected a time span (bare number = microseconds) or infinity, optionally as soft:hard",
            ),
        },
        RlimitKind::Nice => {
            let bad = || {
                Some("expected a nice level -20..19 (with sign) or a raw limit 0..40".to_string())
            };
            if let Some(d) = v.strip_prefix('+') {
                let n = parse_u64(d).ok_or_else(bad)?;
                if n >= 20 {
                    return Err(bad());
                }
                Ok(20 - n)
            } else if let Some(d) = v.strip_prefix('-') {
                let n = parse_u64(d).ok_or_else(bad)?;
                if n > 20 {
                    return Err(bad());
                }
                Ok(20 + n)
            } else {
                let n = parse_u64(v).ok_or_else(bad)?;
                if n > 40 {
                    return Err(bad());
                }
                Ok(n)
            }
        }
    }
}

fn rlimit_text(n: u64) -> String {
    if n == u64::MAX {
        "infinity".into()
    } else {
        n.to_string()
    }
}

// --- words, paths ----------------------------------------------------------------------------

/// systemd's `extract_first_word(…, EXTRACT_UNQUOTE)` over a whole value: words separated by
/// spaces; `'…'` and `"…"` quote; a backslash takes the next character literally.
fn split_words(v: &str) -> Res<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut w = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (_, '\\') => match chars.next() {
                    Some(n) => w.push(n),
                    None => return fail("a value cannot end with a backslash"),
                },
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => w.push(c),
                (None, ' ') => break,
                (None, '\'' | '"') => quote = Some(c),
                (None, c) => w.push(c),
            }
        }
        if quote.is_some() {
            return fail("unterminated quote");
        }
        words.push(w);
    }
}

/// One word for a unit file, read back by `extract_first_word(EXTRACT_UNQUOTE)` and the specifier
/// expansion as exactly `w`.
fn quote_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.+-:,@=%".contains(&b));
    let w = w.replace('%', "%%");
    if plain {
        return w;
    }
    let mut s = String::with_capacity(w.len() + 2);
    s.push('"');
    for c in w.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Absolute and normalized, as systemd requires over D-Bus (`path_is_normalized`).
fn check_path(p: &str) -> Res<()> {
    if !p.starts_with('/') {
        return fail(format!("{} is not an absolute path", Q(p)));
    }
    if p.len() > 4096 {
        return fail("path too long");
    }
    if p != "/"
        && (p.ends_with('/')
            || p.split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return fail(format!(
            "{} is not a normalized path (no //, /./, /../ or trailing /)",
            Q(p)
        ));
    }
    Ok(())
}

fn check_word(k: WordKind, w: &str) -> Res<()> {
    let ok = match k {
        WordKind::Arch => {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        }
        WordKind::Group => {
            !w.is_empty()
                && w.len() <= 32
                && !w.starts_with('-')
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        }
        WordKind::Syscall => {
            let (name, errno) = match w.split_once(':') {
                Some((n, e)) => (n, Some(e)),
                None => (w, None),
            };
            let name = name.strip_prefix('@').unwrap_or(name);
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                && errno
                    .is_none_or(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        }
        WordKind::AddressFamily => {
            w == "none"
                || w.strip_prefix("AF_")
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        }
    };
    if ok {
        Ok(())
    } else {
        fail(format!("invalid entry {}", Q(w)))
    }
}

fn check_device(d: &str) -> Res<()> {
    let ok = if let Some(rest) = d.strip_prefix("/dev/") {
        check_path(d).is_ok()
            && !rest.is_empty()
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_.:+-".contains(&b))
    } else if let Some(rest) = d.strip_prefix("char-").or_else(|| d.strip_prefix("block-")) {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.*+-".contains(&b))
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        fail("expected /dev/… or char-…/block-… followed by r, w, m")
    }
}

// --- CPU sets --------------------------------------------------------------------------------

const CPU_SET_MAX: u32 = 8192;

fn parse_cpu_set(v: &str) -> Res<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    for item in v.split([' ', ',']).filter(|s| !s.is_empty()) {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let bad = || Some(format!("invalid CPU range {}", Q(item)));
        let lo = parse_u64(lo)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        let hi = parse_u64(hi)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        if lo > hi {
            return Err(bad());
        }
        if hi >= CPU_SET_MAX {
            return fail(format!("CPU numbers must be below {CPU_SET_MAX}"));
        }
        set.extend(lo..=hi);
    }
    if set.is_empty() {
        return fail("no CPUs");
    }
    Ok(set)
}

/// systemd's `cpu_set_to_dbus`: bit `n % 8` of byte `n / 8` is CPU `n`.
fn cpu_bytes(cpus: &BTreeSet<u32>) -> Vec<u8> {
    let len = cpus.last().map_or(0, |&m| m as usize / 8 + 1);
    let mut out = vec![0u8; len];
    for &c in cpus {
        out[c as usize / 8] |= 1 << (c % 8);
    }
    out
}

fn cpu_text(cpus: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(" ")
}

// --- namespaces, capabilities, signals -------------------------------------------------------

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

/// Linux's generic signal numbers 1..=31 (x86, arm, riscv, …).
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// A signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`, `RTMAX-1`) or number → (number, canonical name).
fn parse_signal(v: &str) -> Option<(i32, String)> {
    let name_of = |n: i32| -> String {
        match usize::try_from(n - 1).ok().and_then(|i| SIGNALS.get(i)) {
            Some(s) => format!("SIG{s}"),
            None => format!("SIGRTMIN+{}", n - SIGRTMIN),
        }
    };
    if let Some(n) = parse_u64(v) {
        let n = i32::try_from(n).ok()?;
        let valid = (1..=31).contains(&n) || (SIGRTMIN..=SIGRTMAX).contains(&n);
        return valid.then(|| (n, name_of(n)));
    }
    let bare = v.strip_prefix("SIG").unwrap_or(v);
    if let Some(i) = SIGNALS.iter().position(|s| *s == bare) {
        let n = i32::try_from(i).ok()? + 1;
        return Some((n, name_of(n)));
    }
    let n = if bare == "RTMIN" {
        SIGRTMIN
    } else if bare == "RTMAX" {
        SIGRTMAX
    } else if let Some(k) = bare.strip_prefix("RTMIN+") {
        SIGRTMIN + i32::try_from(parse_u64(k)?).ok()?
    } else if let Some(k) = bare.strip_prefix("RTMAX-") {
        SIGRTMAX - i32::try_from(parse_u64(k)?).ok()?
    } else {
        return None;
    };
    (SIGRTMIN..=SIGRTMAX).contains(&n).then(|| (n, name_of(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn s(x: &str) -> DValue {
        DValue::Str(x.into())
    }

    fn one(name: &str, v: DValue) -> Vec<(String, DValue)> {
        vec![(name.to_string(), v)]
    }

    fn ok(name: &str, value: &str) -> Vec<(String, DValue)> {
        to_dbus(name, value).unwrap_or_else(|e| panic!("{name}={value:?}: {e}"))
    }

    fn line(name: &str, value: &str) -> String {
        dropin_line(name, value).unwrap_or_else(|e| panic!("{name}={value:?}: {e}"))
    }

    fn err(name: &str, value: &str) -> String {
        let e = to_dbus(name, value).expect_err(&format!("{name}={value:?} should be refused"));
        let e2 =
            dropin_line(name, value).expect_err("dropin_line must refuse what to_dbus refuses");
        assert_eq!(e, e2);
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "one-line message: {msg:?}");
        msg
    }

    /// What systemd reads back from a drop-in value: `%%` is a literal `%`.
    fn reparse(name: &str, value: &str) -> Vec<(String, DValue)> {
        let l = line(name, value);
        let text = l.strip_prefix(&format!("{name}=")).expect("Name= prefix");
        assert!(!text.contains(['\n', '\r', '\0']));
        let unprintf = text.replace("%%", "%");
        match lookup(name).map(|d| d.kind) {
            // quoted words: our own parser reads them like systemd does, `%%` included
            Some(Kind::PathList) => to_dbus(name, text).map(|mut v| {
                for (_, d) in &mut v {
                    if let DValue::StrList(l) = d {
                        l.iter_mut().for_each(|w| *w = w.replace("%%", "%"));
                    }
                }
                v
            }),
            _ => to_dbus(name, &unprintf),
        }
        .unwrap_or_else(|e| panic!("{name}: drop-in text {text:?} does not parse back: {e}"))
    }

    #[test]
    fn table_is_consistent() {
        let mut seen = BTreeSet::new();
        for d in PROPERTIES {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            assert!(valid_name(d.name).is_ok());
            let lists = [DEFAULT_ALLOWED, DEFAULT_DENIED, DRIVER_OWNED];
            let n = lists.iter().filter(|l| l.contains(&d.name)).count();
            assert_eq!(
                n, 1,
                "{} must be in exactly one of allowed/denied/driver-owned",
                d.name
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
        for n in DEFAULT_ALLOWED.iter().chain(DEFAULT_DENIED) {
            assert!(
                lookup(n).is_some(),
                "{n} is in a default list but not in the table"
            );
            assert!(!DRIVER_OWNED.contains(n), "{n} is driver-owned");
        }
        for n in DEFAULT_ALLOWED {
            assert!(!DEFAULT_DENIED.contains(n), "{n} both allowed and denied");
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
    fn booleans() {
        for v in ["yes", "YES", "y", "true", "True", "t", "on", "1", " yes "] {
            assert_eq!(
                ok("NoNewPrivileges", v),
                one("NoNewPrivileges", DValue::Bool(true)),
                "{v}"
            );
        }
        for v in ["no", "n", "false", "f", "off", "OFF", "0"] {
            assert_eq!(
                ok("PrivateDevices", v),
                one("PrivateDevices", DValue::Bool(false)),
                "{v}"
            );
        }
        assert_eq!(line("PrivateNetwork", "on"), "PrivateNetwork=yes");
        assert_eq!(line("PrivateNetwork", "0"), "PrivateNetwork=no");
        assert_eq!(dropin_value("PrivateNetwork", "0"), Ok("no".to_string()));
        for v in ["2", "yess", "enabled", "y e s"] {
            assert!(err("PrivateUsers", v).contains("invalid boolean"), "{v}");
        }
    }

    #[test]
    fn enums_and_bool_or_enum() {
        assert_eq!(
            ok("ProtectSystem", "strict"),
            one("ProtectSystem", s("strict"))
        );
        assert_eq!(ok("ProtectSystem", "true"), one("ProtectSystem", s("yes")));
        assert_eq!(ok("ProtectSystem", "off"), one("ProtectSystem", s("no")));
        assert_eq!(
            ok("ProtectHome", "read-only"),
            one("ProtectHome", s("read-only"))
        );
        assert_eq!(
            ok("ProtectProc", "invisible"),
            one("ProtectProc", s("invisible"))
        );
        assert_eq!(ok("Type", "notify"), one("Type", s("notify")));
        assert_eq!(ok("KillMode", "mixed"), one("KillMode", s("mixed")));
        assert_eq!(line("ProtectSystem", "1"), "ProtectSystem=yes");
        assert!(
            err("ProtectSystem", "Strict")
                .contains("expected a boolean, expected one of full, strict")
        );
        assert!(err("ProtectSystem", "read-only").contains("invalid value"));
        assert!(err("KillMode", "none").contains("expected one of control-group, mixed"));
        assert!(err("KillMode", "process").contains("invalid value \"process\""));
        assert!(err("Type", "oneshot").contains("invalid value"));
        assert!(err("Type", "dbus").contains("invalid value"));
        assert!(err("ProcSubset", "some").contains("expected one of all, pid"));
    }

    #[test]
    fn named_integers() {
        assert_eq!(
            ok("LogLevelMax", "info"),
            one("LogLevelMax", DValue::I32(6))
        );
        assert_eq!(ok("LogLevelMax", "3"), one("LogLevelMax", DValue::I32(3)));
        assert_eq!(line("LogLevelMax", "3"), "LogLevelMax=err");
        assert_eq!(
            ok("IOSchedulingClass", "best-effort"),
            one("IOSchedulingClass", DValue::I32(2))
        );
        assert_eq!(
            ok("CPUSchedulingPolicy", "idle"),
            one("CPUSchedulingPolicy", DValue::I32(5))
        );
        assert!(
            err("CPUSchedulingPolicy", "4")
                .contains("expected one of other, fifo, rr, batch, idle")
        );
        assert!(err("LogLevelMax", "8").contains("invalid value"));
        assert!(err("LogLevelMax", "verbose").contains("invalid value"));
    }

    #[test]
    fn integers() {
        assert_eq!(ok("Nice", "-20"), one("Nice", DValue::I32(-20)));
        assert_eq!(ok("Nice", "+19"), one("Nice", DValue::I32(19)));
        assert_eq!(
            ok("OOMScoreAdjust", "-1000"),
            one("OOMScoreAdjust", DValue::I32(-1000))
        );
        assert_eq!(
            ok("IOSchedulingPriority", "7"),
            one("IOSchedulingPriority", DValue::I32(7))
        );
        assert_eq!(
            ok("LogRateLimitBurst", "4294967295"),
            one("LogRateLimitBurst", DValue::U32(u32::MAX))
        );
        assert_eq!(line("Nice", "+5"), "Nice=5");
        assert!(err("Nice", "20").contains("must be between -20 and 19"));
        assert!(err("Nice", "-21").contains("must be between -20 and 19"));
        assert!(err("OOMScoreAdjust", "1001").contains("between -1000 and 1000"));
        assert!(err("IOSchedulingPriority", "8").contains("between 0 and 7"));
        for v in ["1.5", "0x10", "five", "--1", "99999999999999999999999"] {
            assert!(err("Nice", v).contains("invalid integer"), "{v}");
        }
        assert!(err("LogRateLimitBurst", "4294967296").contains("between 0 and 4294967295"));
        assert!(err("LogRateLimitBurst", "-1").contains("invalid integer"));
    }

    #[test]
    fn weights() {
        assert_eq!(ok("IOWeight", "100"), one("IOWeight", DValue::U64(100)));
        assert_eq!(
            ok("CPUWeight", "10000"),
            one("CPUWeight", DValue::U64(10000))
        );
        assert_eq!(ok("CPUWeight", "idle"), one("CPUWeight", DValue::U64(0)));
        assert_eq!(line("CPUWeight", "idle"), "CPUWeight=idle");
        assert!(err("IOWeight", "idle").contains("invalid weight"));
        assert!(err("IOWeight", "0").contains("between 1 and 10000"));
        assert!(err("CPUWeight", "10001").contains("between 1 and 10000"));
    }

    #[test]
    fn umask() {
        assert_eq!(ok("UMask", "0027"), one("UMask", DValue::U32(0o27)));
        assert_eq!(ok("UMask", "077"), one("UMask", DValue::U32(0o77)));
        assert_eq!(ok("UMask", "7777"), one("UMask", DValue::U32(0o7777)));
        assert_eq!(line("UMask", "77"), "UMask=0077");
        assert!(err("UMask", "0028").contains("invalid file mode"));
        assert!(err("UMask", "17777").contains("at most 07777"));
        assert!(err("UMask", "u=rwx").contains("octal"));
    }

    #[test]
    fn memory_sizes_and_percentages() {
        let g = 1u64 << 30;
        assert_eq!(ok("MemoryMax", "1G"), one("MemoryMax", DValue::U64(g)));
        assert_eq!(
            ok("MemoryMax", "1073741824"),
            one("MemoryMax", DValue::U64(g))
        );
        assert_eq!(
            ok("MemoryMax", "1.5G"),
            one("MemoryMax", DValue::U64(g + g / 2))
        );
        assert_eq!(
            ok("MemoryMax", "1G 512M"),
            one("MemoryMax", DValue::U64(g + g / 2))
        );
        assert_eq!(
            ok("MemoryMax", "512K"),
            one("MemoryMax", DValue::U64(512 * 1024))
        );
        assert_eq!(
            ok("MemoryMax", "2T"),
            one("MemoryMax", DValue::U64(2 << 40))
        );
        assert_eq!(
            ok("MemoryMax", "1P"),
            one("MemoryMax", DValue::U64(1 << 50))
        );
        assert_eq!(
            ok("MemoryMax", "1E"),
            one("MemoryMax", DValue::U64(1 << 60))
        );
        assert_eq!(ok("MemoryMax", "100B"), one("MemoryMax", DValue::U64(100)));
        assert_eq!(
            ok("MemorySwapMax", "0"),
            one("MemorySwapMax", DValue::U64(0))
        );
        assert_eq!(
            ok("MemoryMax", "infinity"),
            one("MemoryMax", DValue::U64(u64::MAX))
        );
        assert_eq!(
            ok("MemoryMax", "100%"),
            one("MemoryMaxScale", DValue::U32(u32::MAX))
        );
        assert_eq!(
            ok("MemoryHigh", "50%"),
            one("MemoryHighScale", DValue::U32(2_147_483_648))
        );
        assert_eq!(ok("MemoryMax", "12.34%"), ok("MemoryMax", "1234‱"));
        assert_eq!(ok("MemoryMax", "12.5%"), ok("MemoryMax", "125‰"));
        assert_eq!(line("MemoryMax", "1G"), "MemoryMax=1073741824");
        assert_eq!(line("MemoryMax", "50%"), "MemoryMax=50.00%");
        assert_eq!(line("MemoryMax", "infinity"), "MemoryMax=infinity");
        assert!(err("MemoryMax", "1Q").starts_with("property \"MemoryMax\": invalid size \"1Q\""));
        for v in [
            "1g", "-1", "G", "1 G G", "1M 1G", "16E", "101%", "0%", "50.123%", "1.2.3", "1,5G", "%",
        ] {
            let e = err("MemoryMax", v);
            assert!(e.contains("invalid size"), "{v}: {e}");
        }
    }

    #[test]
    fn tasks_max() {
        assert_eq!(ok("TasksMax", "512"), one("TasksMax", DValue::U64(512)));
        assert_eq!(
            ok("TasksMax", "infinity"),
            one("TasksMax", DValue::U64(u64::MAX))
        );
        assert_eq!(
            ok("TasksMax", "10%"),
            one("TasksMaxScale", DValue::U32(429_496_730))
        );
        assert!(err("TasksMax", "0").contains("at least 1"));
        assert!(err("TasksMax", "0%").contains("above 0%"));
        assert!(err("TasksMax", "1K").contains("invalid task limit"));
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(
            ok("CPUQuota", "50%"),
            one("CPUQuotaPerSecUSec", DValue::U64(500_000))
        );
        assert_eq!(
            ok("CPUQuota", "250%"),
            one("CPUQuotaPerSecUSec", DValue::U64(2_500_000))
        );
        assert_eq!(
            ok("CPUQuota", "12.34%"),
            one("CPUQuotaPerSecUSec", DValue::U64(123_400))
        );
        assert_eq!(
            ok("CPUQuota", "1‱"),
            one("CPUQuotaPerSecUSec", DValue::U64(100))
        );
        assert_eq!(line("CPUQuota", "50%"), "CPUQuota=50.00%");
        assert!(err("CPUQuota", "0%").contains("above 0%"));
        assert!(err("CPUQuota", "50").contains("expected a percentage"));
        assert!(err("CPUQuota", "half").contains("invalid CPU quota"));
        assert!(err("CPUQuota", "99999999999%").contains("invalid CPU quota"));
    }

    #[test]
    fn time_spans() {
        let s = |n: u64| DValue::U64(n * 1_000_000);
        assert_eq!(ok("TimeoutStopSec", "30s"), one("TimeoutStopUSec", s(30)));
        assert_eq!(ok("TimeoutStopSec", "30"), one("TimeoutStopUSec", s(30)));
        assert_eq!(
            ok("TimeoutStartSec", "5min"),
            one("TimeoutStartUSec", s(300))
        );
        assert_eq!(
            ok("TimeoutStartSec", "1h 30s"),
            one("TimeoutStartUSec", s(3630))
        );
        assert_eq!(
            ok("TimeoutStartSec", "1h30s"),
            one("TimeoutStartUSec", s(3630))
        );
        assert_eq!(
            ok("TimeoutStartSec", "5 min"),
            one("TimeoutStartUSec", s(300))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "100ms"),
            one("RuntimeMaxUSec", DValue::U64(100_000))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "1.5s"),
            one("RuntimeMaxUSec", DValue::U64(1_500_000))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "2d"),
            one("RuntimeMaxUSec", s(2 * 86400))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "1w"),
            one("RuntimeMaxUSec", s(7 * 86400))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "250us"),
            one("RuntimeMaxUSec", DValue::U64(250))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "250µs"),
            one("RuntimeMaxUSec", DValue::U64(250))
        );
        assert_eq!(
            ok("RuntimeMaxSec", "1M"),
            one("RuntimeMaxUSec", s(2_629_800))
        );
        assert_eq!(ok("RuntimeMaxSec", "1m"), one("RuntimeMaxUSec", s(60)));
        assert_eq!(
            ok("WatchdogSec", "infinity"),
            one("WatchdogUSec", DValue::U64(u64::MAX))
        );
        assert_eq!(ok("WatchdogSec", "0"), one("WatchdogUSec", DValue::U64(0)));
        // unit-file meaning of 0: no timeout
        assert_eq!(
            ok("TimeoutStopSec", "0"),
            one("TimeoutStopUSec", DValue::U64(u64::MAX))
        );
        assert_eq!(line("TimeoutStopSec", "0"), "TimeoutStopSec=infinity");
        assert_eq!(line("TimeoutStopSec", "30s"), "TimeoutStopSec=30000000us");
        assert_eq!(
            ok("LogRateLimitIntervalSec", "30s"),
            one("LogRateLimitIntervalUSec", s(30))
        );
        for v in [
            "30x",
            "-1s",
            "1.s",
            "s",
            "1 h h",
            "1..5s",
            "infinity s",
            "99999999999999999999s",
            "1.5.5",
        ] {
            assert!(
                err("TimeoutStopSec", v).contains("invalid time span"),
                "{v}"
            );
        }
    }

    #[test]
    fn rlimits() {
        let pair = |n: &str, hard: u64, soft: u64| {
            vec![
                (n.to_string(), DValue::U64(hard)),
                (format!("{n}Soft"), DValue::U64(soft)),
            ]
        };
        assert_eq!(
            ok("LimitNOFILE", "65536"),
            pair("LimitNOFILE", 65536, 65536)
        );
        assert_eq!(
            ok("LimitNOFILE", "1024:65536"),
            pair("LimitNOFILE", 65536, 1024)
        );
        assert_eq!(
            ok("LimitNOFILE", "infinity"),
            pair("LimitNOFILE", u64::MAX, u64::MAX)
        );
        assert_eq!(
            ok("LimitNOFILE", "512:infinity"),
            pair("LimitNOFILE", u64::MAX, 512)
        );
        assert_eq!(ok("LimitAS", "4G"), pair("LimitAS", 4 << 30, 4 << 30));
        assert_eq!(ok("LimitCORE", "0:1M"), pair("LimitCORE", 1 << 20, 0));
        assert_eq!(ok("LimitCPU", "1h"), pair("LimitCPU", 3600, 3600));
        assert_eq!(ok("LimitCPU", "1.5s"), pair("LimitCPU", 2, 2));
        assert_eq!(ok("LimitCPU", "60"), pair("LimitCPU", 60, 60));
        assert_eq!(ok("LimitRTTIME", "1000"), pair("LimitRTTIME", 1000, 1000));
        assert_eq!(
            ok("LimitRTTIME", "200ms"),
            pair("LimitRTTIME", 200_000, 200_000)
        );
        assert_eq!(ok("LimitNICE", "-5"), pair("LimitNICE", 25, 25));
        assert_eq!(ok("LimitNICE", "+19"), pair("LimitNICE", 1, 1));
        assert_eq!(ok("LimitNICE", "40"), pair("LimitNICE", 40, 40));
        assert_eq!(line("LimitNOFILE", "1024:65536"), "LimitNOFILE=1024:65536");
        assert_eq!(line("LimitNOFILE", "infinity"), "LimitNOFILE=infinity");
        assert_eq!(line("LimitNICE", "-5"), "LimitNICE=25");
        assert!(err("LimitNOFILE", "65536:1024").contains("soft limit is above the hard limit"));
        assert!(err("LimitNOFILE", "1K").contains("invalid resource limit"));
        assert!(err("LimitNOFILE", "1:2:3").contains("invalid resource limit"));
        assert!(err("LimitNOFILE", "-1").contains("invalid resource limit"));
        assert!(err("LimitNOFILE", "18446744073709551615").contains("invalid resource limit"));
        assert!(err("LimitAS", "1Q").contains("invalid resource limit"));
        assert!(err("LimitNICE", "+20").contains("nice level"));
        assert!(err("LimitNICE", "-21").contains("nice level"));
        assert!(err("LimitNICE", "41").contains("nice level"));
        assert!(err("LimitNICE", "infinity").contains("nice level"));
        assert!(err("LimitCPU", "1x").contains("invalid resource limit"));
    }

    #[test]
    fn path_lists() {
        let paths = |n: &str, l: &[&str]| {
            one(
                n,
                DValue::StrList(l.iter().map(|x| x.to_string()).collect()),
            )
        };
        assert_eq!(
            ok("ReadOnlyPaths", "/a /b"),
            paths("ReadOnlyPaths", &["/a", "/b"])
        );
        assert_eq!(
            ok("ReadOnlyPaths", "  /a   /b  "),
            paths("ReadOnlyPaths", &["/a", "/b"])
        );
        assert_eq!(
            ok("InaccessiblePaths", "-/x +/y -+/z"),
            paths("InaccessiblePaths", &["-/x", "+/y", "-+/z"])
        );
        assert_eq!(ok("ReadOnlyPaths", "/"), paths("ReadOnlyPaths", &["/"]));
        assert_eq!(
            ok("ReadOnlyPaths", r#""/a b" '/c"d' /e\\f /g\ h /100%"#),
            paths(
                "ReadOnlyPaths",
                &["/a b", "/c\"d", "/e\\f", "/g h", "/100%"]
            )
        );
        assert_eq!(
            line("ReadOnlyPaths", "/usr -/opt/x"),
            "ReadOnlyPaths=/usr -/opt/x"
        );
        assert_eq!(
            line("ReadOnlyPaths", r#""/a b" '/c"d' /e\\f /100%"#),
            r#"ReadOnlyPaths="/a b" "/c\"d" "/e\\f" /100%%"#
        );
        for v in [
            "relative/path",
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/",
            "-",
            "+-/x",
            "\"/unterminated",
            "/a\\",
            "''",
        ] {
            assert!(err("ReadOnlyPaths", v).contains("invalid path list"), "{v}");
        }
    }

    #[test]
    fn word_lists_and_filters() {
        assert_eq!(
            ok("SystemCallArchitectures", "native x86"),
            one(
                "SystemCallArchitectures",
                DValue::StrList(vec!["native".into(), "x86".into()])
            )
        );
        assert_eq!(
            ok("SupplementaryGroups", "adm 0"),
            one(
                "SupplementaryGroups",
                DValue::StrList(vec!["adm".into(), "0".into()])
            )
        );
        let filter = |allow: bool, l: &[&str]| {
            DValue::Struct(vec![
                DValue::Bool(allow),
                DValue::StrList(l.iter().map(|x| x.to_string()).collect()),
            ])
        };
        assert_eq!(
            ok("SystemCallFilter", "@system-service"),
            one("SystemCallFilter", filter(true, &["@system-service"]))
        );
        assert_eq!(
            ok("SystemCallFilter", "~@mount @swap"),
            one("SystemCallFilter", filter(false, &["@mount", "@swap"]))
        );
        assert_eq!(
            ok("SystemCallFilter", "~@privileged:EPERM"),
            one("SystemCallFilter", filter(false, &["@privileged:EPERM"]))
        );
        assert_eq!(
            line("SystemCallFilter", "~@mount  @swap"),
            "SystemCallFilter=~@mount @swap"
        );
        assert_eq!(
            ok("RestrictAddressFamilies", "AF_UNIX AF_INET"),
            one(
                "RestrictAddressFamilies",
                filter(true, &["AF_UNIX", "AF_INET"])
            )
        );
        assert_eq!(
            ok("RestrictAddressFamilies", "none"),
            one("RestrictAddressFamilies", filter(true, &[]))
        );
        assert_eq!(
            line("RestrictAddressFamilies", "none"),
            "RestrictAddressFamilies=none"
        );
        assert!(err("RestrictAddressFamilies", "~none").contains("must stand alone"));
        assert!(err("RestrictAddressFamilies", "none AF_UNIX").contains("must stand alone"));
        assert!(err("RestrictAddressFamilies", "unix").contains("invalid entry \"unix\""));
        assert!(err("SystemCallFilter", "~").contains("no entries"));
        assert!(err("SystemCallFilter", "Mount").contains("invalid entry"));
        assert!(err("SystemCallFilter", "@mount:").contains("invalid entry"));
        assert!(err("SystemCallArchitectures", "x86;rm").contains("invalid entry"));
        assert!(err("SupplementaryGroups", "-adm").contains("invalid entry"));
    }

    #[test]
    fn cpu_sets() {
        assert_eq!(
            ok("AllowedCPUs", "0"),
            one("AllowedCPUs", DValue::Bytes(vec![1]))
        );
        assert_eq!(
            ok("AllowedCPUs", "0-3,5"),
            one("AllowedCPUs", DValue::Bytes(vec![0b10_1111]))
        );
        assert_eq!(
            ok("AllowedCPUs", "0-3,5 9"),
            one("AllowedCPUs", DValue::Bytes(vec![0b10_1111, 0b10]))
        );
        assert_eq!(
            ok("AllowedCPUs", "8"),
            one("AllowedCPUs", DValue::Bytes(vec![0, 1]))
        );
        assert_eq!(line("AllowedCPUs", "3,0-2, 5 6"), "AllowedCPUs=0-3 5-6");
        for v in ["3-1", "a", "0-", "-1", "8192", ",", "1.5"] {
            assert!(err("AllowedCPUs", v).contains("invalid CPU list"), "{v}");
        }
    }

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

    #[test]
    fn signals() {
        assert_eq!(
            ok("KillSignal", "SIGINT"),
            one("KillSignal", DValue::I32(2))
        );
        assert_eq!(ok("KillSignal", "TERM"), one("KillSignal", DValue::I32(15)));
        assert_eq!(ok("KillSignal", "9"), one("KillSignal", DValue::I32(9)));
        assert_eq!(
            ok("KillSignal", "SIGRTMIN+2"),
            one("KillSignal", DValue::I32(36))
        );
        assert_eq!(
            ok("KillSignal", "RTMAX-1"),
            one("KillSignal", DValue::I32(63))
        );
        assert_eq!(line("KillSignal", "9"), "KillSignal=SIGKILL");
        assert_eq!(line("KillSignal", "36"), "KillSignal=SIGRTMIN+2");
        for v in ["0", "32", "65", "SIGFOO", "sigterm", "RTMIN+31", "RTMAX-31"] {
            assert!(err("KillSignal", v).contains("invalid signal"), "{v}");
        }
    }

    #[test]
    fn labels_devices_and_paths() {
        assert_eq!(
            ok("AppArmorProfile", "-nomad-task"),
            one(
                "AppArmorProfile",
                DValue::Struct(vec![DValue::Bool(true), s("nomad-task")])
            )
        );
        assert_eq!(
            ok("SmackProcessLabel", "web"),
            one(
                "SmackProcessLabel",
                DValue::Struct(vec![DValue::Bool(false), s("web")])
            )
        );
        assert_eq!(
            ok("SELinuxContext", "system_u:system_r:svirt_t:s0"),
            one("SELinuxContext", s("system_u:system_r:svirt_t:s0"))
        );
        assert!(
            err("SELinuxContext", "-system_u:system_r:svirt_t:s0")
                .contains("prefix cannot be passed")
        );
        assert!(err("AppArmorProfile", "a b").contains("invalid label"));
        let dev = |p: &str, a: &str| {
            one(
                "DeviceAllow",
                DValue::Array {
                    sig: "(ss)".into(),
                    items: vec![DValue::Struct(vec![s(p), s(a)])],
                },
            )
        };
        assert_eq!(ok("DeviceAllow", "/dev/null rw"), dev("/dev/null", "rw"));
        assert_eq!(ok("DeviceAllow", "/dev/fuse"), dev("/dev/fuse", "rwm"));
        assert_eq!(ok("DeviceAllow", "char-pts r"), dev("char-pts", "r"));
        assert_eq!(
            line("DeviceAllow", "/dev/fuse"),
            "DeviceAllow=/dev/fuse rwm"
        );
        for v in [
            "/dev/null rx",
            "/dev/null rr",
            "/etc/passwd r",
            "/dev/../etc r",
            "char- r",
            "/dev/a b c",
        ] {
            assert!(err("DeviceAllow", v).contains("invalid device rule"), "{v}");
        }
        assert_eq!(
            ok("RootDirectory", "/srv/root dir"),
            one("RootDirectory", s("/srv/root dir"))
        );
        assert_eq!(
            line("RootDirectory", "/srv/100%"),
            "RootDirectory=/srv/100%%"
        );
        assert!(err("RootImage", "image.raw").contains("not an absolute path"));
        assert_eq!(ok("Personality", "x86-64"), one("Personality", s("x86-64")));
        assert!(err("Personality", "amd64").contains("invalid value"));
    }

    #[test]
    fn text_is_escaped_for_unit_files() {
        assert_eq!(
            ok("Description", "web 100%"),
            one("Description", s("web 100%"))
        );
        assert_eq!(
            line("Description", "web 100% %n"),
            "Description=web 100%% %%n"
        );
        assert_eq!(
            line("Description", r#"a "b" \c ; # d"#),
            r#"Description=a "b" \c ; # d"#
        );
        assert_eq!(line("SyslogIdentifier", "  web  "), "SyslogIdentifier=web");
        assert_eq!(
            ok("Description", r"ends with two \\"),
            one("Description", s(r"ends with two \\"))
        );
        assert!(err("Description", r"ends with \").contains("cannot end with a backslash"));
        assert!(err("Description", r"ends with three \\\").contains("cannot end with a backslash"));
        assert!(err("RootDirectory", r"/srv/x\").contains("cannot end with a backslash"));
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

    #[test]
    fn policy_defaults() {
        let p = PropertyPolicy::default();
        for n in DEFAULT_ALLOWED {
            assert_eq!(p.check(n), Ok(()), "{n}");
        }
        for n in DEFAULT_DENIED {
            assert_eq!(
                p.check(n),
                Err(PropertyError::Denied {
                    name: n.to_string()
                }),
                "{n}"
            );
        }
        for n in DRIVER_OWNED {
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
        assert_eq!(p.allowed_names().len(), DEFAULT_ALLOWED.len());
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
}
