//! Time spans.

use super::{Res, Typed};
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `t`: a time span (bare number = seconds) or `infinity`; the D-Bus name ends in `USec`.
/// Where `zero_is_infinity`, `0` means "no timeout" as in a unit file and is sent as infinity.
pub(super) fn time_span(def: &PropertyDef, zero_is_infinity: bool, v: &str) -> Res<Typed> {
    let mut usec = parse_time(v, USEC_PER_SEC).ok_or_else(|| Some(TIME_HINT.to_string()))?;
    if zero_is_infinity && usec == 0 {
        usec = u64::MAX;
    }
    Ok(Typed::one(def, DValue::U64(usec), usec_text(usec)))
}

pub(super) const USEC_PER_SEC: u64 = 1_000_000;
const TIME_HINT: &str =
    "expected a time span such as 30s, 5min, 1h 30s, 100ms or infinity (a bare number is seconds)";

/// systemd's `parse_time`: `infinity`, or a sum of `N[.frac][unit]` (bare number = default unit).
pub(super) fn parse_time(t: &str, default_unit: u64) -> Option<u64> {
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
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

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
}
