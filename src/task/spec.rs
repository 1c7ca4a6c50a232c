//! What Nomad asks for, as a domain type: the parts of `TaskConfig` the driver uses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Nomad's resource allocation for the task (values in Nomad's own units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `resources.cpu` in MHz (or the reserved cores' MHz with `cores`).
    pub cpu_mhz: i64,
    pub memory_mb: i64,
    /// 0 = unset, −1 = no hard limit.
    pub memory_max_mb: i64,
    /// Reserved cores as a list such as `"2,3"`, empty without `cores`.
    pub cpuset_cpus: String,
}

/// A Nomad volume mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub host_path: String,
    pub task_path: String,
    pub readonly: bool,
}

/// A device from a device plugin. `host_path` may be any path to a device node: a symlink
/// such as `/dev/disk/by-id/...`, or a node a device plugin made outside `/dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub host_path: String,
    pub task_path: String,
    pub permissions: String,
    /// What `host_path` is on the host, looked up (following symlinks) by the driver before
    /// planning; `None` when it is missing or not a device node.
    #[serde(default)]
    pub node: Option<DeviceNode>,
}

impl DeviceSpec {
    /// Where the task sees the device: its task path, or the host path when Nomad sent none.
    pub fn path_in_task(&self) -> &String {
        if self.task_path.is_empty() {
            &self.host_path
        } else {
            &self.task_path
        }
    }
}

/// A device node by number, the way the cgroup device policy names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// The node's canonical path (symlinks resolved): what is bound, so that a symlink
    /// swapped after the lookup cannot bind something else.
    pub path: String,
    pub kind: DeviceKind,
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Char,
    Block,
}

impl DeviceNode {
    /// systemd's pseudo path for a device by number (`/dev/char/M:m`, `/dev/block/M:m`),
    /// which `DeviceAllow=` takes without the path existing.
    pub fn allow_path(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => "char",
            DeviceKind::Block => "block",
        };
        format!("/dev/{kind}/{}:{}", self.major, self.minor)
    }
}

/// One task start as Nomad describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// `<alloc_id>/<task>/<8 hex>`, new on every start.
    pub id: String,
    pub name: String,
    pub alloc_id: String,
    pub alloc_dir: String,
    pub job_name: String,
    pub job_id: String,
    pub group: String,
    pub namespace: String,
    pub env: BTreeMap<String, String>,
    pub user: String,
    /// The primary group of `user` on this host, looked up by the driver before planning
    /// (`None` for no user, a dynamic user, or where nobody looked, as in `validate`).
    #[serde(default)]
    pub user_gid: Option<u32>,
    /// The other groups the host's group database gives `user` (systemd adds them to every
    /// process of a `User=` unit), looked up with `user_gid`.
    #[serde(default)]
    pub user_groups: Vec<u32>,
    pub resources: Resources,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<DeviceSpec>,
    pub stdout_path: String,
    pub stderr_path: String,
    /// Group network namespace to join (`NetworkIsolationSpec.path`), if any.
    pub network_ns: Option<String>,
}

impl TaskSpec {
    /// The last component of the task id (`xxxxxxxx` of `alloc/task/xxxxxxxx`).
    pub fn id_suffix(&self) -> &str {
        self.id.rsplit('/').next().unwrap_or(&self.id)
    }
}
