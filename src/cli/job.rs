//! Nomad job files for `validate`: HCL2 (parsed with `hcl-rs`) and Nomad's JSON API shape, read
//! down to what the driver sees of each task.
//!
//! Nothing is evaluated here: every `${...}` (and every variable, function call or other
//! expression HCL2 would evaluate) is kept as its source text, so `unit = "web@${NOMAD_ALLOC_ID}.service"`
//! reads back exactly as written. [`super::interp`] later stands placeholders in for them.

use std::collections::BTreeMap;

use hcl::expr::{Expression, ObjectKey, TemplateExpr};
use hcl::template::{Element, Template};
use hcl::{Block, Body, Structure};
use serde_json::{Map, Value};

/// One job, reduced to its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub groups: Vec<Group>,
}

/// A task group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    /// `network { mode = ... }` of the group (`host`, `bridge`, `cni/...`), if set.
    pub network_mode: Option<String>,
    pub tasks: Vec<Task>,
}

/// A task as the job file spells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub driver: String,
    /// The `config {}` block as a JSON-like tree (strings in source form), or why it could not be
    /// read.
    pub config: Result<Value, Problem>,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub resources: Ask,
    /// Problems with the task outside its config (e.g. `env` not a map of strings).
    pub problems: Vec<Problem>,
    /// What validate cannot judge (e.g. `resources.memory` given as an expression).
    pub warnings: Vec<Problem>,
}

/// What the task asks for in `resources {}`; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
    pub memory_max: Option<i64>,
    pub cores: Option<i64>,
}

/// A problem naming the job key at fault.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Parses a job file: JSON when it starts with `{` (HCL cannot), HCL2 otherwise.
pub fn parse(text: &str) -> Result<Job, Problem> {
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_hcl(text)
    }
}

// ---------------------------------------------------------------------------------------------
// HCL2
// ---------------------------------------------------------------------------------------------

/// Parses an HCL2 job file (`job "id" { group "g" { task "t" { ... } } }`).
pub fn parse_hcl(text: &str) -> Result<Job, Problem> {
    let body = hcl::parse(text).map_err(|e| {
        let text = e.to_string();
        Problem::new("syntax", text.trim_start().trim_start_matches("--> "))
    })?;
    let mut jobs = blocks(&body, "job");
    let job = match (jobs.next(), jobs.next()) {
        (Some(job), None) => job,
        (None, _) => return Err(Problem::new("job", "the file has no job block")),
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                "job",
                "the file has more than one job block (Nomad takes one job per file)",
            ));
        }
    };
    let id = label(job).ok_or_else(|| Problem::new("job", "the job block needs a label"))?;
    let name = literal_attr(&job.body, "name").unwrap_or_else(|| id.clone());
    let namespace = literal_attr(&job.body, "namespace").unwrap_or_else(|| "default".into());
    let mut groups: Vec<Group> = blocks(&job.body, "group").map(hcl_group).collect();
    // a task directly in the job gets an implicit group of its own name
    for task in blocks(&job.body, "task") {
        let task = hcl_task(task);
        groups.push(Group {
            name: task.name.clone(),
            network_mode: None,
            tasks: vec![task],
        });
    }
    Ok(Job {
        id,
        name,
        namespace,
        groups,
    })
}

fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks()
        .filter(move |b| b.identifier.as_str() == ident)
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

fn label(block: &Block) -> Option<String> {
    block.labels.first().map(|l| l.as_str().to_string())
}

