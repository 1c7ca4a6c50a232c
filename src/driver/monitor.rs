//! One monitor per task: the only writer of the task's status. It reads the unit after every
//! change systemd signals (subscribe first, then read), never polls, and never turns a bus
//! error into a task exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Driver, TaskEvent};
use crate::systemd::{Systemd, UnitStatus};
use crate::task::status::exit_result;
use crate::task::{ExitResult, TaskState};

/// What the monitor knows when it starts.
pub(super) struct MonitorSpec {
    pub unit: String,
    pub invocation_id: String,
    pub event: TaskEvent,
}

/// Decides the task's state from one reading.
pub(super) fn judge(st: Option<&UnitStatus>, unit: &str, invocation: &str) -> TaskState {
    let exited = |result| TaskState::Exited {
        result,
        at: SystemTime::now(),
    };
    let Some(st) = st else {
        return exited(ExitResult::lost(format!(
            "unit {unit} is gone (reset or removed outside the driver)"
        )));
    };
    if !invocation.is_empty() && !st.invocation_id.is_empty() && st.invocation_id != invocation {
        return exited(ExitResult::lost(format!(
            "unit {unit} was restarted outside Nomad (invocation {} is not ours)",
            st.invocation_id
        )));
    }
    if let Some(r) = exit_result(st) {
        return exited(r);
    }
    if st.is_dead() && st.main_pid == 0 {
        return exited(ExitResult::lost(format!(
            "unit {unit} is {} without an exit status",
            st.active_state
        )));
    }
    TaskState::Running
}

/// Folds a v1 OOM notification into an exit result.
fn with_oom(state: TaskState, oom: &AtomicBool) -> TaskState {
    match state {
        TaskState::Exited { mut result, at }
            if oom.load(Ordering::SeqCst) && result.err.is_none() =>
        {
            result.oom_killed = true;
            TaskState::Exited { result, at }
        }
        other => other,
    }
}

impl<S: Systemd> Driver<S> {
    /// Starts the monitor; `changes` must have been subscribed before `first` was read.
    pub(super) fn spawn_monitor(
        self: &Arc<Self>,
        spec: MonitorSpec,
        mut changes: watch::Receiver<u64>,
        first: Option<UnitStatus>,
    ) -> (watch::Receiver<TaskState>, CancellationToken) {
        let oom = Arc::new(AtomicBool::new(false));
        let judged = judge(first.as_ref(), &spec.unit, &spec.invocation_id);
        // cgroup v1: a task SIGKILLed before the monitor began (the plugin was down) may have
        // been the OOM killer's victim; with its cgroup gone, the kernel log tells
        if let (TaskState::Exited { result, .. }, Some(layout)) = (&judged, self.layout())
            && layout != crate::stats::CgroupLayout::V2
            && result.signal == libc::SIGKILL
            && !result.oom_killed
            && super::oom::kernel_logged_oom(&spec.unit)
        {
            tracing::info!(unit = %spec.unit, "the kernel log holds an OOM kill of the task");
            oom.store(true, Ordering::SeqCst);
        }
        // cgroup v1: OOM kills while the plugin was down, counted by the task's memory cgroup,
        // read before RecoverTask returns — a task that exits right after would take its
        // cgroup, and the count, with it before the watch below began
        if let (Some(layout), Some(st)) = (self.layout(), first.as_ref())
            && !st.control_group.is_empty()
            && let Some(dir) =
                crate::stats::v1_memory_dir(&self.cgroup_root, layout, &st.control_group)
            && super::oom::had_oom_kills(&dir)
        {
            tracing::info!(unit = %spec.unit, "memory cgroup had OOM kills before the monitor began");
            oom.store(true, Ordering::SeqCst);
        }
        let initial = with_oom(judged, &oom);
        let (tx, rx) = watch::channel(initial.clone());
        let cancel = self.shutdown.child_token();
        if matches!(initial, TaskState::Exited { .. }) {
            self.report_exit(&spec, &initial);
            return (rx, cancel);
        }
        // cgroup v1 OOM notifications need the unit's memory cgroup; a start that read no
        // status learns it with one call, off the StartTask path (the watch also counts the
        // OOM kills from before it began)
        let v1_layout = self
            .layout()
            .filter(|l| *l != crate::stats::CgroupLayout::V2);
        let known_cgroup = first
            .as_ref()
            .map(|st| st.control_group.clone())
            .unwrap_or_default();
        let this = Arc::clone(self);
        let token = cancel.clone();
        let oom_flag = Arc::clone(&oom);
        tokio::spawn(async move {
            if let Some(layout) = v1_layout {
                let cgroup = if known_cgroup.is_empty() {
                    this.sd
                        .control_group(&spec.unit)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                } else {
                    known_cgroup
                };
                if let Some(dir) = crate::stats::v1_memory_dir(&this.cgroup_root, layout, &cgroup) {
                    super::oom::watch(dir, Arc::clone(&oom_flag), token.clone());
                }
            }
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // the systemd client dropped our channel; re-subscribe
                            match this.sd.watch(&spec.unit).await {
                                Ok(c) => changes = c,
                                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                            }
                        }
                    }
                }
                // what the signals said, else a read (a bus reconnect forgets the signals)
                let read = match this.sd.signalled(&spec.unit) {
                    Some(st) => Ok(Some(st)),
                    None => this.sd.status(&spec.unit).await,
                };
                match read {
                    Ok(st) => {
                        let state =
                            with_oom(judge(st.as_ref(), &spec.unit, &spec.invocation_id), &oom);
                        if matches!(state, TaskState::Exited { .. }) {
                            this.report_exit(&spec, &state);
                            let _ = tx.send(state);
                            // the unit's watcher is not needed any more
                            drop(changes);
                            // keep `tx` alive until the task is destroyed, so waiters see the result
                            token.cancelled().await;
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(unit = %spec.unit, error = %e, "cannot read unit status; waiting for the bus");
                    }
                }
            }
        });
        (rx, cancel)
    }

    fn report_exit(&self, spec: &MonitorSpec, state: &TaskState) {
        if let Some(r) = state.exit() {
            if r.oom_killed {
                let mut ev = spec.event.clone();
                ev.message = format!("unit {} was killed by the OOM killer", spec.unit);
                ev.annotations.push(("oom_killed".into(), "true".into()));
                ev.at = SystemTime::now();
                self.emit(ev);
            }
            tracing::info!(unit = %spec.unit, exit_code = r.exit_code, signal = r.signal, oom = r.oom_killed, "task exited");
        }
    }
}
