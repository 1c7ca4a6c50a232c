//! Why a property was refused. One enum for the whole catalog; messages are lowercase, one line,
//! and name the property.

use std::fmt;

/// Why a property was refused. Messages are lowercase and name the property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// The name is not `[A-Za-z0-9]+`.
    #[error("property name {} is invalid: names are ASCII letters and digits only", Q(.name))]
    InvalidName { name: String },
    /// The driver sets this itself (`DRIVER_OWNED`, or a table entry of class `DriverOwned`).
    #[error("property {} is owned by the driver", Q(.name))]
    DriverOwned { name: String },
    /// Not in the table; `suggestion` is a case-insensitive match, if any.
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
    /// The running systemd is older than the version that added this property.
    #[error("property {} needs systemd {since} or newer; the target runs systemd {running}", Q(.name))]
    TooNew {
        name: String,
        since: u32,
        running: u32,
    },
    /// A time span longer than the operator allows (`max_stop_timeout`, `start_timeout`).
    #[error("property {}: {} is longer than the plugin's {key} ({cap})", Q(.name), Q(.value))]
    AboveCap {
        name: String,
        value: String,
        key: &'static str,
        cap: String,
    },
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
pub(crate) struct Q<'a>(pub(crate) &'a str);

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
