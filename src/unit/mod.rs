//! From a task to a systemd unit: names, typed properties, policy and the planner (pure).

pub mod name;
pub mod plan;
pub mod properties;
pub mod value;

pub use plan::{Mode, UnitPlan, env_file_path, plan};
