//! hclspec schemas for the plugin and task configs, as a small domain tree (converted to
//! protobuf at the gRPC edge).

/// The subset of hclspec we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Object(Vec<(&'static str, Spec)>),
    /// `name` is the input attribute name. It is always spelled out: Nomad implies a name
    /// from the Object key only for that key's direct child, never inside `Default`
    /// (ARCHITECTURE.md, "Schemas").
    Attr {
        name: &'static str,
        ty: &'static str,
        required: bool,
    },
    BlockAttrs {
        name: &'static str,
        ty: &'static str,
    },
    Default {
        primary: Box<Spec>,
        default: Box<Spec>,
    },
    /// An HCL expression (strings need their inner quotes).
    Literal(&'static str),
}

fn attr(name: &'static str, ty: &'static str) -> (&'static str, Spec) {
    (
        name,
        Spec::Attr {
            name,
            ty,
            required: false,
        },
    )
}

/// An attribute that takes `literal` (an HCL expression of the same type) when absent.
fn attr_or(name: &'static str, ty: &'static str, literal: &'static str) -> (&'static str, Spec) {
    let (key, primary) = attr(name, ty);
    (
        key,
        Spec::Default {
            primary: Box::new(primary),
            default: Box::new(Spec::Literal(literal)),
        },
    )
}

/// `plugin "nomad-driver-systemd" { config { ... } }`.
pub fn plugin_schema() -> Spec {
    Spec::Object(vec![
        attr_or("enabled", "bool", "true"),
        attr_or("slice", "string", "\"nomad_tasks.slice\""),
        attr_or("allowed_units", "list(string)", "[]"),
        attr_or("allowed_properties", "list(string)", "[]"),
        attr_or("denied_properties", "list(string)", "[]"),
        attr_or("default_user", "string", "\"\""),
        attr_or("allowed_users", "list(string)", "[]"),
        attr_or("allow_supplementary_groups", "bool", "false"),
        attr_or("allow_root", "bool", "false"),
        attr_or("sandbox", "string", "\"strict\""),
        attr_or("allow_loosening", "list(string)", "[]"),
        attr_or("logs", "string", "\"nomad\""),
        attr_or("max_stop_timeout", "string", "\"5m\""),
        attr_or("start_timeout", "string", "\"2m\""),
    ])
}

/// The task `config {}` block. `properties` is BlockAttrs so that both `properties = {..}` and
/// `properties {..}` HCL spellings and JSON jobs decode (ARCHITECTURE.md, "Schemas").
pub fn task_schema() -> Spec {
    Spec::Object(vec![
        attr("command", "string"),
        attr("args", "list(string)"),
        attr("unit", "string"),
        (
            "properties",
            Spec::BlockAttrs {
                name: "properties",
                ty: "string",
            },
        ),
        attr("work_dir", "string"),
    ])
}

/// The top-level keys of a schema, in order.
pub fn keys(spec: &Spec) -> Vec<&'static str> {
    match spec {
        Spec::Object(fields) => fields.iter().map(|(k, _)| *k).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_cover_the_documented_keys() {
        assert_eq!(
            keys(&task_schema()),
            ["command", "args", "unit", "properties", "work_dir"]
        );
        assert_eq!(
            keys(&plugin_schema()),
            [
                "enabled",
                "slice",
                "allowed_units",
                "allowed_properties",
                "denied_properties",
                "default_user",
                "allowed_users",
                "allow_supplementary_groups",
                "allow_root",
                "sandbox",
                "allow_loosening",
                "logs",
                "max_stop_timeout",
                "start_timeout"
            ]
        );
    }

    /// Nomad (helper/pluginutils/hclspecutils/dec.go: decodeObjectSpec hands the Object key
    /// down as the implied name of its direct child only; decodeDefaultSpec and
    /// decodeArraySpec hand down "") refuses an unnamed Attr under Default with "Missing name
    /// in attribute spec". Every Attr and BlockAttrs therefore carries its name, wherever it
    /// sits, and the name is the key it is decoded from.
    #[test]
    fn every_attr_and_block_attrs_is_named_after_its_key() {
        fn walk(s: &Spec, key: &str, seen: &mut usize) {
            match s {
                Spec::Object(f) => f.iter().for_each(|(k, s)| walk(s, k, seen)),
                Spec::Attr { name, .. } | Spec::BlockAttrs { name, .. } => {
                    assert!(!name.is_empty(), "{key}: unnamed attribute");
                    assert_eq!(*name, key);
                    *seen += 1;
                }
                Spec::Default { primary, default } => {
                    walk(primary, key, seen);
                    walk(default, key, seen);
                }
                Spec::Literal(_) => {}
            }
        }
        for schema in [plugin_schema(), task_schema()] {
            let mut seen = 0;
            walk(&schema, "", &mut seen);
            assert_eq!(seen, keys(&schema).len());
        }
    }

    #[test]
    fn every_attr_has_a_type() {
        fn walk(s: &Spec) {
            match s {
                Spec::Object(f) => f.iter().for_each(|(_, s)| walk(s)),
                Spec::Attr { ty, .. } | Spec::BlockAttrs { ty, .. } => assert!(!ty.is_empty()),
                Spec::Default { primary, default } => {
                    walk(primary);
                    walk(default);
                }
                Spec::Literal(l) => assert!(!l.is_empty()),
            }
        }
        walk(&plugin_schema());
        walk(&task_schema());
    }
}
