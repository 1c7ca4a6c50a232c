//! The driver core: Nomad's task operations on top of the [`Systemd`] trait. One file per
//! operation; the gRPC layer only converts messages.

mod exec;
mod fingerprint;
pub mod logs;
mod monitor;
mod oom;
mod recover;
mod removal;
mod start;
mod stats;
mod stop;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, PluginConfig};
use crate::stats::Compute;
use crate::systemd::{Systemd, SystemdError};
use crate::task::state::StateError;
use crate::task::{DriverState, ExitResult, TaskState};
use crate::unit::plan::PlanErrors;
use crate::vocab::Mode;

pub use exec::ExecSession;
pub use fingerprint::{Fingerprint, Health};
pub use stats::{CpuSample, MemorySample, StatsSample};

/// Signal sent by StopTask when Nomad names none (as Nomad's exec drivers do).
pub const DEFAULT_STOP_SIGNAL: i32 = libc::SIGINT;

/// Errors of driver operations; converted to gRPC statuses in one place (`grpc::status`).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("task not found for given id")]
    NotFound,
    #[error("task {0} was already started")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("{0}")]
    InvalidPlan(#[from] PlanErrors),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("task is still running; destroy it with force or stop it first")]
    StillRunning,
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Systemd(#[from] SystemdError),
    #[error("{0}")]
    Recover(String),
    #[error("exec: {0}")]
    Exec(#[from] crate::exec::ExecError),
}

impl DriverError {
    /// A retry may succeed (Nomad's RecoverableError).
    pub fn is_recoverable(&self) -> bool {
        matches!(self, DriverError::Systemd(e) if e.is_transient())
    }
}

pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// A notable event for one task (Nomad's `DriverTaskEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub task_id: String,
    pub alloc_id: String,
    pub task_name: String,
    pub message: String,
    pub annotations: Vec<(String, String)>,
    pub at: SystemTime,
}

/// One tracked task.
pub struct Task {
    pub id: String,
    pub alloc_id: String,
    pub name: String,
    pub unit: String,
    pub mode: Mode,
    pub state: DriverState,
    pub started_at: SystemTime,
    status: watch::Receiver<TaskState>,
    monitor: CancellationToken,
}

impl Task {
    pub fn status(&self) -> TaskState {
        self.status.borrow().clone()
    }

    fn event(&self, message: impl Into<String>) -> TaskEvent {
        TaskEvent {
            task_id: self.id.clone(),
            alloc_id: self.alloc_id.clone(),
            task_name: self.name.clone(),
            message: message.into(),
            annotations: Vec::new(),
            at: SystemTime::now(),
        }
    }
}

/// See [`Driver::bookkeeping`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bookkeeping {
    pub tasks: usize,
    pub cleanups: usize,
    /// Unit watchers of the systemd client still subscribed to (monitors, waits).
    pub watchers: usize,
    /// Callers waiting for a systemd job.
    pub job_waiters: usize,
}

/// What StartTask and RecoverTask hand back for Nomad to keep.
#[derive(Debug, Clone)]
pub struct Handle {
    pub state: DriverState,
}

/// Task status for InspectTask.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub id: String,
    pub name: String,
    pub state: TaskState,
    pub started_at: SystemTime,
    pub unit: String,
}

/// The driver. Generic over systemd so the core runs against the fake in unit tests.
pub struct Driver<S: Systemd> {
    sd: S,
    config: RwLock<PluginConfig>,
    compute: RwLock<Compute>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    /// Units of failed starts whose removal is being retried in the background.
    cleanups: Mutex<HashSet<String>>,
    /// Installed units a unit-mode StartTask is starting, and for which task.
    claims: Mutex<HashMap<String, String>>,
    events: broadcast::Sender<TaskEvent>,
    cgroup_root: PathBuf,
    layout: std::sync::OnceLock<Option<crate::stats::CgroupLayout>>,
    /// systemd's major version from the last healthy fingerprint (0: not known yet); the
    /// planner refuses job properties that version lacks.
    systemd_version: std::sync::atomic::AtomicU32,
    shutdown: CancellationToken,
    /// `logs = "both"`: the node's one log forwarder.
    forwarder: logs::Forwarder,
    /// Whether [`Driver::resume_removals`] ran.
    removals_resumed: std::sync::atomic::AtomicBool,
}

impl<S: Systemd> Driver<S> {
    /// The host's cgroup layout, detected on first use.
    pub fn layout(&self) -> Option<crate::stats::CgroupLayout> {
        *self
            .layout
            .get_or_init(|| crate::stats::detect_layout(&self.cgroup_root))
    }

    pub fn new(sd: S, cgroup_root: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            sd,
            config: RwLock::new(PluginConfig::default()),
            compute: RwLock::new(Compute::fallback()),
            tasks: Mutex::new(HashMap::new()),
            cleanups: Mutex::new(HashSet::new()),
            claims: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            cgroup_root: cgroup_root.into(),
            layout: std::sync::OnceLock::new(),
            systemd_version: std::sync::atomic::AtomicU32::new(0),
            shutdown: CancellationToken::new(),
            forwarder: logs::Forwarder::default(),
            removals_resumed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Where journald is, for the `logs = "both"` forwarder (default: the host's).
    pub fn set_journal(&self, paths: crate::journal::JournalPaths) {
        self.forwarder.set_paths(paths);
    }

    /// Whether the forwarder copies this task's output into the journal.
    pub fn forwarding(&self, task_id: &str) -> bool {
        self.forwarder.following(task_id)
    }

    /// RecoverTask: resumes forwarding a recovered task's output (the spec is Nomad's handle).
    pub async fn resume_logs(&self, spec: &crate::task::TaskSpec) {
        if self.config().logs != crate::config::plugin::Logs::Both {
            return;
        }
        // off the async thread, as at StartTask; then no await until the forwarder follows,
        // so that a DestroyTask meanwhile is not undone
        let (out, err) = (spec.stdout_path.clone(), spec.stderr_path.clone());
        let missing = tokio::task::spawn_blocking(move || start::log_fifos_missing(&out, &err))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(task_id = %spec.id, error = %e, "cannot look for the log FIFOs");
                false
            });
        let Ok(task) = self.get(&spec.id) else {
            return;
        };
        self.follow_logs(spec, &task.unit, missing);
    }

