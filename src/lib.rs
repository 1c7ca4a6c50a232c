//! nomad-driver-systemd: a Nomad task driver that runs every task as a systemd unit.
//!
//! Data flow: Nomad → `plugin` (go-plugin transport) → `grpc` (thin adapters) → `driver`
//! (the core) → `unit` (pure planner) → `systemd` (D-Bus) → systemd. See ARCHITECTURE.md.

pub mod cli;
pub mod config;
pub mod driver;
pub mod exec;
pub mod grpc;
pub mod journal;
pub mod logging;
pub mod nomad_standin;
pub mod plugin;
pub mod properties;
pub mod proto;
pub mod stats;
pub mod systemd;
pub mod task;
pub mod unit;
pub mod vocab;
