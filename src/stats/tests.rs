//! Tests over the fixture trees in `tests/fixtures/cgroup` and, read-only, the host's cgroup root.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const UNIT: &str = "/nomad_tasks.slice/nomad-x.service";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(name)
}

fn read(tree: &str, cgroup: &str) -> CgroupReading {
    let root = fixture(tree);
    let layout = detect_layout(&root).expect("fixture layout");
    read_cgroup(&root, layout, cgroup).expect("fixture cgroup")
}

#[test]
fn detects_each_fixture_layout() {
    assert_eq!(detect_layout(&fixture("v2/full")), Some(CgroupLayout::V2));
    assert_eq!(
        detect_layout(&fixture("v2/minimal")),
        Some(CgroupLayout::V2)
    );
    assert_eq!(
        detect_layout(&fixture("v1/combined")),
        Some(CgroupLayout::V1)
    );
    assert_eq!(
        detect_layout(&fixture("v1/old-kernel")),
        Some(CgroupLayout::V1)
    );
    assert_eq!(
        detect_layout(&fixture("v1/hybrid")),
        Some(CgroupLayout::Hybrid)
    );
    assert_eq!(detect_layout(&fixture("does-not-exist")), None);
    let empty = tempfile::tempdir().expect("tempdir");
    assert_eq!(detect_layout(empty.path()), None);
}

#[test]
fn lists_controllers() {
    let root = fixture("v2/full");
    assert_eq!(
        available_controllers(&root, CgroupLayout::V2),
        [
            "cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"
        ]
    );
    assert_eq!(
        available_controllers(&fixture("v1/combined"), CgroupLayout::V1),
        [
            "blkio", "cpu", "cpuacct", "devices", "freezer", "memory", "net_cls", "net_prio",
            "pids"
        ]
    );
    // Placeholder directories without cgroup.procs (hugetlb, perf_event) are not mounted;
    // systemd and unified are not v1 controllers.
    assert_eq!(
        available_controllers(&fixture("v1/hybrid"), CgroupLayout::Hybrid),
        [
            "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"
        ]
    );
    assert!(available_controllers(&fixture("does-not-exist"), CgroupLayout::V2).is_empty());
}

#[test]
fn v2_full_reads_every_field_but_kernel_max() {
    let r = read("v2/full", UNIT);
    assert_eq!(
        r,
        CgroupReading {
            cpu_total_ns: Some(2_503_841_000),
            cpu_user_ns: Some(1_802_311_000),
            cpu_system_ns: Some(701_530_000),
            throttled_periods: Some(37),
            throttled_time_ns: Some(912_345_000),
            mem_usage: Some(52_428_800),
            mem_rss: Some(31_457_280),
            mem_cache: Some(18_874_368),
            mem_swap: Some(1_048_576),
            mem_max_usage: Some(73_400_320),
            mem_kernel_usage: Some(2_097_152),
            mem_kernel_max_usage: None,
            oom_kills: Some(1),
        }
    );
}

#[test]
fn v2_minimal_tolerates_missing_swap_peak_kernel_and_throttling() {
    let r = read("v2/minimal", UNIT);
    assert_eq!(
        r,
        CgroupReading {
            cpu_total_ns: Some(500_000_000),
            cpu_user_ns: Some(400_000_000),
            cpu_system_ns: Some(100_000_000),
            throttled_periods: None,
            throttled_time_ns: None,
            mem_usage: Some(8_388_608),
            mem_rss: Some(5_242_880),
            mem_cache: Some(2_097_152),
            mem_swap: None,
            mem_max_usage: None,
            mem_kernel_usage: Some(49_152 + 196_608),
            mem_kernel_max_usage: None,
            oom_kills: Some(0),
        }
    );
}

#[test]
fn v1_combined_reads_through_cpu_cpuacct_mount() {
    let r = read("v1/combined", UNIT);
    assert_eq!(
        r,
        CgroupReading {
            cpu_total_ns: Some(4_000_000_000),
            cpu_user_ns: Some(3_000_000_000),
            cpu_system_ns: Some(1_000_000_000),
            throttled_periods: Some(20),
            throttled_time_ns: Some(1_500_000_000),
            mem_usage: Some(104_857_600),
            mem_rss: Some(78_643_200),
            mem_cache: Some(20_971_520),
            mem_swap: Some(2_097_152),
            mem_max_usage: Some(157_286_400),
            mem_kernel_usage: Some(3_145_728),
            mem_kernel_max_usage: Some(4_194_304),
            oom_kills: Some(1),
        }
    );
}

