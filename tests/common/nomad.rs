//! Nomad-client-side fixtures (see `nomad_driver_systemd::nomad_standin::alloc`).

pub use nomad_driver_systemd::nomad_standin::alloc::*;
