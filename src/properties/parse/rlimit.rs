//! Resource limits: `value` or `soft:hard`, each spelled as the limit's [`RlimitKind`] says.

use super::scalar::parse_u64;
use super::size::parse_size;
use super::time::{USEC_PER_SEC, parse_time};
use super::{Res, Typed, fail};
use crate::properties::kind::RlimitKind;
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `t` + `<Name>Soft` `t`.
pub(super) fn rlimit(def: &PropertyDef, k: RlimitKind, v: &str) -> Res<Typed> {
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
    Ok(Typed {
        dbus: vec![
            (def.dbus.to_string(), DValue::U64(hard)),
            (format!("{}Soft", def.dbus), DValue::U64(soft)),
        ],
        text,
    })
}

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

#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

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
}
