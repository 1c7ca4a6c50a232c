//! Nomad's resources enforced by a real systemd, statistics from the unit's cgroup, and
//! OOM kills reported.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::nomad::{Alloc, JobConfig};
use common::session::Session;
use common::systemd::{PrivateSystemd, require};
use nomad_driver_systemd::proto::drivers::{
    TaskConfig, TaskEventsRequest, TaskStatsRequest, cpu_usage, memory_usage,
};

const MIB: u64 = 1024 * 1024;

async fn session() -> Option<Session> {
    if !require() {
        return None;
    }
    Some(Session::new(Vec::new()).await)
}

fn with_resources(
    mut t: TaskConfig,
    cpu: i64,
    memory: i64,
    memory_max: i64,
    cores: &str,
) -> TaskConfig {
    let r = t.resources.as_mut().unwrap();
    let a = r.allocated_resources.as_mut().unwrap();
    a.cpu.as_mut().unwrap().cpu_shares = cpu;
    let m = a.memory.as_mut().unwrap();
    m.memory_mb = memory;
    m.memory_max_mb = memory_max;
    let l = r.linux_resources.as_mut().unwrap();
    l.cpu_shares = cpu;
    l.cpuset_cpus = cores.into();
    t
}

/// A file of the unit's cgroup in a v1 controller hierarchy, or the v2 tree.
fn cgroup_file(sd: &PrivateSystemd, unit: &str, controller: &str, file: &str) -> Option<String> {
    let cg = sd.show(unit, "ControlGroup");
    let candidates = [
        PathBuf::from(format!("/sys/fs/cgroup/{controller}{cg}/{file}")),
        PathBuf::from(format!("/sys/fs/cgroup{cg}/{file}")),
    ];
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
}