#[test]
fn v1_old_kernel_uses_ticks_and_reports_no_swap_kmem_or_oom_count() {
    let r = read("v1/old-kernel", UNIT);
    assert_eq!(
        r,
        CgroupReading {
            cpu_total_ns: Some(3_100_000_000),
            cpu_user_ns: Some(2_500_000_000),
            cpu_system_ns: Some(600_000_000),
            throttled_periods: Some(0),
            throttled_time_ns: Some(0),
            mem_usage: Some(10_485_760),
            mem_rss: Some(6_291_456),
            mem_cache: Some(4_194_304),
            // memory.stat carries `swap 0` but no total_swap: the plain key is used.
            mem_swap: Some(0),
            mem_max_usage: Some(12_582_912),
            mem_kernel_usage: None,
            mem_kernel_max_usage: None,
            oom_kills: None,
        }
    );
}

#[test]
fn hybrid_reads_v1_controllers() {
    let r = read("v1/hybrid", UNIT);
    assert_eq!(r.cpu_total_ns, Some(2_000_000_000));
    assert_eq!(r.cpu_user_ns, Some(1_500_000_000));
    assert_eq!(r.cpu_system_ns, Some(500_000_000));
    assert_eq!(r.throttled_periods, Some(0));
    assert_eq!(r.mem_usage, Some(33_554_432));
    assert_eq!(r.mem_rss, Some(16_777_216));
    assert_eq!(r.mem_cache, Some(12_582_912));
    // Swap accounting off: no memsw, no swap key.
    assert_eq!(r.mem_swap, None);
    assert_eq!(r.mem_max_usage, Some(41_943_040));
    assert_eq!(r.mem_kernel_usage, Some(1_048_576));
    assert_eq!(r.mem_kernel_max_usage, Some(1_572_864));
    assert_eq!(r.oom_kills, Some(0));
}

#[test]
fn hybrid_without_cpuacct_cgroup_takes_cpu_time_from_unified() {
    let r = read("v1/hybrid", "/nomad_tasks.slice/nomad-noacct.service");
    assert_eq!(r.cpu_total_ns, Some(750_000_000));
    assert_eq!(r.cpu_user_ns, Some(600_000_000));
    assert_eq!(r.cpu_system_ns, Some(150_000_000));
    assert_eq!(r.throttled_periods, None);
    assert_eq!(r.mem_usage, Some(33_554_432));

    // Read as plain V1, the same tree has no CPU figures for that unit.
    let r = read_cgroup(
        &fixture("v1/hybrid"),
        CgroupLayout::V1,
        "/nomad_tasks.slice/nomad-noacct.service",
    )
    .expect("memory cgroup exists");
    assert_eq!(r.cpu_total_ns, None);
}

#[test]
fn reads_root_cgroup() {
    let r = read("v1/hybrid", "/");
    assert_eq!(r.cpu_total_ns, Some(48_833_238_157));
    assert_eq!(r.mem_usage, Some(1_447_346_176));
    let r = read("v2/full", "");
    assert_eq!(r.cpu_total_ns, Some(1_841_239_551_000));
    // The v2 root cgroup has no memory.current.
    assert_eq!(r.mem_usage, None);
}

#[test]
fn missing_cgroup_is_an_error_in_every_layout() {
    for tree in ["v2/full", "v1/combined", "v1/hybrid", "v1/old-kernel"] {
        let root = fixture(tree);
        let layout = detect_layout(&root).expect("fixture layout");
        let err =
            read_cgroup(&root, layout, "/nomad_tasks.slice/nomad-gone.service").expect_err(tree);
        assert!(matches!(err, StatsError::NotFound { .. }), "{tree}: {err}");
        assert!(read_oom_kills(&root, layout, "/nomad_tasks.slice/nomad-gone.service").is_none());
    }
    let root = fixture("v2/full");
    assert!(matches!(
        read_cgroup(&root, CgroupLayout::V2, "/../../etc"),
        Err(StatsError::InvalidPath(_))
    ));
}

