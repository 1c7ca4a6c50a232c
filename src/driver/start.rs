//! StartTask: decode, plan, start the unit, and track it. On failure nothing is left behind.

use std::sync::Arc;
use std::time::SystemTime;

use super::monitor::MonitorSpec;
use super::{Driver, DriverError, Handle, Result, Task};
use crate::config::TaskUserConfig;
use crate::systemd::{Systemd, SystemdError, UnitStatus};
use crate::task::spec::{DeviceKind, DeviceNode, DeviceSpec};
use crate::task::state::STATE_VERSION;
use crate::task::{DriverState, TaskSpec};
use crate::unit::plan::{dropin_belongs_to, dropin_owner};
use crate::unit::{UnitPlan, plan_on};
use crate::vocab::Mode;

/// The unit's change notifications (see [`Systemd::watch`]).
type Changes = tokio::sync::watch::Receiver<u64>;

impl<S: Systemd> Driver<S> {
    /// Starts a task from Nomad's spec and the job's decoded `config {}`.
    pub async fn start(
        self: &Arc<Self>,
        mut spec: TaskSpec,
        cfg: TaskUserConfig,
    ) -> Result<Handle> {
        if spec.id.is_empty() {
            return Err(DriverError::InvalidArgument("task id is empty".into()));
        }
        if self.lock_tasks().contains_key(&spec.id) {
            return Err(DriverError::AlreadyExists(spec.id));
        }
        resolve_devices(&mut spec.devices);
        let config = self.config();
        let user = if spec.user.is_empty() {
            config.default_user.clone()
        } else {
            spec.user.clone()
        };
        if !user.is_empty()
            && let Some((gid, groups)) = user_groups(&user)
        {
            spec.user_gid = Some(gid);
            spec.user_groups = groups;
        }
        let host = crate::unit::Host {
            log_fifos_missing: log_fifos_missing(&spec.stdout_path, &spec.stderr_path),
            ..self.host()
        };
        let plan = plan_on(&spec, &cfg, &config, host)?;
        if !user.is_empty()
            && spec.user_gid.is_none()
            && plan.settings.iter().any(|(n, _)| n == "User")
        {
            return Err(DriverError::InvalidArgument(format!(
                "user: {user:?} is not a user on this host"
            )));
        }
        for warning in &plan.warnings {
            self.emit(super::TaskEvent {
                task_id: spec.id.clone(),
                alloc_id: spec.alloc_id.clone(),
                task_name: spec.name.clone(),
                message: warning.clone(),
                annotations: Vec::new(),
                at: SystemTime::now(),
            });
        }
        // Subscribe before starting, so no change is missed.
        let mut changes = self.sd.watch(&plan.unit).await?;
        if let Err(e) = self.sd.write_env_file(&plan.unit, &plan.env_file).await {
            self.remove_env_file(&plan.unit).await;
            return Err(e.into());
        }
        let (status, dropin) = match plan.mode {
            Mode::Transient => (self.start_transient(&plan, &mut changes).await?, false),
            Mode::Unit => (
                self.start_installed(&spec.id, &plan, &mut changes).await?,
                true,
            ),
        };
        let started_at = SystemTime::now();
        let state = DriverState {
            version: STATE_VERSION,
            task_id: spec.id.clone(),
            alloc_id: spec.alloc_id.clone(),
            task_name: spec.name.clone(),
            unit: plan.unit.clone(),
            mode: plan.mode,
            invocation_id: status.invocation_id.clone(),
            started_at_ns: super::unix_ns(started_at),
            dropin,
        };
        let task = self.attach(state.clone(), changes, Some(status), started_at);
        if let Err(e) = self.track(task) {
            // a concurrent StartTask with the same id won; ours must not linger
            self.remove_unit(&plan.unit, plan.mode, dropin).await;
            return Err(e);
        }
        if plan
            .settings
            .iter()
            .any(|(n, v)| n == "StandardOutput" && v.starts_with("file:"))
        {
            self.follow_logs(&spec, &plan.unit);
        }
        tracing::info!(unit = %plan.unit, task_id = %spec.id, "task started");
        Ok(Handle { state })
    }

