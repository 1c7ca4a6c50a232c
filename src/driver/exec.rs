//! ExecTask and ExecTaskStreaming: run a command inside a running task (see `crate::exec` for
//! how it enters the task). The main process comes from the unit's `MainPID`.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Driver, Result};
use crate::exec::{self, Captured, ExecError, ExecInput, ExecOutput, Spawned, Stdio3, TaskContext};
use crate::systemd::Systemd;

/// A command started by ExecTaskStreaming, ready to be run against the client's stream.
#[derive(Debug)]
pub struct ExecSession {
    spawned: Spawned,
}

impl ExecSession {
    /// Runs until the command exits; dropping `output`'s receiver kills it.
    pub async fn run(self, input: mpsc::Receiver<ExecInput>, output: mpsc::Sender<ExecOutput>) {
        exec::stream(self.spawned, input, output).await;
    }

    /// The command's pid (the plugin's numbering).
    pub fn pid(&self) -> i32 {
        self.spawned.pid
    }
}

impl<S: Systemd> Driver<S> {
    /// The running task's context, captured from its main process.
    async fn exec_context(&self, id: &str) -> Result<TaskContext> {
        let task = self.get(id)?;
        if task.status().exit().is_some() {
            return Err(ExecError::NotRunning.into());
        }
        let st = self
            .sd
            .status(&task.unit)
            .await?
            .ok_or(ExecError::NotRunning)?;
        if st.main_pid == 0 {
            return Err(ExecError::NotRunning.into());
        }
        let root = self.cgroup_root.clone();
        let ctx = tokio::task::spawn_blocking(move || {
            let pid = exec::locate(st.main_pid, &st.control_group, &root)?;
            TaskContext::capture(pid, &root)
        })
        .await
        .map_err(|e| ExecError::Io {
            what: "reading the task's context".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        Ok(ctx)
    }

    /// ExecTask: runs `argv` in the task and collects its output; `timeout` zero means none.
    pub async fn exec_task(
        &self,
        id: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<Captured> {
        if argv.is_empty() {
            return Err(ExecError::EmptyCommand.into());
        }
        let ctx = self.exec_context(id).await?;
        let spawned = exec::spawn(ctx, argv, Stdio3::Capture).await?;
        let timeout = (!timeout.is_zero()).then_some(timeout);
        Ok(exec::capture(spawned, timeout).await)
    }

    /// ExecTaskStreaming: starts `argv` in the task, with a pty when `tty`.
    pub async fn exec_streaming(
        &self,
        id: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> Result<ExecSession> {
        if argv.is_empty() {
            return Err(ExecError::EmptyCommand.into());
        }
        let ctx = self.exec_context(id).await?;
        let stdio = if tty { Stdio3::Tty } else { Stdio3::Pipes };
        let spawned = exec::spawn(ctx, argv, stdio).await?;
        tracing::debug!(task_id = id, pid = spawned.pid, tty, "exec session started");
        Ok(ExecSession { spawned })
    }
}
