//! How a task's unit comes to exist: chosen by the planner, persisted in `driver_state`, shown by
//! `list`.

/// How the unit comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `StartTransientUnit` from `command`.
    Transient,
    /// An installed unit (or template instance) from `unit`, with a runtime drop-in.
    Unit,
}
