//! RecoverTask: re-attach to a running (or finished) unit from `driver_state` alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Driver, DriverError, Result};
use crate::systemd::{Systemd, UnitStatus};
use crate::task::DriverState;

impl<S: Systemd> Driver<S> {
    /// Idempotent for tracked tasks. A unit that finished while the plugin was away is
    /// recovered too; WaitTask then reports its real exit status.
    pub async fn recover(self: &Arc<Self>, task_id: &str, driver_state: &[u8]) -> Result<()> {
        if !task_id.is_empty() && self.lock_tasks().contains_key(task_id) {
            return Ok(());
        }
        let state = DriverState::decode(driver_state)?;
        if !task_id.is_empty() && state.task_id != task_id {
            return Err(DriverError::Recover(format!(
                "driver_state belongs to task {}, not {task_id}",
                state.task_id
            )));
        }
        if self.lock_tasks().contains_key(&state.task_id) {
            return Ok(());
        }
        // subscribe first: whatever changes after the reading below reaches the monitor
        let changes = self.sd.watch(&state.unit).await?;
        let status = self.recovered_status(&state.unit).await?;
        let Some(status) = status else {
            return Err(DriverError::Recover(format!(
                "unit {} no longer exists",
                state.unit
            )));
        };
        if !state.invocation_id.is_empty() && status.invocation_id != state.invocation_id {
            return Err(DriverError::Recover(format!(
                "unit {} runs invocation {}, not ours ({})",
                state.unit, status.invocation_id, state.invocation_id
            )));
        }
        let started_at = SystemTime::UNIX_EPOCH + Duration::from_nanos(state.started_at_ns);
        let unit = state.unit.clone();
        let task = self.attach(state, changes, Some(status), started_at);
        match self.track(task) {
            // a concurrent RecoverTask won the race: same task, fine
            Ok(()) | Err(DriverError::AlreadyExists(_)) => {
                tracing::info!(unit = %unit, "task recovered");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The status a recovered task starts from. A running unit (the usual case after a plugin
    /// restart) costs one share of a batched `ListUnitsByNames` (concurrent RecoverTasks share
    /// one call) and its invocation id from the symlink systemd keeps for journald (one `Get`
    /// where it is missing); only a unit that is not running any more is read in full, for its
    /// exit status.
    async fn recovered_status(&self, unit: &str) -> Result<Option<UnitStatus>> {
        // cgroup v1: the monitor reads the memory cgroup's OOM count before this RecoverTask
        // returns (systemd cannot report an OOM kill there); one `Get` on v1 only, asked
        // together with the state (a restore in sequence waits for one round trip, not two)
        let v1 = self
            .layout()
            .is_some_and(|l| l != crate::stats::CgroupLayout::V2);
        let control_group = async {
            if v1 {
                self.sd.control_group(unit).await.ok().flatten()
            } else {
                None
            }
        };
        let (listed, control_group) = tokio::join!(self.sd.unit_state(unit), control_group);
        let Some(listed) = listed? else {
            return Ok(None);
        };
        if listed.active_state != "active" || listed.sub_state != "running" {
            return Ok(self.sd.status(unit).await?);
        }
        let invocation_id = match self.sd.recorded_invocation(unit) {
            Some(id) => id,
            None => match self.sd.invocation_id(unit).await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let control_group = control_group.unwrap_or_default();
        Ok(Some(UnitStatus {
            load_state: listed.load_state,
            active_state: listed.active_state,
            sub_state: listed.sub_state,
            invocation_id,
            control_group,
            ..UnitStatus::default()
        }))
    }
}