    /// `logs = "both"`: follows the task's logmon files (StartTask, and RecoverTask with the
    /// spec from Nomad's handle) when its output goes to Nomad's FIFOs (`fifos_missing`: what
    /// `start::log_fifos_missing` found).
    pub fn follow_logs(&self, spec: &crate::task::TaskSpec, unit: &str, fifos_missing: bool) {
        if self.config().logs != crate::config::plugin::Logs::Both
            || fifos_missing
            || spec.stdout_path.is_empty()
            || spec.stdout_path == "/dev/null"
        {
            return;
        }
        let Some(dir) = std::path::Path::new(&spec.stdout_path).parent() else {
            return;
        };
        let fields = [
            ("NOMAD_ALLOC_ID", &spec.alloc_id),
            ("NOMAD_JOB_NAME", &spec.job_name),
            ("NOMAD_GROUP_NAME", &spec.group),
            ("NOMAD_TASK_NAME", &spec.name),
            ("NOMAD_NAMESPACE", &spec.namespace),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        self.forwarder.follow(logs::Follow {
            task_id: spec.id.clone(),
            unit: unit.to_string(),
            dir: dir.to_path_buf(),
            task: spec.name.clone(),
            fields,
        });
    }

    pub fn systemd(&self) -> &S {
        &self.sd
    }

    /// Stores a validated config (SetConfig: no side effects).
    pub fn set_config(&self, cfg: PluginConfig, compute: Option<Compute>) {
        self.sd.set_start_timeout(cfg.start_timeout);
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cfg;
        if let Some(c) = compute {
            *self
                .compute
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
        }
    }

    /// What the planner knows about this host: systemd's version once a fingerprint read it.
    fn host(&self) -> crate::unit::Host {
        let v = self
            .systemd_version
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::unit::Host {
            systemd_version: (v != 0).then_some(v),
            ..crate::unit::Host::default()
        }
    }

    pub fn config(&self) -> PluginConfig {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn compute(&self) -> Compute {
        *self
            .compute
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes to task events.
    pub fn events(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    fn emit(&self, ev: TaskEvent) {
        tracing::info!(task_id = %ev.task_id, "{}", ev.message);
        let _ = self.events.send(ev);
    }

    fn get(&self, id: &str) -> Result<Arc<Task>> {
        self.lock_tasks()
            .get(id)
            .cloned()
            .ok_or(DriverError::NotFound)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Task>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_cleanups(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.cleanups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the driver and its systemd client hold right now; with no task tracked every
    /// count is 0 (a churn test checks that nothing grows).
    pub fn bookkeeping(&self) -> Bookkeeping {
        let sd = self.sd.bookkeeping();
        Bookkeeping {
            tasks: self.lock_tasks().len(),
            cleanups: self.lock_cleanups().len(),
            watchers: sd.watchers,
            job_waiters: sd.job_waiters,
        }
    }

    /// Logs [`Driver::bookkeeping`] (after every DestroyTask), for tests of the real binary.
    fn log_bookkeeping(&self) {
        let b = self.bookkeeping();
        tracing::debug!(
            tasks = b.tasks,
            cleanups = b.cleanups,
            watchers = b.watchers,
            job_waiters = b.job_waiters,
            "driver bookkeeping"
        );
    }

    /// Ids of tracked tasks.
    pub fn task_ids(&self) -> Vec<String> {
        self.lock_tasks().keys().cloned().collect()
    }

    /// Blocks until the task exits; the stored result is returned to late callers too.
    pub async fn wait(&self, id: &str) -> Result<ExitResult> {
        let task = self.get(id)?;
        let mut rx = task.status.clone();
        loop {
            if let TaskState::Exited { result, .. } = &*rx.borrow_and_update() {
                return Ok(result.clone());
            }
            if rx.changed().await.is_err() {
                // the monitor went away: the task was destroyed while we waited
                return Err(DriverError::NotFound);
            }
        }
    }

    pub fn inspect(&self, id: &str) -> Result<Inspection> {
        let t = self.get(id)?;
        Ok(Inspection {
            id: t.id.clone(),
            name: t.name.clone(),
            state: t.status(),
            started_at: t.started_at,
            unit: t.unit.clone(),
        })
    }

    /// Delivers a signal by Nomad name to the task's main process.
    pub async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let task = self.get(id)?;
        let sig = crate::task::status::signal_number(signal)
            .ok_or_else(|| DriverError::InvalidArgument(format!("unknown signal {signal:?}")))?;
        if task.status().exit().is_some() {
            return Err(DriverError::InvalidArgument(
                "task has already exited".into(),
            ));
        }
        self.sd
            .kill_unit(&task.unit, crate::systemd::KillWho::Main, sig)
            .await?;
        Ok(())
    }

    /// Stops watching everything (plugin shutdown). Tasks keep running.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    fn track(&self, task: Arc<Task>) -> Result<()> {
        let mut tasks = self.lock_tasks();
        if tasks.contains_key(&task.id) {
            task.monitor.cancel();
            return Err(DriverError::AlreadyExists(task.id.clone()));
        }
        tasks.insert(task.id.clone(), task);
        Ok(())
    }
}

/// ns since the epoch.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