    /// Builds the tracked task and its monitor from persisted state.
    pub(super) fn attach(
        self: &Arc<Self>,
        state: DriverState,
        changes: tokio::sync::watch::Receiver<u64>,
        first: Option<UnitStatus>,
        started_at: SystemTime,
    ) -> Arc<Task> {
        let template = super::TaskEvent {
            task_id: state.task_id.clone(),
            alloc_id: state.alloc_id.clone(),
            task_name: state.task_name.clone(),
            message: String::new(),
            annotations: Vec::new(),
            at: started_at,
        };
        let (status, monitor) = self.spawn_monitor(
            MonitorSpec {
                unit: state.unit.clone(),
                invocation_id: state.invocation_id.clone(),
                event: template,
            },
            changes,
            first,
        );
        Arc::new(Task {
            id: state.task_id.clone(),
            alloc_id: state.alloc_id.clone(),
            name: state.task_name.clone(),
            unit: state.unit.clone(),
            mode: state.mode,
            state,
            started_at,
            status,
            monitor,
        })
    }

    async fn start_transient(&self, plan: &UnitPlan, changes: &mut Changes) -> Result<UnitStatus> {
        match self.sd.start_transient(&plan.unit, &plan.properties).await {
            Ok(()) => {}
            Err(SystemdError::UnitExists(_)) => {
                // Nomad retries StartTask with the same id after a plugin crash: the unit name
                // is unique to this task id, so the unit is ours; adopt it.
                tracing::info!(unit = %plan.unit, "adopting the unit of an interrupted start");
            }
            Err(e) if self.ran_before_failing(&plan.unit, &e).await => {
                tracing::debug!(unit = %plan.unit, "task exited before its start job finished");
            }
            Err(e) => {
                self.remove_unit(&plan.unit, Mode::Transient, false).await;
                return Err(e.into());
            }
        }
        self.started_status(plan, false, changes).await
    }

    /// A start job can fail only because the task ran and already exited (a fast `exit 3`
    /// beats the job under load). That is a started task whose exit WaitTask reports; systemd's
    /// own setup failures (exit statuses 200–243, e.g. 203 for a missing binary) are not.
    async fn ran_before_failing(&self, unit: &str, e: &SystemdError) -> bool {
        if !matches!(e, SystemdError::JobFailed { .. }) {
            return false;
        }
        match self.sd.status(unit).await {
            Ok(Some(st)) => {
                st.main_exited()
                    && !(st.exec_main_code == crate::systemd::CLD_EXITED
                        && (200..=243).contains(&st.exec_main_status))
            }
            _ => false,
        }
    }

    async fn start_installed(
        &self,
        task_id: &str,
        plan: &UnitPlan,
        changes: &mut Changes,
    ) -> Result<UnitStatus> {
        self.check_unit_free(task_id, &plan.unit).await?;
        let text = plan.dropin.as_deref().unwrap_or_default();
        let result = async {
            self.sd.write_dropin(&plan.unit, text).await?;
            self.sd.reload().await?;
            self.sd.start_unit(&plan.unit).await
        }
        .await;
        match result {
            Ok(()) => {}
            Err(e) if self.ran_before_failing(&plan.unit, &e).await => {}
            Err(e) => {
                self.remove_unit(&plan.unit, Mode::Unit, true).await;
                if let SystemdError::NoSuchUnit(_) = e {
                    return Err(DriverError::InvalidArgument(format!(
                        "config.unit: {} is not installed: systemd has no unit file or template \
                         for it",
                        plan.unit
                    )));
                }
                return Err(e.into());
            }
        }
        self.started_status(plan, true, changes).await
    }

    /// An installed unit may be started for a task unless it runs without the driver, or its
    /// drop-in belongs to another task (two allocs naming the same unit). Refusing touches
    /// nothing: the unit is neither stopped nor given a drop-in.
    async fn check_unit_free(&self, task_id: &str, unit: &str) -> Result<()> {
        match self.sd.read_dropin(unit).await? {
            // a StartTask retried after a plugin crash: the unit is this task's
            Some(text) if dropin_belongs_to(&text, task_id) => Ok(()),
            Some(text) => Err(DriverError::InvalidArgument(format!(
                "config.unit: {unit} is in use by another task ({}); name an instance unique to \
                 the allocation, e.g. web@${{NOMAD_ALLOC_ID}}.service",
                dropin_owner(&text).unwrap_or("owner unknown")
            ))),
            None => match self.sd.status(unit).await? {
                Some(st) if !st.is_dead() => Err(DriverError::InvalidArgument(format!(
                    "config.unit: {unit} is already {} and was not started by this driver",
                    st.active_state
                ))),
                _ => Ok(()),
            },
        }
    }

