//! The words every layer shares, at the bottom of the crate so that no import runs up a layer:
//! [`DValue`] (a typed D-Bus value, spoken by the property catalog, the planner and the systemd
//! client), [`Mode`] (how a task's unit comes to exist, persisted in `driver_state`) and
//! [`env_file_path`] (where a unit's environment file lives: named by the planner, written by
//! the systemd client).
//! Nothing here does I/O or imports another module of the crate.

pub mod dvalue;
pub mod env_file;
pub mod mode;

pub use dvalue::DValue;
pub use env_file::{ENV_DIR, env_file_path};
pub use mode::Mode;
