//! The phases of a run, one file each; every one adds its rows to [`crate::Bench`].

pub(crate) mod decompose;
pub(crate) mod handshake;
pub(crate) mod hold;
pub(crate) mod latency;
pub(crate) mod recover;
pub(crate) mod scale;
pub(crate) mod stats;
pub(crate) mod unit_mode;
