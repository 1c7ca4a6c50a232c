//! TaskStats: samples of the unit's cgroup at Nomad's interval, from its cgroup files opened
//! once per stream and read with `pread`; D-Bus properties only where cgroupfs is unreadable.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::{Driver, Result};
use crate::stats::{CgroupFiles, CgroupReading, CpuTracker};
use crate::systemd::Systemd;

/// CPU figures; `None` = not measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSample {
    pub percent: Option<f64>,
    pub user_percent: Option<f64>,
    pub system_percent: Option<f64>,
    pub total_ticks: Option<f64>,
    pub throttled_periods: Option<u64>,
    pub throttled_time_ns: Option<u64>,
}

/// Memory figures in bytes; `None` = not measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemorySample {
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub usage: Option<u64>,
    pub max_usage: Option<u64>,
    pub swap: Option<u64>,
    pub kernel_usage: Option<u64>,
    pub kernel_max_usage: Option<u64>,
}

/// One sample for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSample {
    pub at: SystemTime,
    pub cpu: CpuSample,
    pub memory: MemorySample,
}

impl<S: Systemd> Driver<S> {
    /// A stream of samples every `interval` until the receiver is dropped or the task exits.
    pub fn stats(
        self: &Arc<Self>,
        id: &str,
        interval: Duration,
    ) -> Result<mpsc::Receiver<StatsSample>> {
        let task = self.get(id)?;
        let (tx, rx) = mpsc::channel(1);
        let this = Arc::clone(self);
        let interval = interval.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let compute = this.compute();
            let mut cpu = CpuTracker::new(compute.total_mhz, compute.num_cores);
            let layout = this.layout();
            // the cgroup's files, opened once (after the first tick) and read with pread
            let mut files: Option<CgroupFiles> = None;
            let mut looked_up = false;
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = task.monitor.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if task.status().exit().is_some() {
                    return;
                }
                if files.is_none()
                    && !looked_up
                    && let Some(layout) = layout
                {
                    // one D-Bus call per stream: where the unit's cgroup is
                    looked_up = true;
                    if let Ok(Some(cgroup)) = this.sd.control_group(&task.unit).await
                        && !cgroup.is_empty()
                    {
                        files = CgroupFiles::open(&this.cgroup_root, layout, &cgroup).ok();
                    }
                }
                let reading = match files.as_mut().and_then(CgroupFiles::read) {
                    Some(r) => r,
                    None => {
                        // no cgroup files (gone, or none readable): ask systemd
                        // (MemoryCurrent, CPUUsageNSec), and look for the files again next time
                        files = None;
                        looked_up = false;
                        let st = this.sd.status(&task.unit).await.ok().flatten();
                        CgroupReading {
                            mem_usage: st.as_ref().and_then(|s| s.memory_current),
                            cpu_total_ns: st.as_ref().and_then(|s| s.cpu_usage_nsec),
                            ..CgroupReading::default()
                        }
                    }
                };
                let sample = to_sample(&mut cpu, &reading);
                if tx.send(sample).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

fn to_sample(cpu: &mut CpuTracker, r: &CgroupReading) -> StatsSample {
    let at = SystemTime::now();
    let figures = cpu.update(super::unix_ns(at), r);
    StatsSample {
        at,
        cpu: CpuSample {
            percent: r.cpu_total_ns.map(|_| figures.percent),
            total_ticks: r.cpu_total_ns.map(|_| figures.total_ticks),
            user_percent: r.cpu_user_ns.map(|_| figures.user_percent),
            system_percent: r.cpu_system_ns.map(|_| figures.system_percent),
            throttled_periods: r.throttled_periods,
            throttled_time_ns: r.throttled_time_ns,
        },
        memory: MemorySample {
            rss: r.mem_rss,
            cache: r.mem_cache,
            usage: r.mem_usage,
            max_usage: r.mem_max_usage,
            swap: r.mem_swap,
            kernel_usage: r.mem_kernel_usage,
            kernel_max_usage: r.mem_kernel_max_usage,
        },
    }
}
