//! Where task output goes (plugin key `logs`), on a real private systemd with its own journald;
//! the journal is read with `journalctl` inside the namespace.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::nomad::{Alloc, JobConfig};
use common::session::{Session, plugin_config, recover_request};
use common::systemd::{PrivateSystemd, require};
use nomad_driver_systemd::proto::drivers::TaskConfig;
use serde_json::Value;

const SECS: Duration = Duration::from_secs(20);

async fn session(logs: &str) -> Option<Session> {
    if !require() {
        return None;
    }
    let config = if logs.is_empty() {
        Vec::new()
    } else {
        plugin_config(&[("logs", rmpv::Value::from(logs))])
    };
    Some(Session::new(config).await)
}

/// The journal's entries of one allocation, as `journalctl -o json` prints them.
fn journal(sd: &PrivateSystemd, alloc_id: &str) -> Vec<BTreeMap<String, Value>> {
    sd.exec(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        &format!("NOMAD_ALLOC_ID={alloc_id}"),
    ])
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

fn field<'a>(e: &'a BTreeMap<String, Value>, k: &str) -> &'a str {
    e.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The MESSAGE of each entry, waiting until `want` of them are there.
async fn journal_messages(sd: &PrivateSystemd, alloc_id: &str, want: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + SECS;
    loop {
        let got: Vec<String> = journal(sd, alloc_id)
            .iter()
            .map(|e| field(e, "MESSAGE").to_string())
            .collect();
        if got.len() >= want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn journal_setting_puts_every_line_in_the_journal_with_nomad_fields() {
    let Some(s) = session("journal").await else {
        return;
    };
    let alloc = Alloc::new("mixed");
    let job = JobConfig::sh("for i in 1 2 3; do echo out-$i; echo err-$i >&2; done");
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    let entries = {
        journal_messages(&s.sd, &alloc.id, 6).await;
        journal(&s.sd, &alloc.id)
    };
    let messages: Vec<&str> = entries.iter().map(|e| field(e, "MESSAGE")).collect();
    // every line once, in the order written: systemd gives stdout and stderr one journal
    // stream (ARCHITECTURE.md, *Task logs*), so journald cannot tell them apart, but keeps order
    assert_eq!(
        messages,
        ["out-1", "err-1", "out-2", "err-2", "out-3", "err-3"]
    );
    let streams: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| field(e, "_STREAM_ID")).collect();
    assert_eq!(streams.len(), 1, "{streams:?}");
    let unit = s.sd.nomad_units().into_iter().next().unwrap_or_default();
    for e in &entries {
        assert_eq!(field(e, "NOMAD_ALLOC_ID"), alloc.id);
        assert_eq!(field(e, "NOMAD_JOB_NAME"), "test");
        assert_eq!(field(e, "NOMAD_GROUP_NAME"), "group");
        assert_eq!(field(e, "NOMAD_TASK_NAME"), "mixed");
        assert_eq!(field(e, "NOMAD_NAMESPACE"), "default");
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "mixed");
        assert_eq!(field(e, "_TRANSPORT"), "stdout");
        assert_eq!(field(e, "PRIORITY"), "6");
        if !unit.is_empty() {
            assert_eq!(field(e, "_SYSTEMD_UNIT"), unit);
        }
    }
    // `list` and systemd agree on where the unit's output goes
    assert_eq!(s.sd.show(&unit, "StandardOutput"), "journal");
    assert_eq!(s.sd.show(&unit, "StandardError"), "journal");
    // Nomad's FIFOs were left alone
    assert_eq!(alloc.stdout.text(), "");
    assert_eq!(alloc.stderr.text(), "");
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn disabled_nomad_logs_still_reach_the_journal() {
    let Some(s) = session("").await else { return };
    let alloc = Alloc::new("quiet");
    let job = JobConfig::sh("echo to-out; echo to-err >&2");
    // logs { disabled = true }
    let mut task = alloc.task_config(1, &job);
    task.stdout_path = "/dev/null".into();
    task.stderr_path = "/dev/null".into();
    s.start(task.clone()).await.unwrap();
    assert_eq!(s.wait(&task.id).await.result.unwrap().exit_code, 0);
    let got = journal_messages(&s.sd, &alloc.id, 2).await;
    assert!(got.contains(&"to-out".to_string()), "{got:?}");
    assert!(got.contains(&"to-err".to_string()), "{got:?}");
    s.destroy(&task.id).await;
    s.finish().await;
}

#[tokio::test]
async fn disable_log_collection_paths_are_never_opened_and_output_reaches_the_journal() {
    let Some(s) = session("").await else { return };
    let alloc = Alloc::new("nofifo");
    let job = JobConfig::sh("echo collected-by-nobody");
    // disable_log_collection: FIFO-style paths, no logmon, no FIFOs
    let mut task = alloc.task_config(1, &job);
    let logs = alloc.dir.join("alloc/logs");
    let (out, err) = (
        logs.join(".absent.stdout.fifo"),
        logs.join(".absent.stderr.fifo"),
    );
    task.stdout_path = out.display().to_string();
    task.stderr_path = err.display().to_string();
    s.start(task.clone()).await.unwrap();
    assert_eq!(s.wait(&task.id).await.result.unwrap().exit_code, 0);
    let got = journal_messages(&s.sd, &alloc.id, 1).await;
    assert_eq!(got, ["collected-by-nobody"]);
    assert!(
        !out.exists() && !err.exists(),
        "a stray log file was created"
    );
    s.destroy(&task.id).await;
    s.finish().await;
}

/// Starts a task writing 400 stdout and 200 stderr lines, SIGKILLs the plugin once some lines
/// are in the journal, relaunches it, recovers the task as Nomad would and waits for its exit 0.
async fn stream_through_a_plugin_kill(s: &mut Session, alloc: &Alloc) -> TaskConfig {
    let job = JobConfig::sh(
        "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line-$i; [ $((i % 2)) = 0 ] && echo e-$i >&2; sleep 0.005; done",
    );
    let task = alloc.task_config(1, &job);
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    // mid-stream: some lines are in, most are not
    let seen = journal_messages(&s.sd, &alloc.id, 20).await;
    assert!(seen.len() >= 20 && seen.len() < 600, "{}", seen.len());
    s.plugin.take().unwrap().crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.relaunch().await;
    s.plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    task
}

/// The plugin is not in the output's path: SIGKILLed mid-stream and relaunched, the journal
/// has every line exactly once.
#[tokio::test]
async fn plugin_killed_mid_stream_loses_and_doubles_no_journal_line() {
    let Some(mut s) = session("journal").await else {
        return;
    };
    let alloc = Alloc::new("stream");
    let task = stream_through_a_plugin_kill(&mut s, &alloc).await;
    let got = journal_messages(&s.sd, &alloc.id, 600).await;
    let mut want: Vec<String> = Vec::new();
    for i in 1..=400 {
        want.push(format!("line-{i}"));
        if i % 2 == 0 {
            want.push(format!("e-{i}"));
        }
    }
    let mut sorted = got.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "lost or doubled lines");
    s.destroy(&task.id).await;
    s.finish().await;
}

