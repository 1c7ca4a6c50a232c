//! StopTask and DestroyTask: signal, wait, escalate to SIGKILL for the whole unit; then stop and
//! reset the unit so systemd garbage-collects it. Both work for task ids this process does not
//! track too (a RecoverTask that failed, a plugin that restarted): the transient unit is named
//! after the task id, and a unit-mode drop-in names its task.

use std::sync::Arc;
use std::time::Duration;

use super::{DEFAULT_STOP_SIGNAL, Driver, DriverError, Result};
use crate::systemd::{KillWho, Systemd, SystemdError};
use crate::task::status::signal_number;
use crate::unit::plan::dropin_belongs_to;
use crate::vocab::Mode;

/// How long the processes of a unit may take to die after SIGKILL before the call gives up
/// with a recoverable error (a process stuck in the kernel).
pub(super) const KILL_WAIT: Duration = Duration::from_secs(30);

fn kill_timeout(unit: &str) -> DriverError {
    DriverError::Systemd(SystemdError::Timeout(format!(
        "the processes of unit {unit} did not die within {}s of SIGKILL",
        KILL_WAIT.as_secs()
    )))
}

impl<S: Systemd> Driver<S> {
    /// Sends `signal` (Nomad's name; empty = the default), waits up to `timeout`, then
    /// SIGKILLs every process of the unit. Returns once the main process is dead, or with a
    /// recoverable error when it is not dead [`KILL_WAIT`] after SIGKILL. Exited tasks are
    /// fine; so are unknown ids, whose unit (if any) is stopped the same way.
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: Duration, signal: &str) -> Result<()> {
        let sig = if signal.is_empty() {
            DEFAULT_STOP_SIGNAL
        } else {
            signal_number(signal)
                .ok_or_else(|| DriverError::InvalidArgument(format!("unknown signal {signal:?}")))?
        };
        let Ok(task) = self.get(id) else {
            return self.stop_untracked(id, timeout, sig).await;
        };
        if task.status().exit().is_some() {
            return Ok(());
        }
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
        match tokio::time::timeout(KILL_WAIT, self.wait(id)).await {
            Ok(Ok(_) | Err(DriverError::NotFound)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(kill_timeout(&task.unit)),
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

    /// Forgets the task and removes its unit, drop-in and environment file. A running task
    /// needs `force`. Idempotent, and stateless: an id this process does not track still finds
    /// its unit. When systemd cannot be reached the answer is a recoverable error and the
    /// removal goes on in the background until it succeeds.
    pub async fn destroy(self: &Arc<Self>, id: &str, force: bool) -> Result<()> {
        let Ok(task) = self.get(id) else {
            let r = self.destroy_untracked(id, force).await;
            if let Err(DriverError::Systemd(e)) = &r
                && e.is_transient()
                && force
                && let Ok(units) = self.untracked_units(id).await
            {
                for (unit, mode) in units {
                    self.retry_removal(&unit, mode, mode == Mode::Unit);
                }
            }
            self.log_bookkeeping();
            return r;
        };
        if task.status().exit().is_none() && !force {
            return Err(DriverError::StillRunning);
        }
        let removed = async {
            if task.status().exit().is_none() {
                self.stop(id, Duration::ZERO, "SIGKILL").await?;
            }
            self.remove_unit(&task.unit, task.mode, task.state.dropin)
                .await
                .map_err(DriverError::from)
        }
        .await;
        if let Err(e) = removed {
            if !e.is_recoverable() {
                return Err(e);
            }
            // Nomad ignores DestroyTask errors and never asks again: forget the task and keep
            // removing its unit (stopping it kills what is left) until systemd answers
            task.monitor.cancel();
            self.lock_tasks().remove(id);
            self.retry_removal(&task.unit, task.mode, task.state.dropin);
            self.log_bookkeeping();
            return Err(e);
        }
        task.monitor.cancel();
        self.forwarder.drain(id);
        self.lock_tasks().remove(id);
        tracing::info!(unit = %task.unit, task_id = id, "task destroyed");
        self.log_bookkeeping();
        Ok(())
    }

    /// The units of a task this process does not track: its transient unit (named after the
    /// task id) and any installed unit whose drop-in names the task.
    async fn untracked_units(&self, id: &str) -> Result<Vec<(String, Mode)>> {
        let mut out = Vec::new();
        if let Some(unit) = crate::unit::name::unit_of_task_id(id) {
            out.push((unit, Mode::Transient));
        }
        if id.is_empty() {
            return Ok(out);
        }
        for unit in self.sd.dropin_units().await? {
            if let Some(text) = self.sd.read_dropin(&unit).await?
                && dropin_belongs_to(&text, id)
            {
                out.push((unit, Mode::Unit));
            }
        }
        Ok(out)
    }

    /// Whether a unit still runs a process of the task.
    async fn running(&self, unit: &str) -> Result<bool> {
        Ok(match self.sd.status(unit).await? {
            None => false,
            Some(st) => !(st.main_exited() || (st.is_dead() && st.main_pid == 0)),
        })
    }

    async fn stop_untracked(&self, id: &str, timeout: Duration, sig: i32) -> Result<()> {
        for (unit, _) in self.untracked_units(id).await? {
            if !self.running(&unit).await? {
                continue;
            }
            tracing::info!(unit, task_id = id, "stopping the unit of an untracked task");
            if !timeout.is_zero() {
                self.kill(&unit, KillWho::Main, sig).await?;
                if self.wait_unit_exit(&unit, timeout).await? {
                    continue;
                }
            }
            self.kill(&unit, KillWho::All, libc::SIGKILL).await?;
            if !self.wait_unit_exit(&unit, KILL_WAIT).await? {
                return Err(kill_timeout(&unit));
            }
        }
        Ok(())
    }

    async fn destroy_untracked(&self, id: &str, force: bool) -> Result<()> {
        for (unit, mode) in self.untracked_units(id).await? {
            if self.running(&unit).await? {
                if !force {
                    return Err(DriverError::StillRunning);
                }
                self.kill(&unit, KillWho::All, libc::SIGKILL).await?;
                if !self.wait_unit_exit(&unit, KILL_WAIT).await? {
                    return Err(kill_timeout(&unit));
                }
            }
            let exists = self.sd.status(&unit).await?.is_some();
            self.remove_unit(&unit, mode, mode == Mode::Unit).await?;
            if exists || mode == Mode::Unit {
                tracing::info!(unit, task_id = id, "removed the unit of an untracked task");
            }
        }
        Ok(())
    }

    /// Waits (without polling: subscribe, then read) until the unit's main process is gone,
    /// at most `within`; false when the deadline passed first.
    async fn wait_unit_exit(&self, unit: &str, within: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + within;
        let mut changes = self.sd.watch(unit).await?;
        loop {
            changes.mark_unchanged();
            if !self.running(unit).await? {
                return Ok(true);
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        changes = self.sd.watch(unit).await?;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
    }
}