#[tokio::test]
async fn memory_and_cpu_limits_reach_the_cgroup() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("limits");
    let task = with_resources(
        alloc.task_config(1, &JobConfig::command("/bin/sleep", &["60"])),
        1000,
        200,
        0,
        "",
    );
    s.start(task.clone()).await.unwrap();
    let unit = s.sd.nomad_units().pop().unwrap();
    assert_eq!(s.sd.show(&unit, "MemoryMax"), (200 * MIB).to_string());
    // runc's shares→weight mapping: 1 + (1000 - 2) * 9999 / 262142 = 39
    assert_eq!(s.sd.show(&unit, "CPUWeight"), "39");
    for p in ["CPUAccounting", "MemoryAccounting", "TasksAccounting"] {
        assert_eq!(s.sd.show(&unit, p), "yes", "{p}");
    }
    let limit = cgroup_file(&s.sd, &unit, "memory", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&s.sd, &unit, "memory", "memory.max"))
        .expect("memory limit file");
    assert_eq!(limit, (200 * MIB).to_string());
    let cpu = cgroup_file(&s.sd, &unit, "cpu", "cpu.shares")
        .or_else(|| cgroup_file(&s.sd, &unit, "cpu", "cpu.weight"))
        .expect("cpu weight file");
    // v1: systemd converts weight 39 to cpu.shares 39 * 1024 / 100 = 399; v2: cpu.weight 39
    assert!(cpu == "399" || cpu == "39", "{cpu}");
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn memory_max_sets_a_soft_and_a_hard_limit() {
    let Some(s) = session().await else { return };
    for (n, (memory, max, want_low, want_max)) in [
        (128, 256, (128 * MIB).to_string(), (256 * MIB).to_string()),
        (128, -1, (128 * MIB).to_string(), "infinity".to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let alloc = Alloc::new("soft");
        let task = with_resources(
            alloc.task_config(1, &JobConfig::command("/bin/sleep", &["60"])),
            100,
            memory,
            max,
            "",
        );
        s.start(task.clone()).await.unwrap();
        let unit = s.sd.nomad_units().pop().unwrap();
        assert_eq!(s.sd.show(&unit, "MemoryLow"), want_low, "case {n}");
        assert_eq!(s.sd.show(&unit, "MemoryMax"), want_max, "case {n}");
        s.stop(&task.id, Duration::ZERO, "").await;
        s.destroy(&task.id).await;
    }
    s.finish().await;
}

#[tokio::test]
async fn reserved_cores_become_allowed_cpus() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("cores");
    let task = with_resources(
        alloc.task_config(1, &JobConfig::command("/bin/sleep", &["60"])),
        1000,
        64,
        0,
        "0",
    );
    s.start(task.clone()).await.unwrap();
    let unit = s.sd.nomad_units().pop().unwrap();
    assert_eq!(s.sd.show(&unit, "AllowedCPUs"), "0");
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn a_busy_task_yields_cpu_and_memory_samples() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("busy");
    let task = alloc.task_config(1, &JobConfig::sh("x=$(seq 1 20000); while :; do :; done"));
    s.start(task.clone()).await.unwrap();
    let mut stream = s
        .plugin()
        .driver()
        .task_stats(TaskStatsRequest {
            task_id: task.id.clone(),
            collection_interval: Some(Duration::from_millis(300).try_into().unwrap()),
        })
        .await
        .unwrap()
        .into_inner();
    let mut best_cpu = 0.0f64;
    let mut best_mem = 0u64;
    for _ in 0..6 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a sample per interval")
            .unwrap()
            .unwrap();
        let stats = msg.stats.expect("stats set");
        assert!(stats.timestamp.is_some());
        let agg = stats.agg_resource_usage.expect("agg_resource_usage set");
        let cpu = agg.cpu.unwrap();
        let mem = agg.memory.unwrap();
        assert!(
            cpu.measured_fields
                .contains(&(cpu_usage::Fields::Percent as i32)),
            "{cpu:?}"
        );
        assert!(
            mem.measured_fields
                .contains(&(memory_usage::Fields::Usage as i32)),
            "{mem:?}"
        );
        best_cpu = best_cpu.max(cpu.percent);
        best_mem = best_mem.max(mem.usage);
        println!(
            "sample: cpu {:.1}% ticks {:.0} rss {} usage {}",
            cpu.percent, cpu.total_ticks, mem.rss, mem.usage
        );
    }
    assert!(
        best_cpu > 20.0,
        "a busy loop should show CPU use, got {best_cpu}"
    );
    assert!(best_mem > 0, "memory usage must be measured");
    drop(stream);
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_killed_and_reported_oom() {
    let Some(s) = session().await else { return };
    let mut events = s
        .plugin()
        .driver()
        .task_events(TaskEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let alloc = Alloc::new("hog");
    let job = JobConfig::command(
        "/usr/bin/perl",
        &["-e", "my $x = 'a' x (300 * 1024 * 1024); sleep 30"],
    );
    let task = with_resources(alloc.task_config(1, &job), 100, 128, 0, "");
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    let r = w.result.unwrap();
    assert!(r.oom_killed, "{r:?}");
    assert_eq!(r.signal, 9, "{r:?}");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("an OOM task event")
        .unwrap()
        .unwrap();
    assert!(ev.message.contains("OOM"), "{ev:?}");
    assert_eq!(ev.alloc_id, alloc.id);
    assert_eq!(ev.task_name, "hog");
    s.destroy(&task.id).await;
    s.finish().await;
}

/// The plugin's descriptors open on cgroup files.
fn cgroup_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.starts_with("/sys/fs/cgroup/"))
                .count()
        })
        .unwrap_or(0)
}

