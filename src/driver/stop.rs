//! StopTask and DestroyTask: signal, wait, escalate to SIGKILL for the whole unit; then stop and
//! reset the unit so systemd garbage-collects it.

use std::sync::Arc;
use std::time::Duration;

use super::{DEFAULT_STOP_SIGNAL, Driver, DriverError, Result};
use crate::systemd::{KillWho, Systemd, SystemdError};
use crate::task::status::signal_number;

impl<S: Systemd> Driver<S> {
    /// Sends `signal` (Nomad's name; empty = the default), waits up to `timeout`, then
    /// SIGKILLs every process of the unit. Returns once the main process is dead.
    /// Unknown or exited tasks are fine.
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: Duration, signal: &str) -> Result<()> {
        let Ok(task) = self.get(id) else {
            return Ok(());
        };
        if task.status().exit().is_some() {
            return Ok(());
        }
        let sig = if signal.is_empty() {
            DEFAULT_STOP_SIGNAL
        } else {
            signal_number(signal)
                .ok_or_else(|| DriverError::InvalidArgument(format!("unknown signal {signal:?}")))?
        };
        if !timeout.is_zero() {
            self.kill(&task.unit, KillWho::Main, sig).await?;
            if tokio::time::timeout(timeout, self.wait(id)).await.is_ok() {
                return Ok(());
            }
            self.emit(task.event(format!(
                "task did not exit within {}s of signal {sig}; sending SIGKILL to unit {}",
                timeout.as_secs_f64(),
                task.unit
            )));
        }
        self.kill(&task.unit, KillWho::All, libc::SIGKILL).await?;
        match self.wait(id).await {
            Ok(_) | Err(DriverError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn kill(&self, unit: &str, who: KillWho, sig: i32) -> Result<()> {
        match self.sd.kill_unit(unit, who, sig).await {
            // no processes left (or no unit) is what we want anyway
            Ok(()) | Err(SystemdError::NoSuchUnit(_)) => Ok(()),
            Err(SystemdError::Refused(m))
                if m.contains("No main PID") || m.contains("not loaded") =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the task and removes its unit. A running task needs `force`. Idempotent.
    pub async fn destroy(self: &Arc<Self>, id: &str, force: bool) -> Result<()> {
        let Ok(task) = self.get(id) else {
            return Ok(());
        };
        if task.status().exit().is_none() {
            if !force {
                return Err(DriverError::StillRunning);
            }
            self.stop(id, Duration::ZERO, "SIGKILL").await?;
        }
        self.remove_unit(&task.unit, task.mode, task.state.dropin)
            .await;
        task.monitor.cancel();
        self.forwarder.drain(id);
        self.lock_tasks().remove(id);
        tracing::info!(unit = %task.unit, task_id = id, "task destroyed");
        Ok(())
    }
}
