//! `logs = "both"`: the one per-node forwarder (a thread of the plugin, no process) that copies
//! every followed task's output from logmon's files (`<alloc>/alloc/logs/<task>.{stdout,stderr}.<n>`)
//! into the journal, each entry stamped with its position so that the journal itself is the
//! cursor after a plugin restart (ARCHITECTURE.md, *Task logs*).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::journal::{JournalPaths, MAX_MESSAGE, Sender, encode, newest_field};

/// How often the files are read.
const TICK: Duration = Duration::from_millis(100);
/// After DestroyTask, how long a task's files must stay quiet before it is dropped: logmon may
/// still be copying the tail from its FIFO.
const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// What the forwarder needs of one task.
#[derive(Debug, Clone)]
pub struct Follow {
    pub task_id: String,
    pub unit: String,
    /// logmon's directory (`<alloc>/alloc/logs`).
    pub dir: PathBuf,
    pub task: String,
    /// `NOMAD_*` identity, as the unit's `LogExtraFields`.
    pub fields: Vec<(String, String)>,
}

#[derive(Debug)]
struct Stream {
    name: &'static str,
    /// File index and byte offset of the next unread byte.
    index: u64,
    offset: u64,
    /// `index`'s file, open at `offset`.
    file: Option<std::fs::File>,
    /// A line begun but not ended (it may continue in the next file).
    carry: Vec<u8>,
    /// Where the next line starts: the `NOMAD_LOG_POS` of the last line queued.
    line_start: (u64, u64),
    /// The `NOMAD_LOG_POS` of the last line journald took: where a failed send resumes.
    committed: (u64, u64),
    /// The fields every entry of the stream carries, in the native format, encoded once.
    fields: Vec<u8>,
}

impl Stream {
    fn new(name: &'static str, priority: &'static str, f: &Follow) -> Self {
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("PRIORITY", priority.as_bytes()),
            ("SYSLOG_IDENTIFIER", f.task.as_bytes()),
            ("OBJECT_SYSTEMD_UNIT", f.unit.as_bytes()),
            ("NOMAD_LOG_STREAM", name.as_bytes()),
        ];
        for (k, v) in &f.fields {
            fields.push((k.as_str(), v.as_bytes()));
        }
        Self {
            name,
            index: 0,
            offset: 0,
            file: None,
            carry: Vec::new(),
            line_start: (0, 0),
            committed: (0, 0),
            fields: encode(&fields),
        }
    }

    /// Continues at `pos` (a resume, or after a failed send).
    fn seek(&mut self, pos: (u64, u64)) {
        (self.index, self.offset) = pos;
        self.line_start = pos;
        self.committed = pos;
        self.file = None;
        self.carry.clear();
    }
}

/// The forwarder's reusable buffers: one read block, and the datagrams queued for `sendmmsg`.
#[derive(Default)]
struct Batch {
    read: Vec<u8>,
    buf: Vec<u8>,
    /// Where each datagram ends in `buf`.
    ends: Vec<usize>,
    /// The stream's `committed` once each datagram is in.
    pos: Vec<(u64, u64)>,
}

struct Followed {
    follow: Follow,
    streams: [Stream; 2],
    resumed: bool,
    last_data: Instant,
}

/// The followed tasks, and those DestroyTask asked to drain (kept apart: the thread takes a
/// task out of the map while it reads its files).
#[derive(Default)]
struct Shared {
    tasks: Mutex<HashMap<String, Followed>>,
    draining: Mutex<HashSet<String>>,
}

