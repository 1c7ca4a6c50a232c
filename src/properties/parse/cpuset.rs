//! CPU lists such as `0-3,5` as systemd's D-Bus bitmask.

use std::collections::BTreeSet;

use super::scalar::parse_u64;
use super::{Res, Typed, fail};
use crate::properties::error::Q;
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `ay`: bit `n % 8` of byte `n / 8` is CPU `n`.
pub(super) fn cpu_set(def: &PropertyDef, v: &str) -> Res<Typed> {
    let cpus = parse_cpu_set(v)?;
    Ok(Typed::one(
        def,
        DValue::Bytes(cpu_bytes(&cpus)),
        cpu_text(&cpus),
    ))
}

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
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

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
}
