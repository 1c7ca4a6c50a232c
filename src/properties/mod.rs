//! The property catalog: job `properties` (unit-file spelling, string values) typed into D-Bus
//! values for `StartTransientUnit` or written as escaped drop-in lines for unit mode, and the
//! operator's property policy. Pure, and below `config` (which checks the operator's lists
//! against it) and `unit` (which plans with it); it depends only on `vocab`.
//!
//! Where things are:
//!
//! * `table.rs` — one line per property: name, kind, security class, first systemd version,
//!   example. **Adding a property is adding a line there.**
//! * `kind.rs` — the value syntaxes ([`Kind`]); `parse/` — one parser per syntax, each file with
//!   its own tests; `parse/mod.rs` maps a kind to its parser.
//! * `policy.rs` — [`PropertyPolicy`], [`DRIVER_OWNED`], [`check_version`]; `sandbox.rs` — the
//!   strict sandbox every transient task starts from ([`SANDBOX`], [`strictness`]).
//! * `error.rs` — [`PropertyError`]; `tests.rs` — checks over the whole table.
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
//! * **Policy** ([`PropertyPolicy`]): a name must be allowed (the table's [`Class::Allowed`]
//!   names ∪ the operator's `allowed_properties`) and not denied ((the table's [`Class::Denied`]
//!   names ∪ the operator's `denied_properties`) minus the operator's `allowed_properties`).
//!   Driver-owned names are refused whatever the operator says. The table also types a few
//!   driver-owned properties (`CPUWeight`, `AllowedCPUs`) so the planner can use [`to_dbus`] for
//!   Nomad's own resources: `to_dbus`/`dropin_line` only type, they never apply the policy —
//!   call [`PropertyPolicy::check`] on every job-supplied name first.
//! * **Versions**: each table line says which systemd first has the property;
//!   [`check_version`] refuses it, by name, on an older one.
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

mod error;
mod kind;
mod parse;
mod policy;
mod sandbox;
mod table;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use error::PropertyError;
pub use kind::{Kind, RlimitKind, WordKind};
pub use policy::{DRIVER_OWNED, PropertyPolicy, check_version, is_driver_owned};
pub use sandbox::{SANDBOX, strictness};
pub use table::{ANY, Class, PROPERTIES, PropertyDef, Section, lookup, names_of};

use crate::vocab::DValue;

/// unit-file name + value → (D-Bus name, typed value) pairs (some expand to two, e.g.
/// `LimitNOFILE` → `LimitNOFILE` + `LimitNOFILESoft`, `CPUQuota` → `CPUQuotaPerSecUSec`,
/// `MemoryMax=50%` → `MemoryMaxScale`). Types only: apply [`PropertyPolicy::check`] first.
pub fn to_dbus(name: &str, value: &str) -> Result<Vec<(String, DValue)>, PropertyError> {
    let def = known(name)?;
    Ok(parse::parse(def, value)?.dbus)
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
    Ok(parse::parse(def, value)?.text)
}

pub(crate) fn valid_name(name: &str) -> Result<(), PropertyError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PropertyError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

pub(crate) fn known(name: &str) -> Result<&'static PropertyDef, PropertyError> {
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
