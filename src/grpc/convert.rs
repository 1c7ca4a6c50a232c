//! Protobuf ↔ domain conversions, the only place that knows both shapes.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::config::schema::Spec;
use crate::driver::{Fingerprint, Health, StatsSample, TaskEvent};
use crate::proto::{base, drivers, hclspec, structs};
use crate::stats::{Compute, CoreSpeed, compute_from_cores};
use crate::task::spec::{DeviceSpec, MountSpec, Resources};
use crate::task::{ExitResult, TaskSpec};

/// Our schema tree → hclspec.
pub fn spec(s: &Spec) -> hclspec::Spec {
    use hclspec::spec::Block;
    let block = match s {
        Spec::Object(fields) => Block::Object(hclspec::Object {
            attributes: fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), spec(v)))
                .collect(),
        }),
        Spec::Attr { name, ty, required } => Block::Attr(hclspec::Attr {
            name: (*name).to_string(),
            r#type: (*ty).to_string(),
            required: *required,
        }),
        Spec::BlockAttrs { name, ty } => Block::BlockAttrs(hclspec::BlockAttrs {
            name: (*name).to_string(),
            r#type: (*ty).to_string(),
            required: false,
        }),
        Spec::Default { primary, default } => Block::Default(Box::new(hclspec::Default {
            primary: Some(Box::new(spec(primary))),
            default: Some(Box::new(spec(default))),
        })),
        Spec::Literal(v) => Block::Literal(hclspec::Literal {
            value: (*v).to_string(),
        }),
    };
    hclspec::Spec { block: Some(block) }
}

/// Nomad's TaskConfig → our task spec.
pub fn task_spec(c: &drivers::TaskConfig) -> TaskSpec {
    let res = c.resources.as_ref();
    let alloc = res.and_then(|r| r.allocated_resources.as_ref());
    let linux = res.and_then(|r| r.linux_resources.as_ref());
    let network_ns = c
        .network_isolation_spec
        .as_ref()
        .filter(|n| {
            n.mode == drivers::network_isolation_spec::NetworkIsolationMode::Group as i32
                && !n.path.is_empty()
        })
        .map(|n| n.path.clone());
    TaskSpec {
        id: c.id.clone(),
        name: c.name.clone(),
        alloc_id: c.alloc_id.clone(),
        alloc_dir: c.alloc_dir.clone(),
        job_name: c.job_name.clone(),
        job_id: c.job_id.clone(),
        group: c.task_group_name.clone(),
        namespace: c.namespace.clone(),
        env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        user: c.user.clone(),
        user_gid: None,
        user_groups: Vec::new(),
        resources: Resources {
            cpu_mhz: alloc
                .and_then(|a| a.cpu.as_ref())
                .map(|c| c.cpu_shares)
                .or_else(|| linux.map(|l| l.cpu_shares))
                .unwrap_or(0),
            memory_mb: alloc
                .and_then(|a| a.memory.as_ref())
                .map(|m| m.memory_mb)
                .unwrap_or(0),
            memory_max_mb: alloc
                .and_then(|a| a.memory.as_ref())
                .map(|m| m.memory_max_mb)
                .unwrap_or(0),
            cpuset_cpus: linux.map(|l| l.cpuset_cpus.clone()).unwrap_or_default(),
        },
        mounts: c
            .mounts
            .iter()
            .map(|m| MountSpec {
                host_path: m.host_path.clone(),
                task_path: m.task_path.clone(),
                readonly: m.readonly,
            })
            .collect(),
        devices: c
            .devices
            .iter()
            .map(|d| DeviceSpec {
                host_path: d.host_path.clone(),
                task_path: d.task_path.clone(),
                permissions: d.cgroup_permissions.clone(),
                node: None,
            })
            .collect(),
        stdout_path: c.stdout_path.clone(),
        stderr_path: c.stderr_path.clone(),
        network_ns,
    }
}

