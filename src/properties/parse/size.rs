//! Sizes (base 1024), percentages, task limits and CPU quotas.

use super::scalar::parse_u64;
use super::{Res, Typed, fail};
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `t`: a size (base 1024) or `infinity`; a percentage goes to `<Name>Scale` (`u`).
pub(super) fn memory(def: &PropertyDef, v: &str) -> Res<Typed> {
    if let Some(t) = infinity_or_percentage(def, v) {
        return t;
    }
    let n = parse_size(v).ok_or_else(|| Some(SIZE_HINT.to_string()))?;
    Ok(Typed::one(def, DValue::U64(n), n.to_string()))
}

/// `t`: a count or `infinity`; a percentage goes to `TasksMaxScale` (`u`).
pub(super) fn tasks_max(def: &PropertyDef, v: &str) -> Res<Typed> {
    if let Some(t) = infinity_or_percentage(def, v) {
        return t;
    }
    let n =
        parse_u64(v).ok_or_else(|| Some("expected a number, a percentage or infinity".into()))?;
    if n == 0 || n == u64::MAX {
        return fail("must be at least 1");
    }
    Ok(Typed::one(def, DValue::U64(n), n.to_string()))
}

/// What sizes and counts share: `infinity` (`t` u64::MAX), or a percentage above 0% sent as
/// `<Name>Scale` (`u`, 100% = 2^32-1); `None` for anything else.
fn infinity_or_percentage(def: &PropertyDef, v: &str) -> Option<Res<Typed>> {
    if v == "infinity" {
        return Some(Ok(Typed::one(
            def,
            DValue::U64(u64::MAX),
            "infinity".into(),
        )));
    }
    if !is_percentage(v) {
        return None;
    }
    Some(parse_permyriad(v).and_then(|p| {
        if p == 0 {
            return fail("a percentage must be above 0%");
        }
        Ok(Typed {
            dbus: vec![(
                format!("{}Scale", def.dbus),
                DValue::U32(scale_from_permyriad(p)),
            )],
            text: permyriad_text(p),
        })
    }))
}

/// `CPUQuota=N%` → `CPUQuotaPerSecUSec` (`t`, µs per second).
pub(super) fn cpu_quota(def: &PropertyDef, v: &str) -> Res<Typed> {
    if !v.ends_with('%') && !v.ends_with('‰') && !v.ends_with('‱') {
        return fail("expected a percentage such as 50% (100% = one CPU)");
    }
    let p = parse_permyriad_unbounded(v)?;
    if p == 0 {
        return fail("must be above 0%");
    }
    let usec = u64::from(p) * 100; // p/10000 of 1_000_000 µs per second
    Ok(Typed::one(def, DValue::U64(usec), permyriad_text(p)))
}

pub(crate) const SIZE_HINT: &str = "expected bytes with an optional K, M, G, T, P or E suffix (base 1024), a percentage or infinity";

/// systemd's `parse_size(t, 1024)`: `1G`, `1.5G`, `1G 512M`, bare bytes.
pub(super) fn parse_size(t: &str) -> Option<u64> {
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

// percentages

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

#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

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
}
