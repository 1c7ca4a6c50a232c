//! Helpers shared by the catalog's tests: call a property by name and look at both spellings.

use super::kind::Kind;
use super::{dropin_line, lookup, to_dbus};
use crate::vocab::DValue;

pub(crate) fn s(x: &str) -> DValue {
    DValue::Str(x.into())
}

pub(crate) fn one(name: &str, v: DValue) -> Vec<(String, DValue)> {
    vec![(name.to_string(), v)]
}

pub(crate) fn ok(name: &str, value: &str) -> Vec<(String, DValue)> {
    to_dbus(name, value).unwrap_or_else(|e| panic!("{name}={value:?}: {e}"))
}

pub(crate) fn line(name: &str, value: &str) -> String {
    dropin_line(name, value).unwrap_or_else(|e| panic!("{name}={value:?}: {e}"))
}

pub(crate) fn err(name: &str, value: &str) -> String {
    let e = to_dbus(name, value).expect_err(&format!("{name}={value:?} should be refused"));
    let e2 = dropin_line(name, value).expect_err("dropin_line must refuse what to_dbus refuses");
    assert_eq!(e, e2);
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one-line message: {msg:?}");
    msg
}

/// What systemd reads back from a drop-in value: `%%` is a literal `%`.
pub(crate) fn reparse(name: &str, value: &str) -> Vec<(String, DValue)> {
    let l = line(name, value);
    let text = l.strip_prefix(&format!("{name}=")).expect("Name= prefix");
    assert!(!text.contains(['\n', '\r', '\0']));
    let unprintf = text.replace("%%", "%");
    match lookup(name).map(|d| d.kind) {
        // quoted words: our own parser reads them like systemd does, `%%` included
        Some(Kind::PathList) => to_dbus(name, text).map(|mut v| {
            for (_, d) in &mut v {
                if let DValue::StrList(l) = d {
                    l.iter_mut().for_each(|w| *w = w.replace("%%", "%"));
                }
            }
            v
        }),
        _ => to_dbus(name, &unprintf),
    }
    .unwrap_or_else(|e| panic!("{name}: drop-in text {text:?} does not parse back: {e}"))
}

pub(crate) use super::{PropertyError, PropertyPolicy, dropin_value};
