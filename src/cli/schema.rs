//! `nomad-driver-systemd schema`: the plugin config's keys and types, read from
//! [`plugin_schema`] — the one list that Nomad, the CLI and the NixOS module's options
//! (checked by `tests/nix_eval.rs`) all follow.

use serde_json::{Value, json};

use crate::config::schema::{Spec, plugin_schema};

/// One top-level key of the plugin config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    /// The HCL type (`bool`, `string`, `list(string)`, `map(string)` for a block of attributes).
    pub ty: String,
    pub required: bool,
    /// The default as an HCL expression, when the schema gives one.
    pub default: Option<&'static str>,
}

/// The plugin config's keys, in schema order.
pub fn plugin_keys() -> Vec<Key> {
    match plugin_schema() {
        Spec::Object(fields) => fields
            .into_iter()
            .map(|(name, spec)| {
                let (ty, required, default) = describe(&spec);
                Key {
                    name,
                    ty,
                    required,
                    default,
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Type, required and default of one key's spec. Exhaustive on purpose: a new kind of spec
/// must say here how it reads, or this does not compile.
fn describe(spec: &Spec) -> (String, bool, Option<&'static str>) {
    match spec {
        Spec::Attr { ty, required, .. } => ((*ty).to_string(), *required, None),
        Spec::BlockAttrs { ty, .. } => (format!("map({ty})"), false, None),
        Spec::Default { primary, default } => {
            let (ty, required, _) = describe(primary);
            let literal = match default.as_ref() {
                Spec::Literal(l) => Some(*l),
                _ => None,
            };
            (ty, required, literal)
        }
        Spec::Object(_) => ("object".to_string(), false, None),
        Spec::Literal(l) => ("literal".to_string(), false, Some(*l)),
    }
}

/// The keys as JSON: `{"plugin": [{"key", "type", "required", "default"}, ...]}`.
pub fn to_json(keys: &[Key]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "key": k.name,
                "type": k.ty,
                "required": k.required,
                "default": k.default,
            })
        })
        .collect();
    json!({ "plugin": keys })
}

/// Prints the plugin config's keys: a table, or JSON with `--json`.
pub fn run(json: bool) -> std::process::ExitCode {
    let keys = plugin_keys();
    if json {
        super::say(&to_json(&keys).to_string());
    } else {
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|k| {
                vec![
                    k.name.to_string(),
                    k.ty.clone(),
                    k.default
                        .unwrap_or(if k.required { "(required)" } else { "" })
                        .to_string(),
                ]
            })
            .collect();
        super::say(&super::table(&["KEY", "TYPE", "DEFAULT"], &rows));
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_key_is_listed_with_its_type() {
        let keys = plugin_keys();
        let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
        assert_eq!(names, crate::config::schema::keys(&plugin_schema()));
        assert!(keys.iter().all(|k| !k.ty.is_empty() && k.ty != "object"));
        let slice = keys.iter().find(|k| k.name == "slice").unwrap();
        assert_eq!(
            (slice.ty.as_str(), slice.default),
            ("string", Some("\"nomad_tasks.slice\""))
        );
        let json = to_json(&keys);
        assert_eq!(json["plugin"][0]["key"], "enabled");
        assert_eq!(json["plugin"][0]["type"], "bool");
        assert_eq!(json["plugin"][0]["default"], "true");
    }
}
