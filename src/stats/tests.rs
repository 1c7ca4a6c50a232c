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

/// What [`CgroupFiles`] reads: [`read_cgroup`]'s reading without `oom_kills` (no sample
/// carries it, so the file is not kept open).
fn without_oom(r: CgroupReading) -> CgroupReading {
    CgroupReading {
        oom_kills: None,
        ..r
    }
}

#[test]
fn kept_files_read_what_read_cgroup_reads_in_every_fixture() {
    let cases = [
        ("v2/full", UNIT),
        ("v2/minimal", UNIT),
        ("v2/full", ""),
        ("v1/combined", UNIT),
        ("v1/old-kernel", UNIT),
        ("v1/hybrid", UNIT),
        ("v1/hybrid", "/nomad_tasks.slice/nomad-noacct.service"),
        ("v1/hybrid", "/"),
    ];
    for (tree, cgroup) in cases {
        let root = fixture(tree);
        let layout = detect_layout(&root).expect("fixture layout");
        let mut files = CgroupFiles::open(&root, layout, cgroup).expect(tree);
        assert!(files.open_files() > 0, "{tree} {cgroup}");
        let expected = without_oom(read(tree, cgroup));
        // the same figures on every read through the same descriptors
        for _ in 0..3 {
            assert_eq!(files.read(), Some(expected.clone()), "{tree} {cgroup}");
        }
    }
}

#[test]
fn kept_files_refuse_a_missing_or_escaping_cgroup() {
    for tree in ["v2/full", "v1/combined", "v1/hybrid"] {
        let root = fixture(tree);
        let layout = detect_layout(&root).expect("fixture layout");
        assert!(matches!(
            CgroupFiles::open(&root, layout, "/nomad_tasks.slice/nomad-gone.service"),
            Err(StatsError::NotFound { .. })
        ));
        assert!(matches!(
            CgroupFiles::open(&root, layout, "/../../etc"),
            Err(StatsError::InvalidPath(_))
        ));
    }
}

/// A v2 tree with one cgroup `a.service` holding `memory.current`.
fn one_cgroup_tree(current: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").expect("write");
    fs::create_dir(root.path().join("a.service")).expect("mkdir");
    fs::write(root.path().join("a.service/memory.current"), current).expect("write");
    root
}

#[test]
fn kept_files_see_new_values_without_reopening() {
    let root = one_cgroup_tree("100\n");
    let mut files = CgroupFiles::open(root.path(), CgroupLayout::V2, "/a.service").expect("open");
    assert_eq!(files.read().and_then(|r| r.mem_usage), Some(100));
    // the kernel rewrites a cgroup file in place; pread at 0 sees the new text
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(root.path().join("a.service/memory.current"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"7\n"))
        .expect("rewrite");
    assert_eq!(files.read().and_then(|r| r.mem_usage), Some(7));
}

#[test]
fn a_stale_descriptor_makes_the_reader_reopen_the_recreated_cgroup() {
    // A removed cgroup's files fail every read (ENODEV); here a directory where a file was
    // expected fails the same way (EISDIR) when read through the descriptor opened on it.
    let root = one_cgroup_tree("100\n");
    let cg = root.path().join("a.service");
    fs::remove_file(cg.join("memory.current")).expect("rm");
    fs::create_dir(cg.join("memory.current")).expect("mkdir");
    let mut files = CgroupFiles::open(root.path(), CgroupLayout::V2, "/a.service").expect("open");
    // the cgroup made again under the same path, with fresh figures
    fs::remove_dir(cg.join("memory.current")).expect("rmdir");
    fs::write(cg.join("memory.current"), "5\n").expect("write");
    assert_eq!(files.read().and_then(|r| r.mem_usage), Some(5));
    // and read through the new descriptor from then on
    fs::write(cg.join("memory.current"), "6\n").expect("write");
    assert_eq!(files.read().and_then(|r| r.mem_usage), Some(6));
}

#[test]
fn kept_files_of_a_removed_cgroup_read_nothing() {
    let root = one_cgroup_tree("100\n");
    let cg = root.path().join("a.service");
    fs::remove_file(cg.join("memory.current")).expect("rm");
    fs::create_dir(cg.join("memory.current")).expect("mkdir");
    let mut files = CgroupFiles::open(root.path(), CgroupLayout::V2, "/a.service").expect("open");
    fs::remove_dir_all(&cg).expect("rm cgroup");
    assert_eq!(files.read(), None);
}

#[test]
fn a_file_longer_than_the_buffer_keeps_its_complete_lines() {
    let root = one_cgroup_tree("100\n");
    // `anon` first, then filler up to a `file` line that straddles the 16 KiB read
    let mut text = String::from("anon 5\n");
    while text.len() < 16 * 1024 - 8 {
        text.push_str("pgfault 1\n");
    }
    text.push_str("file 123456789\n");
    assert!(text.len() > 16 * 1024);
    fs::write(root.path().join("a.service/memory.stat"), &text).expect("write");
    let mut files = CgroupFiles::open(root.path(), CgroupLayout::V2, "/a.service").expect("open");
    let r = files.read().expect("a reading");
    assert_eq!(r.mem_rss, Some(5));
    // the cut line is not read as `file 12…`
    assert_eq!(r.mem_cache, None);
}

#[test]
fn keyed_lookup_agrees_with_the_parsed_map() {
    let texts = [
        "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\nnr_throttled 3\n",
        "\nanon 4096\n\nbogus\nfile notanumber\nthree parts here\nlimit max\nneg -1\n",
        "rss 1\nrss 2\nrss x\ncache 5\n",
        "total_rss 10 extra\ntotal_rss 11\n",
        "",
    ];
    let keys = [
        "usage_usec",
        "anon",
        "file",
        "limit",
        "neg",
        "rss",
        "cache",
        "total_rss",
        "bogus",
        "three",
        "absent",
    ];
    for text in texts {
        let map = parse_flat_keyed(text);
        let found = keyed(text, keys);
        for (key, value) in keys.iter().zip(found) {
            assert_eq!(value, map.get(key).copied(), "{key} in {text:?}");
        }
        // one key alone finds the same
        assert_eq!(keyed(text, ["rss"])[0], map.get("rss").copied());
    }
}

/// The host's real cgroupfs, read-only: the root cgroup's files kept open and read twice.
#[test]
fn kept_files_read_the_host_cgroup_root_repeatedly() {
    let root = Path::new("/sys/fs/cgroup");
    let Some(layout) = detect_layout(root) else {
        eprintln!("skipping: no cgroup layout under {}", root.display());
        return;
    };
    let mut files = CgroupFiles::open(root, layout, "/").expect("the root cgroup");
    let first = files.read().expect("a reading");
    let second = files
        .read()
        .expect("a second reading through the same descriptors");
    if let (Some(a), Some(b)) = (first.cpu_total_ns, second.cpu_total_ns) {
        assert!(b >= a, "{a} then {b}");
    }
    if layout != CgroupLayout::V2 {
        assert!(second.mem_usage.is_some(), "{second:?}");
    }
}
