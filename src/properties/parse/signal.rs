//! Signals by name or number.

use super::scalar::parse_u64;
use super::{Res, Typed};
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `i`: a signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number.
pub(super) fn signal(def: &PropertyDef, v: &str) -> Res<Typed> {
    let (n, name) = parse_signal(v)
        .ok_or_else(|| Some("expected a signal name such as SIGTERM or a number 1..64".into()))?;
    Ok(Typed::one(def, DValue::I32(n), name))
}

/// Linux's generic signal numbers 1..=31 (x86, arm, riscv, …).
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// A signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`, `RTMAX-1`) or number → (number, canonical name).
fn parse_signal(v: &str) -> Option<(i32, String)> {
    let name_of = |n: i32| -> String {
        match usize::try_from(n - 1).ok().and_then(|i| SIGNALS.get(i)) {
            Some(s) => format!("SIG{s}"),
            None => format!("SIGRTMIN+{}", n - SIGRTMIN),
        }
    };
    if let Some(n) = parse_u64(v) {
        let n = i32::try_from(n).ok()?;
        let valid = (1..=31).contains(&n) || (SIGRTMIN..=SIGRTMAX).contains(&n);
        return valid.then(|| (n, name_of(n)));
    }
    let bare = v.strip_prefix("SIG").unwrap_or(v);
    if let Some(i) = SIGNALS.iter().position(|s| *s == bare) {
        let n = i32::try_from(i).ok()? + 1;
        return Some((n, name_of(n)));
    }
    let n = if bare == "RTMIN" {
        SIGRTMIN
    } else if bare == "RTMAX" {
        SIGRTMAX
    } else if let Some(k) = bare.strip_prefix("RTMIN+") {
        SIGRTMIN + i32::try_from(parse_u64(k)?).ok()?
    } else if let Some(k) = bare.strip_prefix("RTMAX-") {
        SIGRTMAX - i32::try_from(parse_u64(k)?).ok()?
    } else {
        return None;
    };
    (SIGRTMIN..=SIGRTMAX).contains(&n).then(|| (n, name_of(n)))
}
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

    #[test]
    fn signals() {
        assert_eq!(
            ok("KillSignal", "SIGINT"),
            one("KillSignal", DValue::I32(2))
        );
        assert_eq!(ok("KillSignal", "TERM"), one("KillSignal", DValue::I32(15)));
        assert_eq!(ok("KillSignal", "9"), one("KillSignal", DValue::I32(9)));
        assert_eq!(
            ok("KillSignal", "SIGRTMIN+2"),
            one("KillSignal", DValue::I32(36))
        );
        assert_eq!(
            ok("KillSignal", "RTMAX-1"),
            one("KillSignal", DValue::I32(63))
        );
        assert_eq!(line("KillSignal", "9"), "KillSignal=SIGKILL");
        assert_eq!(line("KillSignal", "36"), "KillSignal=SIGRTMIN+2");
        for v in ["0", "32", "65", "SIGFOO", "sigterm", "RTMIN+31", "RTMAX-31"] {
            assert!(err("KillSignal", v).contains("invalid signal"), "{v}");
        }
    }
}
