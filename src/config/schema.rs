//! hclspec schemas for the plugin and task configs, as a small domain tree (converted to
//! protobuf at the gRPC edge).

/// The subset of hclspec we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Object(Vec<(&'static str, Spec)>),
    Attr {
        ty: &'static str,
        required: bool,
    },
    BlockAttrs {
        ty: &'static str,
    },
    Default {
        primary: Box<Spec>,
        default: Box<Spec>,
    },
    /// An HCL expression (strings need their inner quotes).
    Literal(&'static str),
}

fn attr(ty: &'static str) -> Spec {
    Spec::Attr {
        ty,
        required: false,
    }
}

fn with_default(primary: Spec, literal: &'static str) -> Spec {
    Spec::Default {
        primary: Box::new(primary),
        default: Box::new(Spec::Literal(literal)),
    }
}

/// `plugin "nomad-driver-systemd" { config { ... } }` (README.md, "Plugin configuration").
pub fn plugin_schema() -> Spec {
    Spec::Object(vec![
        ("enabled", with_default(attr("bool"), "true")),
        (
            "slice",
            with_default(attr("string"), "\"nomad_tasks.slice\""),
        ),
        ("allowed_units", with_default(attr("list(string)"), "[]")),
        (
            "allowed_properties",
            with_default(attr("list(string)"), "[]"),
        ),
        (
            "denied_properties",
            with_default(attr("list(string)"), "[]"),
        ),
        ("default_user", with_default(attr("string"), "\"\"")),
        ("allow_root", with_default(attr("bool"), "false")),
    ])
}

/// The task `config {}` block (README.md, "Job specification"). `properties` is BlockAttrs so that both
/// `properties = {..}` and `properties {..}` HCL spellings and JSON jobs decode (docs/nomad-contract.md, *Schemas and config encoding*).
pub fn task_schema() -> Spec {
    Spec::Object(vec![
        ("command", attr("string")),
        ("args", attr("list(string)")),
        ("unit", attr("string")),
        ("properties", Spec::BlockAttrs { ty: "string" }),
        ("work_dir", attr("string")),
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
                "allow_root"
            ]
        );
    }

    #[test]
    fn every_attr_has_a_type() {
        fn walk(s: &Spec) {
            match s {
                Spec::Object(f) => f.iter().for_each(|(_, s)| walk(s)),
                Spec::Attr { ty, .. } | Spec::BlockAttrs { ty } => assert!(!ty.is_empty()),
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
