//! `logs = "both"`: the one per-node forwarder (a thread of the plugin, no process) that copies
//! every followed task's output from logmon's files (`<alloc>/alloc/logs/<task>.{stdout,stderr}.<n>`)
//! into the journal, each entry stamped with its position so that the journal itself is the
//! cursor after a plugin restart (ARCHITECTURE.md, *Task logs*).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// A line begun but not ended (it may continue in the next file); never longer than
    /// [`MAX_MESSAGE`].
    carry: Vec<u8>,
    /// The file index last refused by [`open_log`] (warned about once).
    refused: Option<u64>,
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
            refused: None,
            committed: (0, 0),
            fields: encode(&fields),
        }
    }

    /// Continues at `pos` (a resume, or after a failed send).
    fn seek(&mut self, pos: (u64, u64)) {
        (self.index, self.offset) = pos;
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
    let own_unit = own_unit();
    warn_rate_limit(paths, own_unit.as_deref());
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
                resume(paths, own_unit.as_deref(), &mut t);
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

/// The unit journald files this process's entries under (the Nomad agent's), if any.
fn own_unit() -> Option<String> {
    let cgroup = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    crate::journal::own_unit(&cgroup("/proc/self/cgroup"), &cgroup("/proc/1/cgroup"))
}

/// journald rate-limits by the sender's unit, here the Nomad agent's: say so when that unit
/// has journald's default limit (README, *logs*).
fn warn_rate_limit(paths: &JournalPaths, own_unit: Option<&str>) {
    let Some(runtime_dir) = paths.socket.parent().and_then(Path::parent) else {
        return;
    };
    if let Some(unit) = own_unit
        && crate::journal::default_rate_limit(runtime_dir, unit)
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

/// Opens one of logmon's files, only if it is one: the task can write `alloc/logs` (Nomad makes
/// it 0777), so a name there may be the task's symlink to a root-only file, a FIFO nobody
/// writes (`open` would block the node's forwarder), a device, or a file of its own. The last
/// component is not followed, `open` does not wait, and the open file must be a regular file
/// with one link, owned by this process's user (logmon and the plugin both run as the Nomad
/// agent's); else `PermissionDenied` naming what it is.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    let fh = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "a symlink, not logmon's file",
            ),
            _ => e,
        })?;
    let m = fh.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let refuse = |why: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ))
    };
    if !m.file_type().is_file() {
        return refuse(format!("not a regular file ({:?})", m.file_type()));
    }
    if m.uid() != euid {
        return refuse(format!("owned by uid {}, not {euid}", m.uid()));
    }
    if m.nlink() != 1 {
        return refuse(format!("{} hard links", m.nlink()));
    }
    Ok(fh)
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

/// Whether a journal entry is one the plugin sent, from the fields journald sets itself: a
/// task can send an entry with any `NOMAD_*` fields (the journal socket is open to all), but
/// journald stamps it with the task's `_PID` and its unit's `_SYSTEMD_UNIT`. Ours carry this
/// process's user and unit (the Nomad agent's); or no `_PID` at all: the sender is outside
/// journald's PID namespace, which no unit of its systemd, so no task, is (the tests' plugin).
fn sent_by_plugin(e: &serde_json::Value, own_unit: Option<&str>, euid: u32) -> bool {
    let get = |k: &str| e.get(k).and_then(serde_json::Value::as_str);
    if get("_PID").is_none() {
        return true;
    }
    own_unit.is_some()
        && get("_SYSTEMD_UNIT") == own_unit
        && get("_UID") == Some(euid.to_string().as_str())
}

