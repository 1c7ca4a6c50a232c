//! The driver benchmark. It boots the tests' private systemd, drives the real plugin
//! binary over gRPC the way the Nomad client does (TaskConfigs with Nomad's alloc dirs, whose
//! `secrets/` and `private/` are tmpfs mounts, and logmon-style FIFOs), and prints every figure
//! beside a baseline measured in the same run on the same systemd, as a Markdown table and as
//! JSON.
//!
//! ```text
//! cargo bench --bench driver                 # full run (about 22 minutes on two cores)
//! cargo bench --bench driver -- --quick      # CI smoke run: small counts, about a minute
//! cargo bench --bench driver -- --json PATH  # JSON copy elsewhere (default <target>/bench-results.json)
//! cargo bench --bench driver -- --tasks 300 --callers 300   # other scale-phase counts
//! ```
//!
//! The files, in the order a run goes through them:
//! - `scenarios/handshake.rs`: plugin exec → handshake, beside an exec of `/bin/true`;
//! - `scenarios/latency.rs`: sequential starts three ways (StartTask; a bare start of the same
//!   planned unit; a bare start of the minimal unit, `ExecStart` only) and StopTask beside a
//!   bare `KillUnit` + wait for the exit;
//! - `scenarios/decompose.rs`: the gap between the minimal and the planned unit, one row per
//!   group of the planner's properties added to the minimal unit with `Type=exec`, and one per
//!   group removed from the full plan;
//! - `scenarios/scale.rs`: N tasks from 8 callers, pausing at each density (0, 500, 1,000
//!   tasks running) to probe sequential start latency three ways; cleanup; the bare fill; a
//!   burst of StartTasks at once (beyond dbus-daemon's 128 pending replies per connection);
//! - `scenarios/stats.rs`: TaskStats, plugin CPU per task per sample and first-sample wall time;
//! - `scenarios/recover.rs`: plugin restart, RecoverTask of every task, TaskStats reopened;
//! - `scenarios/unit_mode.rs`: template-instance starts with daemon-reloads counted.
//!
//! `bare.rs` is the baseline client ([`Bare`]: a zbus connection of its own, listening only to
//! `JobRemoved`, `Reloading` and units' `PropertiesChanged`) doing the minimal systemd work of
//! each figure with exactly the properties or drop-in the driver's planner produces, so a ratio
//! is what the plugin, gRPC and the driver's own reads add, and [`CallCounter`] (`busctl
//! monitor`), which counts the plugin's D-Bus calls per operation to explain the ratios;
//! `tasks.rs` builds tasks and plans; `measure.rs` has the small measurement helpers;
//! `report.rs` prints.
//! Targets are reported, never asserted; the run fails only when the driver misbehaves (an RPC
//! error, a task not reaching running, a sample without cgroup data, units left behind, a
//! reload counter that sees nothing).

mod bare;
#[path = "../../tests/common/mod.rs"]
mod common;
mod measure;
mod report;
mod scenarios;
mod tasks;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::nomad::{ALLOC_ROOT, Alloc, JobConfig};
use common::plugin::Plugin;
use common::session::{Session, plugin_config};
use futures::{Future, StreamExt};
use nomad_driver_systemd::config::{PluginConfig, TaskUserConfig};
use nomad_driver_systemd::grpc::convert::task_spec;
use nomad_driver_systemd::proto::drivers::driver_client::DriverClient;
use nomad_driver_systemd::proto::drivers::{
    DestroyTaskRequest, FingerprintRequest, FingerprintResponse, InspectTaskRequest,
    RecoverTaskRequest, StartTaskRequest, StopTaskRequest, TaskConfig, TaskHandle, TaskState,
    TaskStatsRequest, TaskStatsResponse, WaitTaskRequest, memory_usage,
};
use nomad_driver_systemd::stats::{CgroupFiles, detect_layout, read_cgroup};
use nomad_driver_systemd::systemd::DROPIN_FILE;
use nomad_driver_systemd::task::DriverState;
use nomad_driver_systemd::unit::{UnitPlan, plan};
use nomad_driver_systemd::vocab::DValue;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::Channel;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

type R<T> = Result<T, String>;
type Client = DriverClient<Channel>;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPS: &str = "org.freedesktop.DBus.Properties";
/// Any single RPC or D-Bus job taking longer than this is a failure.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// Nomad's default kill signal for tasks.
const STOP_SIGNAL: &str = "SIGINT";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The bare client's calls in flight at most: dbus-daemon allows 128 pending replies per
/// connection on the system bus, and the driver keeps 64 in flight.
const BARE_IN_FLIGHT: usize = 64;
const TEMPLATE: &str = "bench@.service";
const TEMPLATE_TEXT: &str = "[Unit]\nDescription=nomad-driver-systemd bench %i\n\n[Service]\nExecStart=/bin/sleep infinity\n";