/// `logs = "both"`: Nomad's two files as with `nomad`, and every line in the journal once,
/// stdout at priority 6, stderr at 3, with the task's fields and unit.
#[tokio::test]
async fn both_puts_each_stream_in_nomads_file_and_the_journal() {
    let Some(s) = session("both").await else {
        return;
    };
    let alloc = Alloc::new("mixed");
    let job = JobConfig::sh("for i in 1 2 3; do echo out-$i; echo err-$i >&2; done; printf tail");
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    let unit = s.sd.nomad_units().into_iter().next().unwrap_or_default();
    // DestroyTask right after WaitTask, as Nomad does: the tail still arrives
    s.destroy(&task.id).await;
    assert!(alloc.stdout.wait_for("tail", SECS));
    assert_eq!(alloc.stdout.text(), "out-1\nout-2\nout-3\ntail");
    assert_eq!(alloc.stderr.text(), "err-1\nerr-2\nerr-3\n");
    journal_messages(&s.sd, &alloc.id, 7).await;
    let entries: Vec<_> = journal(&s.sd, &alloc.id)
        .into_iter()
        .filter(|e| !field(e, "NOMAD_LOG_STREAM").is_empty())
        .collect();
    let got: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                field(e, "MESSAGE").to_string(),
                field(e, "PRIORITY").to_string(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = Vec::new();
    for i in 1..=3 {
        want.push((format!("out-{i}"), "6".into()));
        want.push((format!("err-{i}"), "3".into()));
    }
    want.push(("tail".into(), "6".into()));
    let (mut g, mut w) = (got.clone(), want.clone());
    g.sort();
    w.sort();
    assert_eq!(g, w, "{got:?}");
    for e in &entries {
        assert_eq!(field(e, "NOMAD_JOB_NAME"), "test");
        assert_eq!(field(e, "NOMAD_GROUP_NAME"), "group");
        assert_eq!(field(e, "NOMAD_TASK_NAME"), "mixed");
        assert_eq!(field(e, "NOMAD_NAMESPACE"), "default");
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "mixed");
        assert_eq!(field(e, "OBJECT_SYSTEMD_UNIT"), unit);
    }
    // the unit's own name finds them (`journalctl -u` adds `_UID=0`, which journald records
    // only for a sender in its own PID namespace: the host's plugin is not in the fixture's)
    let by_unit = s.sd.exec(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        &format!("OBJECT_SYSTEMD_UNIT={unit}"),
    ]);
    assert!(by_unit.contains("err-2"), "{unit}: {by_unit}");
    s.finish().await;
}

