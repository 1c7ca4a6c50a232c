//! TaskStats: samples of the unit's cgroup at Nomad's interval, from its cgroup files opened
//! once per stream and read with `pread`; D-Bus properties only where cgroupfs is unreadable.
//! The stream is its own state: no task or channel per stream (a node holds one per task).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;

use super::{Driver, Result, Task};
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

/// One TaskStats stream's state, owned by the stream itself: the gRPC response body polls it,
/// so it costs nothing between samples but this struct (no task, no channel per stream), and
/// it ends with the response (the caller went away) or the task.
struct Sampler<S: Systemd> {
    driver: Arc<Driver<S>>,
    task: Arc<Task>,
    cpu: CpuTracker,
    /// The cgroup's files, opened at the first sample and read with pread (looked for again
    /// at the next sample while there are none).
    files: Option<CgroupFiles>,
    /// The first sample is taken at once, the others at the ticks.
    first: bool,
    ticker: tokio::time::Interval,
    _open: Open,
}

impl<S: Systemd> Sampler<S> {
    /// The next sample at the next tick; `None` once the task exited or was destroyed.
    async fn next(&mut self) -> Option<StatsSample> {
        if !std::mem::take(&mut self.first) {
            tokio::select! {
                () = self.task.monitor.cancelled() => return None,
                _ = self.ticker.tick() => {}
            }
        }
        if self.task.status().exit().is_some() {
            return None;
        }
        if self.files.is_none()
            && let Some(layout) = self.driver.layout()
        {
            // one D-Bus call per stream: where the unit's cgroup is
            if let Ok(Some(cgroup)) = self.driver.sd.control_group(&self.task.unit).await
                && !cgroup.is_empty()
            {
                self.files = CgroupFiles::open(&self.driver.cgroup_root, layout, &cgroup).ok();
            }
        }
        let reading = match self.files.as_mut().and_then(CgroupFiles::read) {
            Some(r) => r,
            None => {
                // no cgroup files (gone, or none readable): ask systemd (MemoryCurrent,
                // CPUUsageNSec), and look for the files again next time
                self.files = None;
                let st = self.driver.sd.status(&self.task.unit).await.ok().flatten();
                CgroupReading {
                    mem_usage: st.as_ref().and_then(|s| s.memory_current),
                    cpu_total_ns: st.as_ref().and_then(|s| s.cpu_usage_nsec),
                    ..CgroupReading::default()
                }
            }
        };
        Some(to_sample(&mut self.cpu, &reading))
    }
}

impl<S: Systemd> Driver<S> {
    /// Samples every `interval` (at least 100 ms; the first at once) until the stream is
    /// dropped or the task exits.
    pub fn stats(
        self: &Arc<Self>,
        id: &str,
        interval: Duration,
    ) -> Result<impl Stream<Item = StatsSample> + Send + 'static> {
        let task = self.get(id)?;
        let compute = self.compute();
        let (counted, open) = Open::new();
        let sampler = Sampler {
            driver: Arc::clone(self),
            task,
            cpu: CpuTracker::new(compute.total_mhz, compute.num_cores),
            files: None,
            first: true,
            ticker: ticker(interval.max(Duration::from_millis(100)), id, open),
            _open: counted,
        };
        Ok(futures::stream::unfold(sampler, |mut s| async move {
            s.next().await.map(|sample| (sample, s))
        }))
    }
}

/// Phases the grid of one period has: eighths of the period. A stream takes the eighth its
/// task id hashes to, rounded down to a multiple of 8 / n, where n (1, 2, 4 or 8) grows by one
/// doubling per [`PER_PHASE`] streams open when it opens: a few streams share one wake-up,
/// and a node's many are spread so that no burst holds the plugin's one thread long. The
/// grids nest (at most 8 wake-ups per period), but streams opened while few were open stay on
/// the coarser grids: 1,000 streams opened one after another put ~320 at the start of the
/// period (~16 ms of samples at 0.05 ms each), ~190 at its half, ~125 at each quarter and ~60
/// in each odd eighth (computed, not measured).
const PHASES: u32 = 8;
const PER_PHASE: usize = 128;