/// An attribute whose value is a plain string (no interpolation).
fn literal_attr(body: &Body, key: &str) -> Option<String> {
    match attr(body, key) {
        Some(Expression::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn hcl_group(block: &Block) -> Group {
    let name = label(block).unwrap_or_default();
    let network_mode = blocks(&block.body, "network")
        .next()
        .and_then(|n| attr(&n.body, "mode"))
        .map(source_string);
    Group {
        name,
        network_mode,
        tasks: blocks(&block.body, "task").map(hcl_task).collect(),
    }
}

fn hcl_task(block: &Block) -> Task {
    let body = &block.body;
    let mut problems = Vec::new();
    let driver = attr(body, "driver").map(source_string).unwrap_or_default();
    let user = attr(body, "user").map(source_string).unwrap_or_default();
    let config = block_or_attr(body, "config", "config");
    let env = match block_or_attr(body, "env", "env") {
        Ok(Value::Null) => BTreeMap::new(),
        Ok(v) => string_map(&v, "env", &mut problems),
        Err(p) => {
            problems.push(p);
            BTreeMap::new()
        }
    };
    let mut warnings = Vec::new();
    let resources = match blocks(body, "resources").next() {
        Some(r) => hcl_resources(&r.body, &mut problems, &mut warnings),
        None => Ask::default(),
    };
    Task {
        name: label(block).unwrap_or_default(),
        driver,
        config,
        user,
        env,
        resources,
        problems,
        warnings,
    }
}

fn hcl_resources(body: &Body, problems: &mut Vec<Problem>, warnings: &mut Vec<Problem>) -> Ask {
    let mut num = |key: &str| {
        let expr = attr(body, key)?;
        match expr {
            Expression::Number(n) => match n.as_i64() {
                Some(v) => Some(v),
                None => {
                    problems.push(Problem::new(
                        format!("resources.{key}"),
                        format!("{n} is not a whole number"),
                    ));
                    None
                }
            },
            other => {
                warnings.push(Problem::new(
                    format!("resources.{key}"),
                    format!(
                        "{} is not evaluated by validate; Nomad's default is assumed",
                        source_string(other)
                    ),
                ));
                None
            }
        }
    };
    Ask {
        cpu: num("cpu"),
        memory: num("memory"),
        memory_max: num("memory_max"),
        cores: num("cores"),
    }
}

/// `name { ... }` or `name = { ... }` as an object; `Null` when absent.
fn block_or_attr(body: &Body, name: &str, key: &str) -> Result<Value, Problem> {
    let mut found = Vec::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) if a.key.as_str() == name => found.push(expr_value(&a.expr)),
            Structure::Block(b) if b.identifier.as_str() == name => {
                if !b.labels.is_empty() {
                    return Err(Problem::new(key, "this block takes no label"));
                }
                found.push(body_value(&b.body, key)?);
            }
            _ => {}
        }
    }
    match found.len() {
        0 => Ok(Value::Null),
        1 => Ok(found.remove(0)),
        _ => Err(Problem::new(key, "set more than once")),
    }
}

/// A block body as an object: attributes and (unlabelled) nested blocks by name.
fn body_value(body: &Body, key: &str) -> Result<Value, Problem> {
    let mut map = Map::new();
    for s in body.iter() {
        let (name, value) = match s {
            Structure::Attribute(a) => (a.key.as_str(), expr_value(&a.expr)),
            Structure::Block(b) => {
                let inner = format!("{key}.{}", b.identifier.as_str());
                if !b.labels.is_empty() {
                    return Err(Problem::new(inner, "this block takes no label"));
                }
                (b.identifier.as_str(), body_value(&b.body, &inner)?)
            }
        };
        if map.insert(name.to_string(), value).is_some() {
            return Err(Problem::new(format!("{key}.{name}"), "set more than once"));
        }
    }
    Ok(Value::Object(map))
}

/// An HCL expression as a JSON-like value; anything HCL would evaluate stays as `${source}`.
pub fn expr_value(expr: &Expression) -> Value {
    match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(*b),
        Expression::Number(n) => number_value(n),
        Expression::String(s) => Value::String(s.clone()),
        Expression::Array(items) => Value::Array(items.iter().map(expr_value).collect()),
        Expression::Object(obj) => Value::Object(
            obj.iter()
                .map(|(k, v)| (object_key(k), expr_value(v)))
                .collect(),
        ),
        Expression::TemplateExpr(t) => Value::String(template_source(t)),
        other => Value::String(interpolation(other)),
    }
}

