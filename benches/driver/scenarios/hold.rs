//! What the Nomad client holds open per running task — a WaitTask call and a TaskStats stream
//! it reads every sample of — and the plugin's RSS meanwhile.

use crate::*;
use nomad_driver_systemd::proto::drivers::WaitTaskResponse;
use tokio::task::JoinHandle;

/// Seconds over which the plugin's RSS is sampled (once a second, the highest kept).
const RSS_WINDOW: u64 = 10;

type Wait = JoinHandle<Result<tonic::Response<WaitTaskResponse>, tonic::Status>>;

/// The held calls: every WaitTask, and the tasks draining the TaskStats streams.
pub(crate) struct Held {
    waits: Vec<Wait>,
    drains: Vec<JoinHandle<()>>,
}

impl Bench {
    /// Opens a WaitTask and a TaskStats stream (1 s interval, every sample read) per task, and
    /// returns the plugin's highest RSS over [`RSS_WINDOW`] seconds, with the calls still held.
    /// Fails when a WaitTask returns meanwhile (its task was running) or when a stream
    /// delivered nothing.
    pub(crate) async fn hold_streams(&self, ids: &[String]) -> R<(f64, Held)> {
        eprintln!(
            "  holding a WaitTask and a TaskStats stream for each of {} tasks",
            ids.len()
        );
        let samples = Arc::new(AtomicU64::new(0));
        let mut waits = Vec::new();
        let mut drains = Vec::new();
        for id in ids {
            let mut c = self.client();
            let req = WaitTaskRequest {
                task_id: id.clone(),
            };
            waits.push(tokio::spawn(async move { c.wait_task(req).await }));
            let mut c = self.client();
            let req = stats_every_second(id.clone());
            let samples = samples.clone();
            drains.push(tokio::spawn(async move {
                let Ok(resp) = c.task_stats(req).await else {
                    return;
                };
                let mut stream = resp.into_inner();
                while let Ok(Some(_)) = stream.message().await {
                    samples.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let held = Held { waits, drains };
        let mut highest = 0.0_f64;
        for _ in 0..RSS_WINDOW {
            tokio::time::sleep(Duration::from_secs(1)).await;
            highest = highest.max(rss_mib(self.plugin_pid())?);
        }
        let ended = held.waits.iter().filter(|w| w.is_finished()).count();
        let got = samples.load(Ordering::Relaxed);
        // the streams sample at once and then every second: each owes several by now
        let owed = ids.len() as u64 * (RSS_WINDOW / 2);
        if ended > 0 || got < owed {
            held.release();
            return Err(self.with_log(format!(
                "while holding: {ended} of {n} WaitTask calls returned although their tasks ran; \
                 {got} TaskStats samples arrived, at least {owed} owed",
                n = ids.len()
            )));
        }
        Ok((highest, held))
    }
}

impl Held {
    /// Drops every call.
    pub(crate) fn release(self) {
        self.waits.iter().for_each(JoinHandle::abort);
        self.drains.iter().for_each(JoinHandle::abort);
    }

    /// After every task was stopped: each WaitTask must have returned its task's exit, which
    /// proves the plugin had registered every one of them while the RSS was measured.
    pub(crate) async fn expect_exits(self) -> R<()> {
        self.drains.iter().for_each(JoinHandle::abort);
        let n = self.waits.len();
        let mut bad = Vec::new();
        for w in self.waits {
            match tokio::time::timeout(RPC_TIMEOUT, w).await {
                Ok(Ok(Ok(r))) if r.get_ref().result.is_some() && r.get_ref().err.is_empty() => {}
                other => bad.push(format!("{other:?}")),
            }
        }
        match bad.first() {
            None => Ok(()),
            Some(e) => Err(format!(
                "{} of {n} held WaitTask calls did not return an exit after StopTask, e.g. {e}",
                bad.len()
            )),
        }
    }
}

/// The row for an RSS held this way, against the same plugin's RSS before the tasks' calls.
pub(crate) fn held_rss_figure(name: String, rss: f64, before: (&str, f64), n: usize) -> Figure {
    Figure::new(name, "MiB", rss)
        .baseline(before.0, before.1)
        .target(
            "≤ 40 MiB at 1,000",
            rss <= 40.0 * (n as f64 / 1000.0).max(1.0),
        )
}
