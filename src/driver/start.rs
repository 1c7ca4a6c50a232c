//! StartTask: decode, plan, start the unit, and track it. On failure nothing is left behind.

use std::sync::Arc;
use std::time::SystemTime;

use super::monitor::MonitorSpec;
use super::{Driver, DriverError, Handle, Result, Task};
use crate::config::TaskUserConfig;
use crate::config::plugin::is_root_user;
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
        let config = self.config();
        let user = if spec.user.is_empty() {
            config.default_user.clone()
        } else {
            spec.user.clone()
        };
        // the host's facts the pure planner needs: file system (devices, Nomad's log FIFOs)
        // and user database lookups, off the plugin's one thread, which a `stat` hanging on a
        // network file system would stop for every task
        let (mut spec, account, fifos_missing) = tokio::task::spawn_blocking(move || {
            resolve_devices(&mut spec.devices);
            let account = (!user.is_empty()).then(|| (user.clone(), user_groups(&user)));
            let fifos_missing = log_fifos_missing(&spec.stdout_path, &spec.stderr_path);
            (spec, account, fifos_missing)
        })
        .await
        .map_err(|e| DriverError::InvalidArgument(format!("looking up host facts: {e}")))?;
        let mut user = String::new();
        if let Some((name, found)) = account {
            user = name;
            if let Some(acct) = found {
                if acct.uid == 0 && !is_root_user(&user) && !config.allow_root {
                    return Err(DriverError::InvalidArgument(format!(
                        "user: {user:?} has uid 0; running tasks as root needs allow_root = true in the plugin config"
                    )));
                }
                spec.user_gid = Some(acct.gid);
                spec.user_groups = acct.groups;
            }
        }
        let host = crate::unit::Host {
            log_fifos_missing: fifos_missing,
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
        // Taken before the start: the kernel-log OOM check only trusts records newer than this,
        // and a task may be OOM-killed before its start job has even been reported done.
        let started_at = SystemTime::now();
        // Subscribe before starting, so no change is missed.
        let mut changes = self.sd.watch(&plan.unit).await?;
        let (status, dropin) = match plan.mode {
            Mode::Transient => (self.start_transient(&plan, &mut changes).await?, false),
            Mode::Unit => (
                self.start_installed(&spec.id, &plan, &mut changes).await?,
                true,
            ),
        };
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
            self.clean_up(&plan.unit, plan.mode, dropin).await;
            return Err(e);
        }
        if plan
            .settings
            .iter()
            .any(|(n, v)| n == "StandardOutput" && v.starts_with("file:"))
        {
            self.follow_logs(&spec, &plan.unit, fifos_missing);
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

    async fn start_transient(
        self: &Arc<Self>,
        plan: &UnitPlan,
        changes: &mut Changes,
    ) -> Result<UnitStatus> {
        if self.lock_cleanups().contains(&plan.unit) {
            // an earlier start's removal of this unit (perhaps resumed from a previous plugin
            // process) would take the new task away
            return Err(DriverError::Systemd(SystemdError::Unreachable(format!(
                "{} is still being cleaned up after an earlier start; retry",
                plan.unit
            ))));
        }
        // the unit name is unique to this task id: the file is this task's alone
        self.write_env_file(plan).await?;
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
                self.clean_up(&plan.unit, Mode::Transient, false).await;
                return Err(e.into());
            }
        }
        self.started_status(plan, false, changes).await
    }

    /// A start job can fail only because the task ran and already exited (a fast `exit 3`
    /// beats the job under load). That is a started task whose exit WaitTask reports; systemd's
    /// own setup failures (exit statuses 200–243, e.g. 203 for a missing binary) are not.
    /// Only a job result of `failed`: `timeout` means systemd gave up on the start (and killed
    /// the process), which is a failed StartTask, not an exit for WaitTask.
    async fn ran_before_failing(&self, unit: &str, e: &SystemdError) -> bool {
        if !matches!(e, SystemdError::JobFailed { result, .. } if result == "failed") {
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
        self: &Arc<Self>,
        task_id: &str,
        plan: &UnitPlan,
        changes: &mut Changes,
    ) -> Result<UnitStatus> {
        // Checking that the unit is free and writing our drop-in is one step: two tasks naming
        // the same unit at once must not both find it free.
        let _claim = self.claim_unit(task_id, &plan.unit)?;
        self.check_unit_free(task_id, &plan.unit).await?;
        // only now: the environment file is named after the unit, which another task may hold
        self.write_env_file(plan).await?;
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
                self.clean_up(&plan.unit, Mode::Unit, true).await;
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

    /// Holds `unit` for this StartTask until the guard drops; another StartTask naming the same
    /// unit meanwhile is refused as "in use", and a unit whose removal is still being retried
    /// (which would take the new task's drop-in away) with a recoverable error.
    fn claim_unit(&self, task_id: &str, unit: &str) -> Result<UnitClaim<'_>> {
        if self.lock_cleanups().contains(unit) {
            // the removal of an earlier task's drop-in and unit is still being retried
            return Err(DriverError::Systemd(SystemdError::Unreachable(format!(
                "{unit} is still being cleaned up after an earlier task; retry"
            ))));
        }
        let mut claimed = self.lock_claims();
        if let Some(owner) = claimed.get(unit) {
            return Err(DriverError::InvalidArgument(format!(
                "config.unit: {unit} is in use by another task ({owner}, starting)"
            )));
        }
        claimed.insert(unit.to_string(), task_id.to_string());
        Ok(UnitClaim {
            claims: &self.claims,
            unit: unit.to_string(),
        })
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

    /// The started unit's status, without reading it back when the signals already told it:
    /// the job ended `done`, and the `PropertiesChanged` signals of the start (received before
    /// or around its `JobRemoved`) carry the invocation id, states and main process. When they
    /// have not all arrived yet, one `Get` of `InvocationID` (what `driver_state` must record)
    /// stands in, and the task counts as running. Either way `changes` keeps every change
    /// signalled since the subscription: the monitor judges them all (from the signalled
    /// values, no read), so an exit around the job's end is not missed.
    async fn started_status(
        self: &Arc<Self>,
        plan: &UnitPlan,
        dropin: bool,
        _changes: &mut Changes,
    ) -> Result<UnitStatus> {
        // an installed unit has run before: a `daemon-reload` makes systemd signal its state
        // again, and such a signal about the earlier run may be all that arrived yet, so its
        // invocation is read (what `driver_state` records must be this run's)
        if plan.mode != Mode::Unit
            && let Some(st) = self.sd.signalled(&plan.unit)
            && !st.invocation_id.is_empty()
        {
            return Ok(st);
        }
        match self.sd.invocation_id(&plan.unit).await {
            Ok(Some(invocation_id)) if !invocation_id.is_empty() => Ok(UnitStatus {
                load_state: "loaded".into(),
                active_state: "active".into(),
                invocation_id,
                ..UnitStatus::default()
            }),
            // no invocation yet (or a unit already gone): read it all
            Ok(_) => match self.sd.status(&plan.unit).await {
                Ok(Some(st)) => Ok(st),
                Ok(None) => Err(DriverError::Systemd(SystemdError::NoSuchUnit(
                    plan.unit.clone(),
                ))),
                Err(e) => {
                    self.clean_up(&plan.unit, plan.mode, dropin).await;
                    Err(e.into())
                }
            },
            Err(e) => {
                self.clean_up(&plan.unit, plan.mode, dropin).await;
                Err(e.into())
            }
        }
    }

    /// Stops and resets the unit, then removes its drop-in (reloading, so that systemd
    /// forgets the drop-in's settings, the environment file included) and its environment
    /// file. OK when the unit is already gone; an error leaves what is left for a retry.
    pub(super) async fn remove_unit(
        &self,
        unit: &str,
        mode: Mode,
        dropin: bool,
    ) -> std::result::Result<(), SystemdError> {
        self.sd.stop_unit(unit).await?;
        self.sd.reset_failed(unit).await?;
        if mode == Mode::Unit && dropin {
            self.sd.remove_dropin(unit).await?;
            self.sd.reload().await?;
        }
        self.sd.remove_env_file(unit).await
    }

    /// Removes what a failed start left; when systemd cannot be reached it keeps retrying in
    /// the background until the removal succeeds (or the plugin shuts down), so a start that
    /// failed with the bus down leaves no unit behind.
    pub(super) async fn clean_up(self: &Arc<Self>, unit: &str, mode: Mode, dropin: bool) {
        let Err(e) = self.remove_unit(unit, mode, dropin).await else {
            return;
        };
        tracing::warn!(unit, error = %e, "removing the unit failed; retrying");
        self.retry_removal(unit, mode, dropin);
    }

    /// Retries [`Driver::remove_unit`] in the background, with backoff, until it succeeds or
    /// the plugin shuts down. One retry loop per unit.
    pub(super) fn retry_removal(self: &Arc<Self>, unit: &str, mode: Mode, dropin: bool) {
        if !self.lock_cleanups().insert(unit.to_string()) {
            return; // already retrying
        }
        // a plugin that dies before the unit is gone leaves this for the next one
        self.record_removal(unit, mode, dropin);
        let this = Arc::clone(self);
        let unit = unit.to_string();
        tokio::spawn(async move {
            let mut delay = std::time::Duration::from_millis(500);
            loop {
                tokio::select! {
                    () = this.shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                match this.remove_unit(&unit, mode, dropin).await {
                    Ok(()) => {
                        tracing::info!(unit, "removed the unit after a failed attempt");
                        this.sd.forget_removal(&unit);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(unit, error = %e, "removal retry failed");
                        delay = (delay * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
            this.lock_cleanups().remove(&unit);
        });
    }

    /// Writes the task's environment file (before its unit starts, which reads it).
    async fn write_env_file(&self, plan: &UnitPlan) -> Result<()> {
        if let Err(e) = self.sd.write_env_file(&plan.unit, &plan.env_file).await {
            self.remove_env_file(&plan.unit).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn remove_env_file(&self, unit: &str) {
        if let Err(e) = self.sd.remove_env_file(unit).await {
            tracing::warn!(unit, error = %e, "removing the environment file failed");
        }
    }
}

/// See [`Driver::claim_unit`].
struct UnitClaim<'a> {
    claims: &'a std::sync::Mutex<std::collections::HashMap<String, String>>,
    unit: String,
}

impl Drop for UnitClaim<'_> {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.unit);
    }
}

/// Looks up what each device's host path is (following symlinks), so that the planner can
/// allow the node by number; a path that is missing or no device node stays unresolved and
/// the planner refuses it by key.
fn resolve_devices(devices: &mut [DeviceSpec]) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for d in devices.iter_mut().filter(|d| d.host_path.starts_with('/')) {
        let Ok(path) = std::fs::canonicalize(&d.host_path) else {
            continue;
        };
        let Some(path_text) = path.to_str().map(str::to_string) else {
            continue;
        };
        d.node = std::fs::symlink_metadata(&path).ok().and_then(|m| {
            let t = m.file_type();
            let kind = if t.is_char_device() {
                DeviceKind::Char
            } else if t.is_block_device() {
                DeviceKind::Block
            } else {
                return None;
            };
            Some(DeviceNode {
                path: path_text,
                kind,
                major: libc::major(m.rdev()),
                minor: libc::minor(m.rdev()),
            })
        });
    }
}

/// A host user as systemd will run it.
struct Account {
    uid: u32,
    gid: u32,
    /// Its other groups (`initgroups`), without `gid`.
    groups: Vec<u32>,
}

/// A host user's uid, primary group and other groups, as systemd will apply them.
fn user_groups(user: &str) -> Option<Account> {
    let (name, uid, gid) = passwd_entry(user)?;
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
    Some(Account { uid, gid, groups })
}

/// A host user's name and primary group (by name, or by number for an all-digit name), from
/// the host's user database.
fn passwd_entry(user: &str) -> Option<(std::ffi::CString, u32, u32)> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match passwd_entry_in(user, &mut buf) {
            Err(libc::ERANGE) if buf.len() < 1024 * 1024 => buf.resize(buf.len() * 4, 0),
            Err(_) => return None,
            Ok(found) => return found,
        }
    }
}

/// One `getpw*_r` call with `buf`; `Err(errno)` when it failed.
fn passwd_entry_in(
    user: &str,
    buf: &mut [u8],
) -> Result<Option<(std::ffi::CString, u32, u32)>, libc::c_int> {
    let mut pwd: libc::passwd = zeroed_passwd();
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = user.parse::<u32>() {
        // SAFETY: pwd, buf and out are valid for the call; buf's length is passed.
        unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out) }
    } else {
        let Ok(name) = std::ffi::CString::new(user) else {
            return Ok(None);
        };
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
    if rc != 0 {
        return Err(rc);
    }
    if out.is_null() || pwd.pw_name.is_null() {
        return Ok(None);
    }
    // SAFETY: getpw*_r filled pw_name with a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_owned();
    Ok(Some((name, pwd.pw_uid, pwd.pw_gid)))
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
