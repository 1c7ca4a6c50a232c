//! Durations in plugin config keys, spelled as Nomad's own (Go `time.ParseDuration`: a
//! sequence of decimal numbers, each with a unit `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, e.g.
//! `"30s"`, `"5m"`, `"1h30m"`, `"1.5s"`; a bare `"0"` is zero). Negative durations are not
//! accepted: every key that takes one is a timeout.

use std::time::Duration;

/// Parses a Go duration; `None` when it is not one (or is negative or overflows).
pub fn parse(text: &str) -> Option<Duration> {
    let s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        // the longest unit that matches ("ms" before "m")
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| after.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        rest = &after[unit.len()..];
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut nanos = whole.checked_mul(*scale)?;
        let mut place = *scale;
        for d in frac.bytes() {
            place /= 10;
            nanos = nanos.checked_add(u128::from(d - b'0') * place)?;
        }
        total = total.checked_add(nanos)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    // below 1e9, so it fits
    let sub = (total % 1_000_000_000) as u32;
    Some(Duration::new(secs, sub))
}

/// The shortest Go spelling of a whole number of the largest unit that divides `d`
/// (`300s` → `"5m"`, `90s` → `"90s"`, `1.5s` → `"1500ms"`); [`parse`] reads it back exactly.
pub fn format(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    for (unit, scale) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if n.is_multiple_of(scale) {
            return format!("{}{unit}", n / scale);
        }
    }
    format!("{n}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings_parse() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("0", Duration::ZERO),
            ("30s", s(30)),
            ("5m", s(300)),
            ("2m", s(120)),
            ("1h30m", s(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("300ms", Duration::from_millis(300)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h0m0s", s(3600)),
            ("+3s", s(3)),
        ] {
            assert_eq!(parse(text), Some(want), "{text}");
        }
    }

    #[test]
    fn non_go_spellings_are_refused() {
        for text in [
            "",
            "5",
            "-5s",
            "5 m",
            "5min",
            "infinity",
            "s",
            ".s",
            "1.s5",
            "5d",
            "1e3s",
            "5m ",
            "99999999999999999999h",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn format_reads_back() {
        for d in [
            Duration::from_secs(300),
            Duration::from_secs(120),
            Duration::from_secs(90),
            Duration::from_secs(5400),
            Duration::from_millis(1500),
            Duration::from_nanos(1),
            Duration::ZERO,
        ] {
            assert_eq!(parse(&format(d)), Some(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
