//! Security labels and device rules.

use super::words::check_path;
use super::{Res, Typed, fail};
use crate::properties::kind::Kind;
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `(bs)` (or `s` for [`Kind::LabelStr`]): a security label, optionally `-`-prefixed.
pub(super) fn label(def: &PropertyDef, v: &str) -> Res<Typed> {
    let (ignore, label) = match v.strip_prefix('-') {
        Some(l) => (true, l),
        None => (false, v),
    };
    if label.is_empty()
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/@+=,^*-".contains(&b))
    {
        return fail("labels are letters, digits and _ . : / @ + = , ^ * -");
    }
    let value = if def.kind == Kind::LabelStr {
        if ignore {
            return fail(
                "the \"-\" prefix cannot be passed to systemd over D-Bus for this property",
            );
        }
        DValue::Str(v.into())
    } else {
        DValue::Struct(vec![DValue::Bool(ignore), DValue::Str(label.into())])
    };
    Ok(Typed::one(def, value, v.into()))
}

/// `a(ss)`: `DEVICE [rwm]`.
pub(super) fn device_allow(def: &PropertyDef, v: &str) -> Res<Typed> {
    let (dev, rwm) = match v.split_once(' ') {
        Some((d, r)) => (d, r.trim_matches(' ')),
        None => (v, "rwm"),
    };
    check_device(dev)?;
    let mut seen = String::new();
    for c in rwm.chars() {
        if !"rwm".contains(c) || seen.contains(c) {
            return fail("access must be a combination of r, w and m");
        }
        seen.push(c);
    }
    if seen.is_empty() {
        seen.push_str("rwm");
    }
    let item = DValue::Struct(vec![DValue::Str(dev.into()), DValue::Str(seen.clone())]);
    Ok(Typed::one(
        def,
        DValue::Array {
            sig: "(ss)".into(),
            items: vec![item],
        },
        format!("{dev} {seen}"),
    ))
}

fn check_device(d: &str) -> Res<()> {
    let ok = if let Some(rest) = d.strip_prefix("/dev/") {
        check_path(d).is_ok()
            && !rest.is_empty()
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_.:+-".contains(&b))
    } else if let Some(rest) = d.strip_prefix("char-").or_else(|| d.strip_prefix("block-")) {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.*+-".contains(&b))
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        fail("expected /dev/… or char-…/block-… followed by r, w, m")
    }
}
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

    #[test]
    fn labels_devices_and_paths() {
        assert_eq!(
            ok("AppArmorProfile", "-nomad-task"),
            one(
                "AppArmorProfile",
                DValue::Struct(vec![DValue::Bool(true), s("nomad-task")])
            )
        );
        assert_eq!(
            ok("SmackProcessLabel", "web"),
            one(
                "SmackProcessLabel",
                DValue::Struct(vec![DValue::Bool(false), s("web")])
            )
        );
        assert_eq!(
            ok("SELinuxContext", "system_u:system_r:svirt_t:s0"),
            one("SELinuxContext", s("system_u:system_r:svirt_t:s0"))
        );
        assert!(
            err("SELinuxContext", "-system_u:system_r:svirt_t:s0")
                .contains("prefix cannot be passed")
        );
        assert!(err("AppArmorProfile", "a b").contains("invalid label"));
        let dev = |p: &str, a: &str| {
            one(
                "DeviceAllow",
                DValue::Array {
                    sig: "(ss)".into(),
                    items: vec![DValue::Struct(vec![s(p), s(a)])],
                },
            )
        };
        assert_eq!(ok("DeviceAllow", "/dev/null rw"), dev("/dev/null", "rw"));
        assert_eq!(ok("DeviceAllow", "/dev/fuse"), dev("/dev/fuse", "rwm"));
        assert_eq!(ok("DeviceAllow", "char-pts r"), dev("char-pts", "r"));
        assert_eq!(
            line("DeviceAllow", "/dev/fuse"),
            "DeviceAllow=/dev/fuse rwm"
        );
        for v in [
            "/dev/null rx",
            "/dev/null rr",
            "/etc/passwd r",
            "/dev/../etc r",
            "char- r",
            "/dev/a b c",
        ] {
            assert!(err("DeviceAllow", v).contains("invalid device rule"), "{v}");
        }
        assert_eq!(
            ok("RootDirectory", "/srv/root dir"),
            one("RootDirectory", s("/srv/root dir"))
        );
        assert_eq!(
            line("RootDirectory", "/srv/100%"),
            "RootDirectory=/srv/100%%"
        );
        assert!(err("RootImage", "image.raw").contains("not an absolute path"));
        assert_eq!(ok("Personality", "x86-64"), one("Personality", s("x86-64")));
        assert!(err("Personality", "amd64").contains("invalid value"));
    }
}