/// `logs = "both"`, the plugin SIGKILLed mid-stream and relaunched: Nomad's files and the
/// journal each hold every line exactly once.
#[tokio::test]
async fn both_survives_a_plugin_kill_without_loss_or_doubles() {
    let Some(mut s) = session("both").await else {
        return;
    };
    let alloc = Alloc::new("stream");
    let task = stream_through_a_plugin_kill(&mut s, &alloc).await;
    s.destroy(&task.id).await;
    let mut want: Vec<String> = Vec::new();
    let (mut out, mut err) = (String::new(), String::new());
    for i in 1..=400 {
        want.push(format!("line-{i}"));
        out.push_str(&format!("line-{i}\n"));
        if i % 2 == 0 {
            want.push(format!("e-{i}"));
            err.push_str(&format!("e-{i}\n"));
        }
    }
    assert!(alloc.stdout.wait_for("line-400\n", SECS));
    assert_eq!(alloc.stdout.text(), out);
    assert!(alloc.stderr.wait_for("e-400\n", SECS));
    assert_eq!(alloc.stderr.text(), err);
    let mut got = journal_messages(&s.sd, &alloc.id, 600).await;
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "lost or doubled lines");
    assert_eq!(got, want);
    s.finish().await;
}

/// Plugin CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of stat (utime, stime); field 3 (the state) is the first after ")"
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = tick(11) + tick(12);
    ticks as f64 / 100.0
}

fn journal_count(sd: &PrivateSystemd, alloc_id: &str, stream: &str) -> usize {
    sd.exec(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        &format!("NOMAD_ALLOC_ID={alloc_id}"),
        &format!("NOMAD_LOG_STREAM={stream}"),
    ])
    .lines()
    .count()
}

