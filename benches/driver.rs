//! The driver benchmark. It boots the tests' private systemd, drives the real plugin
//! binary over gRPC the way the Nomad client does (TaskConfigs with alloc dirs and logmon-style
//! FIFOs), and prints every figure beside a baseline measured in the same run on the same
//! systemd, as a Markdown table and as JSON.
//!
//! ```text
//! cargo bench --bench driver                 # full run (about 2.5 minutes on two cores)
//! cargo bench --bench driver -- --quick      # CI smoke run: small counts, about 25 s
//! cargo bench --bench driver -- --json PATH  # JSON copy elsewhere (default <target>/bench-results.json)
//! cargo bench --bench driver -- --tasks 300 --callers 300   # other scale-phase counts
//! ```
//!
//! Phases, in order: plugin exec → handshake; sequential StartTask/StopTask latency; N tasks
//! from 8 callers (running check, RSS of plugin and PID 1); TaskStats CPU cost; plugin restart
//! and sequential RecoverTask (as the Nomad client restores), then every task's TaskStats
//! opened at once; cleanup; the bare N; a burst of StartTasks at once (beyond dbus-daemon's 128
//! pending replies per connection); unit-mode template instances, with daemon-reloads counted.
//!
//! Baselines are a bare zbus client in this process ([`Bare`]: one connection, `JobRemoved` and
//! `Reloading` only) doing the minimal systemd work with exactly the properties or drop-in the
//! driver's planner produces, so a ratio is what the plugin, gRPC and the driver's own reads add.
//! [`CallCounter`] (`busctl monitor`) counts the plugin's D-Bus calls per operation, to explain
//! the ratios. Targets are reported, never asserted; the run fails only when the driver
//! misbehaves (an RPC error, a task not reaching running, a sample without cgroup data, units
//! left behind, a reload counter that sees nothing).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::nomad::{Alloc, JobConfig};
use common::plugin::Plugin;
use common::session::{Session, plugin_config};
use futures::{Future, StreamExt};
use nomad_driver_systemd::config::{PluginConfig, TaskUserConfig};
use nomad_driver_systemd::grpc::convert::task_spec;
use nomad_driver_systemd::proto::drivers::driver_client::DriverClient;
use nomad_driver_systemd::proto::drivers::{
    DestroyTaskRequest, FingerprintRequest, FingerprintResponse, InspectTaskRequest,
    RecoverTaskRequest, StartTaskRequest, StopTaskRequest, TaskConfig, TaskHandle, TaskState,
    TaskStatsRequest, TaskStatsResponse, memory_usage,
};
use nomad_driver_systemd::stats::{detect_layout, read_cgroup};
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
}

impl Counts {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                latency: 10,
                warmup: 1,
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
                latency: 200,
                warmup: 3,
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

// ---------------------------------------------------------------------------------------------
// Results

/// One row of the table.
struct Figure {
    name: String,
    unit: &'static str,
    measured: f64,
    baseline: Option<(String, f64)>,
    target: Option<(String, bool)>,
}

impl Figure {
    fn new(name: impl Into<String>, unit: &'static str, measured: f64) -> Self {
        Self {
            name: name.into(),
            unit,
            measured,
            baseline: None,
            target: None,
        }
    }

    fn baseline(mut self, label: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((label.into(), value));
        self
    }

    fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some((text.into(), met));
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .filter(|(_, b)| *b > 0.0)
            .map(|(_, b)| self.measured / b)
    }

    fn json(&self) -> Json {
        json!({
            "figure": self.name,
            "unit": self.unit,
            "measured": self.measured,
            "baseline": self.baseline.as_ref().map(|(l, v)| json!({"what": l, "value": v})),
            "ratio": self.ratio(),
            "target": self.target.as_ref().map(|(t, _)| t),
            "met": self.target.as_ref().map(|(_, m)| m),
        })
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
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

fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | measured | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let baseline = f.baseline.as_ref().map_or("—".to_string(), |(l, v)| {
            format!("{} ({l})", fmt_value(*v, f.unit))
        });
        let ratio = f.ratio().map_or("—".to_string(), |r| format!("{r:.2}×"));
        let (target, met) = f.target.as_ref().map_or(("—".to_string(), "—"), |(t, m)| {
            (t.clone(), if *m { "yes" } else { "**no**" })
        });
        out.push_str(&format!(
            "| {} | {} | {baseline} | {ratio} | {target} | {met} |\n",
            f.name,
            fmt_value(f.measured, f.unit)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Small measurements

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[Duration], pct: usize) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = (pct * s.len()).div_ceil(100).max(1);
    s[rank.min(s.len()) - 1]
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn rss_mib(pid: u32) -> R<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb as f64 / 1024.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> R<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let after_comm = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (tick(11), tick(12)) else {
        return Err(format!("cannot parse /proc/{pid}/stat"));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok((utime + stime) as f64 / hz.max(1) as f64)
}

async fn timed<T>(fut: impl Future<Output = R<T>>) -> R<(T, Duration)> {
    let t = Instant::now();
    let v = fut.await?;
    Ok((v, t.elapsed()))
}

/// Awaits an RPC for at most [`RPC_TIMEOUT`], naming it in the error.
async fn rpc<T>(
    what: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> R<T> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{what}: {:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("{what} hung for {} s", RPC_TIMEOUT.as_secs())),
    }
}

/// Runs `f` over `items` with `callers` concurrent callers; every result, in completion order.
async fn concurrently<I, T, F, Fut>(items: Vec<I>, callers: usize, f: F) -> Vec<R<T>>
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = R<T>>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(callers)
        .collect()
        .await
}

/// Fails with a summary of distinct errors when any result is an error.
fn all_ok<T>(what: &str, results: Vec<R<T>>) -> R<Vec<T>> {
    let total = results.len();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    if errors.is_empty() {
        return Ok(ok);
    }
    let failed: usize = errors.values().sum();
    let list: Vec<String> = errors.iter().map(|(e, n)| format!("  {n}× {e}")).collect();
    Err(format!(
        "{what}: {failed} of {total} failed:\n{}",
        list.join("\n")
    ))
}

// ---------------------------------------------------------------------------------------------
// The bare baseline client

/// A minimal systemd client on its own connection: only what the baselines need, and an
/// independent count of systemd's `Reloading(true)` signals.
struct Bare {
    conn: zbus::Connection,
    /// The private systemd's `/run` as this process reaches it (for environment files).
    run_dir: PathBuf,
    jobs: Arc<Mutex<Jobs>>,
    reloads: Arc<AtomicU64>,
    dispatcher: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Jobs {
    waiting: HashMap<String, oneshot::Sender<String>>,
    done: HashMap<String, String>,
}

fn zerr(e: impl std::fmt::Display) -> String {
    format!("bare D-Bus client: {e}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Bare {
    async fn connect(address: &str, run_dir: PathBuf) -> R<Self> {
        let conn = zbus::connection::Builder::address(address)
            .map_err(zerr)?
            .build()
            .await
            .map_err(zerr)?;
        let rule = |member: &'static str| {
            zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface(MANAGER)
                .and_then(|b| b.member(member))
                .map(|b| b.build())
                .map_err(zerr)
        };
        let jobs_stream =
            zbus::MessageStream::for_match_rule(rule("JobRemoved")?, &conn, Some(1 << 16))
                .await
                .map_err(zerr)?;
        let reload_stream = zbus::MessageStream::for_match_rule(rule("Reloading")?, &conn, None)
            .await
            .map_err(zerr)?;
        conn.call_method(Some(DEST), PATH, Some(MANAGER), "Subscribe", &())
            .await
            .map_err(zerr)?;
        let jobs = Arc::new(Mutex::new(Jobs::default()));
        let reloads = Arc::new(AtomicU64::new(0));
        let dispatcher = tokio::spawn(dispatch(
            futures::stream::select(jobs_stream, reload_stream),
            Arc::clone(&jobs),
            Arc::clone(&reloads),
        ));
        Ok(Self {
            conn,
            run_dir,
            jobs,
            reloads,
            dispatcher,
        })
    }

    /// `Reloading(true)` signals seen so far.
    fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::SeqCst)
    }

