//! StartTask: decode, plan, start the unit, and track it. On failure nothing is left behind.

use std::sync::Arc;
use std::time::SystemTime;

use super::monitor::MonitorSpec;
use super::{Driver, DriverError, Handle, Result, Task};
use crate::config::TaskUserConfig;
use crate::systemd::{Systemd, SystemdError, UnitStatus};
use crate::task::state::STATE_VERSION;
use crate::task::{DriverState, TaskSpec};
use crate::unit::plan::{dropin_belongs_to, dropin_owner};
use crate::unit::{Mode, UnitPlan, plan};

impl<S: Systemd> Driver<S> {
    /// Starts a task from Nomad's spec and the job's decoded `config {}`.
    pub async fn start(self: &Arc<Self>, spec: TaskSpec, cfg: TaskUserConfig) -> Result<Handle> {
        if spec.id.is_empty() {
            return Err(DriverError::InvalidArgument("task id is empty".into()));
        }
        if self.lock_tasks().contains_key(&spec.id) {
            return Err(DriverError::AlreadyExists(spec.id));
        }
        let plan = plan(&spec, &cfg, &self.config())?;
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
        let changes = self.sd.watch(&plan.unit).await?;
        let (status, dropin) = match plan.mode {
            Mode::Transient => (self.start_transient(&plan).await?, false),
            Mode::Unit => (self.start_installed(&spec.id, &plan).await?, true),
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

    async fn start_transient(&self, plan: &UnitPlan) -> Result<UnitStatus> {
        match self.sd.start_transient(&plan.unit, &plan.properties).await {
            Ok(()) => {}
            Err(SystemdError::UnitExists(_)) => {
                // Nomad retries StartTask with the same id after a plugin crash: the unit name
                // is unique to this task id, so the unit is ours; adopt it.
                tracing::info!(unit = %plan.unit, "adopting the unit of an interrupted start");
            }
            Err(e) => {
                self.remove_unit(&plan.unit, Mode::Transient, false).await;
                return Err(e.into());
            }
        }
        self.started_status(plan, false).await
    }

    async fn start_installed(&self, task_id: &str, plan: &UnitPlan) -> Result<UnitStatus> {
        self.check_unit_free(task_id, &plan.unit).await?;
        let text = plan.dropin.as_deref().unwrap_or_default();
        let result = async {
            self.sd.write_dropin(&plan.unit, text).await?;
            self.sd.reload().await?;
            self.sd.start_unit(&plan.unit).await
        }
        .await;
        if let Err(e) = result {
            self.remove_unit(&plan.unit, Mode::Unit, true).await;
            return Err(e.into());
        }
        self.started_status(plan, true).await
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

    async fn started_status(&self, plan: &UnitPlan, dropin: bool) -> Result<UnitStatus> {
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
    }
}