/// `logs = "both"` throughput (README, *Performance*): 200,000 lines of 100 bytes (20 MB)
/// written at full speed, half to stderr; time until every line is in Nomad's files and in the
/// journal, lines lost or doubled, plugin CPU. `NDS_LOG_KILL=1` SIGKILLs the plugin midway.
/// `cargo test --release --test logs -- --ignored --nocapture both_throughput`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn both_throughput() {
    // NDS_LOG_MODE=nomad: the same writer without the forwarder, as a baseline
    let mode = std::env::var("NDS_LOG_MODE").unwrap_or_else(|_| "both".into());
    let Some(mut s) = session(&mode).await else {
        return;
    };
    let kill = std::env::var_os("NDS_LOG_KILL").is_some();
    let n = 100_000;
    let alloc = Alloc::new("bulk");
    let job = JobConfig::command(
        "/usr/bin/awk",
        &[&format!(
            "BEGIN {{ for (i = 1; i <= {n}; i++) {{ printf \"%-99s\\n\", \"out-\" i; printf \"%-99s\\n\", \"err-\" i > \"/dev/stderr\" }} }}"
        )],
    );
    let task = alloc.task_config(1, &job);
    let cpu0 = cpu_seconds(s.plugin().pid());
    let t0 = std::time::Instant::now();
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    let mut cpu_before_kill = 0.0;
    if kill {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cpu_before_kill = cpu_seconds(s.plugin().pid()) - cpu0;
        s.plugin.take().unwrap().crash();
        s.relaunch().await;
        s.plugin()
            .driver()
            .recover_task(recover_request(&handle))
            .await
            .unwrap();
    }
    let cpu_start = if kill {
        cpu_seconds(s.plugin().pid())
    } else {
        cpu0
    };
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    let written = t0.elapsed();
    let bytes = 100 * n;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let (mut out, mut err);
    loop {
        (out, err) = if mode == "both" {
            (
                journal_count(&s.sd, &alloc.id, "stdout"),
                journal_count(&s.sd, &alloc.id, "stderr"),
            )
        } else {
            (n, n)
        };
        let files = alloc.stdout.text().len() >= bytes && alloc.stderr.text().len() >= bytes;
        if (files && out >= n && err >= n) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = t0.elapsed();
    let cpu = cpu_seconds(s.plugin().pid()) - cpu_start + cpu_before_kill;
    let mb = 2.0 * bytes as f64 / 1e6;
    println!(
        "logs = {mode}{}: {} lines ({mb:.0} MB) written in {:.2} s; in both views after {:.2} s ({:.1} MB/s); journal stdout {out}/{n}, stderr {err}/{n}; Nomad files {}/{} bytes; plugin CPU {cpu:.2} s",
        if kill {
            ", plugin SIGKILLed midway"
        } else {
            ""
        },
        2 * n,
        written.as_secs_f64(),
        all.as_secs_f64(),
        mb / all.as_secs_f64(),
        alloc.stdout.text().len() + alloc.stderr.text().len(),
        2 * bytes,
    );
    s.destroy(&task.id).await;
    s.finish().await;
}

/// Unit mode, `logs = "both"`: the drop-in points the installed unit at Nomad's FIFOs and the
/// forwarder copies them into the journal, stderr at priority 3.
#[tokio::test]
async fn both_covers_unit_mode() {
    if !require() {
        return;
    }
    let s = Session::new(plugin_config(&[
        ("logs", rmpv::Value::from("both")),
        (
            "allowed_units",
            rmpv::Value::Array(vec![rmpv::Value::from("echoer@*.service")]),
        ),
    ]))
    .await;
    std::fs::write(
        s.sd.runtime_dir().join("system/echoer@.service"),
        "[Service]\nExecStart=/bin/sh -c 'echo unit-out; echo unit-err >&2'\n",
    )
    .unwrap();
    s.sd.exec(&["systemctl", "daemon-reload"]);
    let alloc = Alloc::new("echoer");
    let unit = format!("echoer@{}.service", alloc.id);
    let job = JobConfig {
        unit: Some(unit.clone()),
        ..JobConfig::default()
    };
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    s.destroy(&task.id).await;
    assert!(alloc.stdout.wait_for("unit-out\n", SECS));
    assert!(alloc.stderr.wait_for("unit-err\n", SECS));
    journal_messages(&s.sd, &alloc.id, 2).await;
    let mut got: Vec<(String, String, String)> = journal(&s.sd, &alloc.id)
        .iter()
        .map(|e| {
            (
                field(e, "MESSAGE").to_string(),
                field(e, "PRIORITY").to_string(),
                field(e, "OBJECT_SYSTEMD_UNIT").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("unit-err".to_string(), "3".to_string(), unit.clone()),
            ("unit-out".to_string(), "6".to_string(), unit.clone()),
        ]
    );
    s.finish().await;
}
