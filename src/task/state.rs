//! `TaskHandle.driver_state`: everything RecoverTask needs, because after an agent restart
//! Nomad hands back no driver config (docs/nomad-contract.md, *What survives an agent restart*). Versioned; every version keeps a fixture.

use serde::{Deserialize, Serialize};

use crate::vocab::Mode;

/// The current schema version, also sent as `TaskHandle.version` (0 is reserved by Nomad).
pub const STATE_VERSION: u32 = 1;

/// Version 1 of the persisted state (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverState {
    pub version: u32,
    pub task_id: String,
    pub alloc_id: String,
    pub task_name: String,
    pub unit: String,
    pub mode: Mode,
    /// systemd's InvocationID of the run we started (hex); a different one is not ours.
    pub invocation_id: String,
    /// Start time, ns since the epoch.
    pub started_at_ns: u64,
    /// Unit mode: whether the driver wrote a drop-in that DestroyTask must remove.
    pub dropin: bool,
}

/// Why persisted state could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("driver_state is empty")]
    Empty,
    #[error("driver_state is not valid: {0}")]
    Invalid(String),
    #[error("driver_state version {0} is newer than this plugin understands ({STATE_VERSION})")]
    TooNew(u32),
}

impl DriverState {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        if bytes.is_empty() {
            return Err(StateError::Empty);
        }
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| StateError::Invalid(e.to_string()))?;
        match probe.version {
            STATE_VERSION => {
                serde_json::from_slice(bytes).map_err(|e| StateError::Invalid(e.to_string()))
            }
            v if v > STATE_VERSION => Err(StateError::TooNew(v)),
            v => Err(StateError::Invalid(format!("unknown version {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 state exactly as version 0.1.0 wrote it: must keep decoding forever.
    const V1_FIXTURE: &str = r#"{"version":1,"task_id":"8f3c2d1e-1111-2222-3333-444455556666/web/0a1b2c3d","alloc_id":"8f3c2d1e-1111-2222-3333-444455556666","task_name":"web","unit":"nomad-8f3c2d1e-1111-2222-3333-444455556666-web-0a1b2c3d.service","mode":"transient","invocation_id":"7f0b6929b0884848b9e1df0564cd2531","started_at_ns":1790000000000000000,"dropin":false}"#;

    #[test]
    fn v1_fixture_decodes() {
        let s = DriverState::decode(V1_FIXTURE.as_bytes()).unwrap();
        assert_eq!(s.mode, Mode::Transient);
        assert_eq!(s.task_name, "web");
        assert_eq!(DriverState::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert_eq!(
            DriverState::decode(br#"{"version":9}"#),
            Err(StateError::TooNew(9))
        );
        assert_eq!(DriverState::decode(b""), Err(StateError::Empty));
        assert!(matches!(
            DriverState::decode(br#"{"version":0}"#),
            Err(StateError::Invalid(_))
        ));
    }
}
