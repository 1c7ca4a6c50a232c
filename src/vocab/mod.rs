//! The words every layer shares, at the bottom of the crate so that no import runs up a layer:
//! [`DValue`] (a typed D-Bus value, spoken by the property catalog, the planner and the systemd
//! client) and [`Mode`] (how a task's unit comes to exist, persisted in `driver_state`).
//! Nothing here does I/O or imports another module of the crate.

pub mod dvalue;
pub mod mode;

pub use dvalue::DValue;
pub use mode::Mode;