    async fn call<B>(&self, method: &str, body: &B) -> R<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(Some(DEST), PATH, Some(MANAGER), method, body)
            .await
            .map_err(|e| format!("bare {method}: {e}"))
    }

    /// Calls a job-returning method and waits for the job's result.
    async fn job<B>(&self, method: &str, body: &B) -> R<String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let reply = self.call(method, body).await?;
        let job: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        let rx = {
            let mut jobs = lock(&self.jobs);
            if let Some(result) = jobs.done.remove(job.as_str()) {
                return Ok(result);
            }
            let (tx, rx) = oneshot::channel();
            jobs.waiting.insert(job.as_str().to_string(), tx);
            rx
        };
        match tokio::time::timeout(RPC_TIMEOUT, rx).await {
            Ok(Ok(result)) => Ok(result),
            _ => Err(format!("bare {method}: no JobRemoved for {}", job.as_str())),
        }
    }

    /// What the driver does for a transient start: the task's root-only environment file,
    /// then `StartTransientUnit` with the planned properties (which name that file).
    async fn start_planned(&self, plan: &UnitPlan) -> R<()> {
        self.write_env_file(plan)?;
        self.start_transient(&plan.unit, &plan.properties).await
    }

    /// The task's root-only environment file, where the driver writes it.
    fn write_env_file(&self, plan: &UnitPlan) -> R<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.run_dir.join(
            nomad_driver_systemd::vocab::env_file_path(&plan.unit).trim_start_matches("/run/"),
        );
        let dir = path.parent().unwrap_or(&path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("bare env dir: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("bare env file: {e}"))?;
        std::io::Write::write_all(&mut f, plan.env_file.as_bytes())
            .map_err(|e| format!("bare env file: {e}"))
    }

    async fn start_transient(&self, unit: &str, props: &[(String, DValue)]) -> R<()> {
        let props = props
            .iter()
            .map(|(k, v)| Ok((k.as_str(), to_value(v)?)))
            .collect::<R<Vec<_>>>()?;
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let result = self
            .job("StartTransientUnit", &(unit, "fail", props, aux))
            .await?;
        done(unit, "StartTransientUnit", &result)
    }

    async fn start_unit(&self, unit: &str) -> R<()> {
        let result = self.job("StartUnit", &(unit, "fail")).await?;
        done(unit, "StartUnit", &result)
    }

    async fn stop_unit(&self, unit: &str) -> R<()> {
        let result = self.job("StopUnit", &(unit, "replace")).await?;
        done(unit, "StopUnit", &result)
    }

    async fn reset_failed(&self, unit: &str) {
        // not failed / already unloaded are both fine
        let _ = self.call("ResetFailedUnit", &(unit,)).await;
    }

    async fn reload(&self) -> R<()> {
        self.call("Reload", &()).await.map(drop)
    }

    /// The reads the driver makes of a unit's status (GetUnit, GetAll of the Unit and of the
    /// Service interface), each timed.
    async fn status_reads(&self, unit: &str) -> R<[Duration; 4]> {
        let t = Instant::now();
        let reply = self.call("GetUnit", &(unit,)).await?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        let get_unit = t.elapsed();
        let t = Instant::now();
        self.get_all(path.as_str(), "org.freedesktop.systemd1.Unit")
            .await?;
        let unit_props = t.elapsed();
        let t = Instant::now();
        self.get_all(path.as_str(), "org.freedesktop.systemd1.Service")
            .await?;
        let service_props = t.elapsed();
        let t = Instant::now();
        self.property(
            path.as_str(),
            "org.freedesktop.systemd1.Unit",
            "ActiveState",
        )
        .await?;
        Ok([get_unit, unit_props, service_props, t.elapsed()])
    }

    async fn get_all(&self, path: &str, iface: &str) -> R<()> {
        let reply = self
            .conn
            .call_method(Some(DEST), path, Some(PROPS), "GetAll", &(iface,))
            .await
            .map_err(zerr)?;
        let props: HashMap<String, OwnedValue> = reply.body().deserialize().map_err(zerr)?;
        if props.is_empty() {
            return Err(format!("bare GetAll {path} {iface}: no properties"));
        }
        Ok(())
    }

    async fn property(&self, path: &str, iface: &str, name: &str) -> R<OwnedValue> {
        let reply = self
            .conn
            .call_method(Some(DEST), path, Some(PROPS), "Get", &(iface, name))
            .await
            .map_err(zerr)?;
        reply.body().deserialize().map_err(zerr)
    }

    async fn version(&self) -> R<String> {
        let v = self.property(PATH, MANAGER, "Version").await?;
        String::try_from(v).map_err(zerr)
    }

    async fn control_group(&self, unit: &str) -> R<String> {
        let reply = self.call("GetUnit", &(unit,)).await?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        let v = self
            .property(
                path.as_str(),
                "org.freedesktop.systemd1.Service",
                "ControlGroup",
            )
            .await?;
        String::try_from(v).map_err(zerr)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

fn done(unit: &str, method: &str, result: &str) -> R<()> {
    if result == "done" {
        Ok(())
    } else {
        Err(format!("bare {method} {unit}: job result {result}"))
    }
}

async fn dispatch(
    mut signals: impl futures::Stream<Item = zbus::Result<zbus::Message>> + Unpin,
    jobs: Arc<Mutex<Jobs>>,
    reloads: Arc<AtomicU64>,
) {
    while let Some(msg) = signals.next().await {
        let Ok(msg) = msg else { continue };
        let member = msg.header().member().map(|m| m.as_str().to_string());
        match member.as_deref() {
            Some("JobRemoved") => {
                let Ok((_, job, _, result)) = msg
                    .body()
                    .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                let mut jobs = lock(&jobs);
                match jobs.waiting.remove(job.as_str()) {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => {
                        // the plugin's jobs land here too; keep the table bounded
                        if jobs.done.len() > 100_000 {
                            jobs.done.clear();
                        }
                        jobs.done.insert(job.as_str().to_string(), result);
                    }
                }
            }
            Some("Reloading") if msg.body().deserialize::<bool>().unwrap_or(false) => {
                reloads.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// The planner's D-Bus value → zvariant, for the bare `StartTransientUnit` (the driver's own
/// conversion, so both sides send identical values).
fn to_value(v: &DValue) -> R<Value<'static>> {
    nomad_driver_systemd::systemd::dbus::to_value(v).map_err(zerr)
}

/// Counts method calls to systemd by member with `busctl monitor` (a child process,
/// independent of both clients), from every sender but `exclude`.
struct CallCounter {
    child: std::process::Child,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    async fn start(address: &str, exclude: String) -> R<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("busctl")
            .arg(format!("--address={address}"))
            .args(["monitor", "--json=short"])
            .arg(format!("--match=type='method_call',destination='{DEST}'"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("busctl monitor: {e}"))?;
        let out = child.stdout.take().ok_or("busctl monitor: no stdout")?;
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = Arc::clone(&counts);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Json>(&line) else {
                    continue;
                };
                if v["sender"].as_str() == Some(exclude.as_str()) {
                    continue;
                }
                let member = v["member"].as_str().unwrap_or("?").to_string();
                *lock(&sink).entry(member).or_insert(0) += 1;
            }
        });
        // let the monitor register before anything is counted
        tokio::time::sleep(Duration::from_millis(500)).await;
        lock(&counts).clear();
        Ok(Self { child, counts })
    }

    /// Calls since the last take, per `per` operations, e.g. `GetAll 2.0, GetUnit 1.0`.
    async fn take(&self, per: usize) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counts = std::mem::take(&mut *lock(&self.counts));
        let per = per.max(1) as f64;
        let parts: Vec<String> = counts
            .iter()
            .map(|(m, n)| match *n as f64 / per {
                r if r >= 0.05 => format!("{m} {r:.1}"),
                _ => format!("{m} ({n} in all)"),
            })
            .collect();
        if parts.is_empty() {
            "none seen".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Drop for CallCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks

/// A task the plugin runs.
struct PluginTask {
    _alloc: Alloc,
    config: TaskConfig,
}

/// A unit the bare client runs, planned exactly as the driver would plan it.
struct BareTask {
    _alloc: Alloc,
    plan: UnitPlan,
}

fn sleeper() -> JobConfig {
    JobConfig::command("/bin/sleep", &["infinity"])
}

fn instance_job(alloc: &Alloc) -> JobConfig {
    JobConfig {
        unit: Some(format!("bench@{}.service", alloc.id)),
        ..JobConfig::default()
    }
}

fn plugin_tasks(n: usize, job: impl Fn(&Alloc) -> JobConfig) -> Vec<PluginTask> {
    (0..n)
        .map(|_| {
            let alloc = Alloc::new("bench");
            let config = alloc.task_config(1, &job(&alloc));
            PluginTask {
                _alloc: alloc,
                config,
            }
        })
        .collect()
}

fn bare_tasks(n: usize, cfg: &PluginConfig, job: impl Fn(&Alloc) -> JobConfig) -> R<Vec<BareTask>> {
    (0..n)
        .map(|_| {
            let alloc = Alloc::new("bench");
            let config = alloc.task_config(1, &job(&alloc));
            let user = TaskUserConfig::from_msgpack(&config.msgpack_driver_config)
                .map_err(|e| format!("job config: {e}"))?;
            let plan = plan(&task_spec(&config), &user, cfg).map_err(|e| format!("plan: {e}"))?;
            Ok(BareTask {
                _alloc: alloc,
                plan,
            })
        })
        .collect()
}

async fn start_task(mut c: Client, task: TaskConfig) -> R<TaskHandle> {
    let resp = rpc(
        "StartTask",
        c.start_task(StartTaskRequest { task: Some(task) }),
    )
    .await?;
    resp.handle
        .ok_or_else(|| "StartTask returned no handle".to_string())
}

async fn stop_task(mut c: Client, id: String) -> R<()> {
    let req = StopTaskRequest {
        task_id: id,
        timeout: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        signal: STOP_SIGNAL.into(),
    };
    rpc("StopTask", c.stop_task(req)).await.map(drop)
}

async fn destroy_task(mut c: Client, id: String) -> R<()> {
    let req = DestroyTaskRequest {
        task_id: id,
        force: true,
    };
    rpc("DestroyTask", c.destroy_task(req)).await.map(drop)
}

async fn is_running(mut c: Client, id: String) -> R<bool> {
    let resp = rpc(
        "InspectTask",
        c.inspect_task(InspectTaskRequest { task_id: id }),
    )
    .await?;
    Ok(resp
        .task
        .is_some_and(|t| t.state == TaskState::Running as i32))
}

/// Whether a sample carries figures read from the cgroup (memory.stat), not only the D-Bus
/// fallback.
fn has_cgroup_data(msg: &TaskStatsResponse) -> bool {
    let rss = memory_usage::Fields::Rss as i32;
    msg.stats
        .as_ref()
        .and_then(|s| s.agg_resource_usage.as_ref())
        .and_then(|u| u.memory.as_ref())
        .is_some_and(|m| m.measured_fields.contains(&rss))
}

fn unit_of(handle: &TaskHandle) -> R<String> {
    DriverState::decode(&handle.driver_state)
        .map(|s| s.unit)
        .map_err(|e| format!("driver_state: {e}"))
}

fn task_id(handle: &TaskHandle) -> String {
    handle
        .config
        .as_ref()
        .map(|c| c.id.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The run

struct Bench {
    s: Session,
    bare: Bare,
    cfg: PluginConfig,
    counts: Counts,
    figures: Vec<Figure>,
    notes: Vec<String>,
    /// Keeps Nomad's Fingerprint stream open, as the client does.
    _fingerprint: Option<tonic::Streaming<FingerprintResponse>>,
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
        let handles = self.scale(idle).await?;
        self.stats(&handles).await?;
        self.recover(&handles).await?;
        self.cleanup(&handles).await?;
        self.bare_scale().await?;
        self.burst().await?;
        for n in self.counts.unit_mode.clone() {
            self.unit_mode(n).await?;
        }
        Ok(())
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

    // --- StartTask / StopTask latency -------------------------------------------------------

    async fn latency(&mut self) -> R<()> {
        let n = self.counts.latency + self.counts.warmup;
        eprintln!("latency: {n} StartTask/StopTask, each beside a bare start/stop");
        let tasks = plugin_tasks(n, |_| sleeper());
        let bare = bare_tasks(n, &self.cfg, |_| sleeper())?;
        let calls = self.call_counter().await?;
        let (handles, ps, bs) = self.latency_starts(&tasks, &bare).await?;
        let start_calls = calls.take(n).await;
        let reads = self.read_breakdown(&bare[..bare.len().min(50)]).await?;
        calls.take(n).await;
        let (pstop, bstop) = self.latency_stops(&handles, &bare).await?;
        let stop_calls = calls.take(n).await;
        self.assert_clean("latency").await?;
        let bare_start = "bare StartTransientUnit + job";
        let bare_stop = "bare StopUnit + job";
        for (pct, target) in [(50, true), (99, false)] {
            let (p, q) = (ms(percentile(&ps, pct)), ms(percentile(&bs, pct)));
            let mut f = Figure::new(format!("StartTask p{pct}"), "ms", p).baseline(bare_start, q);
            if target {
                f = f.target("≤ 1.2× bare", p <= 1.2 * q);
            }
            self.figures.push(f);
        }
        for pct in [50, 99] {
            let (p, q) = (ms(percentile(&pstop, pct)), ms(percentile(&bstop, pct)));
            self.figures
                .push(Figure::new(format!("StopTask p{pct}"), "ms", p).baseline(bare_stop, q));
        }
        self.notes.push(format!(
            "latency: {} sequential samples each (after {} warm-up), task `/bin/sleep infinity` \
             with alloc dirs, FIFOs and 256 MB / 100 MHz resources; StopTask signal {STOP_SIGNAL}",
            self.counts.latency, self.counts.warmup
        ));
        self.notes.push(reads);
        self.notes.push(format!(
            "plugin D-Bus calls to systemd per StartTask (sequential): {start_calls}; per \
             StopTask + DestroyTask: {stop_calls} (the bare baselines make 1 call each)"
        ));
        Ok(())
    }

    /// Sequential StartTask and bare starts, interleaved; the handles and both latencies.
    async fn latency_starts(
        &self,
        tasks: &[PluginTask],
        bare: &[BareTask],
    ) -> R<(Vec<TaskHandle>, Vec<Duration>, Vec<Duration>)> {
        let (mut ps, mut bs, mut handles) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (t, u)) in tasks.iter().zip(bare).enumerate() {
            let plugin = timed(start_task(self.client(), t.config.clone()));
            let base = timed(self.bare.start_planned(&u.plan));
            // alternate who goes first so that neither always meets a busier systemd
            let ((h, p), ((), q)) = if i % 2 == 0 {
                let a = plugin.await.map_err(|e| self.with_log(e))?;
                (a, base.await?)
            } else {
                let q = base.await?;
                (plugin.await.map_err(|e| self.with_log(e))?, q)
            };
            handles.push(h);
            if i >= self.counts.warmup {
                ps.push(p);
                bs.push(q);
            }
        }
        Ok((handles, ps, bs))
    }

    /// Sequential StopTask (then an untimed DestroyTask) and bare stops, interleaved.
    async fn latency_stops(
        &self,
        handles: &[TaskHandle],
        bare: &[BareTask],
    ) -> R<(Vec<Duration>, Vec<Duration>)> {
        let (mut ps, mut bs) = (Vec::new(), Vec::new());
        for (i, (h, u)) in handles.iter().zip(bare).enumerate() {
            let plugin = timed(stop_task(self.client(), task_id(h)));
            let base = timed(self.bare.stop_unit(&u.plan.unit));
            let (((), p), ((), q)) = if i % 2 == 0 {
                let a = plugin.await.map_err(|e| self.with_log(e))?;
                (a, base.await?)
            } else {
                let q = base.await?;
                (plugin.await.map_err(|e| self.with_log(e))?, q)
            };
            destroy_task(self.client(), task_id(h)).await?;
            self.bare.reset_failed(&u.plan.unit).await;
            if i >= self.counts.warmup {
                ps.push(p);
                bs.push(q);
            }
        }
        Ok((ps, bs))
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

    /// Median cost of each D-Bus read the driver makes after a start and per status change,
    /// on the running units of `units` — for explaining the latency ratios.
    async fn read_breakdown(&self, units: &[BareTask]) -> R<String> {
        let mut cols: [Vec<Duration>; 4] = Default::default();
        for u in units {
            let r = self.bare.status_reads(&u.plan.unit).await?;
            for (c, d) in cols.iter_mut().zip(r) {
                c.push(d);
            }
        }
        let med = |v: &[Duration]| ms(percentile(v, 50));
        Ok(format!(
            "D-Bus reads on this systemd, bare client, median of {}: GetUnit {:.2} ms, \
             GetAll(Unit) {:.2} ms, GetAll(Service) {:.2} ms (the driver reads all three after a \
             start, on every status change and on RecoverTask); one Get(ActiveState) {:.2} ms",
            cols[0].len(),
            med(&cols[0]),
            med(&cols[1]),
            med(&cols[2]),
            med(&cols[3])
        ))
    }

    // --- N tasks -----------------------------------------------------------------------------

    async fn scale(&mut self, idle_rss: f64) -> R<Vec<(TaskHandle, PluginTask)>> {
        let (n, callers) = (self.counts.scale, self.counts.callers);
        eprintln!("scale: {n} StartTask from {callers} concurrent callers");
        let tasks = plugin_tasks(n, |_| sleeper());
        let sd_before = rss_mib(self.s.sd.pid)?;
        let client = self.client();
        let calls = self.call_counter().await?;
        let t = Instant::now();
        let results = concurrently(tasks, callers, |task| {
            let c = client.clone();
            async move {
                let h = start_task(c, task.config.clone()).await?;
                Ok((h, task))
            }
        })
        .await;
        let wall = t.elapsed();
        let calls = calls.take(n).await;
        self.notes.push(format!(
            "plugin D-Bus calls to systemd per StartTask with {callers} callers: {calls}"
        ));
        let handles = all_ok("StartTask at scale", results).map_err(|e| self.with_log(e))?;
        let ids: Vec<String> = handles.iter().map(|(h, _)| task_id(h)).collect();
        let running = self.count_running(&ids).await?;
        let active = self.running_units();
        let rss = rss_mib(self.plugin_pid())?;
        let sd_after = rss_mib(self.s.sd.pid)?;
        self.figures.push(Figure::new(
            format!("{n} tasks started ({callers} callers), wall"),
            "s",
            wall.as_secs_f64(),
        ));
        self.figures.push(
            Figure::new(
                format!("{n} tasks running (InspectTask)"),
                "",
                running as f64,
            )
            .baseline("units running per systemctl", active as f64)
            .target(format!("all {n}"), running == n && active >= n),
        );
        self.figures.push(
            Figure::new("plugin RSS idle", "MiB", idle_rss).target("≤ 15 MB", idle_rss <= 15.0),
        );
        self.figures.push(
            Figure::new(format!("plugin RSS at {n} tasks"), "MiB", rss)
                .baseline("idle", idle_rss)
                .target("≤ 40 MB at 1,000", rss <= 40.0),
        );
        self.figures.push(Figure::new(
            "systemd RSS growth per 1,000 units",
            "MiB",
            (sd_after - sd_before) * 1000.0 / n as f64,
        ));
        self.notes.push(format!(
            "plugin RSS grows {:.1} KiB per task; systemd (PID 1) went {sd_before:.1} → {sd_after:.1} MiB for {n} units",
            (rss - idle_rss) * 1024.0 / n as f64
        ));
        if running != n || active < n {
            return Err(self.with_log(format!(
                "only {running} of {n} tasks running per InspectTask, {active} units running per systemctl"
            )));
        }
        Ok(handles)
    }

    async fn count_running(&self, ids: &[String]) -> R<usize> {
        let client = self.client();
        let results = concurrently(ids.to_vec(), self.counts.callers, |id| {
            is_running(client.clone(), id)
        })
        .await;
        Ok(all_ok("InspectTask", results)?
            .into_iter()
            .filter(|r| *r)
            .count())
    }

    /// `nomad-*` services systemd reports as running.
    fn running_units(&self) -> usize {
        self.s
            .sd
            .exec(&[
                "systemctl",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--state=running",
                "nomad-*",
            ])
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|u| u.ends_with(".service"))
            })
            .count()
    }

    // --- TaskStats ---------------------------------------------------------------------------

    async fn stats(&mut self, handles: &[(TaskHandle, PluginTask)]) -> R<()> {
        let m = self.counts.stats_tasks.min(handles.len());
        let (interval, window) = (self.counts.stats_interval, self.counts.stats_window);
        eprintln!(
            "stats: {m} TaskStats streams every {} ms for {} s",
            interval.as_millis(),
            window.as_secs()
        );
        let chosen = &handles[..m];
        let per_call = self.read_cgroup_baseline(chosen).await?;
        let pid = self.plugin_pid();
        // what the plugin burns with nothing to do, over the same window
        let idle0 = cpu_seconds(pid)?;
        tokio::time::sleep(window).await;
        let idle = cpu_seconds(pid)? - idle0;
        let cpu0 = cpu_seconds(pid)?;
        let (samples, with_cgroup) = self.stream_stats(chosen, interval, window).await?;
        let cpu = cpu_seconds(pid)? - cpu0;
        if samples == 0 {
            return Err("no TaskStats sample arrived".into());
        }
        let per_sample = cpu * 1e3 / samples as f64;
        self.figures.push(
            Figure::new("TaskStats CPU per task per sample", "ms", per_sample)
                .baseline("read_cgroup in-process", per_call)
                .target("≤ 0.1 ms", per_sample <= 0.1),
        );
        self.notes.push(format!(
            "stats: {samples} samples from {m} tasks in {} s, {with_cgroup} with cgroup memory.stat data; \
             plugin CPU {cpu:.2} s while streaming vs {idle:.2} s idle over the same window with {} tasks",
            window.as_secs(),
            handles.len()
        ));
        if with_cgroup < samples {
            return Err(format!(
                "{} of {samples} TaskStats samples carried no cgroup data",
                samples - with_cgroup
            ));
        }
        Ok(())
    }

    /// Wall time of one `read_cgroup` of a task's cgroup, in ms.
    async fn read_cgroup_baseline(&self, chosen: &[(TaskHandle, PluginTask)]) -> R<f64> {
        let root = Path::new(CGROUP_ROOT);
        let layout = detect_layout(root).ok_or("no cgroup layout under /sys/fs/cgroup")?;
        let mut cgroups = Vec::new();
        for (h, _) in chosen {
            cgroups.push(self.bare.control_group(&unit_of(h)?).await?);
        }
        let rounds = self.counts.read_rounds;
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            for cg in &cgroups {
                read_cgroup(root, layout, cg).map_err(|e| format!("read_cgroup {cg}: {e}"))?;
            }
        }
        Ok(ms(t.elapsed()) / (rounds * cgroups.len()).max(1) as f64)
    }

    /// Opens one stream per task; counts samples (and those with cgroup data) until `window`.
    async fn stream_stats(
        &self,
        chosen: &[(TaskHandle, PluginTask)],
        interval: Duration,
        window: Duration,
    ) -> R<(u64, u64)> {
        let deadline = Instant::now() + window;
        let samples = Arc::new(AtomicU64::new(0));
        let with_cgroup = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        let interval = prost_types::Duration::try_from(interval).map_err(|e| e.to_string())?;
        for (h, _) in chosen {
            let mut c = self.client();
            let req = TaskStatsRequest {
                task_id: task_id(h),
                collection_interval: Some(interval),
            };
            let (samples, with_cgroup) = (Arc::clone(&samples), Arc::clone(&with_cgroup));
            set.spawn(async move {
                let mut stream = rpc("TaskStats", c.task_stats(req)).await?;
                loop {
                    match tokio::time::timeout_at(deadline, stream.message()).await {
                        Err(_) => return Ok(()),
                        Ok(Ok(Some(msg))) => {
                            samples.fetch_add(1, Ordering::Relaxed);
                            if has_cgroup_data(&msg) {
                                with_cgroup.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Ok(None)) => return Err("TaskStats stream ended early".to_string()),
                        Ok(Err(s)) => return Err(format!("TaskStats: {}", s.message())),
                    }
                }
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(r.map_err(|e| e.to_string()).and_then(|r| r));
        }
        all_ok("TaskStats", results)?;
        Ok((
            samples.load(Ordering::Relaxed),
            with_cgroup.load(Ordering::Relaxed),
        ))
    }

    /// Opens a TaskStats stream at Nomad's default 1 s interval for every task at once, as the
    /// client does after a restart; the time until every stream delivered its first sample,
    /// and how many of those carried cgroup data.
    async fn first_samples(&self, ids: &[String]) -> R<(Duration, usize)> {
        let client = self.client();
        let t = Instant::now();
        let results = futures::future::join_all(ids.iter().map(|id| {
            let mut c = client.clone();
            let req = TaskStatsRequest {
                task_id: id.clone(),
                collection_interval: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            };
            async move {
                let mut stream = rpc("TaskStats", c.task_stats(req)).await?;
                match tokio::time::timeout(RPC_TIMEOUT, stream.message()).await {
                    Ok(Ok(Some(msg))) => Ok(has_cgroup_data(&msg)),
                    Ok(Ok(None)) => Err("TaskStats ended before its first sample".to_string()),
                    Ok(Err(s)) => Err(format!("TaskStats: {}", s.message())),
                    Err(_) => Err("no first TaskStats sample within the timeout".to_string()),
                }
            }
        }))
        .await;
        let wall = t.elapsed();
        let with_data = all_ok("TaskStats after the restart", results)?
            .into_iter()
            .filter(|d| *d)
            .count();
        Ok((wall, with_data))
    }

    // --- RecoverTask -------------------------------------------------------------------------

    async fn recover(&mut self, handles: &[(TaskHandle, PluginTask)]) -> R<()> {
        let n = handles.len();
        eprintln!(
            "recover: plugin restart, then {n} RecoverTask in sequence (as the Nomad client restores)"
        );
        self._fingerprint = None;
        let old = self.s.plugin.take().ok_or("no plugin")?;
        if !old.kill().await {
            return Err("the plugin did not exit gracefully on go-plugin's kill".into());
        }
        let t = Instant::now();
        self.s.relaunch().await;
        let relaunch = t.elapsed();
        let mut c = self.client();
        let calls = self.call_counter().await?;
        let t = Instant::now();
        for (h, _) in handles {
            let mut handle = h.clone();
            if let Some(cfg) = handle.config.as_mut() {
                cfg.msgpack_driver_config.clear();
            }
            let req = RecoverTaskRequest {
                task_id: String::new(),
                handle: Some(handle),
            };
            rpc("RecoverTask", c.recover_task(req))
                .await
                .map_err(|e| self.with_log(e))?;
        }
        let wall = t.elapsed();
        let calls = calls.take(n).await;
        let t = Instant::now();
        for (h, _) in handles {
            self.bare.status_reads(&unit_of(h)?).await?;
        }
        let base = t.elapsed();
        let ids: Vec<String> = handles.iter().map(|(h, _)| task_id(h)).collect();
        let sample = &ids[..ids.len().min(200)];
        let t = Instant::now();
        for id in sample {
            is_running(self.client(), id.clone()).await?;
        }
        let inspect = ms(t.elapsed()) / sample.len().max(1) as f64;
        self.notes.push(format!(
            "recover: plugin D-Bus calls to systemd per RecoverTask: {calls}; a gRPC round trip \
             without D-Bus (InspectTask, sequential) takes {inspect:.2} ms"
        ));
        let running = self.count_running(&ids).await?;
        let rss = rss_mib(self.plugin_pid())?;
        let (first, with_data) = self
            .first_samples(&ids)
            .await
            .map_err(|e| self.with_log(e))?;
        self.notes.push(format!(
            "after the restart, {n} TaskStats streams opened at once (1 s interval, as the Nomad \
             client does) delivered their first samples within {:.2} s, {with_data} with cgroup data",
            first.as_secs_f64()
        ));
        self.figures.push(
            Figure::new(
                format!("RecoverTask of {n} running tasks, wall"),
                "s",
                wall.as_secs_f64(),
            )
            .baseline("bare: the same 3 D-Bus reads per unit", base.as_secs_f64())
            .target(
                format!("≤ 2 s per 1,000 (≤ {:.2} s)", 2.0 * n as f64 / 1000.0),
                wall.as_secs_f64() <= 2.0 * n as f64 / 1000.0,
            ),
        );
        self.notes.push(format!(
            "recover: relaunch (exec → SetConfig → Init) took {:.0} ms; {running}/{n} running after \
             recovery; plugin RSS after recovery {rss:.1} MiB",
            ms(relaunch)
        ));
        if running != n {
            return Err(self.with_log(format!(
                "only {running} of {n} tasks running after RecoverTask"
            )));
        }
        if with_data != n {
            return Err(self.with_log(format!(
                "after the restart only {with_data} of {n} first TaskStats samples carried cgroup data"
            )));
        }
        Ok(())
    }

    async fn cleanup(&mut self, handles: &[(TaskHandle, PluginTask)]) -> R<()> {
        let n = handles.len();
        eprintln!("cleanup: StopTask + DestroyTask of {n} tasks");
        let client = self.client();
        let ids: Vec<String> = handles.iter().map(|(h, _)| task_id(h)).collect();
        let t = Instant::now();
        let results = concurrently(ids, self.counts.callers, |id| {
            let c = client.clone();
            async move {
                stop_task(c.clone(), id.clone()).await?;
                destroy_task(c, id).await
            }
        })
        .await;
        let wall = t.elapsed();
        all_ok("StopTask/DestroyTask at scale", results).map_err(|e| self.with_log(e))?;
        self.assert_clean("cleanup").await?;
        self.notes.push(format!(
            "cleanup: StopTask + DestroyTask of {n} tasks from {} callers took {:.1} s",
            self.counts.callers,
            wall.as_secs_f64()
        ));
        Ok(())
    }

    async fn bare_scale(&mut self) -> R<()> {
        let (n, callers) = (self.counts.scale, self.counts.callers);
        let in_flight = callers.min(BARE_IN_FLIGHT);
        eprintln!("bare scale: {n} StartTransientUnit from {in_flight} concurrent callers");
        let tasks = bare_tasks(n, &self.cfg, |_| sleeper())?;
        let sd_before = rss_mib(self.s.sd.pid)?;
        let bare = &self.bare;
        let t = Instant::now();
        let results = concurrently(tasks.iter().collect(), in_flight, |u| async move {
            bare.start_planned(&u.plan).await
        })
        .await;
        let wall = t.elapsed();
        all_ok("bare StartTransientUnit at scale", results)?;
        let active = self.running_units();
        let sd_after = rss_mib(self.s.sd.pid)?;
        let results = concurrently(tasks.iter().collect(), in_flight, |u| async move {
            bare.stop_unit(&u.plan.unit).await?;
            bare.reset_failed(&u.plan.unit).await;
            Ok(())
        })
        .await;
        all_ok("bare StopUnit at scale", results)?;
        drop(tasks);
        self.assert_clean("bare scale").await?;
        let name = format!("{n} tasks started ({callers} callers), wall");
        if let Some(f) = self.figures.iter_mut().find(|f| f.name == name) {
            let label = if in_flight < callers {
                format!("bare, {in_flight} callers")
            } else {
                "bare, same callers".to_string()
            };
            f.baseline = Some((label, wall.as_secs_f64()));
        }
        self.notes.push(format!(
            "bare scale: {active}/{n} units running; systemd RSS {sd_before:.1} → {sd_after:.1} MiB \
             (second fill of the same PID 1, so freed memory is reused)"
        ));
        if active < n {
            return Err(format!("bare: only {active} of {n} units running"));
        }
        Ok(())
    }

    // --- burst ---------------------------------------------------------------------------

    /// StartTasks all at once, beyond dbus-daemon's 128 pending replies per connection; the
    /// bare baseline keeps [`BARE_IN_FLIGHT`] calls in flight (more would be refused).
    async fn burst(&mut self) -> R<()> {
        let n = self.counts.burst;
        eprintln!("burst: {n} StartTask at once, then {n} StopTask + DestroyTask at once");
        let tasks = plugin_tasks(n, |_| sleeper());
        let client = self.client();
        let t = Instant::now();
        let results = futures::future::join_all(
            tasks
                .iter()
                .map(|t| start_task(client.clone(), t.config.clone())),
        )
        .await;
        let wall = t.elapsed();
        let handles = all_ok("StartTask burst", results).map_err(|e| self.with_log(e))?;
        let ids: Vec<String> = handles.iter().map(task_id).collect();
        let running = self.count_running(&ids).await?;
        let results = concurrently(ids, n, |id| {
            let c = client.clone();
            async move {
                stop_task(c.clone(), id.clone()).await?;
                destroy_task(c, id).await
            }
        })
        .await;
        all_ok("StopTask/DestroyTask burst", results).map_err(|e| self.with_log(e))?;
        drop(tasks);
        self.assert_clean("burst").await?;
        let base = self.bare_burst(n).await?;
        self.figures.push(
            Figure::new(
                format!("{n} StartTask at once, wall"),
                "s",
                wall.as_secs_f64(),
            )
            .baseline(
                format!("bare, {BARE_IN_FLIGHT} in flight"),
                base.as_secs_f64(),
            )
            .target(format!("all {n} running"), running == n),
        );
        if running != n {
            return Err(self.with_log(format!("burst: only {running} of {n} tasks running")));
        }
        Ok(())
    }

    async fn bare_burst(&self, n: usize) -> R<Duration> {
        let tasks = bare_tasks(n, &self.cfg, |_| sleeper())?;
        let bare = &self.bare;
        let t = Instant::now();
        let results = concurrently(tasks.iter().collect(), BARE_IN_FLIGHT, |u| async move {
            bare.start_planned(&u.plan).await
        })
        .await;
        let wall = t.elapsed();
        all_ok("bare StartTransientUnit burst", results)?;
        let results = concurrently(tasks.iter().collect(), BARE_IN_FLIGHT, |u| async move {
            bare.stop_unit(&u.plan.unit).await?;
            bare.reset_failed(&u.plan.unit).await;
            Ok(())
        })
        .await;
        all_ok("bare StopUnit burst", results)?;
        drop(tasks);
        self.assert_clean("bare burst").await?;
        Ok(wall)
    }

    // --- unit mode ---------------------------------------------------------------------------

    async fn unit_mode(&mut self, n: usize) -> R<()> {
        eprintln!(
            "unit mode: {n} concurrent template-instance starts, plugin and one-reload-per-start"
        );
        self.install_template().await?;
        let tasks = plugin_tasks(n, instance_job);
        let client = self.client();
        let r0 = self.bare.reloads();
        let t = Instant::now();
        let results = futures::future::join_all(
            tasks
                .iter()
                .map(|t| start_task(client.clone(), t.config.clone())),
        )
        .await;
        let wall = t.elapsed();
        let handles = all_ok("unit-mode StartTask", results).map_err(|e| self.with_log(e))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reloads = self.bare.reloads() - r0;
        let ids: Vec<String> = handles.iter().map(task_id).collect();
        let running = self.count_running(&ids).await?;
        if running != n {
            return Err(self.with_log(format!(
                "unit mode: only {running} of {n} instances running"
            )));
        }
        let results = concurrently(ids, self.counts.callers, |id| {
            let c = client.clone();
            async move {
                stop_task(c.clone(), id.clone()).await?;
                destroy_task(c, id).await
            }
        })
        .await;
        all_ok("unit-mode StopTask/DestroyTask", results)?;
        drop(tasks);
        let (base_reloads, base_wall) = self.prototype_starts(n).await?;
        let reload_target = (n == 20).then(|| ("≤ 3".to_string(), reloads <= 3));
        let mut f = Figure::new(
            format!("unit mode: {n} concurrent starts, daemon-reloads"),
            "",
            reloads as f64,
        )
        .baseline("reload per start", base_reloads as f64);
        f.target = reload_target;
        self.figures.push(f);
        self.figures.push(
            Figure::new(
                format!("unit mode: {n} concurrent starts, wall"),
                "s",
                wall.as_secs_f64(),
            )
            .baseline("reload per start", base_wall.as_secs_f64()),
        );
        Ok(())
    }

    async fn install_template(&self) -> R<()> {
        let dir = self.s.sd.runtime_dir().join("system");
        let path = dir.join(TEMPLATE);
        if path.exists() {
            return Ok(());
        }
        std::fs::write(&path, TEMPLATE_TEXT).map_err(|e| format!("{}: {e}", path.display()))?;
        let r0 = self.bare.reloads();
        self.bare.reload().await?;
        for _ in 0..100 {
            if self.bare.reloads() > r0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the reload counter saw no Reloading signal for an explicit Reload".into())
    }

    /// The prototype's pattern: per start, write the drop-in, `Reload`, `StartUnit`.
    async fn prototype_starts(&self, n: usize) -> R<(u64, Duration)> {
        let tasks = bare_tasks(n, &self.cfg, instance_job)?;
        let system = self.s.sd.runtime_dir().join("system");
        let bare = &self.bare;
        let r0 = bare.reloads();
        let t = Instant::now();
        let results = futures::future::join_all(tasks.iter().map(|u| {
            let dir = system.join(format!("{}.d", u.plan.unit));
            async move {
                let text = u.plan.dropin.as_deref().ok_or("no drop-in planned")?;
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                std::fs::write(dir.join(DROPIN_FILE), text).map_err(|e| e.to_string())?;
                bare.write_env_file(&u.plan)?;
                bare.reload().await?;
                bare.start_unit(&u.plan.unit).await
            }
        }))
        .await;
        let wall = t.elapsed();
        all_ok("prototype unit-mode starts", results)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reloads = bare.reloads() - r0;
        for u in &tasks {
            bare.stop_unit(&u.plan.unit).await?;
            bare.reset_failed(&u.plan.unit).await;
            let _ = std::fs::remove_dir_all(system.join(format!("{}.d", u.plan.unit)));
        }
        Ok((reloads, wall))
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake

async fn handshake(counts: &Counts, figures: &mut Vec<Figure>) -> R<()> {
    let n = counts.handshakes;
    eprintln!("handshake: {n} plugin launches beside {n} execs of /bin/true");
    let mut plugin = Vec::new();
    let mut base = Vec::new();
    for _ in 0..n {
        let p = Plugin::launch(&[]).await;
        plugin.push(p.handshake_time);
        if !p.kill().await {
            return Err("a freshly launched plugin did not exit gracefully".into());
        }
        let t = std::time::Instant::now();
        let status = std::process::Command::new("/bin/true")
            .status()
            .map_err(|e| format!("/bin/true: {e}"))?;
        base.push(t.elapsed());
        if !status.success() {
            return Err("/bin/true failed".into());
        }
    }
    let (p, q) = (ms(percentile(&plugin, 50)), ms(percentile(&base, 50)));
    figures.push(
        Figure::new(format!("plugin exec → handshake, median of {n}"), "ms", p)
            .baseline("exec of /bin/true", q)
            .target("≤ 50 ms", p <= 50.0),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report

fn machine() -> serde_json::Map<String, Json> {
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

fn report(
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