async fn stats_every_100ms(
    s: &Session,
    id: &str,
) -> tonic::Streaming<nomad_driver_systemd::proto::drivers::TaskStatsResponse> {
    s.plugin()
        .driver()
        .task_stats(TaskStatsRequest {
            task_id: id.into(),
            collection_interval: Some(Duration::from_millis(100).try_into().unwrap()),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_stats_stream_keeps_the_cgroup_files_open_until_the_task_is_destroyed() {
    let Some(s) = session().await else { return };
    let pid = s.plugin().pid();
    let idle = cgroup_fds(pid);
    let alloc = Alloc::new("fds");
    let task = alloc.task_config(1, &JobConfig::command("/bin/sleep", &["300"]));
    s.start(task.clone()).await.unwrap();
    let mut stream = stats_every_100ms(&s, &task.id).await;
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a sample per interval")
            .unwrap()
            .unwrap();
        let mem = msg
            .stats
            .unwrap()
            .agg_resource_usage
            .unwrap()
            .memory
            .unwrap();
        assert!(
            mem.measured_fields
                .contains(&(memory_usage::Fields::Usage as i32)),
            "{mem:?}"
        );
    }
    // the stream holds the files it reads between samples
    let streaming = cgroup_fds(pid);
    assert!(
        streaming > idle,
        "{streaming} cgroup fds while streaming, {idle} idle"
    );
    // a second stream that its caller drops lets go of its own files while the task runs
    let mut second = stats_every_100ms(&s, &task.id).await;
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), second.message())
            .await
            .expect("a sample per interval")
            .unwrap()
            .unwrap();
    }
    let both = cgroup_fds(pid);
    assert!(both > streaming, "{both} cgroup fds with two streams");
    drop(second);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cgroup_fds(pid) > streaming && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cgroup_fds(pid),
        streaming,
        "a dropped stream kept its files"
    );
    // Nomad keeps the stream while it stops and destroys the task
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cgroup_fds(pid) > idle && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cgroup_fds(pid), idle, "cgroup fds left after DestroyTask");
    drop(stream);
    s.finish().await;
}

/// The sample times of a stream's next `n` samples after its first, in ns since the epoch.
async fn sample_times(
    stream: &mut tonic::Streaming<nomad_driver_systemd::proto::drivers::TaskStatsResponse>,
    n: usize,
) -> Vec<i64> {
    let mut times = Vec::new();
    for i in 0..=n {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a sample per interval")
            .unwrap()
            .unwrap();
        let at = msg.stats.unwrap().timestamp.expect("a sample time");
        let at = at.seconds * 1_000_000_000 + i64::from(at.nanos);
        if i > 0 {
            times.push(at);
        }
    }
    times
}

/// Streams of one interval sample together (one timer wake-up and a few writes for many of
/// them), whenever each was opened; each still samples once per interval. (With few streams
/// open every stream has the same phase of the grid: `driver::stats::phase_offset`.)
#[tokio::test]
async fn streams_of_one_interval_sample_on_a_shared_grid() {
    let Some(s) = session().await else { return };
    let alloc = Alloc::new("grid");
    let task = alloc.task_config(1, &JobConfig::command("/bin/sleep", &["300"]));
    s.start(task.clone()).await.unwrap();
    let interval = Duration::from_millis(400);
    let open = || {
        let mut client = s.plugin().driver();
        let id = task.id.clone();
        async move {
            client
                .task_stats(TaskStatsRequest {
                    task_id: id,
                    collection_interval: Some(interval.try_into().unwrap()),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut first = open().await;
    // the second stream opens well off the first one's phase
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut second = open().await;
    let (ta, tb) = tokio::join!(sample_times(&mut first, 4), sample_times(&mut second, 3));
    let period = i64::try_from(interval.as_nanos()).unwrap();
    for pair in ta.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (gap - period).abs() < period / 2,
            "samples {gap} ns apart, interval {period} ns: {ta:?}"
        );
    }
    // without the grid the second stream's samples fall 150 ms after the first's
    for t in &tb {
        let off = (t - ta[0]).rem_euclid(period);
        let off = off.min(period - off);
        assert!(
            off < 60_000_000,
            "a sample of the second stream {off} ns off the first's grid: {ta:?} / {tb:?}"
        );
    }
    drop((first, second));
    s.stop(&task.id, Duration::ZERO, "").await;
    s.destroy(&task.id).await;
    s.finish().await;
}