/// Node compute from SetConfig's topology, if Nomad sent one (docs/nomad-contract.md, *Base
/// plugin and node compute*).
pub fn compute(cfg: Option<&base::NomadConfig>) -> Option<Compute> {
    let topo = cfg?.driver.as_ref()?.topology.as_ref()?;
    let cores: Vec<CoreSpeed> = topo
        .cores
        .iter()
        .map(|c| CoreSpeed {
            base_mhz: c.base_speed,
            max_mhz: c.max_speed,
            guess_mhz: c.guess_speed,
        })
        .collect();
    Some(compute_from_cores(topo.override_total_compute, &cores))
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// Go's zero `time.Time`, which Nomad reads as "not set".
pub fn go_zero_time() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: -62_135_596_800,
        nanos: 0,
    }
}

pub fn exit_result(r: &ExitResult) -> drivers::ExitResult {
    drivers::ExitResult {
        exit_code: r.exit_code,
        signal: r.signal,
        oom_killed: r.oom_killed,
    }
}

pub fn event(e: &TaskEvent) -> drivers::DriverTaskEvent {
    drivers::DriverTaskEvent {
        task_id: e.task_id.clone(),
        alloc_id: e.alloc_id.clone(),
        task_name: e.task_name.clone(),
        timestamp: Some(timestamp(e.at)),
        message: e.message.clone(),
        annotations: e.annotations.iter().cloned().collect(),
    }
}

pub fn fingerprint(f: &Fingerprint) -> drivers::FingerprintResponse {
    use drivers::fingerprint_response::HealthState;
    let health = match f.health {
        Health::Undetected => HealthState::Undetected,
        Health::Unhealthy => HealthState::Unhealthy,
        Health::Healthy => HealthState::Healthy,
    };
    drivers::FingerprintResponse {
        attributes: f
            .attributes
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    structs::Attribute {
                        value: Some(structs::attribute::Value::StringVal(v.clone())),
                        unit: String::new(),
                    },
                )
            })
            .collect(),
        health: health as i32,
        health_description: f.description.clone(),
        err: String::new(),
    }
}

/// A sample → TaskStats; `measured_fields` lists exactly what was measured.
pub fn stats(id: &str, s: &StatsSample) -> drivers::TaskStats {
    use drivers::cpu_usage::Fields as C;
    use drivers::memory_usage::Fields as M;
    let mut cpu = drivers::CpuUsage::default();
    let mut measured = Vec::new();
    let mut f = |v: Option<f64>, field: C, slot: &mut f64| {
        if let Some(v) = v {
            *slot = v;
            measured.push(field as i32);
        }
    };
    f(s.cpu.percent, C::Percent, &mut cpu.percent);
    f(s.cpu.user_percent, C::UserMode, &mut cpu.user_mode);
    f(s.cpu.system_percent, C::SystemMode, &mut cpu.system_mode);
    f(s.cpu.total_ticks, C::TotalTicks, &mut cpu.total_ticks);
    if let Some(v) = s.cpu.throttled_periods {
        cpu.throttled_periods = v;
        measured.push(C::ThrottledPeriods as i32);
    }
    if let Some(v) = s.cpu.throttled_time_ns {
        cpu.throttled_time = v;
        measured.push(C::ThrottledTime as i32);
    }
    cpu.measured_fields = measured;
    let mut mem = drivers::MemoryUsage::default();
    let m = &s.memory;
    for (v, field, slot) in [
        (m.rss, M::Rss, &mut mem.rss),
        (m.cache, M::Cache, &mut mem.cache),
        (m.usage, M::Usage, &mut mem.usage),
        (m.max_usage, M::MaxUsage, &mut mem.max_usage),
        (m.swap, M::Swap, &mut mem.swap),
        (m.kernel_usage, M::KernelUsage, &mut mem.kernel_usage),
        (
            m.kernel_max_usage,
            M::KernelMaxUsage,
            &mut mem.kernel_max_usage,
        ),
    ] {
        if let Some(v) = v {
            *slot = v;
            mem.measured_fields.push(field as i32);
        }
    }
    drivers::TaskStats {
        id: id.to_string(),
        timestamp: Some(timestamp(s.at)),
        agg_resource_usage: Some(drivers::TaskResourceUsage {
            cpu: Some(cpu),
            memory: Some(mem),
        }),
        resource_usage_by_pid: HashMap::new(),
    }
}