fn number_value(n: &hcl::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::from(i)
    } else if let Some(u) = n.as_u64() {
        Value::from(u)
    } else {
        n.as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number)
    }
}

fn object_key(k: &ObjectKey) -> String {
    match k {
        ObjectKey::Identifier(id) => id.as_str().to_string(),
        ObjectKey::Expression(Expression::String(s)) => s.clone(),
        ObjectKey::Expression(e) => match expr_value(e) {
            Value::String(s) => s,
            v => v.to_string(),
        },
        other => hcl::format::to_string(other).unwrap_or_default(),
    }
}

/// The expression's text as the job author would read it: strings as themselves, everything
/// else as an interpolation.
fn source_string(expr: &Expression) -> String {
    match expr_value(expr) {
        Value::String(s) => s,
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn interpolation(expr: &Expression) -> String {
    let text = hcl::format::to_string(expr).unwrap_or_else(|_| "?".into());
    format!("${{{text}}}")
}

/// A quoted template or heredoc back to text: literals as written (escapes resolved, so `$${`
/// becomes `${`, as Nomad hands it to the driver), interpolations and directives as source.
pub fn template_source(t: &TemplateExpr) -> String {
    let Ok(template) = Template::from_expr(t) else {
        return match t {
            TemplateExpr::QuotedString(s) => s.clone(),
            TemplateExpr::Heredoc(h) => h.template.clone(),
        };
    };
    let mut out = String::new();
    for element in template.elements() {
        match element {
            Element::Literal(s) => out.push_str(s),
            Element::Interpolation(i) => out.push_str(&interpolation(&i.expr)),
            Element::Directive(d) => {
                out.push_str(&hcl::format::to_string(d.as_ref()).unwrap_or_default());
            }
        }
    }
    out
}

fn string_map(v: &Value, key: &str, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Value::Object(map) = v else {
        problems.push(Problem::new(key, "expected a map of strings"));
        return out;
    };
    for (k, v) in map {
        match v {
            Value::String(s) => {
                out.insert(k.clone(), s.clone());
            }
            Value::Number(_) | Value::Bool(_) => {
                out.insert(k.clone(), v.to_string());
            }
            _ => problems.push(Problem::new(format!("{key}.{k}"), "expected a string")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// JSON (the API shape: `nomad job run -output`, `nomad job inspect`)
// ---------------------------------------------------------------------------------------------

/// Parses a job in Nomad's API JSON, wrapped in `{"Job": ...}` or bare.
pub fn parse_json(text: &str) -> Result<Job, Problem> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| Problem::new("syntax", e.to_string()))?;
    let job = match root.get("Job") {
        Some(job) => job,
        None if root.get("TaskGroups").is_some() || root.get("ID").is_some() => &root,
        None if root.get("job").is_some() => {
            return Err(Problem::new(
                "job",
                "this is HCL's JSON syntax; validate reads Nomad's API JSON (nomad job run -output) or HCL",
            ));
        }
        None => {
            return Err(Problem::new(
                "Job",
                "not a Nomad job: expected a Job object or an object with TaskGroups",
            ));
        }
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let id = text(job, "ID")
        .or_else(|| text(job, "Name"))
        .ok_or_else(|| Problem::new("Job.ID", "the job has no ID or Name"))?;
    let groups = match job.get("TaskGroups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(groups)) => groups.iter().map(json_group).collect(),
        Some(_) => return Err(Problem::new("Job.TaskGroups", "expected a list")),
    };
    Ok(Job {
        name: text(job, "Name").unwrap_or_else(|| id.clone()),
        namespace: text(job, "Namespace").unwrap_or_else(|| "default".into()),
        id,
        groups,
    })
}

fn json_group(g: &Value) -> Group {
    let network_mode = g
        .get("Networks")
        .and_then(Value::as_array)
        .and_then(|n| n.first())
        .and_then(|n| n.get("Mode"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    Group {
        name: g
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        network_mode,
        tasks: g
            .get("Tasks")
            .and_then(Value::as_array)
            .map(|t| t.iter().map(json_task).collect())
            .unwrap_or_default(),
    }
}

fn json_task(t: &Value) -> Task {
    let s = |k: &str| {
        t.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut problems = Vec::new();
    let env = match t.get("Env") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => string_map(v, "env", &mut problems),
    };
    let r = t.get("Resources");
    let num = |k: &str| r.and_then(|r| r.get(k)).and_then(Value::as_i64);
    Task {
        name: s("Name"),
        driver: s("Driver"),
        config: Ok(t.get("Config").cloned().unwrap_or(Value::Null)),
        user: s("User"),
        env,
        resources: Ask {
            cpu: num("CPU"),
            memory: num("MemoryMB"),
            memory_max: num("MemoryMaxMB"),
            cores: num("Cores"),
        },
        problems,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HCL: &str = r#"
variable "image" { default = "x" }
job "web" {
  namespace = "prod"
  group "front" {
    network {
      mode = "bridge"
      port "http" {}
    }
    task "server" {
      driver = "systemd"
      user   = "www-data"
      config {
        unit = "web@${NOMAD_ALLOC_ID}.service"
        properties {
          LimitNOFILE = "65536"
        }
      }
      env {
        PORT = "${NOMAD_PORT_http}"
      }
      resources {
        cpu        = 200
        memory     = 128
        memory_max = 256
      }
    }
    task "sidecar" {
      driver = "exec"
      config { command = "/bin/true" }
    }
  }
}
"#;

    #[test]
    fn hcl_jobs_read_down_to_tasks() {
        let job = parse(HCL).unwrap();
        assert_eq!((job.id.as_str(), job.name.as_str()), ("web", "web"));
        assert_eq!(job.namespace, "prod");
        let g = &job.groups[0];
        assert_eq!(g.name, "front");
        assert_eq!(g.network_mode.as_deref(), Some("bridge"));
        let t = &g.tasks[0];
        assert_eq!((t.name.as_str(), t.driver.as_str()), ("server", "systemd"));
        assert_eq!(t.user, "www-data");
        assert_eq!(
            t.config.as_ref().unwrap(),
            &serde_json::json!({
                "unit": "web@${NOMAD_ALLOC_ID}.service",
                "properties": {"LimitNOFILE": "65536"}
            })
        );
        assert_eq!(t.env["PORT"], "${NOMAD_PORT_http}");
        assert_eq!(
            t.resources,
            Ask {
                cpu: Some(200),
                memory: Some(128),
                memory_max: Some(256),
                cores: None
            }
        );
        assert_eq!(g.tasks[1].driver, "exec");
    }

    #[test]
    fn expressions_stay_unresolved() {
        let cases = [
            (
                r#""web@${NOMAD_ALLOC_ID}.service""#,
                "web@${NOMAD_ALLOC_ID}.service",
            ),
            (r#""${NOMAD_TASK_DIR}/run.sh""#, "${NOMAD_TASK_DIR}/run.sh"),
            (
                r#""${meta.rack}-${attr.unique.hostname}""#,
                "${meta.rack}-${attr.unique.hostname}",
            ),
            (r#""literal $${x}""#, "literal ${x}"),
            (r#""tab\there""#, "tab\there"),
            ("var.port", "${var.port}"),
            (r#"upper("x")"#, "${upper(\"x\")}"),
            ("\"line\\nbreak\"", "line\nbreak"),
        ];
        for (hcl, want) in cases {
            let body = format!(
                "job \"j\" {{\n group \"g\" {{\n task \"t\" {{\n config {{\n v = {hcl}\n }}\n }}\n }}\n}}\n"
            );
            let job = parse(&body).unwrap_or_else(|e| panic!("{hcl}: {e}"));
            let cfg = job.groups[0].tasks[0].config.clone().unwrap();
            assert_eq!(cfg["v"], Value::String(want.into()), "{hcl}");
        }
    }

    #[test]
    fn properties_as_attribute_or_block() {
        for form in [
            "properties { A = \"1\" }",
            "properties = { A = \"1\" }",
            "properties = { \"A\" = \"1\" }",
        ] {
            let text = format!(
                "job \"j\" {{\n task \"t\" {{\n driver = \"systemd\"\n config {{\n command = \"/bin/true\"\n {form}\n }}\n }}\n}}\n"
            );
            let job = parse(&text).unwrap();
            // a task outside a group gets a group of its own name
            assert_eq!(job.groups[0].name, "t");
            let cfg = job.groups[0].tasks[0].config.clone().unwrap();
            assert_eq!(cfg["properties"], serde_json::json!({"A": "1"}), "{form}");
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("job \"j\" {\n  group {\n  a = \n}", "syntax"),
            ("variable \"x\" {}\n", "job"),
            ("job \"a\" {}\njob \"b\" {}\n", "job"),
            ("{\"job\": {\"x\": {}}}", "job"),
            ("{\"Jobs\": []}", "Job"),
            (
                "{\"Job\": {\"TaskGroups\": 3, \"ID\": \"x\"}}",
                "Job.TaskGroups",
            ),
            ("{ not json", "syntax"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn repeated_config_keys_are_refused() {
        // HCL itself refuses a repeated attribute; repeated blocks are ours to refuse
        let text = "job \"j\" {\n task \"t\" {\n config {\n command = \"a\"\n command = \"b\"\n }\n }\n}\n";
        assert_eq!(parse(text).unwrap_err().key, "syntax");
        let text = "job \"j\" {\n task \"t\" {\n config {\n properties { A = \"1\" }\n properties { B = \"2\" }\n }\n }\n}\n";
        let err = parse(text).unwrap().groups[0].tasks[0].config.clone();
        assert_eq!(err.unwrap_err().key, "config.properties");
        let text = "job \"j\" {\n task \"t\" {\n config { command = \"a\" }\n config { command = \"b\" }\n }\n}\n";
        let err = parse(text).unwrap().groups[0].tasks[0].config.clone();
        assert_eq!(err.unwrap_err().key, "config");
    }

    #[test]
    fn unreadable_resources_are_reported() {
        let text =
            "job \"j\" {\n task \"t\" {\n resources {\n memory = var.m\n cpu = 100\n }\n }\n}\n";
        let job = parse(text).unwrap();
        let t = &job.groups[0].tasks[0];
        assert_eq!(t.resources.cpu, Some(100));
        assert_eq!(t.resources.memory, None);
        assert_eq!(t.warnings[0].key, "resources.memory");
    }

    #[test]
    fn json_jobs_wrapped_or_bare() {
        let job = serde_json::json!({
            "ID": "hello", "Name": "hello",
            "TaskGroups": [{
                "Name": "g",
                "Networks": [{"Mode": "host"}],
                "Tasks": [{
                    "Name": "t", "Driver": "systemd", "User": "nobody",
                    "Config": {"command": "/bin/echo", "args": ["hi"], "properties": [{"A": "1"}]},
                    "Env": {"X": "1"},
                    "Resources": {"CPU": 100, "MemoryMB": 300, "MemoryMaxMB": 0, "Cores": 0}
                }]
            }]
        });
        for text in [
            serde_json::json!({ "Job": job }).to_string(),
            job.to_string(),
        ] {
            let parsed = parse(&text).unwrap();
            assert_eq!(parsed.id, "hello");
            let g = &parsed.groups[0];
            assert_eq!(g.network_mode.as_deref(), Some("host"));
            let t = &g.tasks[0];
            assert_eq!(t.driver, "systemd");
            assert_eq!(t.user, "nobody");
            assert_eq!(t.env["X"], "1");
            assert_eq!(t.resources.memory, Some(300));
            assert_eq!(t.config.as_ref().unwrap()["args"][0], "hi");
        }
    }
}
