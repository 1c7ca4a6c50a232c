//! The private systemd fixture (see `nomad_driver_systemd::nomad_standin::private_systemd`), and the rule that
//! real-systemd tests fail rather than skip.

pub use nomad_driver_systemd::nomad_standin::private_systemd::{PrivateSystemd, can_run};

/// Tests that need the real thing call this first: without root they fail, unless the developer
/// opts out with NDS_SKIP_PRIVILEGED=1 (CI never does).
pub fn require() -> bool {
    match can_run() {
        Ok(()) => true,
        Err(why) if std::env::var_os("NDS_SKIP_PRIVILEGED").is_some() => {
            eprintln!("skipping real-systemd test: {why} (NDS_SKIP_PRIVILEGED is set)");
            false
        }
        Err(why) => panic!(
            "real-systemd tests cannot run: {why}; run as root (or set NDS_SKIP_PRIVILEGED=1 locally)"
        ),
    }
}