/// The per-node forwarder; its thread starts with the first followed task.
pub struct Forwarder {
    paths: Mutex<JournalPaths>,
    shared: Arc<Shared>,
    started: std::sync::Once,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self {
            paths: Mutex::new(JournalPaths::default()),
            shared: Arc::new(Shared::default()),
            started: std::sync::Once::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Forwarder {
    pub fn set_paths(&self, paths: JournalPaths) {
        *lock(&self.paths) = paths;
    }

    /// Starts (or keeps) following a task. Idempotent.
    pub fn follow(&self, follow: Follow) {
        lock(&self.shared.draining).remove(&follow.task_id);
        let mut tasks = lock(&self.shared.tasks);
        if tasks.contains_key(&follow.task_id) {
            return;
        }
        let streams = [
            Stream::new("stdout", "6", &follow),
            Stream::new("stderr", "3", &follow),
        ];
        tasks.insert(
            follow.task_id.clone(),
            Followed {
                follow,
                streams,
                resumed: false,
                last_data: Instant::now(),
            },
        );
        drop(tasks);
        let paths = lock(&self.paths).clone();
        let shared = Arc::clone(&self.shared);
        self.started.call_once(move || {
            let spawned = std::thread::Builder::new()
                .name("log-forwarder".into())
                .spawn(move || run(&paths, &shared));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the log forwarder");
            }
        });
    }

    /// DestroyTask: forward the tail, then forget the task once its files are quiet.
    pub fn drain(&self, task_id: &str) {
        lock(&self.shared.draining).insert(task_id.to_string());
    }

    pub fn following(&self, task_id: &str) -> bool {
        lock(&self.shared.tasks).contains_key(task_id)
    }
}

fn run(paths: &JournalPaths, shared: &Shared) {
    let tasks = &shared.tasks;
    let sender = match Sender::new(&paths.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "log forwarder: no socket");
            return;
        }
    };
    warn_rate_limit(paths);
    let mut batch = Batch::default();
    loop {
        let ids: Vec<String> = lock(tasks).keys().cloned().collect();
        let mut any = false;
        for id in ids {
            // one task at a time, outside the map's lock while journalctl runs
            let Some(mut t) = lock(tasks).remove(&id) else {
                continue;
            };
            if !t.resumed {
                resume(paths, &mut t);
            }
            let mut moved = false;
            for s in &mut t.streams {
                moved |= pump(&sender, &t.follow, s, &mut batch, false);
            }
            if moved {
                t.last_data = Instant::now();
                any = true;
            }
            let done = t.last_data.elapsed() >= DRAIN_QUIET && lock(&shared.draining).contains(&id);
            if done {
                lock(&shared.draining).remove(&id);
                for s in &mut t.streams {
                    pump(&sender, &t.follow, s, &mut batch, true);
                }
                tracing::debug!(task_id = %id, "log forwarder: task drained");
                continue;
            }
            let mut map = lock(tasks);
            // a concurrent follow() of the same id keeps the newer entry
            map.entry(id).or_insert(t);
        }
        // while output flows, read on; idle, look again after a tick
        if !any {
            std::thread::sleep(TICK);
        }
    }
}

/// journald rate-limits by the sender's unit, here the Nomad agent's: say so when that unit
/// has journald's default limit (README, *logs*).
fn warn_rate_limit(paths: &JournalPaths) {
    let Some(runtime_dir) = paths.socket.parent().and_then(Path::parent) else {
        return;
    };
    let cgroup = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    if let Some(unit) =
        crate::journal::own_unit(&cgroup("/proc/self/cgroup"), &cgroup("/proc/1/cgroup"))
        && crate::journal::default_rate_limit(runtime_dir, &unit)
    {
        tracing::warn!(
            unit = %unit,
            "logs = \"both\": journald rate-limits this unit (default 10000 lines per 30 s and priority); forwarded lines beyond it are dropped; set LogRateLimitIntervalSec=1us on the unit (0 does not lift it)"
        );
    }
}

fn file(f: &Follow, stream: &str, index: u64) -> PathBuf {
    f.dir.join(format!("{}.{stream}.{index}", f.task))
}

