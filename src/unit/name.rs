//! The unit-name scheme: `nomad-<alloc id>-<task, escaped>-<task id suffix>.service`, and
//! systemd's escaping rules.

/// Longest unit name systemd accepts.
pub const MAX_UNIT_NAME: usize = 255;
const PREFIX: &str = "nomad-";
const SUFFIX: &str = ".service";

/// systemd's string escaping for unit names (`systemd-escape`): `/` → `-`, anything outside
/// `[A-Za-z0-9:_.]` (and a leading `.`) → `\xHH`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char);
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Inverse of [`escape`] (`-` → `/`).
pub fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let hex = s.get(i + 2..i + 4)?;
                if bytes.get(i + 1) != Some(&b'x') {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Nomad's ids (UUIDs, hex) stay readable; anything else is escaped.
fn plain_or_escaped(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        s.to_string()
    } else {
        escape(s)
    }
}

/// The transient unit of a Nomad task id (`<alloc id>/<task name>/<suffix>`), named as
/// [`unit_name`] names it at StartTask from the task's alloc id, name and id; `None` for an
/// id of another shape. Lets StopTask and DestroyTask find the unit of a task this process
/// does not track.
pub fn unit_of_task_id(id: &str) -> Option<String> {
    let (alloc, rest) = id.split_once('/')?;
    let (task, suffix) = rest.rsplit_once('/')?;
    if alloc.is_empty() || task.is_empty() || suffix.is_empty() {
        return None;
    }
    Some(unit_name(alloc, task, suffix))
}

/// The transient unit name for a task start.
pub fn unit_name(alloc_id: &str, task: &str, id_suffix: &str) -> String {
    let alloc = plain_or_escaped(alloc_id);
    let suffix = escape(id_suffix);
    let mut task = escape(task);
    let fixed = PREFIX.len() + alloc.len() + 1 + 1 + suffix.len() + SUFFIX.len();
    if fixed + task.len() > MAX_UNIT_NAME {
        // The alloc id and the id suffix keep the name unique; a long task name is cut at an
        // escape boundary.
        let mut cut = MAX_UNIT_NAME.saturating_sub(fixed);
        while cut > 0 && !escape_boundary(&task, cut) {
            cut -= 1;
        }
        task.truncate(cut);
    }
    format!("{PREFIX}{alloc}-{task}-{suffix}{SUFFIX}")
}

fn escape_boundary(escaped: &str, at: usize) -> bool {
    let b = escaped.as_bytes();
    // not inside a 4-byte `\xHH` sequence
    !(1..4).any(|back| at >= back && b[at - back] == b'\\')
}

/// A unit name parsed back into its parts (alloc ids are UUIDs: 36 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    pub alloc_id: String,
    pub task: String,
    pub id_suffix: String,
}

/// Parses a name made by [`unit_name`]; `None` for anything else.
pub fn parse_unit_name(name: &str) -> Option<ParsedName> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let alloc = rest.get(..36)?;
    let rest = rest.get(36..)?.strip_prefix('-')?;
    let (task, suffix) = rest.rsplit_once('-')?;
    if task.is_empty() || suffix.is_empty() || suffix.contains('-') {
        return None;
    }
    if !alloc.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    Some(ParsedName {
        alloc_id: alloc.to_string(),
        task: unescape(task)?,
        id_suffix: unescape(suffix)?,
    })
}

/// Checks a unit name a job asks for in unit mode.
pub fn valid_unit_name(name: &str) -> bool {
    let Some((stem, kind)) = name.rsplit_once('.') else {
        return false;
    };
    name.len() <= MAX_UNIT_NAME
        && kind == "service"
        && !stem.is_empty()
        && !stem.starts_with('@')
        && !stem.ends_with('@')
        && stem.matches('@').count() <= 1
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOC: &str = "8f3c2d1e-1111-2222-3333-444455556666";

    #[test]
    fn names_round_trip() {
        for task in [
            "web",
            "my-task",
            "dots.and_under",
            "ünï cødé/slash",
            ".hidden",
        ] {
            let n = unit_name(ALLOC, task, "0a1b2c3d");
            assert!(n.len() <= MAX_UNIT_NAME);
            assert!(valid_unit_name(&n), "{n}");
            let p = parse_unit_name(&n).unwrap();
            assert_eq!(p.alloc_id, ALLOC);
            assert_eq!(p.task, task);
            assert_eq!(p.id_suffix, "0a1b2c3d");
        }
    }

    #[test]
    fn the_unit_of_a_task_id_is_the_one_start_names() {
        for task in ["web", "my-task", "ünï cødé/slash", &"x".repeat(300)] {
            let id = format!("{ALLOC}/{task}/0a1b2c3d");
            assert_eq!(
                unit_of_task_id(&id),
                Some(unit_name(ALLOC, task, "0a1b2c3d")),
                "{id}"
            );
        }
        for id in ["", "t1", "a/b", "/web/0a1b2c3d", "a//0a1b2c3d", "a/web/"] {
            assert_eq!(unit_of_task_id(id), None, "{id}");
        }
    }

    #[test]
    fn escaping_matches_systemd_escape() {
        assert_eq!(escape("my-task"), "my\\x2dtask");
        assert_eq!(escape("a/b"), "a-b");
        assert_eq!(escape(".x"), "\\x2ex");
        assert_eq!(escape("a b"), "a\\x20b");
    }

    #[test]
    fn long_task_names_are_cut_to_fit() {
        let task = "x-".repeat(200);
        let n = unit_name(ALLOC, &task, "0a1b2c3d");
        assert!(n.len() <= MAX_UNIT_NAME, "{}", n.len());
        assert!(n.ends_with("-0a1b2c3d.service"));
        assert!(parse_unit_name(&n).is_some(), "{n}");
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for n in [
            "web.service",
            "nomad-x.service",
            "nomad-abc-task.service",
            "nomad_tasks.slice",
        ] {
            assert_eq!(parse_unit_name(n), None, "{n}");
        }
    }

    #[test]
    fn unit_mode_names_are_checked() {
        assert!(valid_unit_name("web@abc.service"));
        assert!(valid_unit_name("api-1.service"));
        for bad in [
            "web@.service",
            "web",
            "x.socket",
            "a/b.service",
            "a\nb.service",
            "../x.service",
            "a b.service",
        ] {
            assert!(!valid_unit_name(bad), "{bad:?}");
        }
    }
}