/// Continues after the newest entry the plugin sent for each stream (entries others sent with
/// the same fields do not count: [`sent_by_plugin`]).
fn resume(paths: &JournalPaths, own_unit: Option<&str>, t: &mut Followed) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    for s in &mut t.streams {
        let pos = newest_field(paths, &matches(&t.follow, s.name), "NOMAD_LOG_POS", |e| {
            sent_by_plugin(e, own_unit, euid)
        });
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
            let opened = open_log(&path).and_then(|mut fh| {
                fh.seek(SeekFrom::Start(s.offset))?;
                Ok(fh)
            });
            match opened {
                Ok(fh) => s.file = Some(fh),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    if s.refused != Some(s.index) {
                        tracing::warn!(file = %path.display(), error = %e, "log forwarder: not logmon's file; not read");
                        s.refused = Some(s.index);
                    }
                    // once logmon has moved on, so does the stream
                    if std::fs::symlink_metadata(file(f, s.name, s.index + 1)).is_err() {
                        break;
                    }
                    s.index += 1;
                    s.offset = 0;
                    s.carry.clear();
                    continue;
                }
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
            // (not following a link: only `open_log` decides what is read)
            if std::fs::symlink_metadata(file(f, s.name, s.index + 1)).is_err() {
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
        loop {
            let nl = memchr(&b.read[start..n]).map(|i| start + i);
            // a line longer than MAX_MESSAGE goes out in pieces as it is read, each with the
            // position after its last byte (a restart continues inside the line): the carry
            // never holds more than one piece, however long the line or whether it ever ends
            let seg_end = nl.unwrap_or(n);
            while s.carry.len() + (seg_end - start) > MAX_MESSAGE {
                let take = MAX_MESSAGE - s.carry.len();
                s.carry.extend_from_slice(&b.read[start..start + take]);
                start += take;
                let pos = (s.index, s.offset + start as u64);
                let piece = std::mem::take(&mut s.carry);
                queue_line(s, &mut b.buf, &mut b.ends, &mut b.pos, &piece, pos);
                s.carry = piece;
                s.carry.clear();
            }
            let Some(end) = nl else { break };
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

/// Queues one entry (a line, or a piece of one, at most [`MAX_MESSAGE`] bytes) with the
/// position after it.
fn queue_line(
    s: &Stream,
    buf: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    positions: &mut Vec<(u64, u64)>,
    line: &[u8],
    pos: (u64, u64),
) {
    buf.extend_from_slice(b"MESSAGE=");
    buf.extend_from_slice(line);
    // writing into a Vec cannot fail
    let _ = write!(buf, "\nNOMAD_LOG_POS={}:{}\n", pos.0, pos.1);
    buf.extend_from_slice(&s.fields);
    ends.push(buf.len());
    positions.push(pos);
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
    /// longer than one entry is split, each entry carrying the position after it; data
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
        want.push((
            long[..MAX_MESSAGE].to_string(),
            format!("0:{}", start + MAX_MESSAGE),
        ));
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

    /// Names in `alloc/logs` that the task planted (a symlink to a root-only file, a hard link
    /// to it, a file of another user, a FIFO nobody writes) are not read, the open does not
    /// block, and the stream goes on with logmon's next file.
    #[test]
    fn names_the_task_planted_are_not_read_and_do_not_block() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let secret_dir = tempfile::tempdir().unwrap();
        let secret = secret_dir.path().join("shadow");
        std::fs::write(&secret, "SECRET\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let sock_path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        let f = follow(dir.path());
        let logs = |n: &str| dir.path().join(n);
        std::fs::write(logs("web.stdout.0"), "a\n").unwrap();
        std::os::unix::fs::symlink(&secret, logs("web.stdout.1")).unwrap();
        std::fs::write(logs("web.stdout.2"), "b\n").unwrap();
        std::fs::hard_link(&secret, logs("web.stdout.3")).unwrap();
        std::fs::write(logs("web.stdout.4"), "OTHER\n").unwrap();
        std::os::unix::fs::chown(logs("web.stdout.4"), Some(65534), Some(65534)).unwrap();
        std::fs::write(logs("web.stdout.5"), "c\n").unwrap();
        let fifo = std::ffi::CString::new(logs("web.stderr.0").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(logs("web.stderr.1"), "e\n").unwrap();
        // a pump that blocks in open() fails the test instead of hanging it
        let (tx, rx) = std::sync::mpsc::channel();
        let f2 = f.clone();
        std::thread::spawn(move || {
            let sender = Sender::new(&sock_path).unwrap();
            let mut batch = Batch::default();
            let mut out = Stream::new("stdout", "6", &f2);
            let mut err = Stream::new("stderr", "3", &f2);
            for _ in 0..3 {
                pump(&sender, &f2, &mut out, &mut batch, false);
                pump(&sender, &f2, &mut err, &mut batch, false);
            }
            let _ = tx.send((out.index, err.index));
        });
        let indexes = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the forwarder blocked on a planted name");
        assert_eq!(indexes, (5, 1));
        let got: Vec<String> = received(&journal).into_iter().map(|(m, _)| m).collect();
        assert_eq!(got, ["a", "b", "c", "e"]);
    }

    /// journald's side: (MESSAGE, NOMAD_LOG_POS) of each datagram, until the line `end`.
    fn collect_until_end(journal: UnixDatagram) -> std::thread::JoinHandle<Vec<(Vec<u8>, String)>> {
        std::thread::spawn(move || {
            let mut got: Vec<(Vec<u8>, String)> = Vec::new();
            let mut buf = vec![0u8; 1 << 17];
            journal
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            while let Ok(len) = journal.recv(&mut buf) {
                let d = &buf[..len];
                let msg_end = d.iter().position(|b| *b == b'\n').unwrap();
                let msg = d[b"MESSAGE=".len()..msg_end].to_vec();
                let rest = String::from_utf8_lossy(&d[msg_end + 1..]).into_owned();
                let pos = rest
                    .lines()
                    .find_map(|l| l.strip_prefix("NOMAD_LOG_POS="))
                    .unwrap()
                    .to_string();
                got.push((msg, pos));
                if got.last().is_some_and(|(m, _)| m == b"end") {
                    break;
                }
            }
            got
        })
    }

    /// A line that never ends goes out in `MAX_MESSAGE` pieces as it is read, across a
    /// rotation, each with the exact position after it; the carry never exceeds one piece and
    /// nothing is lost or sent twice, also when the stream restarts from a piece's position.
    #[test]
    fn a_line_without_end_goes_out_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        let f = follow(dir.path());
        let half = 10 << 20;
        let first = vec![b'x'; half];
        let mut second = vec![b'y'; half];
        second.extend_from_slice(b"\nend\n");
        std::fs::write(dir.path().join("web.stdout.0"), &first).unwrap();
        std::fs::write(dir.path().join("web.stdout.1"), &second).unwrap();
        let mut data = first.clone();
        data.extend_from_slice(&second);
        let reader = collect_until_end(journal);
        let sender = Sender::new(&sock_path).unwrap();
        let mut s = Stream::new("stdout", "6", &f);
        let mut batch = Batch::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.committed != (1, second.len() as u64) && Instant::now() < deadline {
            pump(&sender, &f, &mut s, &mut batch, false);
            assert!(s.carry.len() <= MAX_MESSAGE, "carry {}", s.carry.len());
        }
        let got = reader.join().unwrap();
        // the position after each entry, as (file, offset), from its byte count in `data`
        let at = |g: usize| {
            if g <= half {
                format!("0:{g}")
            } else {
                format!("1:{}", g - half)
            }
        };
        let mut g = 0;
        for (i, (m, pos)) in got.iter().enumerate() {
            assert!(m.len() <= MAX_MESSAGE);
            g += m.len();
            if m.first() == Some(&b'y') && m.len() < MAX_MESSAGE || m == b"end" {
                g += 1; // the line's newline
            } else {
                assert_eq!(m.len(), MAX_MESSAGE, "entry {i}");
            }
            assert_eq!(*pos, at(g), "entry {i}");
        }
        assert_eq!(g, data.len(), "lost or doubled bytes");
        let mut want: Vec<u8> = data.iter().copied().filter(|b| *b != b'\n').collect();
        want.truncate(2 * half);
        let pieces: Vec<u8> = got
            .iter()
            .take(got.len() - 1)
            .flat_map(|(m, _)| m.iter().copied())
            .collect();
        assert!(pieces == want, "the pieces are not the line");
        // a restart from a piece's position goes on inside the line, from that byte
        let (_, pos) = &got[300];
        let (i, o) = pos.split_once(':').unwrap();
        let mut again = Stream::new("stdout", "6", &f);
        again.seek((i.parse().unwrap(), o.parse().unwrap()));
        let journal = UnixDatagram::bind(dir.path().join("socket2")).unwrap();
        let reader = collect_until_end(journal);
        let sender = Sender::new(&dir.path().join("socket2")).unwrap();
        while again.committed != (1, second.len() as u64) && Instant::now() < deadline {
            pump(&sender, &f, &mut again, &mut batch, false);
        }
        let again_got = reader.join().unwrap();
        let brief = |v: &[(Vec<u8>, String)]| -> Vec<(usize, String)> {
            v.iter().map(|(m, p)| (m.len(), p.clone())).collect()
        };
        assert_eq!(
            brief(&again_got),
            brief(&got[301..]),
            "a restart lost or doubled"
        );
        assert!(again_got == got[301..], "a restart lost or doubled");
    }

    /// Only journald's own fields decide whether an entry is the plugin's: a task's forged
    /// entry (its own `_PID`, `_UID` and unit) is not, even when it runs as root.
    #[test]
    fn only_the_plugins_own_entries_move_the_resume_point() {
        let e = |v: serde_json::Value| v;
        let agent = Some("nomad.service");
        let ours =
            e(serde_json::json!({"_PID": "7", "_UID": "0", "_SYSTEMD_UNIT": "nomad.service"}));
        assert!(sent_by_plugin(&ours, agent, 0));
        let root_task =
            e(serde_json::json!({"_PID": "9", "_UID": "0", "_SYSTEMD_UNIT": "nomad-x.service"}));
        assert!(!sent_by_plugin(&root_task, agent, 0));
        let other_uid =
            e(serde_json::json!({"_PID": "9", "_UID": "1000", "_SYSTEMD_UNIT": "nomad.service"}));
        assert!(!sent_by_plugin(&other_uid, agent, 0));
        let no_unit = e(serde_json::json!({"_PID": "9", "_UID": "0"}));
        assert!(!sent_by_plugin(&no_unit, None, 0));
        // a sender outside journald's PID namespace (no unit of its systemd)
        assert!(sent_by_plugin(
            &serde_json::json!({"NOMAD_LOG_POS": "0:1"}),
            agent,
            0
        ));
    }
}
