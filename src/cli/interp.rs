//! Run-time interpolations for `validate`: every `${...}` Nomad resolves when the task starts is
//! replaced by a placeholder of a plausible shape before the planner runs, and the planner's
//! output is mapped back, so the operator sees `web@${NOMAD_ALLOC_ID}.service`.
//!
//! Shapes: `${NOMAD_ALLOC_ID}` becomes a zero UUID (it is also the spec's alloc id, so transient
//! unit names show it too); `*_DIR` variables an absolute path; ports and limits a number;
//! anything else a word of letters and digits, which is valid in unit names and paths.

/// The alloc id `validate` plans with; shown as `${NOMAD_ALLOC_ID}`.
pub const ALLOC_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The node's allocation root `validate` plans with (the alloc dir's parent, which the sandbox
/// covers); shown as `<alloc_root>`.
pub const ALLOC_ROOT: &str = "/nomadvarallocrootx";
/// The alloc dir `validate` plans with; shown as `<alloc_dir>`.
pub const ALLOC_DIR: &str = "/nomadvarallocrootx/nomadvarallocdirx";
/// The per-start task id suffix; shown as `<id>`.
pub const START_ID: &str = "nomadvarstartidx";
/// The group network namespace path; shown as `<netns>`.
pub const NETNS: &str = "/nomadvarnetnsx";

/// Placeholders handed out so far, and what they stand for.
#[derive(Debug, Clone)]
pub struct Interp {
    /// (placeholder, shown text), longest placeholders first when restoring.
    map: Vec<(String, String)>,
}

impl Default for Interp {
    fn default() -> Self {
        Self::new()
    }
}

impl Interp {
    pub fn new() -> Self {
        Self {
            map: vec![
                (ALLOC_DIR.to_string(), "<alloc_dir>".to_string()),
                (ALLOC_ROOT.to_string(), "<alloc_root>".to_string()),
                (NETNS.to_string(), "<netns>".to_string()),
                (START_ID.to_string(), "<id>".to_string()),
                (ALLOC_ID.to_string(), "${NOMAD_ALLOC_ID}".to_string()),
            ],
        }
    }

    /// Replaces each `${...}` in `s` with its placeholder.
    pub fn resolve(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = closing(&rest[start..]) else {
                // unterminated: Nomad leaves it alone too
                out.push_str(&rest[start..]);
                return out;
            };
            let source = &rest[start..start + len];
            out.push_str(&self.placeholder(source));
            rest = &rest[start + len..];
        }
        out.push_str(rest);
        out
    }

    /// Maps placeholders in `s` back to what the job wrote.
    pub fn restore(&self, s: &str) -> String {
        let mut out = s.to_string();
        let mut map: Vec<&(String, String)> = self.map.iter().collect();
        map.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (placeholder, shown) in map {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), shown);
            }
        }
        out
    }

    fn placeholder(&mut self, source: &str) -> String {
        if let Some((p, _)) = self.map.iter().find(|(_, s)| s == source) {
            return p.clone();
        }
        let name = source[2..source.len() - 1].trim();
        let n = self.map.len();
        let p = if name == "NOMAD_ALLOC_ID" {
            ALLOC_ID.to_string()
        } else if name.ends_with("_DIR") {
            format!("/nomadvar{n}x")
        } else if name.contains("PORT") || name.ends_with("_LIMIT") || name.ends_with("_CORES") {
            (987_654_000 + n).to_string()
        } else {
            format!("nomadvar{n}x")
        };
        self.map.push((p.clone(), source.to_string()));
        p
    }
}

/// Length of the `${...}` at the start of `s`, braces balanced (`${ {a=1}["a"] }`).
fn closing(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_have_useful_shapes_and_round_trip() {
        let cases = [
            (
                "web@${NOMAD_ALLOC_ID}.service",
                "web@00000000-0000-0000-0000-000000000000.service",
            ),
            ("${NOMAD_TASK_DIR}/run.sh", "/nomadvar5x/run.sh"),
            ("--port=${NOMAD_PORT_http}", "--port=987654006"),
            ("${meta.rack}", "nomadvar7x"),
            ("plain", "plain"),
            ("open ${ never closed", "open ${ never closed"),
            ("${ {a=1}[\"a\"] }!", "nomadvar8x!"),
        ];
        let mut interp = Interp::new();
        for (text, resolved) in cases {
            let got = interp.resolve(text);
            assert_eq!(got, resolved, "{text}");
            assert_eq!(interp.restore(&got), text, "{text}");
        }
        // the same source gets the same placeholder
        assert_eq!(interp.resolve("${meta.rack}"), "nomadvar7x");
    }

    #[test]
    fn fixed_placeholders_show_as_markers() {
        let interp = Interp::new();
        let unit = crate::unit::name::unit_name(ALLOC_ID, "web", START_ID);
        assert_eq!(
            interp.restore(&unit),
            "nomad-${NOMAD_ALLOC_ID}-web-<id>.service"
        );
        assert_eq!(
            interp.restore(&format!("{ALLOC_DIR}/alloc:/alloc {NETNS}")),
            "<alloc_dir>/alloc:/alloc <netns>"
        );
    }
}
