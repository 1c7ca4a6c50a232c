//! Word lists (unit-file quoting), path lists, filters and single absolute paths.

use super::scalar::escape_text;
use super::{Res, Typed, fail};
use crate::properties::error::Q;
use crate::properties::kind::WordKind;
use crate::properties::table::PropertyDef;
use crate::vocab::DValue;

/// `as`: absolute paths, each optionally prefixed by `-` (ignore if missing) then `+`
/// (relative to the root directory).
pub(super) fn path_list(def: &PropertyDef, v: &str) -> Res<Typed> {
    let words = split_words(v)?;
    if words.is_empty() {
        return fail("no paths");
    }
    for w in &words {
        let p = w.strip_prefix('-').unwrap_or(w);
        let p = p.strip_prefix('+').unwrap_or(p);
        check_path(p)?;
    }
    let text = words
        .iter()
        .map(|w| quote_word(w))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Typed::one(def, DValue::StrList(words), text))
}

/// `as`: space-separated words of kind `k`.
pub(super) fn words(def: &PropertyDef, k: WordKind, v: &str) -> Res<Typed> {
    let words = split_words(v)?;
    if words.is_empty() {
        return fail("no entries");
    }
    for w in &words {
        check_word(k, w)?;
    }
    let text = words.join(" ");
    Ok(Typed::one(def, DValue::StrList(words), text))
}

/// `(bas)`: an optional leading `~` (deny list instead of allow list), then words.
pub(super) fn filter(def: &PropertyDef, k: WordKind, v: &str) -> Res<Typed> {
    let (allow, rest) = match v.strip_prefix('~') {
        Some(r) => (false, r),
        None => (true, v),
    };
    let mut words = split_words(rest)?;
    if words.is_empty() {
        return fail("no entries");
    }
    for w in &words {
        check_word(k, w)?;
    }
    let mut text = if allow {
        String::new()
    } else {
        "~".to_string()
    };
    text.push_str(&words.join(" "));
    if k == WordKind::AddressFamily && words.iter().any(|w| w == "none") {
        // systemd's `RestrictAddressFamilies=none`: an empty allow list over D-Bus.
        if words.len() != 1 || !allow {
            return fail("\"none\" must stand alone");
        }
        words.clear();
    }
    Ok(Typed::one(
        def,
        DValue::Struct(vec![DValue::Bool(allow), DValue::StrList(words)]),
        text,
    ))
}

/// `s`: one absolute, normalized path.
pub(super) fn abs_path(def: &PropertyDef, v: &str) -> Res<Typed> {
    check_path(v)?;
    Ok(Typed::one(def, DValue::Str(v.into()), escape_text(v)?))
}

/// systemd's `extract_first_word(…, EXTRACT_UNQUOTE)` over a whole value: words separated by
/// spaces; `'…'` and `"…"` quote; a backslash takes the next character literally.
pub(super) fn split_words(v: &str) -> Res<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut w = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (_, '\\') => match chars.next() {
                    Some(n) => w.push(n),
                    None => return fail("a value cannot end with a backslash"),
                },
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => w.push(c),
                (None, ' ') => break,
                (None, '\'' | '"') => quote = Some(c),
                (None, c) => w.push(c),
            }
        }
        if quote.is_some() {
            return fail("unterminated quote");
        }
        words.push(w);
    }
}

/// One word for a unit file, read back by `extract_first_word(EXTRACT_UNQUOTE)` and the specifier
/// expansion as exactly `w`.
fn quote_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.+-:,@=%".contains(&b));
    let w = w.replace('%', "%%");
    if plain {
        return w;
    }
    let mut s = String::with_capacity(w.len() + 2);
    s.push('"');
    for c in w.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Absolute and normalized, as systemd requires over D-Bus (`path_is_normalized`).
pub(super) fn check_path(p: &str) -> Res<()> {
    if !p.starts_with('/') {
        return fail(format!("{} is not an absolute path", Q(p)));
    }
    if p.len() > 4096 {
        return fail("path too long");
    }
    if p != "/"
        && (p.ends_with('/')
            || p.split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return fail(format!(
            "{} is not a normalized path (no //, /./, /../ or trailing /)",
            Q(p)
        ));
    }
    Ok(())
}

