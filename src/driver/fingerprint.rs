//! Fingerprint: is systemd there and healthy, and what the node should know about it.

use std::collections::BTreeMap;

use super::Driver;
use crate::stats::{CgroupLayout, available_controllers, detect_layout};
use crate::systemd::Systemd;

/// Nomad's three health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Undetected,
    Unhealthy,
    Healthy,
}

/// One fingerprint report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub health: Health,
    pub description: String,
    pub attributes: BTreeMap<String, String>,
}

/// Node attribute prefix.
pub const ATTR: &str = "driver.systemd";

impl<S: Systemd> Driver<S> {
    /// Probes systemd over the bus; cheap enough to run every 30 s.
    pub async fn fingerprint(&self) -> Fingerprint {
        let cfg = self.config();
        if !cfg.enabled {
            return Fingerprint {
                health: Health::Undetected,
                description: "disabled by the plugin config (enabled = false)".into(),
                attributes: BTreeMap::new(),
            };
        }
        match self.sd.version().await {
            Ok(version) => {
                if let Some(major) = crate::systemd::major_version(&version) {
                    self.systemd_version
                        .store(major, std::sync::atomic::Ordering::Relaxed);
                }
                let mut attributes = BTreeMap::new();
                attributes.insert(format!("{ATTR}.version"), version_number(&version));
                attributes.insert(format!("{ATTR}.slice"), cfg.slice.clone());
                if let Some(layout) = detect_layout(&self.cgroup_root) {
                    attributes.insert(format!("{ATTR}.cgroup"), layout_name(layout).into());
                    attributes.insert(
                        format!("{ATTR}.cgroup.controllers"),
                        available_controllers(&self.cgroup_root, layout).join(","),
                    );
                }
                Fingerprint {
                    health: Health::Healthy,
                    description: "Healthy".into(),
                    attributes,
                }
            }
            Err(e) => Fingerprint {
                health: Health::Unhealthy,
                description: format!("systemd is not reachable on the system bus: {e}"),
                attributes: BTreeMap::new(),
            },
        }
    }
}

/// `v1`, `hybrid` or `v2`, as the node attribute says it.
pub fn layout_name(layout: CgroupLayout) -> &'static str {
    match layout {
        CgroupLayout::V1 => "v1",
        CgroupLayout::Hybrid => "hybrid",
        CgroupLayout::V2 => "v2",
    }
}

/// `"252.38-1~deb12u1"` → `"252.38"`; systemd's own versions are `NNN[.N][-rcN]`.
fn version_number(v: &str) -> String {
    let v = v.trim().trim_start_matches('v');
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    if end == 0 {
        v.to_string()
    } else {
        v[..end].to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(super::version_number("252.38-1~deb12u1"), "252.38");
        assert_eq!(super::version_number("256"), "256");
        assert_eq!(super::version_number("v255.4"), "255.4");
    }
}
