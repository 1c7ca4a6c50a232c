//! The value parsers. [`parse`] refuses control characters and empty values for every property,
//! trims surrounding spaces, then hands the value to the parser its [`Kind`] names. Each parser
//! returns the typed D-Bus value(s) *and* the canonical unit-file text of the same parsed value,
//! so a transient unit and a drop-in always mean the same thing.
//!
//! A parser is `fn(def, [the kind's parameters,] value) -> Res<Typed>`; it fails with
//! `Err(Some(reason))` (or `Err(None)` when the kind's name says enough), and [`parse`] turns that
//! into a [`PropertyError::InvalidValue`] naming the property.

mod caps;
mod cpuset;
mod label;
mod rlimit;
mod scalar;
mod signal;
mod size;
mod time;
mod words;

pub(crate) use scalar::parse_bool;
#[cfg(test)]
pub(crate) use size::SIZE_HINT;

use super::error::PropertyError;
use super::kind::Kind;
use super::table::PropertyDef;
use crate::vocab::DValue;

/// A parsed value in both spellings.
pub(crate) struct Typed {
    /// (D-Bus name, value) pairs for `StartTransientUnit`; some kinds expand to two.
    pub(crate) dbus: Vec<(String, DValue)>,
    /// The canonical unit-file text (what follows `Name=` in a drop-in).
    pub(crate) text: String,
}

impl Typed {
    /// One D-Bus value under the property's own D-Bus name.
    fn one(def: &PropertyDef, v: DValue, text: String) -> Self {
        Typed {
            dbus: vec![(def.dbus.to_string(), v)],
            text,
        }
    }
}

/// A parser's result: `Err(Some(reason))` or `Err(None)` (no more to say than the kind's name).
type Res<T> = Result<T, Option<String>>;

fn fail<T>(reason: impl Into<String>) -> Res<T> {
    Err(Some(reason.into()))
}

/// C0 controls (TAB, CR, LF, NUL, …), DEL and C1 controls.
fn is_control(c: char) -> bool {
    let u = u32::from(c);
    u < 0x20 || (0x7f..=0x9f).contains(&u)
}

/// Checks what every value must satisfy, then runs the property's parser.
pub(crate) fn parse(def: &'static PropertyDef, raw: &str) -> Result<Typed, PropertyError> {
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
    by_kind(def, v).map_err(|reason| PropertyError::InvalidValue {
        name: def.name.to_string(),
        what: def.kind.what(),
        value: v.to_string(),
        reason,
    })
}

/// The one place that maps a [`Kind`] to its parser.
fn by_kind(def: &'static PropertyDef, v: &str) -> Res<Typed> {
    match def.kind {
        Kind::Bool => scalar::boolean(def, v),
        Kind::Enum(values) => scalar::enumeration(def, values, v),
        Kind::BoolOrEnum(values) => scalar::bool_or_enum(def, values, v),
        Kind::EnumI32(values) => scalar::named_i32(def, values, v),
        Kind::Text => scalar::text(def, v),
        Kind::I32 { min, max } => scalar::int32(def, min, max, v),
        Kind::U32 { min, max } => scalar::uint32(def, min, max, v),
        Kind::Weight {
            min,
            max,
            allow_idle,
        } => scalar::weight(def, min, max, allow_idle, v),
        Kind::Mode => scalar::umask(def, v),
        Kind::Memory => size::memory(def, v),
        Kind::TasksMax => size::tasks_max(def, v),
        Kind::CpuQuota => size::cpu_quota(def, v),
        Kind::TimeSpan { zero_is_infinity } => time::time_span(def, zero_is_infinity, v),
        Kind::Rlimit(k) => rlimit::rlimit(def, k, v),
        Kind::PathList => words::path_list(def, v),
        Kind::Words(k) => words::words(def, k, v),
        Kind::Filter(k) => words::filter(def, k, v),
        Kind::AbsPath => words::abs_path(def, v),
        Kind::CpuSet => cpuset::cpu_set(def, v),
        Kind::Namespaces => caps::namespaces(def, v),
        Kind::Capabilities => caps::capabilities(def, v),
        Kind::Signal => signal::signal(def, v),
        Kind::Label | Kind::LabelStr => label::label(def, v),
        Kind::DeviceAllow => label::device_allow(def, v),
    }
}
