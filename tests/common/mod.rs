//! Test support shared by the integration tests and the benchmark.
#![allow(dead_code, unused_imports)]

pub mod nomad;
pub mod plugin;
pub mod session;
pub mod systemd;
