//! `nomad alloc exec` and script checks without a helper process: the plugin forks the command
//! itself and, between fork and exec, moves it into the running task: the namespaces, cgroups,
//! root and working directory, credentials, capability bounding set, resource limits and
//! environment of the unit's main process (read from `/proc/<MainPID>`).
//!
//! - `procfs`: pure parsers of the `/proc` files used (table-tested).
//! - `context`: finding the main process in our pid numbering and capturing its context as
//!   open descriptors and plain data, before any fork.
//! - `spawn`: the fork (from a thread that joined the task's pid namespace) and the
//!   async-signal-safe `pre_exec` hook.
//! - `pty`: pty pairs for tty sessions.
//! - `session`: running the command to its end, captured or streamed.
//!
//! The exec'd process lands in the unit's own cgroup, so systemd accounts it to the task,
//! applies the task's limits and device policy to it, and kills it with the task.

mod context;
mod procfs;
mod pty;
mod session;
mod spawn;

pub use context::{TaskContext, locate};
pub use session::{
    CAPTURE_LIMIT, Captured, DRAIN, ExecInput, ExecOutput, capture, exit_result, stream,
};
pub use spawn::{Spawned, Stdio3, spawn};

/// Why a command could not be started in a task.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("task is not running")]
    NotRunning,
    #[error("command is empty")]
    EmptyCommand,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {program:?} in the task: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}