/// Where a stream's grid sits in its period (see [`PHASES`]).
fn phase_offset(period: Duration, task_id: &str, open: usize) -> Duration {
    let phases = u32::try_from((open / PER_PHASE + 1).next_power_of_two())
        .unwrap_or(PHASES)
        .min(PHASES);
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(task_id, &mut h);
    let eighth = u32::try_from(std::hash::Hasher::finish(&h) % u64::from(PHASES)).unwrap_or(0);
    // the eighth rounded down to one of `phases` evenly spaced ones
    let slot = eighth - eighth % (PHASES / phases);
    period / PHASES * slot
}

/// TaskStats streams open in this process.
static OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a stream as open for as long as it lives.
struct Open;

impl Open {
    /// The new stream's count, and how many streams were open before it.
    fn new() -> (Self, usize) {
        (
            Open,
            OPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Ticks every `period` on a grid shared by every stream of the same period in this process
/// (multiples of `period` since the process's first stream, shifted by the phase the task's
/// id and the `open` streams give, see [`PHASES`]), so that one timer
/// wake-up serves many streams and their samples leave in a few writes, not one wake-up and
/// one write per stream. The first tick is the first grid point at least half a period away
/// (the sample taken at once needs no company); a reader that fell behind gets one sample when
/// it asks, then the grid again.
fn ticker(period: Duration, task_id: &str, open: usize) -> tokio::time::Interval {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    debug_assert!(!period.is_zero());
    let phase = phase_offset(period, task_id, open);
    let epoch = EPOCH
        .get_or_init(tokio::time::Instant::now)
        .checked_add(phase);
    let now = tokio::time::Instant::now();
    let first = epoch
        .zip(now.checked_add(period / 2))
        .and_then(|(epoch, soonest)| {
            let since = soonest.saturating_duration_since(epoch).as_nanos();
            let periods = since.div_ceil(period.as_nanos().max(1));
            let offset = u64::try_from(periods.checked_mul(period.as_nanos())?).ok()?;
            epoch.checked_add(Duration::from_nanos(offset))
        });
    // an absurd period from the caller (past what an Instant can hold): one tick, far away
    let far = || now.checked_add(Duration::from_secs(100 * 365 * 86_400));
    let first = first
        .or_else(|| now.checked_add(period))
        .or_else(far)
        .unwrap_or(now);
    let mut ticker = tokio::time::interval_at(first, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_streams_share_one_phase_and_many_spread_over_nested_eighths() {
        let period = Duration::from_millis(800);
        let ids: Vec<String> = (0..64).map(|i| format!("task-{i}")).collect();
        let offsets = |open| {
            let mut v: Vec<Duration> = ids
                .iter()
                .map(|id| phase_offset(period, id, open))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        // under 128 open streams: one phase for every task
        assert_eq!(offsets(0), vec![Duration::ZERO]);
        assert_eq!(offsets(127), vec![Duration::ZERO]);
        // then halves, quarters, eighths of the period, each grid within the next
        assert_eq!(offsets(128), vec![Duration::ZERO, period / 2]);
        assert_eq!(
            offsets(300),
            (0..4).map(|k| period / 4 * k).collect::<Vec<_>>()
        );
        assert_eq!(
            offsets(1000),
            (0..8).map(|k| period / 8 * k).collect::<Vec<_>>()
        );
        // a task keeps its eighth as the grid refines: its offset only rounds down
        for id in &ids {
            let fine = phase_offset(period, id, 1000);
            for open in [0, 128, 300] {
                assert!(phase_offset(period, id, open) <= fine, "{id} at {open}");
            }
            assert_eq!(fine, phase_offset(period, id, 5000), "{id}");
        }
    }
}