fn check_word(k: WordKind, w: &str) -> Res<()> {
    let ok = match k {
        WordKind::Arch => {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        }
        WordKind::Group => {
            !w.is_empty()
                && w.len() <= 32
                && !w.starts_with('-')
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        }
        WordKind::Syscall => {
            let (name, errno) = match w.split_once(':') {
                Some((n, e)) => (n, Some(e)),
                None => (w, None),
            };
            let name = name.strip_prefix('@').unwrap_or(name);
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                && errno
                    .is_none_or(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        }
        WordKind::AddressFamily => {
            w == "none"
                || w.strip_prefix("AF_")
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        }
    };
    if ok {
        Ok(())
    } else {
        fail(format!("invalid entry {}", Q(w)))
    }
}
#[cfg(test)]
mod tests {
    use crate::properties::test_support::*;
    use crate::vocab::DValue;

    #[test]
    fn path_lists() {
        let paths = |n: &str, l: &[&str]| {
            one(
                n,
                DValue::StrList(l.iter().map(|x| x.to_string()).collect()),
            )
        };
        assert_eq!(
            ok("ReadOnlyPaths", "/a /b"),
            paths("ReadOnlyPaths", &["/a", "/b"])
        );
        assert_eq!(
            ok("ReadOnlyPaths", "  /a   /b  "),
            paths("ReadOnlyPaths", &["/a", "/b"])
        );
        assert_eq!(
            ok("InaccessiblePaths", "-/x +/y -+/z"),
            paths("InaccessiblePaths", &["-/x", "+/y", "-+/z"])
        );
        assert_eq!(ok("ReadOnlyPaths", "/"), paths("ReadOnlyPaths", &["/"]));
        assert_eq!(
            ok("ReadOnlyPaths", r#""/a b" '/c"d' /e\\f /g\ h /100%"#),
            paths(
                "ReadOnlyPaths",
                &["/a b", "/c\"d", "/e\\f", "/g h", "/100%"]
            )
        );
        assert_eq!(
            line("ReadOnlyPaths", "/usr -/opt/x"),
            "ReadOnlyPaths=/usr -/opt/x"
        );
        assert_eq!(
            line("ReadOnlyPaths", r#""/a b" '/c"d' /e\\f /100%"#),
            r#"ReadOnlyPaths="/a b" "/c\"d" "/e\\f" /100%%"#
        );
        for v in [
            "relative/path",
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/",
            "-",
            "+-/x",
            "\"/unterminated",
            "/a\\",
            "''",
        ] {
            assert!(err("ReadOnlyPaths", v).contains("invalid path list"), "{v}");
        }
    }

    #[test]
    fn word_lists_and_filters() {
        assert_eq!(
            ok("SystemCallArchitectures", "native x86"),
            one(
                "SystemCallArchitectures",
                DValue::StrList(vec!["native".into(), "x86".into()])
            )
        );
        assert_eq!(
            ok("SupplementaryGroups", "adm 0"),
            one(
                "SupplementaryGroups",
                DValue::StrList(vec!["adm".into(), "0".into()])
            )
        );
        let filter = |allow: bool, l: &[&str]| {
            DValue::Struct(vec![
                DValue::Bool(allow),
                DValue::StrList(l.iter().map(|x| x.to_string()).collect()),
            ])
        };
        assert_eq!(
            ok("SystemCallFilter", "@system-service"),
            one("SystemCallFilter", filter(true, &["@system-service"]))
        );
        assert_eq!(
            ok("SystemCallFilter", "~@mount @swap"),
            one("SystemCallFilter", filter(false, &["@mount", "@swap"]))
        );
        assert_eq!(
            ok("SystemCallFilter", "~@privileged:EPERM"),
            one("SystemCallFilter", filter(false, &["@privileged:EPERM"]))
        );
        assert_eq!(
            line("SystemCallFilter", "~@mount  @swap"),
            "SystemCallFilter=~@mount @swap"
        );
        assert_eq!(
            ok("RestrictAddressFamilies", "AF_UNIX AF_INET"),
            one(
                "RestrictAddressFamilies",
                filter(true, &["AF_UNIX", "AF_INET"])
            )
        );
        assert_eq!(
            ok("RestrictAddressFamilies", "none"),
            one("RestrictAddressFamilies", filter(true, &[]))
        );
        assert_eq!(
            line("RestrictAddressFamilies", "none"),
            "RestrictAddressFamilies=none"
        );
        assert!(err("RestrictAddressFamilies", "~none").contains("must stand alone"));
        assert!(err("RestrictAddressFamilies", "none AF_UNIX").contains("must stand alone"));
        assert!(err("RestrictAddressFamilies", "unix").contains("invalid entry \"unix\""));
        assert!(err("SystemCallFilter", "~").contains("no entries"));
        assert!(err("SystemCallFilter", "Mount").contains("invalid entry"));
        assert!(err("SystemCallFilter", "@mount:").contains("invalid entry"));
        assert!(err("SystemCallArchitectures", "x86;rm").contains("invalid entry"));
        assert!(err("SupplementaryGroups", "-adm").contains("invalid entry"));
    }
}
