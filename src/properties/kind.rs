//! The value syntaxes a property can have ([`Kind`]) and the D-Bus type each becomes. A kind is
//! a table column: it names the parser in `parse/` that reads the value.

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

impl Kind {
    /// What a value of this kind is called in error messages ("invalid size \"1Q\"").
    pub fn what(self) -> &'static str {
        match self {
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
}
