//! From a task to a systemd unit: names and the planner (pure). The property catalog the planner
//! types job properties with is `crate::properties`.

pub mod name;
pub mod plan;

pub use plan::{Host, UnitPlan, plan, plan_on};
