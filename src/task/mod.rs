//! Tasks as the driver tracks them: the spec Nomad sent, exit results, and the versioned
//! `driver_state` that survives agent restarts (pure).

pub mod spec;
pub mod state;
pub mod status;

pub use spec::TaskSpec;
pub use state::DriverState;
pub use status::{ExitResult, TaskState};
