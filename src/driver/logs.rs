//! `logs = "both"`: the one per-node forwarder (a thread of the plugin, no process) that copies
//! every followed task's output from logmon's files (`<alloc>/alloc/logs/<task>.{stdout,stderr}.<n>`)
//! into the journal, each entry stamped with its position so that the journal itself is the
//! cursor after a plugin restart (ARCHITECTURE.md, *Task logs*).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::journal::{JournalPaths, MAX_MESSAGE, Sender, newest_field};

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
    priority: &'static str,
    /// File index and byte offset of the next unread byte.
    index: u64,
    offset: u64,
    /// A line begun but not ended (it may continue in the next file).
    carry: Vec<u8>,
    /// `NOMAD_LOG_POS` of the last line sent (where the next line starts).
    committed: String,
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
        let stream = |name, priority| Stream {
            name,
            priority,
            index: 0,
            offset: 0,
            carry: Vec::new(),
            committed: String::new(),
        };
        tasks.insert(
            follow.task_id.clone(),
            Followed {
                follow,
                streams: [stream("stdout", "6"), stream("stderr", "3")],
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
    loop {
        let ids: Vec<String> = lock(tasks).keys().cloned().collect();
        for id in ids {
            // one task at a time, outside the map's lock while journalctl runs
            let Some(mut t) = lock(tasks).remove(&id) else {
                continue;
            };
            if !t.resumed {
                resume(paths, &mut t);
            }
            let mut moved = false;
            for s in 0..2 {
                moved |= pump(&sender, &t.follow, &mut t.streams[s], false);
            }
            if moved {
                t.last_data = Instant::now();
            }
            let done = t.last_data.elapsed() >= DRAIN_QUIET && lock(&shared.draining).contains(&id);
            if done {
                lock(&shared.draining).remove(&id);
                for s in 0..2 {
                    pump(&sender, &t.follow, &mut t.streams[s], true);
                }
                tracing::debug!(task_id = %id, "log forwarder: task drained");
                continue;
            }
            let mut map = lock(tasks);
            // a concurrent follow() of the same id keeps the newer entry
            map.entry(id).or_insert(t);
        }
        std::thread::sleep(TICK);
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
        (s.index, s.offset) = match parsed {
            Some(p) => p,
            None => (lowest_index(&t.follow, s.name).unwrap_or(0), 0),
        };
        s.committed = format!("{}:{}", s.index, s.offset);
    }
    t.resumed = true;
}

/// Forwards the stream's complete lines (and, with `flush`, a last unterminated one); whether
/// anything was read.
fn pump(sender: &Sender, f: &Follow, s: &mut Stream, flush: bool) -> bool {
    let mut moved = false;
    loop {
        let path = file(f, s.name, s.index);
        let mut data = Vec::new();
        let read = std::fs::File::open(&path).and_then(|mut fh| {
            fh.seek(SeekFrom::Start(s.offset))?;
            fh.read_to_end(&mut data)
        });
        match read {
            Ok(_) => {}
            Err(_) => {
                // rotated away before we read it: skip to what is there
                match lowest_index(f, s.name) {
                    Some(low) if low > s.index => {
                        tracing::warn!(file = %path.display(), "log forwarder: file gone before it was read");
                        s.index = low;
                        s.offset = 0;
                        s.carry.clear();
                        continue;
                    }
                    _ => return moved,
                }
            }
        }
        let mut start = 0;
        while let Some(nl) = data[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            let mut line = std::mem::take(&mut s.carry);
            line.extend_from_slice(&data[start..end]);
            let pos = format!("{}:{}", s.index, s.offset + end as u64 + 1);
            if send(sender, f, s, &line, &pos).is_err() {
                s.carry = line;
                s.carry.truncate(s.carry.len() - (end - start));
                s.offset += start as u64;
                return moved;
            }
            s.committed = pos;
            moved = true;
            start = end + 1;
        }
        let rest = &data[start..];
        if !rest.is_empty() {
            s.carry.extend_from_slice(rest);
            moved = true;
        }
        s.offset += data.len() as u64;
        // logmon has moved on to the next file: this one is complete
        if file(f, s.name, s.index + 1).exists() {
            s.index += 1;
            s.offset = 0;
            continue;
        }
        if flush && !s.carry.is_empty() {
            let line = std::mem::take(&mut s.carry);
            let pos = format!("{}:{}", s.index, s.offset);
            let _ = send(sender, f, s, &line, &pos);
        }
        return moved;
    }
}

fn send(sender: &Sender, f: &Follow, s: &Stream, line: &[u8], pos: &str) -> std::io::Result<()> {
    let chunks: Vec<&[u8]> = if line.is_empty() {
        vec![line]
    } else {
        line.chunks(MAX_MESSAGE).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("MESSAGE", chunk),
            ("PRIORITY", s.priority.as_bytes()),
            ("SYSLOG_IDENTIFIER", f.task.as_bytes()),
            ("OBJECT_SYSTEMD_UNIT", f.unit.as_bytes()),
            ("NOMAD_LOG_STREAM", s.name.as_bytes()),
        ];
        // the entry that ends the line carries its end; the entries before it where the line
        // starts, so that a restart between them sends the line again rather than losing it
        fields.push((
            "NOMAD_LOG_POS",
            if i == last { pos } else { &s.committed }.as_bytes(),
        ));
        for (k, v) in &f.fields {
            fields.push((k.as_str(), v.as_bytes()));
        }
        sender.send(&fields)?;
    }
    Ok(())
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
        let stream = || Stream {
            name: "stderr",
            priority: "3",
            index: 0,
            offset: 0,
            carry: Vec::new(),
            committed: "0:0".into(),
        };
        std::fs::write(dir.path().join("web.stderr.0"), "one\ntw").unwrap();
        let mut s = stream();
        assert!(pump(&sender, &follow, &mut s, false));
        assert_eq!(received(&journal), [("one".into(), "0:4".into())]);
        // logmon rotates in the middle of a line
        std::fs::write(dir.path().join("web.stderr.1"), "o\nthree\npart").unwrap();
        pump(&sender, &follow, &mut s, false);
        assert_eq!(
            received(&journal),
            [("two".into(), "1:2".into()), ("three".into(), "1:8".into())]
        );
        // DestroyTask's drain sends the unterminated tail
        pump(&sender, &follow, &mut s, true);
        assert_eq!(received(&journal), [("part".into(), "1:12".into())]);
        // a restart at "1:8" (the newest position in the journal before the tail) resends
        // only what came after it
        let mut again = stream();
        (again.index, again.offset) = (1, 8);
        pump(&sender, &follow, &mut again, true);
        assert_eq!(received(&journal), [("part".into(), "1:12".into())]);
    }
}
