//! A stand-in for the Nomad client, to drive the plugin without Nomad: a private systemd when PID 1 is not systemd, the plugin
//! launched and connected as go-plugin does it, alloc dirs and logmon-style FIFOs. Used by
//! `nomad-driver-systemd run`, the integration tests and the benchmark.

pub mod alloc;
pub mod client;
pub mod private_systemd;
