//! The results: one row per figure, printed as a Markdown table and written as JSON.

use crate::*;

/// One row of the table.
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) measured: f64,
    pub(crate) baseline: Option<(String, f64)>,
    pub(crate) target: Option<(String, bool)>,
    /// For a target the driver misses: the same measurement made by the bare client doing the
    /// same work with the same planned unit — systemd's cost of this sandbox, which the driver
    /// cannot go below — as (what, value in the figure's unit, the tolerance its own kind of
    /// figure allows the driver over a bare client, e.g. 1.10 for a start).
    pub(crate) floor: Option<(String, f64, f64)>,
}

impl Figure {
    pub(crate) fn new(name: impl Into<String>, unit: &'static str, measured: f64) -> Self {
        Self {
            name: name.into(),
            unit,
            measured,
            baseline: None,
            target: None,
            floor: None,
        }
    }

    pub(crate) fn baseline(mut self, label: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((label.into(), value));
        self
    }

    pub(crate) fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some((text.into(), met));
        self
    }

    /// Records the floor of this figure: `what` names whose cost it is and how it was measured,
    /// `value` is what the bare client measured for the same work, in the figure's unit; `tolerance` is the ratio over a
    /// bare client the issue allows the driver for this kind of work. Shown beside a missed
    /// target with the driver's absolute overhead over it.
    pub(crate) fn floor(mut self, what: impl Into<String>, value: f64, tolerance: f64) -> Self {
        self.floor = Some((what.into(), value, tolerance));
        self
    }

    /// The floor's cell: the bare measurement, the driver's overhead over it, and whether that
    /// is within the tolerance.
    fn floor_text(&self) -> Option<String> {
        let (what, v, tol) = self.floor.as_ref()?;
        let over = self.measured - v;
        Some(format!(
            "{what}: {}; driver {}{} ({:.2}×, {} {tol:.2}×)",
            fmt_value(*v, self.unit),
            if over >= 0.0 { "+" } else { "−" },
            fmt_value(over.abs(), self.unit),
            self.measured / v,
            if self.measured <= tol * v {
                "within"
            } else {
                "**above**"
            },
        ))
    }

    pub(crate) fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .filter(|(_, b)| *b > 0.0)
            .map(|(_, b)| self.measured / b)
    }

    pub(crate) fn json(&self) -> Json {
        json!({
            "figure": self.name,
            "unit": self.unit,
            "measured": self.measured,
            "baseline": self.baseline.as_ref().map(|(l, v)| json!({"what": l, "value": v})),
            "ratio": self.ratio(),
            "target": self.target.as_ref().map(|(t, _)| t),
            "met": self.target.as_ref().map(|(_, m)| m),
            "floor": self.floor.as_ref().map(|(w, v, tol)| json!({
                "what": w, "value": v, "tolerance": tol,
                "driver_within_tolerance": self.measured <= tol * v,
            })),
        })
    }
}

pub(crate) fn fmt_value(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 0.1 || v == 0.0 {
        2
    } else {
        4
    };
    match unit {
        "" if v.fract() == 0.0 => format!("{v:.0}"),
        "" => format!("{v:.digits$}"),
        u => format!("{v:.digits$} {u}"),
    }
}

pub(crate) fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | measured | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let baseline = f.baseline.as_ref().map_or("—".to_string(), |(l, v)| {
            format!("{} ({l})", fmt_value(*v, f.unit))
        });
        let ratio = f.ratio().map_or("—".to_string(), |r| format!("{r:.2}×"));
        let (target, met) = f
            .target
            .as_ref()
            .map_or(("—".into(), "—".into()), |(t, m)| {
                let met = match (f.floor_text(), m) {
                    (_, true) => "yes".to_string(),
                    (Some(floor), false) => format!("**no**; {floor}"),
                    (None, false) => "**no**".to_string(),
                };
                (t.clone(), met)
            });
        out.push_str(&format!(
            "| {} | {} | {baseline} | {ratio} | {target} | {met} |\n",
            f.name,
            fmt_value(f.measured, f.unit)
        ));
    }
    out
}

pub(crate) fn machine() -> serde_json::Map<String, Json> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let dbus = std::process::Command::new("dbus-daemon")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let layout = detect_layout(Path::new(CGROUP_ROOT)).map(|l| format!("{l:?}"));
    let mut m = serde_json::Map::new();
    m.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism().map_or(0, usize::from)),
    );
    m.insert("cpu_model".into(), json!(model));
    m.insert("memory_gib".into(), json!(mem_kb as f64 / 1024.0 / 1024.0));
    m.insert(
        "kernel".into(),
        json!(read("/proc/sys/kernel/osrelease").trim()),
    );
    m.insert("cgroup_layout".into(), json!(layout));
    m.insert("dbus_daemon".into(), json!(dbus));
    m
}

pub(crate) fn report(
    opts: &Opts,
    meta: &serde_json::Map<String, Json>,
    figures: &[Figure],
    notes: &[String],
    error: Option<&String>,
) {
    let describe = |k: &str| meta.get(k).map(ToString::to_string).unwrap_or_default();
    println!(
        "\nnomad-driver-systemd benchmark ({} run), machine: {} CPUs {}, {:.1} GiB, kernel {}, systemd {}, cgroup {}, {}\n",
        describe("mode").trim_matches('"'),
        describe("cpus"),
        describe("cpu_model").trim_matches('"'),
        meta.get("memory_gib").and_then(Json::as_f64).unwrap_or(0.0),
        describe("kernel").trim_matches('"'),
        describe("systemd").trim_matches('"'),
        describe("cgroup_layout").trim_matches('"'),
        describe("dbus_daemon").trim_matches('"'),
    );
    print!("{}", table(figures));
    if !notes.is_empty() {
        println!();
        for n in notes {
            println!("- {n}");
        }
    }
    let doc = json!({
        "machine": meta,
        "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
        "notes": notes,
        "error": error,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    if let Some(dir) = opts.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&opts.json, text) {
        Ok(()) => println!("\nJSON: {}", opts.json.display()),
        Err(e) => eprintln!("cannot write {}: {e}", opts.json.display()),
    }
}
