//! Scalars: booleans, words from a fixed list, integers, weights, file modes and free text.

use super::{Res, Typed, fail};
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `b`: yes/no/true/false/on/off/1/0 (and y/n/t/f), any case.
pub(super) fn boolean(def: &PropertyDef, v: &str) -> Res<Typed> {
    let b = parse_bool(v).ok_or(None)?;
    Ok(Typed::one(def, DValue::Bool(b), yes_no(b).into()))
}

/// `s`: one of `values`.
pub(super) fn enumeration(
    def: &PropertyDef,
    values: &'static [&'static str],
    v: &str,
) -> Res<Typed> {
    let s = enum_value(values, v)?;
    Ok(Typed::one(def, DValue::Str(s.into()), s.into()))
}

/// `s`: a boolean (sent as `yes`/`no`) or one of `values`.
pub(super) fn bool_or_enum(
    def: &PropertyDef,
    values: &'static [&'static str],
    v: &str,
) -> Res<Typed> {
    let s = match parse_bool(v) {
        Some(b) => yes_no(b),
        None => enum_value(values, v)
            .map_err(|_| Some(format!("expected a boolean, {}", one_of(values))))?,
    };
    Ok(Typed::one(def, DValue::Str(s.into()), s.into()))
}

/// `i`: one of the names in `values`, or its number.
pub(super) fn named_i32(
    def: &PropertyDef,
    values: &'static [(&'static str, i32)],
    v: &str,
) -> Res<Typed> {
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
    Ok(Typed::one(def, DValue::I32(n), name.into()))
}

/// `s`: free text, escaped for a unit file.
pub(super) fn text(def: &PropertyDef, v: &str) -> Res<Typed> {
    Ok(Typed::one(def, DValue::Str(v.into()), escape_text(v)?))
}

/// `i`: a decimal integer in `min..=max`.
pub(super) fn int32(def: &PropertyDef, min: i32, max: i32, v: &str) -> Res<Typed> {
    let n = parse_i64(v).ok_or(None)?;
    if n < i64::from(min) || n > i64::from(max) {
        return fail(format!("must be between {min} and {max}"));
    }
    let n = i32::try_from(n).map_err(|_| None)?;
    Ok(Typed::one(def, DValue::I32(n), n.to_string()))
}

/// `u`: a decimal integer in `min..=max`.
pub(super) fn uint32(def: &PropertyDef, min: u32, max: u32, v: &str) -> Res<Typed> {
    let n = parse_u64(v).ok_or(None)?;
    if n < u64::from(min) || n > u64::from(max) {
        return fail(format!("must be between {min} and {max}"));
    }
    let n = u32::try_from(n).map_err(|_| None)?;
    Ok(Typed::one(def, DValue::U32(n), n.to_string()))
}

/// `t`: a cgroup weight in `min..=max`; `idle` → 0 where `allow_idle`.
pub(super) fn weight(
    def: &PropertyDef,
    min: u64,
    max: u64,
    allow_idle: bool,
    v: &str,
) -> Res<Typed> {
    if allow_idle && v == "idle" {
        return Ok(Typed::one(def, DValue::U64(0), "idle".into()));
    }
    let n = parse_u64(v).ok_or(None)?;
    if n < min || n > max {
        return fail(format!("must be between {min} and {max}"));
    }
    Ok(Typed::one(def, DValue::U64(n), n.to_string()))
}

/// `u`: an octal file mode.
pub(super) fn umask(def: &PropertyDef, v: &str) -> Res<Typed> {
    if v.is_empty() || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return fail("expected an octal mode such as 0027");
    }
    let n = u32::from_str_radix(v, 8).map_err(|_| None)?;
    if n > 0o7777 {
        return fail("must be at most 07777");
    }
    Ok(Typed::one(def, DValue::U32(n), format!("{n:04o}")))
}

pub(super) fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub(super) fn one_of(values: &[&str]) -> String {
    format!("expected one of {}", values.join(", "))
}

fn enum_value(values: &[&'static str], v: &str) -> Res<&'static str> {
    values
        .iter()
        .copied()
        .find(|x| *x == v)
        .ok_or_else(|| Some(one_of(values)))
}

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

pub(super) fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

pub(super) fn parse_i64(v: &str) -> Option<i64> {
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
pub(super) fn escape_text(v: &str) -> Res<String> {
    let trailing = v.bytes().rev().take_while(|b| *b == b'\\').count();
    if trailing % 2 == 1 {
        return fail("a value cannot end with a backslash");
    }
    Ok(v.replace('%', "%%"))
}
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

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
}