fn main() -> ExitCode {
    let opts = match Opts::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("driver bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = common::systemd::can_run() {
        eprintln!("driver bench: cannot boot a private systemd: {e}; run as root");
        return ExitCode::FAILURE;
    }
    raise_nofile();
    // One thread, as the plugin: the measuring client's own hand-offs (tonic's buffer worker,
    // the HTTP/2 connection, the caller) stay on it instead of waking other workers, so that
    // a gRPC round trip costs the client 50 µs, not 150 µs (ARCHITECTURE.md, *One thread*);
    // the bare client runs on the same thread
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("driver bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(opts))
}

/// Command-line options. cargo passes `--bench`; anything unknown is ignored with a warning.
struct Opts {
    quick: bool,
    json: PathBuf,
    /// Overrides the number of tasks of the scale phases.
    tasks: Option<usize>,
    /// Overrides the number of concurrent callers of the scale phases.
    callers: Option<usize>,
}

impl Opts {
    fn parse(mut args: impl Iterator<Item = String>) -> R<Self> {
        let mut opts = Self {
            quick: false,
            json: default_json_path(),
            tasks: None,
            callers: None,
        };
        let number = |flag: &str, v: Option<String>| {
            v.and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or(format!("{flag} needs a positive number"))
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => opts.quick = true,
                "--json" => {
                    opts.json = args.next().ok_or("--json needs a path")?.into();
                }
                "--tasks" => opts.tasks = Some(number("--tasks", args.next())?),
                "--callers" => opts.callers = Some(number("--callers", args.next())?),
                "--bench" => {}
                other => eprintln!("driver bench: ignoring argument {other:?}"),
            }
        }
        Ok(opts)
    }
}

/// `<target dir>/bench-results.json`, the target dir found from this executable
/// (`<target>/release/deps/driver-*`), so `CARGO_TARGET_DIR` is honoured.
fn default_json_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench-results.json")
}

fn raise_nofile() {
    // two FIFO readers per task: 1,000 tasks need more than the usual soft limit of 1,024
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How much of everything to do.
struct Counts {
    /// The CI smoke run: only what asserts that the driver works.
    quick: bool,
    latency: usize,
    warmup: usize,
    scale: usize,
    callers: usize,
    unit_mode: Vec<usize>,
    stats_tasks: usize,
    stats_interval: Duration,
    stats_window: Duration,
    read_rounds: usize,
    handshakes: usize,
    /// StartTasks issued all at once (a node receiving many allocations).
    burst: usize,
    /// Sequential starts per row of the property-group decomposition.
    decompose: usize,
    /// Task counts at which the scale fill pauses to probe sequential start latency.
    densities: Vec<usize>,
    /// Sequential three-way rounds per density probe.
    density_rounds: usize,
}

impl Counts {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick: true,
                // latency and density rounds in multiples of 12 (or 6): every start order
                // meets both stop orders equally often (scenarios/latency.rs)
                latency: 12,
                warmup: 1,
                decompose: 3,
                densities: vec![0, 50],
                density_rounds: 6,
                scale: 50,
                callers: 8,
                unit_mode: vec![20],
                stats_tasks: 10,
                stats_interval: Duration::from_millis(100),
                stats_window: Duration::from_secs(2),
                read_rounds: 5,
                handshakes: 5,
                burst: 150,
            }
        } else {
            Self {
                quick: false,
                latency: 96,
                warmup: 3,
                decompose: 20,
                densities: vec![0, 500, 1000],
                density_rounds: 12,
                scale: 1000,
                callers: 8,
                unit_mode: vec![20, 100],
                stats_tasks: 100,
                stats_interval: Duration::from_millis(100),
                stats_window: Duration::from_secs(10),
                read_rounds: 20,
                handshakes: 20,
                burst: 300,
            }
        }
    }
}

use bare::{Bare, CallCounter};
use measure::*;
use report::*;
use scenarios::handshake::handshake;
use tasks::*;

