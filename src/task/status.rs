//! Task states and the mapping from systemd's exit bookkeeping to Nomad's exit result.

use std::time::SystemTime;

use crate::systemd::{CLD_DUMPED, CLD_EXITED, CLD_KILLED, UnitStatus};

/// How a task ended, in Nomad's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitResult {
    pub exit_code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    /// Set when the end is an error of its own (a lost unit), not just an exit status.
    pub err: Option<String>,
}

impl ExitResult {
    /// Nomad's idea of success: exit 0, no signal, no error.
    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal == 0 && self.err.is_none()
    }

    pub fn lost(why: impl Into<String>) -> Self {
        Self {
            exit_code: 1,
            err: Some(why.into()),
            ..Self::default()
        }
    }
}

/// What WaitTask and InspectTask see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Exited { result: ExitResult, at: SystemTime },
}

impl TaskState {
    pub fn exit(&self) -> Option<&ExitResult> {
        match self {
            TaskState::Running => None,
            TaskState::Exited { result, .. } => Some(result),
        }
    }
}

/// The exit result of a unit whose main process is gone; `None` while it still runs.
/// Death by signal gives `signal = signo` and `exit_code = 128 + signo`.
pub fn exit_result(st: &UnitStatus) -> Option<ExitResult> {
    if !st.main_exited() {
        return None;
    }
    let oom_killed = st.result == "oom-kill";
    Some(match st.exec_main_code {
        CLD_EXITED => ExitResult {
            exit_code: st.exec_main_status,
            signal: 0,
            oom_killed,
            err: None,
        },
        CLD_KILLED | CLD_DUMPED => ExitResult {
            exit_code: 128 + st.exec_main_status,
            signal: st.exec_main_status,
            oom_killed,
            err: None,
        },
        other => ExitResult::lost(format!("unknown exit code kind {other} from systemd")),
    })
}

/// Signal names as Nomad sends them (`SIGTERM`, also `TERM` and numbers) → numbers.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim();
    if let Ok(num) = n.parse::<i32>() {
        return (1..=64).contains(&num).then_some(num);
    }
    let upper = n.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(code: i32, status: i32, result: &str) -> UnitStatus {
        UnitStatus {
            exec_main_code: code,
            exec_main_status: status,
            result: result.into(),
            ..UnitStatus::default()
        }
    }

    #[test]
    fn exit_results_follow_nomad_conventions() {
        let cases = [
            (st(CLD_EXITED, 0, "success"), 0, 0, false),
            (st(CLD_EXITED, 3, "exit-code"), 3, 0, false),
            (st(CLD_KILLED, 9, "signal"), 137, 9, false),
            (st(CLD_KILLED, 15, "success"), 143, 15, false),
            (st(CLD_DUMPED, 11, "core-dump"), 139, 11, false),
            (st(CLD_KILLED, 9, "oom-kill"), 137, 9, true),
        ];
        for (s, code, sig, oom) in cases {
            let r = exit_result(&s).unwrap();
            assert_eq!(
                (r.exit_code, r.signal, r.oom_killed),
                (code, sig, oom),
                "{s:?}"
            );
        }
    }

    #[test]
    fn running_units_have_no_result() {
        let mut s = st(0, 0, "");
        s.main_pid = 42;
        assert_eq!(exit_result(&s), None);
        s.exec_main_code = CLD_EXITED; // stale bookkeeping while a new main runs
        assert_eq!(exit_result(&s), None);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("sigusr1"), Some(libc::SIGUSR1));
        assert_eq!(signal_number("HUP"), Some(1));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("0"), None);
    }
}