#[test]
fn reads_oom_kills_alone() {
    let oom = |tree: &str| {
        let root = fixture(tree);
        let layout = detect_layout(&root).expect("fixture layout");
        read_oom_kills(&root, layout, UNIT)
    };
    assert_eq!(oom("v2/full"), Some(1));
    assert_eq!(oom("v2/minimal"), Some(0));
    assert_eq!(oom("v1/combined"), Some(1));
    assert_eq!(oom("v1/hybrid"), Some(0));
    assert_eq!(oom("v1/old-kernel"), None);
}

#[test]
fn finds_combined_controller_dir_without_symlinks() {
    let root = tempfile::tempdir().expect("tempdir");
    let combined = root.path().join("cpu,cpuacct");
    fs::create_dir_all(combined.join("nomad_tasks.slice/nomad-x.service")).expect("mkdir");
    fs::write(combined.join("cgroup.procs"), "").expect("write");
    fs::write(
        combined.join("nomad_tasks.slice/nomad-x.service/cpuacct.usage"),
        "42\n",
    )
    .expect("write");
    fs::write(
        combined.join("nomad_tasks.slice/nomad-x.service/cpu.stat"),
        "nr_periods 4\nnr_throttled 2\nthrottled_time 99\n",
    )
    .expect("write");
    // An unrelated directory whose name merely contains "cpu" must not match.
    fs::create_dir_all(root.path().join("cpuset")).expect("mkdir");
    fs::write(root.path().join("cpuset/cgroup.procs"), "").expect("write");

    assert_eq!(
        v1::controller_dir(root.path(), "cpu"),
        Some(combined.clone())
    );
    assert_eq!(v1::controller_dir(root.path(), "cpuacct"), Some(combined));
    assert_eq!(v1::controller_dir(root.path(), "memory"), None);

    let r = read_cgroup(root.path(), CgroupLayout::V1, UNIT).expect("cgroup exists");
    assert_eq!(r.cpu_total_ns, Some(42));
    assert_eq!(r.throttled_periods, Some(2));
    assert_eq!(r.throttled_time_ns, Some(99));
    assert_eq!(r.mem_usage, None);
}

#[test]
fn tracker_over_fixture_readings() {
    let compute = compute_from_cores(0, &[CoreSpeed::from((1000, 0, 0)); 4]);
    let mut tracker = CpuTracker::new(compute.total_mhz, compute.num_cores);
    let first = read("v2/minimal", UNIT);
    assert_eq!(tracker.update(0, &first), CpuFigures::default());
    let later = CgroupReading {
        cpu_total_ns: first.cpu_total_ns.map(|ns| ns + 1_000_000_000),
        ..first
    };
    let figures = tracker.update(2_000_000_000, &later);
    assert!((figures.percent - 50.0).abs() < 1e-9, "{figures:?}");
    assert!((figures.total_ticks - 500.0).abs() < 1e-9, "{figures:?}");
}

/// Reads the host's real cgroup root, read-only. Skipped when `/sys/fs/cgroup` is absent or empty
/// (containers, non-Linux CI).
#[test]
fn reads_host_cgroup_root() {
    let root = Path::new("/sys/fs/cgroup");
    let populated = fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some());
    if !populated {
        eprintln!("skipping: {} is absent or empty", root.display());
        return;
    }
    let layout = detect_layout(root).expect("a populated /sys/fs/cgroup has a layout");
    assert!(!available_controllers(root, layout).is_empty() || layout == CgroupLayout::V2);
    let reading = read_cgroup(root, layout, "/").expect("the root cgroup exists");
    eprintln!("host cgroup root: {layout:?} {reading:?}");
    match layout {
        // The dev VMs and most CI hosts of this project: memory and cpuacct accounting at the root.
        CgroupLayout::V1 | CgroupLayout::Hybrid => {
            assert!(reading.mem_usage.is_some(), "{reading:?}");
            assert!(reading.cpu_total_ns.is_some(), "{reading:?}");
        }
        // The v2 root cgroup has no memory.current; cpu.stat is there on Linux ≥ 5.8.
        CgroupLayout::V2 => {}
    }
}