/// The lowest index of the stream's files that exists, if any.
fn lowest_index(f: &Follow, stream: &str) -> Option<u64> {
    let prefix = format!("{}.{stream}.", f.task);
    std::fs::read_dir(&f.dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .min()
}

fn matches(f: &Follow, stream: &str) -> Vec<String> {
    let mut m: Vec<String> = f
        .fields
        .iter()
        .filter(|(k, _)| k == "NOMAD_ALLOC_ID" || k == "NOMAD_TASK_NAME")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    m.push(format!("NOMAD_LOG_STREAM={stream}"));
    m
}

/// Continues after the newest entry the journal holds for each stream.
fn resume(paths: &JournalPaths, t: &mut Followed) {
    for s in &mut t.streams {
        let pos = newest_field(paths, &matches(&t.follow, s.name), "NOMAD_LOG_POS");
        let parsed = pos.as_deref().and_then(|p| {
            let (i, o) = p.split_once(':')?;
            Some((i.parse().ok()?, o.parse().ok()?))
        });
        s.seek(match parsed {
            Some(p) => p,
            None => (lowest_index(&t.follow, s.name).unwrap_or(0), 0),
        });
    }
    t.resumed = true;
}

/// Bytes read per `read` of a log file.
const READ_BLOCK: usize = 256 * 1024;
/// Bytes one pump reads before the next stream's turn.
const PUMP_BUDGET: usize = 8 << 20;
/// Datagrams queued before they are sent.
const QUEUE: usize = 1024;

/// Forwards the stream's complete lines (and, with `flush`, a last unterminated one); whether
/// anything was read. Reads logmon's files in blocks and sends the lines in `sendmmsg` batches.
fn pump(sender: &Sender, f: &Follow, s: &mut Stream, b: &mut Batch, flush: bool) -> bool {
    let mut moved = false;
    let mut budget = PUMP_BUDGET;
    b.read.resize(READ_BLOCK, 0);
    loop {
        if s.file.is_none() {
            let path = file(f, s.name, s.index);
            let opened = std::fs::File::open(&path).and_then(|mut fh| {
                fh.seek(SeekFrom::Start(s.offset))?;
                Ok(fh)
            });
            match opened {
                Ok(fh) => s.file = Some(fh),
                // rotated away before we read it: skip to what is there
                Err(_) => match lowest_index(f, s.name) {
                    Some(low) if low > s.index => {
                        tracing::warn!(file = %path.display(), "log forwarder: file gone before it was read");
                        s.index = low;
                        s.offset = 0;
                        s.carry.clear();
                        continue;
                    }
                    _ => break,
                },
            }
        }
        let Some(fh) = s.file.as_mut() else { break };
        let mut n = fh.read(&mut b.read).unwrap_or(0);
        if n == 0 {
            // logmon has moved on to the next file once it exists: then this one is complete
            // (read it to its end once more: it may have grown before the rotation)
            if !file(f, s.name, s.index + 1).exists() {
                break;
            }
            n = fh.read(&mut b.read).unwrap_or(0);
            if n == 0 {
                s.index += 1;
                s.offset = 0;
                s.file = None;
                continue;
            }
        }
        moved = true;
        let mut start = 0;
        while let Some(nl) = memchr(&b.read[start..n]) {
            let end = start + nl;
            let pos = (s.index, s.offset + end as u64 + 1);
            if s.carry.is_empty() {
                queue_line(
                    s,
                    &mut b.buf,
                    &mut b.ends,
                    &mut b.pos,
                    &b.read[start..end],
                    pos,
                );
            } else {
                let mut line = std::mem::take(&mut s.carry);
                line.extend_from_slice(&b.read[start..end]);
                queue_line(s, &mut b.buf, &mut b.ends, &mut b.pos, &line, pos);
                line.clear();
                s.carry = line;
            }
            start = end + 1;
        }
        s.carry.extend_from_slice(&b.read[start..n]);
        s.offset += n as u64;
        if b.ends.len() >= QUEUE && !send_queued(sender, s, b) {
            return moved;
        }
        budget = budget.saturating_sub(n);
        if budget == 0 {
            break;
        }
    }
    if flush && !s.carry.is_empty() {
        let line = std::mem::take(&mut s.carry);
        let pos = (s.index, s.offset);
        queue_line(s, &mut b.buf, &mut b.ends, &mut b.pos, &line, pos);
    }
    send_queued(sender, s, b);
    moved
}

fn memchr(data: &[u8]) -> Option<usize> {
    data.iter().position(|b| *b == b'\n')
}

/// Queues one line's entries: one, or for a line longer than [`MAX_MESSAGE`] several, the
/// earlier ones carrying where the line starts (a restart between them sends the line again
/// rather than losing it) and the last where it ends.
fn queue_line(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    positions: &mut Vec<(u64, u64)>,
    line: &[u8],
    end: (u64, u64),
) {
    let count = line.len().div_ceil(MAX_MESSAGE).max(1);
    for i in 0..count {
        let chunk =
            &line[(i * MAX_MESSAGE).min(line.len())..((i + 1) * MAX_MESSAGE).min(line.len())];
        let pos = if i + 1 == count { end } else { s.line_start };
        buf.extend_from_slice(b"MESSAGE=");
        buf.extend_from_slice(chunk);
        // writing into a Vec cannot fail
        let _ = write!(buf, "\nNOMAD_LOG_POS={}:{}\n", pos.0, pos.1);
        buf.extend_from_slice(&s.fields);
        ends.push(buf.len());
        positions.push(pos);
    }
    s.line_start = end;
}

/// Sends the queued entries; on failure the stream continues after the last entry journald
/// took (the rest is read again), and `false`.
fn send_queued(sender: &Sender, s: &mut Stream, b: &mut Batch) -> bool {
    if b.ends.is_empty() {
        return true;
    }
    let (sent, err) = sender.send_many(&b.buf, &b.ends);
    if sent > 0 {
        s.committed = b.pos[sent - 1];
    }
    b.buf.clear();
    b.ends.clear();
    b.pos.clear();
    match err {
        None => true,
        Some(e) => {
            tracing::debug!(error = %e, stream = s.name, "log forwarder: journal send failed; retrying");
            s.seek(s.committed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn received(sock: &UnixDatagram) -> Vec<(String, String)> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 17];
        while let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .unwrap_or("")
                    .to_string()
            };
            out.push((get("MESSAGE"), get("NOMAD_LOG_POS")));
        }
        out
    }

    /// Lines split across logmon's rotation are joined, positions name the file and offset
    /// after each line, and a restart from a position sends nothing twice.
    #[test]
    fn rotated_files_are_read_in_order_and_resumed_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        let sender = Sender::new(&sock_path).unwrap();
        let follow = Follow {
            task_id: "t".into(),
            unit: "u.service".into(),
            dir: dir.path().to_path_buf(),
            task: "web".into(),
            fields: vec![("NOMAD_ALLOC_ID".into(), "a".into())],
        };
        let stream = || Stream::new("stderr", "3", &follow);
        let mut batch = Batch::default();
        std::fs::write(dir.path().join("web.stderr.0"), "one\ntw").unwrap();
        let mut s = stream();
        assert!(pump(&sender, &follow, &mut s, &mut batch, false));
        assert_eq!(received(&journal), [("one".into(), "0:4".into())]);
        // logmon rotates in the middle of a line
        std::fs::write(dir.path().join("web.stderr.1"), "o\nthree\npart").unwrap();
        pump(&sender, &follow, &mut s, &mut batch, false);
        assert_eq!(
            received(&journal),
            [("two".into(), "1:2".into()), ("three".into(), "1:8".into())]
        );
        // DestroyTask's drain sends the unterminated tail
        pump(&sender, &follow, &mut s, &mut batch, true);
        assert_eq!(received(&journal), [("part".into(), "1:12".into())]);
        // a restart at "1:8" (the newest position in the journal before the tail) resends
        // only what came after it
        let mut again = stream();
        again.seek((1, 8));
        pump(&sender, &follow, &mut again, &mut batch, true);
        assert_eq!(received(&journal), [("part".into(), "1:12".into())]);
    }

    fn follow(dir: &std::path::Path) -> Follow {
        Follow {
            task_id: "t".into(),
            unit: "u.service".into(),
            dir: dir.to_path_buf(),
            task: "web".into(),
            fields: vec![("NOMAD_ALLOC_ID".into(), "a".into())],
        }
    }

    /// Thousands of lines go out in `sendmmsg` batches, in order, each with its fields; a line
    /// longer than one entry is split, its earlier entries carrying where it starts; data
    /// appended to a file before logmon rotates is not skipped.
    #[test]
    fn batches_keep_order_split_long_lines_and_read_a_file_to_its_end_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        let sender = Sender::new(&sock_path).unwrap();
        let f = follow(dir.path());
        let mut want: Vec<(String, String)> = Vec::new();
        let mut data = String::new();
        for i in 0..5000 {
            data.push_str(&format!("line-{i}\n"));
            want.push((format!("line-{i}"), format!("0:{}", data.len())));
        }
        let start = data.len();
        let long = "x".repeat(MAX_MESSAGE + 10);
        data.push_str(&long);
        data.push('\n');
        want.push((long[..MAX_MESSAGE].to_string(), format!("0:{start}")));
        want.push((long[MAX_MESSAGE..].to_string(), format!("0:{}", data.len())));
        std::fs::write(dir.path().join("web.stdout.0"), &data).unwrap();
        // journald's side, reading while the forwarder sends (the socket queue is short)
        let n = want.len() + 1;
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 17];
            while got.len() < n {
                let len = journal.recv(&mut buf).unwrap();
                got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
            got
        });
        let mut s = Stream::new("stdout", "6", &f);
        let mut batch = Batch::default();
        assert!(pump(&sender, &f, &mut s, &mut batch, false));
        // logmon appends, then rotates: the append is read before file 1
        let mut fh = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("web.stdout.0"))
            .unwrap();
        fh.write_all(b"late\n").unwrap();
        std::fs::write(dir.path().join("web.stdout.1"), "").unwrap();
        pump(&sender, &f, &mut s, &mut batch, false);
        want.push(("late".into(), format!("0:{}", data.len() + 5)));
        let got = reader.join().unwrap();
        let pairs: Vec<(String, String)> = got
            .iter()
            .map(|d| {
                let get = |k: &str| {
                    d.lines()
                        .find_map(|l| l.strip_prefix(&format!("{k}=")))
                        .unwrap_or("")
                        .to_string()
                };
                assert_eq!(get("PRIORITY"), "6", "{d}");
                assert_eq!(get("NOMAD_LOG_STREAM"), "stdout");
                assert_eq!(get("OBJECT_SYSTEMD_UNIT"), "u.service");
                assert_eq!(get("SYSLOG_IDENTIFIER"), "web");
                assert_eq!(get("NOMAD_ALLOC_ID"), "a");
                (get("MESSAGE"), get("NOMAD_LOG_POS"))
            })
            .collect();
        assert_eq!(pairs, want);
        assert_eq!((s.index, s.offset), (1, 0));
        assert_eq!(s.committed, (0, data.len() as u64 + 5));
    }

    /// With journald away nothing is committed; once it is back the same lines are sent, once.
    #[test]
    fn a_failed_send_is_retried_from_the_last_committed_line() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("socket");
        let sender = Sender::new(&sock_path).unwrap();
        let f = follow(dir.path());
        std::fs::write(dir.path().join("web.stdout.0"), "a\nb\n").unwrap();
        let mut s = Stream::new("stdout", "6", &f);
        let mut batch = Batch::default();
        pump(&sender, &f, &mut s, &mut batch, false);
        assert_eq!(s.committed, (0, 0));
        assert_eq!((s.index, s.offset), (0, 0));
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        pump(&sender, &f, &mut s, &mut batch, false);
        assert_eq!(
            received(&journal),
            [("a".into(), "0:2".into()), ("b".into(), "0:4".into())]
        );
        assert_eq!(s.committed, (0, 4));
    }
}