/// One ExecTaskStreaming request → the inputs it carries (a heartbeat carries none; `setup` is
/// handled by the caller).
pub fn exec_inputs(m: &drivers::ExecTaskStreamingRequest) -> Vec<crate::exec::ExecInput> {
    use crate::exec::ExecInput;
    let mut out = Vec::new();
    if let Some(size) = &m.tty_size
        && let (Ok(rows), Ok(cols)) = (u16::try_from(size.height), u16::try_from(size.width))
    {
        out.push(ExecInput::Resize { rows, cols });
    }
    if let Some(stdin) = &m.stdin {
        if !stdin.data.is_empty() {
            out.push(ExecInput::Stdin(stdin.data.clone()));
        }
        if stdin.close {
            out.push(ExecInput::StdinClose);
        }
    }
    out
}

/// One exec output event → its ExecTaskStreaming response frame.
pub fn exec_frame(o: crate::exec::ExecOutput) -> drivers::ExecTaskStreamingResponse {
    use crate::exec::ExecOutput;
    use drivers::ExecTaskStreamingIoOperation as Op;
    let data = |data: Vec<u8>| Some(Op { data, close: false });
    let close = || {
        Some(Op {
            data: Vec::new(),
            close: true,
        })
    };
    let mut r = drivers::ExecTaskStreamingResponse::default();
    match o {
        ExecOutput::Stdout(d) => r.stdout = data(d),
        ExecOutput::Stderr(d) => r.stderr = data(d),
        ExecOutput::StdoutClosed => r.stdout = close(),
        ExecOutput::StderrClosed => r.stderr = close(),
        ExecOutput::Exited(res) => {
            r.exited = true;
            r.result = Some(exit_result(&res));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{plugin_schema, task_schema};
    use hclspec::spec::Block;

    /// Every Attr and BlockAttrs Nomad receives is named, wherever it sits in the tree: Nomad
    /// implies no name inside Default (helper/pluginutils/hclspecutils/dec.go,
    /// decodeDefaultSpec) and refuses the whole plugin over one unnamed attribute.
    #[test]
    fn no_unnamed_attribute_reaches_the_wire() {
        fn walk(s: &hclspec::Spec, path: &str, named: &mut Vec<String>) {
            match s.block.as_ref().expect("every spec node has a block") {
                Block::Object(o) => {
                    for (k, v) in &o.attributes {
                        walk(v, &format!("{path}.{k}"), named);
                    }
                }
                Block::Attr(a) => {
                    assert!(!a.name.is_empty(), "{path}: Attr without a name");
                    assert!(!a.r#type.is_empty(), "{path}: Attr without a type");
                    named.push(a.name.clone());
                }
                Block::BlockAttrs(a) => {
                    assert!(!a.name.is_empty(), "{path}: BlockAttrs without a name");
                    named.push(a.name.clone());
                }
                Block::Default(d) => {
                    walk(d.primary.as_deref().expect("primary"), path, named);
                    walk(d.default.as_deref().expect("default"), path, named);
                }
                Block::Literal(l) => assert!(!l.value.is_empty(), "{path}: empty literal"),
                other => panic!("{path}: unexpected spec kind {other:?}"),
            }
        }
        for (schema, n) in [(plugin_schema(), 14), (task_schema(), 5)] {
            let mut named = Vec::new();
            walk(&spec(&schema), "", &mut named);
            assert_eq!(named.len(), n, "{named:?}");
        }
    }
}