struct Bench {
    s: Session,
    bare: Bare,
    cfg: PluginConfig,
    counts: Counts,
    figures: Vec<Figure>,
    notes: Vec<String>,
    /// Keeps Nomad's Fingerprint stream open, as the client does.
    _fingerprint: Option<tonic::Streaming<FingerprintResponse>>,
    /// Wall time of the plugin's scale fill, for the bare fill's row.
    scale_wall: Duration,
    /// The WaitTask calls and TaskStats streams held after recovery, checked in cleanup.
    held: Option<scenarios::hold::Held>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        // never leave a plugin behind talking to a dead bus
        if let Some(mut p) = self.s.plugin.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

async fn run(opts: Opts) -> ExitCode {
    let started = Instant::now();
    let mut counts = Counts::new(opts.quick);
    counts.scale = opts.tasks.unwrap_or(counts.scale);
    counts.callers = opts.callers.unwrap_or(counts.callers);
    let mut meta = machine();
    let binary = common::plugin::binary();
    let release = binary
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "release");
    meta.insert("plugin_binary".into(), json!(binary.display().to_string()));
    meta.insert("plugin_release_build".into(), json!(release));
    meta.insert(
        "mode".into(),
        json!(if opts.quick { "quick" } else { "full" }),
    );
    if !release {
        eprintln!(
            "WARNING: the plugin binary {} is not a release build; run through `cargo bench`",
            binary.display()
        );
    }
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let result = match handshake(&counts, &mut figures).await {
        Ok(()) => phases(counts, &mut meta, &mut figures, &mut notes).await,
        Err(e) => Err(e),
    };
    if !release {
        notes.push("the plugin was not a release build: figures are not representative".into());
    }
    let took = started.elapsed();
    meta.insert("bench_seconds".into(), json!(took.as_secs_f64()));
    report(&opts, &meta, &figures, &notes, result.as_ref().err());
    if let Err(e) = result {
        eprintln!("\ndriver bench FAILED: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn phases(
    counts: Counts,
    meta: &mut serde_json::Map<String, Json>,
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> R<()> {
    let mut b = Bench::boot(counts).await?;
    meta.insert("systemd".into(), json!(b.bare.version().await?));
    let result = b.all().await;
    figures.append(&mut b.figures);
    notes.append(&mut b.notes);
    result?;
    let plugin = b.s.plugin.take().ok_or("no plugin at the end")?;
    if !plugin.kill().await {
        return Err("the plugin did not exit gracefully at the end".into());
    }
    Ok(())
}

impl Bench {
    async fn boot(counts: Counts) -> R<Self> {
        eprintln!("booting a private systemd and the plugin");
        let config = plugin_config(&[(
            "allowed_units",
            rmpv::Value::Array(vec![rmpv::Value::from("bench@*.service")]),
        )]);
        let cfg = PluginConfig::from_msgpack(&config).map_err(|e| format!("plugin config: {e}"))?;
        let s = Session::new(config).await;
        // alloc dirs mount their tmpfs in the private systemd this thread booted
        if nomad_driver_systemd::nomad_standin::private_systemd::booted_on_this_thread()
            != Some(s.sd.pid)
        {
            return Err("the private systemd was not booted on the bench's thread".into());
        }
        let run_dir = PathBuf::from(format!("/proc/{}/root/run", s.sd.pid));
        let bare = Bare::connect(&s.sd.bus_address(), run_dir).await?;
        let mut b = Self {
            s,
            bare,
            cfg,
            counts,
            figures: Vec::new(),
            notes: Vec::new(),
            _fingerprint: None,
            scale_wall: Duration::ZERO,
            held: None,
        };
        b.fingerprint().await?;
        Ok(b)
    }

    async fn fingerprint(&mut self) -> R<()> {
        let mut c = self.client();
        let mut stream = rpc("Fingerprint", c.fingerprint(FingerprintRequest {})).await?;
        match tokio::time::timeout(RPC_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(_))) => {}
            other => return Err(format!("Fingerprint stream: {other:?}")),
        }
        self._fingerprint = Some(stream);
        Ok(())
    }

    fn client(&self) -> Client {
        self.s.plugin().driver()
    }

    fn plugin_pid(&self) -> u32 {
        self.s.plugin().pid()
    }

    /// An error with the tail of the plugin's log attached.
    fn with_log(&self, e: String) -> String {
        let log = self
            .s
            .plugin
            .as_ref()
            .map(|p| p.stderr_text())
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{e}\nplugin log (last lines):\n{}", tail.join("\n"))
    }

    async fn all(&mut self) -> R<()> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = rss_mib(self.plugin_pid())?;
        self.latency().await?;
        self.decompose().await?;
        let handles = self.scale(idle).await?;
        self.stats(&handles).await?;
        self.recover(&handles).await?;
        self.cleanup(&handles).await?;
        // the allocs go too (and their mounts), so that the bare fill meets the same node
        drop(handles);
        self.bare_scale().await?;
        self.burst().await?;
        for n in self.counts.unit_mode.clone() {
            self.unit_mode(n).await?;
        }
        Ok(())
    }

    /// Counts everyone's calls to systemd but the bare client's, i.e. the plugin's.
    async fn call_counter(&self) -> R<CallCounter> {
        let me = self
            .bare
            .conn
            .unique_name()
            .map(ToString::to_string)
            .unwrap_or_default();
        CallCounter::start(&self.s.sd.bus_address(), me).await
    }

    /// Units of ours still loaded, waiting up to 10 s for them to go.
    async fn assert_clean(&self, phase: &str) -> R<()> {
        for _ in 0..100 {
            if self.s.sd.nomad_units().is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.s.sd.nomad_units();
        Err(format!(
            "{phase}: {} units left behind, e.g. {:?}",
            left.len(),
            left.first()
        ))
    }
}
