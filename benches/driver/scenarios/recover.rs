//! Plugin restart and RecoverTask of every running task.

use crate::scenarios::hold::held_rss_figure;
use crate::*;

impl Bench {
    pub(crate) async fn recover(&mut self, handles: &[(TaskHandle, PluginTask)]) -> R<()> {
        let n = handles.len();
        eprintln!(
            "recover: plugin restart, then {n} RecoverTask in sequence (as the Nomad client restores)"
        );
        self._fingerprint = None;
        let old = self.s.plugin.take().ok_or("no plugin")?;
        if !old.kill().await {
            return Err("the plugin did not exit gracefully on go-plugin's kill".into());
        }
        let t = Instant::now();
        self.s.relaunch().await;
        let relaunch = t.elapsed();
        let relaunch_rss = rss_mib(self.plugin_pid())?;
        let mut c = self.client();
        let calls = self.call_counter().await?;
        let t = Instant::now();
        for (h, _) in handles {
            let mut handle = h.clone();
            if let Some(cfg) = handle.config.as_mut() {
                cfg.msgpack_driver_config.clear();
            }
            let req = RecoverTaskRequest {
                task_id: String::new(),
                handle: Some(handle),
            };
            rpc("RecoverTask", c.recover_task(req))
                .await
                .map_err(|e| self.with_log(e))?;
        }
        let wall = t.elapsed();
        let calls = calls.take(n).await;
        // the floor: what recovering every unit must learn, read in one batch
        let units = handles
            .iter()
            .map(|(h, _)| unit_of(h))
            .collect::<R<Vec<_>>>()?;
        let t = Instant::now();
        let active = self.bare.batched_status(&units).await?;
        let base = t.elapsed();
        if active != n {
            return Err(format!(
                "bare batched read: {active} of {n} units active with an invocation id"
            ));
        }
        // the seed's way, for comparison: GetUnit + GetAll(Unit) + GetAll(Service) per unit
        let t = Instant::now();
        for u in &units {
            self.bare.status_reads(u).await?;
        }
        let per_unit = t.elapsed();
        self.notes.push(format!(
            "recover: bare per-unit reads (GetUnit + 2× GetAll + Get, sequential) of the {n} units \
             took {:.2} s; the batched read {:.3} s",
            per_unit.as_secs_f64(),
            base.as_secs_f64()
        ));
        let ids: Vec<String> = handles.iter().map(|(h, _)| task_id(h)).collect();
        let sample = &ids[..ids.len().min(200)];
        let t = Instant::now();
        for id in sample {
            is_running(self.client(), id.clone()).await?;
        }
        let inspect = ms(t.elapsed()) / sample.len().max(1) as f64;
        self.notes.push(format!(
            "recover: plugin D-Bus calls to systemd per RecoverTask: {calls}; a gRPC round trip \
             without D-Bus (InspectTask, sequential) takes {inspect:.2} ms"
        ));
        let running = self.count_running(&ids).await?;
        let rss = rss_mib(self.plugin_pid())?;
        let (first, with_data) = self
            .first_samples(&ids)
            .await
            .map_err(|e| self.with_log(e))?;
        let (held_rss, held) = self.hold_streams(&ids).await?;
        self.figures.push(held_rss_figure(
            format!(
                "plugin RSS at {n} tasks after recovery, a WaitTask and a TaskStats stream each"
            ),
            held_rss,
            ("relaunched plugin before RecoverTask", relaunch_rss),
            n,
        ));
        // proven in cleanup: every held WaitTask returns its task's exit after StopTask
        self.held = Some(held);
        self.notes.push(format!(
            "after the restart, {n} TaskStats streams opened at once (1 s interval, as the Nomad \
             client does) delivered their first samples within {:.2} s, {with_data} with cgroup data",
            first.as_secs_f64()
        ));
        self.figures.push(
            Figure::new(
                format!("RecoverTask of {n} running tasks, wall"),
                "s",
                wall.as_secs_f64(),
            )
            .baseline(
                "bare: one ListUnitsByNames + every invocation symlink",
                base.as_secs_f64(),
            )
            .target(
                format!("≤ 1 s per 1,000 (≤ {:.2} s)", n as f64 / 1000.0),
                wall.as_secs_f64() <= n as f64 / 1000.0,
            ),
        );
        self.notes.push(format!(
            "recover: relaunch (exec → SetConfig → Init) took {:.0} ms; {running}/{n} running after \
             recovery; plugin RSS after recovery {rss:.1} MiB",
            ms(relaunch)
        ));
        if running != n {
            return Err(self.with_log(format!(
                "only {running} of {n} tasks running after RecoverTask"
            )));
        }
        if with_data != n {
            return Err(self.with_log(format!(
                "after the restart only {with_data} of {n} first TaskStats samples carried cgroup data"
            )));
        }
        Ok(())
    }
}
