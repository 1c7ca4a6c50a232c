//! RecoverTask: re-attach to a running (or finished) unit from `driver_state` alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Driver, DriverError, Result};
use crate::systemd::Systemd;
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
        let changes = self.sd.watch(&state.unit).await?;
        let status = self.sd.status(&state.unit).await?;
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
}
