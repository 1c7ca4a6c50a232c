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

/// An exit by SIGKILL not known as an OOM kill: on cgroup v1 possibly the OOM killer's.
fn may_hide_oom(state: &TaskState) -> bool {
    matches!(state, TaskState::Exited { result, .. }
        if result.signal == libc::SIGKILL && !result.oom_killed && result.err.is_none())
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
        let judged = with_oom(judged, &oom);
        let v1_layout = self
            .layout()
            .filter(|l| *l != crate::stats::CgroupLayout::V2);
        let known_cgroup = first
            .as_ref()
            .map(|st| st.control_group.clone())
            .unwrap_or_default();
        let cancel = self.shutdown.child_token();
        // an exit that may hide a v1 OOM kill is told once the kernel log has been read, by
        // the task below; any other is final now
        let pending = v1_layout.is_some() && may_hide_oom(&judged);
        if matches!(judged, TaskState::Exited { .. }) && !pending {
            self.report_exit(&spec, &judged);
            return (watch::channel(judged).1, cancel);
        }
        let initial = if pending {
            TaskState::Running
        } else {
            judged.clone()
        };
        let (tx, rx) = watch::channel(initial);
        // cgroup v1 OOM notifications need the unit's memory cgroup; a start that read no
        // status learns it with one call, off the StartTask path (the watch also counts the
        // OOM kills from before it began)
        let this = Arc::clone(self);
        let token = cancel.clone();
        tokio::spawn(async move {
            let mut cgroup = known_cgroup;
            if pending {
                let state = this.with_kernel_oom(&spec, judged, &oom, &cgroup).await;
                this.tell_exit(&spec, &tx, state).await;
                token.cancelled().await;
                return;
            }
            if let Some(layout) = v1_layout {
                if cgroup.is_empty() {
                    cgroup = this
                        .sd
                        .control_group(&spec.unit)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                }
                if let Some(dir) = crate::stats::v1_memory_dir(&this.cgroup_root, layout, &cgroup) {
                    super::oom::watch(dir, Arc::clone(&oom), token.clone());
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
                // what the signals said, else a read (a bus reconnect forgets the signals,
                // and values that disagree with each other are not used); a signalled run
                // that is not ours (a reload's signal about an installed unit's earlier run)
                // is read too before it counts as a restart outside Nomad
                let read = match this.sd.signalled(&spec.unit) {
                    Some(st)
                        if spec.invocation_id.is_empty()
                            || st.invocation_id == spec.invocation_id =>
                    {
                        Ok(Some(st))
                    }
                    _ => this.sd.status(&spec.unit).await,
                };
                match read {
                    Ok(st) => {
                        let mut state =
                            with_oom(judge(st.as_ref(), &spec.unit, &spec.invocation_id), &oom);
                        if v1_layout.is_some() && may_hide_oom(&state) {
                            // killed before its cgroup could be watched (an OOM kill at once
                            // leaves no cgroup to look up): the kernel log tells
                            state = this.with_kernel_oom(&spec, state, &oom, &cgroup).await;
                        }
                        if matches!(state, TaskState::Exited { .. }) {
                            this.tell_exit(&spec, &tx, state).await;
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

    /// cgroup v1: `state` (a SIGKILL not known as an OOM kill) with the kernel log's word on
    /// it. The log names the victim's memory cgroup: `cgroup` when the monitor learnt it, else
    /// the one systemd gives the unit in its slice (its `ControlGroup` is gone once pruned).
    async fn with_kernel_oom(
        &self,
        spec: &MonitorSpec,
        state: TaskState,
        oom: &Arc<AtomicBool>,
        cgroup: &str,
    ) -> TaskState {
        let cgroup = if cgroup.is_empty() {
            match self.sd.unit_info(&spec.unit).await {
                Ok(Some(info)) if !info.control_group.is_empty() => info.control_group,
                Ok(Some(info)) => super::oom::unit_cgroup(&info.slice, &spec.unit),
                _ => return state,
            }
        } else {
            cgroup.to_string()
        };
        let since = spec.event.at;
        let logged =
            tokio::task::spawn_blocking(move || super::oom::kernel_logged_oom(&cgroup, since))
                .await
                .unwrap_or(false);
        if logged {
            tracing::info!(unit = %spec.unit, "the kernel log holds an OOM kill of the task");
            oom.store(true, Ordering::SeqCst);
        }
        with_oom(state, oom)
    }

    /// Gives the exit to its waiters (WaitTask, StopTask), then logs it. The log line is a
    /// write to a pipe whose reader (Nomad's) the kernel wakes, which took 20–200 µs: the
    /// waiters' answers go first. Yielding lets the woken calls run and their answers be
    /// written, one thread running them all (`main.rs`), before the line is.
    async fn tell_exit(&self, spec: &MonitorSpec, tx: &watch::Sender<TaskState>, state: TaskState) {
        let _ = tx.send(state.clone());
        tokio::task::yield_now().await;
        self.report_exit(spec, &state);
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
