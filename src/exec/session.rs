//! Running a spawned command to its end: captured (ExecTask: stdout, stderr, timeout) or
//! streamed (ExecTaskStreaming: stdin, resizes and output frames in, `Exited` last).
//!
//! Only the lead process is waited for. Once it has exited, output still buffered in the pipes
//! or pty is forwarded until end of file, but for at most [`DRAIN`]: a background process that
//! keeps the descriptors open does not hold the session.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::pty::PtyMaster;
use super::spawn::{Io, Spawned};
use crate::task::ExitResult;

/// How long output is still forwarded after the lead process exited.
pub const DRAIN: Duration = Duration::from_secs(1);
/// Output frame size (Nomad's own executors send at most 1024 bytes per frame).
const CHUNK: usize = 1024;
/// ExecTask keeps at most this much of each stream (script check output is small).
pub const CAPTURE_LIMIT: usize = 1 << 20;

/// Client → command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    /// Close the command's stdin (with a tty: send the end-of-file character).
    StdinClose,
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// Command → client, in this order: data frames, `StdoutClosed`, `StderrClosed`, `Exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    StdoutClosed,
    StderrClosed,
    Exited(ExitResult),
}

/// What ExecTask returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub result: ExitResult,
}

/// Nomad's exit result for a wait status: `128 + signo` when killed by a signal.
pub fn exit_result(st: ExitStatus) -> ExitResult {
    match (st.code(), st.signal()) {
        (Some(code), _) => ExitResult {
            exit_code: code,
            ..ExitResult::default()
        },
        (None, Some(sig)) => ExitResult {
            exit_code: 128 + sig,
            signal: sig,
            ..ExitResult::default()
        },
        (None, None) => ExitResult::lost("the command ended without a status"),
    }
}

/// Forwards a pipe as frames made by `frame` until end of file or until the receiver is gone.
fn pump<R: AsyncRead + Unpin + Send + 'static>(
    mut src: R,
    out: mpsc::Sender<ExecOutput>,
    frame: fn(Vec<u8>) -> ExecOutput,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n) = src.read(&mut buf).await {
            if n == 0 || out.send(frame(buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    })
}

/// Waits for `readers` to reach end of file, for at most [`DRAIN`].
async fn drain(readers: Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    for mut r in readers {
        if tokio::time::timeout_at(deadline, &mut r).await.is_err() {
            r.abort();
        }
    }
}

/// Streams a session until the command exits (or the client goes away, which kills it).
/// `input` ending is a client half-close: stdin stays open.
pub async fn stream(
    mut sp: Spawned,
    input: mpsc::Receiver<ExecInput>,
    out: mpsc::Sender<ExecOutput>,
) {
    let io = sp.take_io();
    // the pty master stays open until the command is reaped: closing it hangs up the
    // terminal, and a command that closed its stdio just before exiting would die of SIGHUP
    let (readers, writer, _master) = start_io(io, input, &out);
    let status = tokio::select! {
        st = sp.child.wait() => st.ok(),
        () = out.closed() => None,
    };
    writer.abort();
    let Some(status) = status else {
        // the client is gone: nobody is left to read; kill everything we started
        sp.kill_group();
        for r in readers {
            r.abort();
        }
        let _ = sp.child.wait().await;
        return;
    };
    drain(readers).await;
    for frame in [
        ExecOutput::StdoutClosed,
        ExecOutput::StderrClosed,
        ExecOutput::Exited(exit_result(status)),
    ] {
        if out.send(frame).await.is_err() {
            return;
        }
    }
}

