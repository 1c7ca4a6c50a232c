//! Nomad-client-side fixtures (see `nomad_driver_systemd::local::alloc`).

pub use nomad_driver_systemd::local::alloc::*;