    /// Reads the started unit. Every change signalled so far is covered by this read, so the
    /// monitor need not re-read for them (it would double the D-Bus reads of every start);
    /// changes signalled from here on still reach it.
    async fn started_status(
        &self,
        plan: &UnitPlan,
        dropin: bool,
        changes: &mut Changes,
    ) -> Result<UnitStatus> {
        changes.mark_unchanged();
        match self.sd.status(&plan.unit).await {
            Ok(Some(st)) => Ok(st),
            Ok(None) => Err(DriverError::Systemd(SystemdError::NoSuchUnit(
                plan.unit.clone(),
            ))),
            Err(e) => {
                self.remove_unit(&plan.unit, plan.mode, dropin).await;
                Err(e.into())
            }
        }
    }

    /// Best-effort removal of a unit and its drop-in (start failures, destroy).
    pub(super) async fn remove_unit(&self, unit: &str, mode: Mode, dropin: bool) {
        if let Err(e) = self.sd.stop_unit(unit).await {
            tracing::warn!(unit, error = %e, "stopping unit failed");
        }
        if let Err(e) = self.sd.reset_failed(unit).await {
            tracing::warn!(unit, error = %e, "resetting unit failed");
        }
        if mode == Mode::Unit
            && dropin
            && let Err(e) = self.sd.remove_dropin(unit).await
        {
            tracing::warn!(unit, error = %e, "removing drop-in failed");
        }
        self.remove_env_file(unit).await;
    }

    async fn remove_env_file(&self, unit: &str) {
        if let Err(e) = self.sd.remove_env_file(unit).await {
            tracing::warn!(unit, error = %e, "removing the environment file failed");
        }
    }
}

/// Looks up what each device's host path is (following symlinks), so that the planner can
/// allow the node by number; a path that is missing or no device node stays unresolved and
/// the planner refuses it by key.
fn resolve_devices(devices: &mut [DeviceSpec]) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for d in devices.iter_mut().filter(|d| d.host_path.starts_with('/')) {
        d.node = std::fs::metadata(&d.host_path).ok().and_then(|m| {
            let t = m.file_type();
            let kind = if t.is_char_device() {
                DeviceKind::Char
            } else if t.is_block_device() {
                DeviceKind::Block
            } else {
                return None;
            };
            Some(DeviceNode {
                kind,
                major: libc::major(m.rdev()),
                minor: libc::minor(m.rdev()),
            })
        });
    }
}

/// A host user's primary group and its other groups, as systemd will apply them (`initgroups`).
fn user_groups(user: &str) -> Option<(u32, Vec<u32>)> {
    let (name, gid) = passwd_entry(user)?;
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `name` is NUL-terminated; `groups` holds `n` entries, and n is updated to
        // the number needed when that is not enough.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(n);
            break;
        }
        if n <= groups.len() || n > 65_536 {
            return None;
        }
        groups.resize(n, 0);
    }
    groups.retain(|g| *g != gid);
    groups.sort_unstable();
    groups.dedup();
    Some((gid, groups))
}

/// A host user's name and primary group (by name, or by number for an all-digit name), from
/// the host's user database.
fn passwd_entry(user: &str) -> Option<(std::ffi::CString, u32)> {
    let mut pwd: libc::passwd = zeroed_passwd();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = user.parse::<u32>() {
        // SAFETY: pwd, buf and out are valid for the call; buf's length is passed.
        unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out) }
    } else {
        let name = std::ffi::CString::new(user).ok()?;
        // SAFETY: as above; name is NUL-terminated.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        }
    };
    if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpw*_r filled pw_name with a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_owned();
    Some((name, pwd.pw_gid))
}

fn zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is plain old data (integers and pointers); all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Whether Nomad passed FIFO-style log paths with no FIFO behind them: the agent's
/// `disable_log_collection` (docs/nomad-contract.md, *Log FIFOs*). Only `stat`ed, never opened: an
/// open would block or create a stray file. `/dev/null` and empty paths are the planner's.
pub(crate) fn log_fifos_missing(stdout: &str, stderr: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    [stdout, stderr]
        .into_iter()
        .filter(|p| !p.is_empty() && *p != "/dev/null")
        .any(|p| !std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()))
}