/// Starts the tasks that pump output to `out` and input to the command.
fn start_io(
    io: Io,
    input: mpsc::Receiver<ExecInput>,
    out: &mpsc::Sender<ExecOutput>,
) -> (Vec<JoinHandle<()>>, JoinHandle<()>, Option<Arc<PtyMaster>>) {
    match io {
        Io::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let mut readers = Vec::new();
            if let Some(s) = stdout {
                readers.push(pump(s, out.clone(), ExecOutput::Stdout));
            }
            if let Some(s) = stderr {
                readers.push(pump(s, out.clone(), ExecOutput::Stderr));
            }
            (readers, tokio::spawn(feed_pipe(stdin, input)), None)
        }
        Io::Pty(master) => {
            let master = Arc::new(master);
            let reader = tokio::spawn(read_pty(Arc::clone(&master), out.clone()));
            let writer = tokio::spawn(feed_pty(Arc::clone(&master), input));
            (vec![reader], writer, Some(master))
        }
    }
}

/// Forwards terminal output until every slave descriptor is closed (or the client is gone).
async fn read_pty(master: Arc<PtyMaster>, out: mpsc::Sender<ExecOutput>) {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n) = master.read(&mut buf).await {
        if n == 0
            || out
                .send(ExecOutput::Stdout(buf[..n].to_vec()))
                .await
                .is_err()
        {
            return;
        }
    }
}

async fn feed_pipe(
    mut stdin: Option<tokio::process::ChildStdin>,
    mut input: mpsc::Receiver<ExecInput>,
) {
    while let Some(msg) = input.recv().await {
        match msg {
            ExecInput::Stdin(data) => {
                if let Some(s) = stdin.as_mut()
                    && s.write_all(&data).await.is_err()
                {
                    // the command closed its stdin; later data has nowhere to go
                    stdin = None;
                }
            }
            ExecInput::StdinClose => stdin = None,
            ExecInput::Resize { .. } => {}
        }
    }
    // half-close: keep stdin open until the command exits (this task is aborted then)
    std::future::pending::<()>().await;
    drop(stdin);
}

async fn feed_pty(master: Arc<PtyMaster>, mut input: mpsc::Receiver<ExecInput>) {
    while let Some(msg) = input.recv().await {
        let r = match msg {
            ExecInput::Stdin(data) => master.write_all(&data).await,
            ExecInput::StdinClose => master.write_all(&[master.eof_char()]).await,
            ExecInput::Resize { rows, cols } => master.resize(rows, cols),
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "exec: writing to the pty failed");
        }
    }
}

/// Runs a command with captured output, SIGKILLing its process group after `timeout`
/// (`None`: no limit).
pub async fn capture(mut sp: Spawned, timeout: Option<Duration>) -> Captured {
    let (stdout, stderr) = match sp.take_io() {
        Io::Pipes { stdout, stderr, .. } => (stdout, stderr),
        Io::Pty(_) => (None, None),
    };
    let out_buf = SharedBuf::default();
    let err_buf = SharedBuf::default();
    let readers = vec![
        tokio::spawn(collect(stdout, out_buf.clone())),
        tokio::spawn(collect(stderr, err_buf.clone())),
    ];
    let wait = async {
        match timeout {
            Some(t) => tokio::time::timeout(t, sp.child.wait()).await.ok(),
            None => Some(sp.child.wait().await),
        }
    };
    let status = match wait.await {
        Some(Ok(st)) => Some(st),
        Some(Err(_)) | None => {
            sp.kill_group();
            sp.child.wait().await.ok()
        }
    };
    drain(readers).await;
    let (stdout, stderr) = (out_buf.take(), err_buf.take());
    Captured {
        stdout,
        stderr,
        result: status.map_or_else(
            || ExitResult::lost("waiting for the command failed"),
            exit_result,
        ),
    }
}

/// Output collected by a reader task, readable whenever the reader is done or given up on.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    fn append(&self, data: &[u8]) {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = CAPTURE_LIMIT.saturating_sub(v.len());
        v.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

async fn collect<R: AsyncRead + Unpin>(src: Option<R>, sink: SharedBuf) {
    let Some(mut src) = src else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = src.read(&mut buf).await {
        if n == 0 {
            return;
        }
        sink.append(&buf[..n]);
    }
}
