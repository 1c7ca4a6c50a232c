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

/// `logs = "journal"`: a task writing far more than journald's default burst (10,000 per
/// 30 s, scaled by free space) keeps every line: the unit's `LogRateLimitIntervalSec=1us`
/// reaches journald (0 would not, see the agent-unit test below).
#[tokio::test]
async fn journal_setting_keeps_every_line_of_a_chatty_task() {
    let Some(s) = session("journal").await else {
        return;
    };
    let n = 70_000;
    let alloc = Alloc::new("chatty");
    let job = JobConfig::command(
        "/usr/bin/awk",
        &[&format!(
            "BEGIN {{ for (i = 1; i <= {n}; i++) print \"c-\" i }}"
        )],
    );
    let task = alloc.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    let count = |sd: &PrivateSystemd| {
        sd.exec(&[
            "sh",
            "-c",
            &format!(
                "journalctl --no-pager -o cat NOMAD_ALLOC_ID={} | grep '^c-' | sort -u | wc -l",
                alloc.id
            ),
        ])
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + SECS;
    while count(&s.sd) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(count(&s.sd), n, "lines dropped by journald's rate limit");
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

/// `logs = "both"`: names a task plants in its `alloc/logs` (Nomad makes it 0777) as logmon's
/// next files — a symlink to a root-only file, a FIFO nobody writes — are not followed: the
/// file's content is not in the journal, and the node's one forwarder keeps forwarding (another
/// allocation's lines, started after the plant, arrive).
#[tokio::test]
async fn both_does_not_read_names_the_task_planted_in_alloc_logs() {
    let Some(s) = session("both").await else {
        return;
    };
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("shadow");
    std::fs::write(&secret, "root-only-secret-line\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let evil = Alloc::new("web");
    let job = JobConfig::sh(&format!(
        "echo before; echo before-err >&2; sleep 1; ln -s {} /alloc/logs/web.stdout.1; mkfifo /alloc/logs/web.stderr.1; sleep 4",
        secret.display()
    ));
    let task = evil.task_config(1, &job);
    s.start(task.clone()).await.unwrap();
    let got = journal_messages(&s.sd, &evil.id, 2).await;
    assert!(got.contains(&"before-err".to_string()), "{got:?}");
    let planted = evil.dir.join("alloc/logs/web.stderr.1");
    let deadline = std::time::Instant::now() + SECS;
    while std::fs::symlink_metadata(&planted).is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::symlink_metadata(evil.dir.join("alloc/logs/web.stdout.1"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // the forwarder's passes meet both names
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = Alloc::new("other");
    let other_task = other.task_config(1, &JobConfig::sh("echo other-ok"));
    s.start(other_task.clone()).await.unwrap();
    let got = journal_messages(&s.sd, &other.id, 1).await;
    assert_eq!(got, ["other-ok"], "the forwarder stopped forwarding");
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    s.wait(&other_task.id).await;
    s.destroy(&task.id).await;
    s.destroy(&other_task.id).await;
    let all = s.sd.exec(&["journalctl", "--no-pager", "-o", "cat"]);
    assert!(!all.contains("root-only-secret-line"), "{all}");
    let got: Vec<String> = journal(&s.sd, &evil.id)
        .iter()
        .map(|e| field(e, "MESSAGE").to_string())
        .collect();
    assert!(got.contains(&"before".to_string()), "{got:?}");
    s.finish().await;
}

/// `logs = "both"`: while the plugin is down, a unit of the same systemd (as any task can, and
/// as root) sends journal entries with the victim's `NOMAD_*` fields and a far position; the
/// relaunched plugin resumes from its own entries only, so every line still arrives once.
#[tokio::test]
async fn both_resumes_from_its_own_entries_not_forged_ones() {
    let Some(mut s) = session("both").await else {
        return;
    };
    let alloc = Alloc::new("stream");
    let job = JobConfig::sh(
        "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line-$i; [ $((i % 2)) = 0 ] && echo e-$i >&2; sleep 0.005; done",
    );
    let task = alloc.task_config(1, &job);
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    let seen = journal_messages(&s.sd, &alloc.id, 20).await;
    assert!(seen.len() >= 20 && seen.len() < 600, "{}", seen.len());
    s.plugin.take().unwrap().crash();
    let mut forge = String::new();
    for stream in ["stdout", "stderr"] {
        forge.push_str(&format!(
            "printf 'MESSAGE=forged\\nNOMAD_ALLOC_ID={}\\nNOMAD_TASK_NAME=stream\\nNOMAD_LOG_STREAM={stream}\\nNOMAD_LOG_POS=99999:0\\n' | logger --journald; ",
            alloc.id
        ));
    }
    s.sd.exec(&[
        "systemd-run",
        "--wait",
        "--quiet",
        "--collect",
        "sh",
        "-c",
        &forge,
    ]);
    let deadline = std::time::Instant::now() + SECS;
    while journal(&s.sd, &alloc.id)
        .iter()
        .filter(|e| field(e, "MESSAGE") == "forged")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no forged entries");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.relaunch().await;
    s.plugin()
        .driver()
        .recover_task(recover_request(&handle))
        .await
        .unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    s.destroy(&task.id).await;
    let mut want: Vec<String> = Vec::new();
    for i in 1..=400 {
        want.push(format!("line-{i}"));
        if i % 2 == 0 {
            want.push(format!("e-{i}"));
        }
    }
    let mut got: Vec<String> = journal_messages(&s.sd, &alloc.id, 602)
        .await
        .into_iter()
        .filter(|m| m != "forged")
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "lost or doubled lines");
    assert_eq!(got, want);
    s.finish().await;
}

/// Peak resident memory of a process in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `logs = "both"`: a task writes a 40 MiB line before its newline; the plugin's peak memory
/// grows by far less than the line (the forwarder keeps at most one 48 KiB piece of it), and
/// the line arrives whole, in 48 KiB entries.
#[tokio::test]
async fn both_keeps_memory_bounded_for_a_line_without_end() {
    let Some(s) = session("both").await else {
        return;
    };
    let len: usize = 40 << 20;
    let piece: usize = 48 << 10;
    let pid = s.plugin().pid();
    let before = peak_rss_kib(pid);
    let alloc = Alloc::new("long");
    let task = alloc.task_config(
        1,
        &JobConfig::sh(&format!(
            "head -c {len} /dev/zero | tr '\\0' x; echo; echo done"
        )),
    );
    s.start(task.clone()).await.unwrap();
    let w = s.wait(&task.id).await;
    assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
    let count = len.div_ceil(piece) + 1;
    journal_messages(&s.sd, &alloc.id, count).await;
    let grew = peak_rss_kib(pid).saturating_sub(before);
    s.destroy(&task.id).await;
    // `-a`: journalctl prints fields over 4096 bytes as null without it
    let got: Vec<String> =
        s.sd.exec(&[
            "journalctl",
            "--no-pager",
            "-a",
            "-o",
            "json",
            "--output-fields",
            "MESSAGE",
            &format!("NOMAD_ALLOC_ID={}", alloc.id),
        ])
        .lines()
        .filter_map(|l| serde_json::from_str::<BTreeMap<String, Value>>(l).ok())
        .map(|e| field(&e, "MESSAGE").to_string())
        .collect();
    assert_eq!(got.len(), count, "entries");
    assert_eq!(got.last().map(String::as_str), Some("done"));
    for m in &got[..count - 2] {
        assert_eq!(m.len(), piece);
    }
    let total: usize = got[..count - 1].iter().map(String::len).sum();
    assert_eq!(total, len, "lost or doubled bytes of the line");
    assert!(
        got[..count - 1]
            .iter()
            .all(|m| m.bytes().all(|b| b == b'x'))
    );
    assert!(
        grew < 24 << 10,
        "plugin peak RSS grew by {grew} KiB for a 40 MiB line"
    );
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

/// `(all, distinct)` MESSAGEs of one stream of an allocation in the journal.
fn journal_count(sd: &PrivateSystemd, alloc_id: &str, stream: &str) -> (usize, usize) {
    let out = sd.exec(&[
        "sh",
        "-c",
        &format!(
            "journalctl --no-pager -o cat NOMAD_ALLOC_ID={alloc_id} NOMAD_LOG_STREAM={stream} | wc -l; \
             journalctl --no-pager -o cat NOMAD_ALLOC_ID={alloc_id} NOMAD_LOG_STREAM={stream} | sort -u | wc -l"
        ),
    ]);
    let mut n = out.lines().map(|l| l.trim().parse().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

/// Whether the newest journal entry of a stream is its last line (each stream is sent in
/// order, so every line before it has been handed to journald).
fn last_line_in(sd: &PrivateSystemd, alloc_id: &str, stream: &str, last: &str) -> bool {
    sd.exec(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-n",
        "1",
        &format!("NOMAD_ALLOC_ID={alloc_id}"),
        &format!("NOMAD_LOG_STREAM={stream}"),
    ])
    .trim_end()
        == last.trim_end()
}

/// The throughput test's output: `n` lines of 100 bytes per stream.
fn bulk_line(stream: &str, i: usize) -> String {
    format!("{:<99}\n", format!("{stream}-{i}"))
}

/// journald's own ceiling on this machine: `n` entries per stream, each the datagram the
/// forwarder would send for it (same fields, same sizes), sent by a bare in-process sender in
/// `sendmmsg` batches; seconds until the last of each stream is in the journal, and the
/// sender's CPU seconds.
fn bare_journal_send(sd: &PrivateSystemd, n: usize) -> (f64, f64) {
    use nomad_driver_systemd::journal::{Sender, encode};
    let alloc = nomad_driver_systemd::nomad_standin::alloc::alloc_id().unwrap();
    let sender = Sender::new(&sd.runtime_dir().join("journal/socket")).unwrap();
    let t0 = std::time::Instant::now();
    let cpu0 = cpu_seconds(std::process::id());
    for (stream, priority) in [("out", "6"), ("err", "3")] {
        let fields = encode(&[
            ("PRIORITY", priority.as_bytes()),
            ("SYSLOG_IDENTIFIER", b"bulk"),
            (
                "OBJECT_SYSTEMD_UNIT",
                b"nomad-0123456789abcdef-bulk-00000001.service",
            ),
            (
                "NOMAD_LOG_STREAM",
                if stream == "out" {
                    b"stdout"
                } else {
                    b"stderr"
                },
            ),
            ("NOMAD_ALLOC_ID", alloc.as_bytes()),
            ("NOMAD_JOB_NAME", b"test"),
            ("NOMAD_GROUP_NAME", b"group"),
            ("NOMAD_TASK_NAME", b"bulk"),
            ("NOMAD_NAMESPACE", b"default"),
        ]);
        let (mut buf, mut ends) = (Vec::new(), Vec::new());
        let mut offset = 0;
        for i in 1..=n {
            let line = bulk_line(stream, i);
            offset += line.len();
            buf.extend_from_slice(b"MESSAGE=");
            buf.extend_from_slice(line.trim_end_matches('\n').as_bytes());
            buf.extend_from_slice(format!("\nNOMAD_LOG_POS=0:{offset}\n").as_bytes());
            buf.extend_from_slice(&fields);
            ends.push(buf.len());
            if ends.len() == 1024 || i == n {
                let (sent, err) = sender.send_many(&buf, &ends);
                assert_eq!(sent, ends.len(), "{err:?}");
                buf.clear();
                ends.clear();
            }
        }
    }
    let cpu = cpu_seconds(std::process::id()) - cpu0;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !(last_line_in(sd, &alloc, "stdout", &bulk_line("out", n))
        && last_line_in(sd, &alloc, "stderr", &bulk_line("err", n)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "bare sender: journal incomplete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (out, err) = (
        journal_count(sd, &alloc, "stdout"),
        journal_count(sd, &alloc, "stderr"),
    );
    assert_eq!((out, err), ((n, n), (n, n)), "journald dropped entries");
    (secs, cpu)
}

/// `logs = "both"` throughput (README, *Performance*): 200,000 lines of 100 bytes (20 MB),
/// half to stderr, written in blocks by two `cat`s; time until every line is in Nomad's files
/// and in the journal, lines lost or doubled, plugin CPU; beside journald's own ceiling for the
/// same entries (a bare sender, same run). `NDS_LOG_KILL=1` SIGKILLs the plugin once the first
/// lines are in the journal; `NDS_LOG_MODE=nomad` runs without the forwarder.
/// `cargo test --release --test logs -- --ignored --nocapture both_throughput`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn both_throughput() {
    let mode = std::env::var("NDS_LOG_MODE").unwrap_or_else(|_| "both".into());
    let Some(mut s) = session(&mode).await else {
        return;
    };
    let kill = std::env::var_os("NDS_LOG_KILL").is_some();
    let n = 100_000;
    let alloc = Alloc::new("bulk");
    for stream in ["out", "err"] {
        let data: String = (1..=n).map(|i| bulk_line(stream, i)).collect();
        std::fs::write(alloc.dir.join(format!("alloc/data/{stream}")), data).unwrap();
    }
    let job = JobConfig::sh("cat /alloc/data/out & cat /alloc/data/err >&2; wait");
    let task = alloc.task_config(1, &job);
    let bytes = 100 * n;
    let both = mode == "both";
    let in_journal = |s: &Session| {
        !both
            || (last_line_in(&s.sd, &alloc.id, "stdout", &bulk_line("out", n))
                && last_line_in(&s.sd, &alloc.id, "stderr", &bulk_line("err", n)))
    };
    let cpu0 = cpu_seconds(s.plugin().pid());
    let t0 = std::time::Instant::now();
    let handle = s.start(task.clone()).await.unwrap().handle.unwrap();
    let mut cpu_before_kill = 0.0;
    if kill {
        let deadline = std::time::Instant::now() + SECS;
        while journal(&s.sd, &alloc.id).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut files_done = None;
    loop {
        if files_done.is_none() && alloc.stdout.len() >= bytes && alloc.stderr.len() >= bytes {
            files_done = Some(t0.elapsed());
        }
        if (files_done.is_some() && in_journal(&s)) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = t0.elapsed();
    let cpu = cpu_seconds(s.plugin().pid()) - cpu_start + cpu_before_kill;
    let (out, err) = if both {
        (
            journal_count(&s.sd, &alloc.id, "stdout"),
            journal_count(&s.sd, &alloc.id, "stderr"),
        )
    } else {
        ((n, n), (n, n))
    };
    let mb = 2.0 * bytes as f64 / 1e6;
    let (bare, bare_cpu) = bare_journal_send(&s.sd, n);
    println!(
        "logs = {mode}{}: {} lines ({mb:.0} MB) written in {:.2} s; Nomad's files complete after {:.2} s; \
         both views after {:.2} s ({:.1} MB/s, {:.0} lines/s); journal stdout {}/{n} ({} distinct), stderr {}/{n} ({} distinct); \
         Nomad files {}/{} bytes; plugin CPU {cpu:.2} s ({:.3} s/MB)\n\
         journald ceiling (bare sender, same entries, same run): {:.2} s ({:.1} MB/s, {:.0} lines/s), sender CPU {bare_cpu:.2} s; forwarder / ceiling: {:.2}",
        if kill {
            ", plugin SIGKILLed mid-stream"
        } else {
            ""
        },
        2 * n,
        written.as_secs_f64(),
        files_done.unwrap_or(all).as_secs_f64(),
        all.as_secs_f64(),
        mb / all.as_secs_f64(),
        2.0 * n as f64 / all.as_secs_f64(),
        out.0,
        out.1,
        err.0,
        err.1,
        alloc.stdout.len() + alloc.stderr.len(),
        2 * bytes,
        cpu / mb,
        bare,
        mb / bare,
        2.0 * n as f64 / bare,
        bare / all.as_secs_f64(),
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

/// journald rate-limits by the sender's unit (systemd `journald-server.c`,
/// `server_dispatch_message`: `journal_ratelimit_test` keyed by the client context's unit and
/// the priority), and the forwarder sends from the Nomad agent's unit. Here the plugin runs as a
/// service of the private systemd, so journald knows its PID and unit as on a node. With the
/// unit's default limits a burst of forwarded lines is cut short, and so it is with
/// `LogRateLimitIntervalSec=0`, which systemd does not pass on to journald (`unit.c`,
/// `unit_export_log_rate_limit_interval` exports only a non-zero value; systemd issue #22034).
/// With `LogRateLimitIntervalSec=1us` (what the NixOS module sets on `nomad.service` for
/// `logs = "both"`) every line is there once, and `journalctl -u <task unit>` finds each once
/// (`add_matches_for_unit`: `_UID=0` + `OBJECT_SYSTEMD_UNIT=`).
#[tokio::test]
async fn agent_unit_rate_limit_drops_forwarded_lines_unless_disabled_and_journalctl_u_finds_them() {
    if !require() {
        return;
    }
    // above journald's burst of 10,000 per 30 s, even scaled up for free space (×6 at 1 TB)
    let n = 70_000;
    let mut kept = Vec::new();
    for properties in [
        &[][..],
        &["LogRateLimitIntervalSec=0"][..],
        &["LogRateLimitIntervalSec=1us"][..],
    ] {
        let config = plugin_config(&[("logs", rmpv::Value::from("both"))]);
        let s = Session::new_in_unit(config, "nomad.service", properties).await;
        assert_eq!(
            s.sd.show("nomad.service", "ActiveState"),
            "active",
            "the plugin runs as the agent's unit"
        );
        let alloc = Alloc::new("burst");
        let job = JobConfig::command(
            "/usr/bin/awk",
            &[&format!(
                "BEGIN {{ for (i = 1; i <= {n}; i++) print \"l-\" i }}"
            )],
        );
        let task = alloc.task_config(1, &job);
        s.start(task.clone()).await.unwrap();
        let unit = s.sd.nomad_units().into_iter().next().unwrap_or_default();
        let w = s.wait(&task.id).await;
        assert_eq!(w.result.unwrap().exit_code, 0, "{}", w.err);
        s.destroy(&task.id).await;
        assert!(alloc.stdout.wait_for(&format!("l-{n}\n"), SECS));
        // the forwarder is done once the last line is in, or nothing came for a while
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = (0, std::time::Instant::now());
        loop {
            let (count, _) = journal_count(&s.sd, &alloc.id, "stdout");
            if count >= n || std::time::Instant::now() > deadline {
                break;
            }
            if count != last.0 {
                last = (count, std::time::Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (count, distinct) = journal_count(&s.sd, &alloc.id, "stdout");
        assert_eq!(count, distinct, "doubled lines");
        if properties.len() != 1 || properties[0].ends_with("=0") {
            // journald reports the suppression only with the first message it lets through
            // after the interval (30 s), so the count is the evidence here
            assert!(count < n, "{properties:?}: {count} of {n} lines kept");
        } else {
            assert_eq!(count, n, "LogRateLimitIntervalSec=1us: every line");
            // `journalctl -u <task unit>`: each forwarded line once (beside systemd's own
            // messages about the unit)
            let by_unit = s.sd.exec(&[
                "sh",
                "-c",
                &format!(
                    "journalctl --no-pager -o cat -u {unit} | grep -c '^l-'; \
                     journalctl --no-pager -o cat -u {unit} | grep '^l-' | sort -u | wc -l"
                ),
            ]);
            let counts: Vec<&str> = by_unit.split_whitespace().collect();
            let want = n.to_string();
            assert_eq!(
                counts,
                [want.as_str(), want.as_str()],
                "journalctl -u {unit}"
            );
        }
        // the plugin names the limit it sends under
        let warned = s
            .plugin()
            .stderr_text()
            .contains("journald rate-limits this unit");
        assert_eq!(
            warned,
            !properties[..].ends_with(&["LogRateLimitIntervalSec=1us"]),
            "{properties:?}"
        );
        kept.push(count);
        s.finish().await;
    }
    println!(
        "lines kept of {n}: default limits {}, LogRateLimitIntervalSec=0 {}, LogRateLimitIntervalSec=1us {}",
        kept[0], kept[1], kept[2]
    );
}
