//! N tasks from concurrent callers, their cleanup, the bare fill, and a burst.

use crate::scenarios::hold::held_rss_figure;
use crate::scenarios::latency::Starts;
use crate::*;

impl Bench {
    /// `counts.density_rounds` sequential rounds of three starts (StartTask, bare same unit,
    /// bare minimal unit), each stopped before the next, at the node's current task count.
    async fn density_probe(&self) -> R<Vec<Starts>> {
        let mut out = Vec::new();
        for i in 0..self.counts.density_rounds + 1 {
            let trio = Trio::new(&self.cfg)?;
            let (s, handle) = self.three_starts(&trio, i).await?;
            self.stop_pair(&handle, &trio, i).await?;
            if i > 0 {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Start p50 at each probed task count against the p50 with none running, three ways.
    fn density_figures(&mut self, probes: &[(usize, Vec<Starts>)]) {
        let p50 = |v: &[Starts], k: usize| {
            ms(percentile(&v.iter().map(|s| s[k]).collect::<Vec<_>>(), 50))
        };
        let Some((0, zero)) = probes.first() else {
            return;
        };
        let top = probes.last().map_or(0, |(l, _)| *l);
        for (k, what) in [
            (0, "StartTask"),
            (1, "bare same-unit start"),
            (2, "bare minimal-unit start"),
        ] {
            let base = p50(zero, k);
            for (level, v) in probes.iter().skip(1) {
                let m = p50(v, k);
                let mut f = Figure::new(
                    format!("density: {what} p50 with {level} tasks running"),
                    "ms",
                    m,
                )
                .baseline("p50 with none running", base);
                if k == 0 && *level == top {
                    // the same planned unit started by the bare client at the same density
                    f = f.target("≤ 1.5×", m <= 1.5 * base).floor(
                        format!(
                            "systemd's cost of this sandbox (bare same planned unit with {level} tasks running)"
                        ),
                        p50(v, 1),
                        1.10,
                    );
                }
                self.figures.push(f);
            }
        }
        self.notes.push(format!(
            "density: {} sequential rounds per probe (three starts each, then stops), every running \
             task with Nomad's alloc dirs (two 1 MiB tmpfs mounts each, in the private systemd's \
             mount namespace)",
            self.counts.density_rounds
        ));
    }

    /// Fills the node to `counts.scale` tasks from `counts.callers` concurrent callers, in steps
    /// at each of `counts.densities`, where [`Bench::density_probe`] measures sequential
    /// starts three ways with that many tasks (and their alloc dirs' tmpfs mounts) in place.
    /// The fill's wall time excludes the probes.
    pub(crate) async fn scale(&mut self, idle_rss: f64) -> R<Vec<(TaskHandle, PluginTask)>> {
        let (n, callers) = (self.counts.scale, self.counts.callers);
        eprintln!(
            "scale: {n} StartTask from {callers} concurrent callers, probing start latency at {:?} tasks",
            self.counts.densities
        );
        let sd_before = rss_mib(self.s.sd.pid)?;
        let client = self.client();
        let mut levels: Vec<usize> = self.counts.densities.clone();
        levels.push(n);
        levels.sort_unstable();
        levels.dedup();
        let mut handles = Vec::new();
        let mut wall = Duration::ZERO;
        let mut probes: Vec<(usize, Vec<Starts>)> = Vec::new();
        let mut calls_note = String::new();
        for level in levels.into_iter().filter(|l| *l <= n) {
            let add = level - handles.len();
            if add > 0 {
                let calls = self.call_counter().await?;
                let t = Instant::now();
                // each alloc dir (and its two mounts) is built right before its StartTask, as
                // Nomad's alloc runner does; its cost is inside the fill's wall time
                let sd_pid = self.s.sd.pid;
                let results = concurrently(vec![(); add], callers, |()| {
                    let c = client.clone();
                    async move {
                        let task = plugin_task_async(sd_pid, |_| sleeper()).await?;
                        let h = start_task(c, task.config.clone()).await?;
                        Ok((h, task))
                    }
                })
                .await;
                wall += t.elapsed();
                calls_note = format!(
                    "{} → {level} tasks: {}",
                    handles.len(),
                    calls.take(add).await
                );
                handles
                    .extend(all_ok("StartTask at scale", results).map_err(|e| self.with_log(e))?);
            }
            if self.counts.densities.contains(&level) {
                eprintln!("  density probe with {level} tasks running");
                probes.push((level, self.density_probe().await?));
            }
        }
        self.notes.push(format!(
            "plugin D-Bus calls to systemd per StartTask with {callers} callers ({calls_note})"
        ));
        self.density_figures(&probes);
        self.figures.push(
            Figure::new(
                format!("{n} tasks started ({callers} callers, Nomad's alloc dirs), wall"),
                "s",
                wall.as_secs_f64(),
            )
            .target(
                format!("≤ {:.1} s (10 s per 1,000)", 10.0 * n as f64 / 1000.0),
                wall.as_secs_f64() <= 10.0 * n as f64 / 1000.0,
            ),
        );
        self.scale_wall = wall;
        let ids: Vec<String> = handles.iter().map(|(h, _)| task_id(h)).collect();
        let running = self.count_running(&ids).await?;
        let active = self.running_units();
        let rss = rss_mib(self.plugin_pid())?;
        let sd_after = rss_mib(self.s.sd.pid)?;
        self.figures.push(
            Figure::new(
                format!("{n} tasks running (InspectTask)"),
                "",
                running as f64,
            )
            .baseline("units running per systemctl", active as f64)
            .target(format!("all {n}"), running == n && active >= n),
        );
        self.figures.push(
            Figure::new("plugin RSS idle", "MiB", idle_rss).target("≤ 15 MiB", idle_rss <= 15.0),
        );
        self.figures.push(
            Figure::new(format!("plugin RSS at {n} tasks, no streams"), "MiB", rss)
                .baseline("idle", idle_rss),
        );
        let (held_rss, held) = self.hold_streams(&ids).await?;
        held.release();
        self.figures.push(held_rss_figure(
            format!("plugin RSS at {n} tasks, a WaitTask and a TaskStats stream each"),
            held_rss,
            ("idle", idle_rss),
            n,
        ));
        self.figures.push(Figure::new(
            "systemd RSS growth per 1,000 units",
            "MiB",
            (sd_after - sd_before) * 1000.0 / n as f64,
        ));
        self.notes.push(format!(
            "plugin RSS grows {:.1} KiB per task; systemd (PID 1) went {sd_before:.1} → {sd_after:.1} MiB for {n} units",
            (rss - idle_rss) * 1024.0 / n as f64
        ));
        if running != n || active < n {
            return Err(self.with_log(format!(
                "only {running} of {n} tasks running per InspectTask, {active} units running per systemctl"
            )));
        }
        Ok(handles)
    }

    pub(crate) async fn count_running(&self, ids: &[String]) -> R<usize> {
        let client = self.client();
        let results = concurrently(ids.to_vec(), self.counts.callers, |id| {
            is_running(client.clone(), id)
        })
        .await;
        Ok(all_ok("InspectTask", results)?
            .into_iter()
            .filter(|r| *r)
            .count())
    }

    /// `nomad-*` services systemd reports as running.
    pub(crate) fn running_units(&self) -> usize {
        self.s
            .sd
            .exec(&[
                "systemctl",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--state=running",
                "nomad-*",
            ])
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|u| u.ends_with(".service"))
            })
            .count()
    }

    /// StartTasks all at once, beyond dbus-daemon's 128 pending replies per connection; the
    /// bare baseline keeps [`BARE_IN_FLIGHT`] calls in flight (more would be refused). Alloc
    /// dirs without Nomad's tmpfs mounts, on both sides: this measures the driver's own
    /// concurrency. With the mounts, systemd 252 cannot set up 150 sandboxed namespaces at once
    /// within its 90 s start timeout on two cores (ARCHITECTURE.md, *Start cost at density*).
    pub(crate) async fn burst(&mut self) -> R<()> {
        let n = self.counts.burst;
        eprintln!(
            "burst: {n} StartTask at once (plain alloc dirs), then {n} StopTask + DestroyTask \
             at once"
        );
        let tasks = plugin_tasks_plain(n, |_| sleeper());
        let client = self.client();
        let t = Instant::now();
        let results = futures::future::join_all(
            tasks
                .iter()
                .map(|t| start_task(client.clone(), t.config.clone())),
        )
        .await;
        let wall = t.elapsed();
        let handles = all_ok("StartTask burst", results).map_err(|e| self.with_log(e))?;
        let ids: Vec<String> = handles.iter().map(task_id).collect();
        let running = self.count_running(&ids).await?;
        let active = self.running_units();
        // why not, while the tasks are still there
        let first = match ids.first().filter(|_| running != n) {
            Some(id) => {
                let mut c = client.clone();
                let r = rpc(
                    "InspectTask",
                    c.inspect_task(InspectTaskRequest {
                        task_id: id.clone(),
                    }),
                )
                .await?;
                let unit = handles
                    .first()
                    .map(unit_of)
                    .transpose()?
                    .unwrap_or_default();
                format!(
                    "{:?}; {}",
                    r.task,
                    self.s
                        .sd
                        .exec(&["systemctl", "status", "--no-pager", "-l", "-n", "20", &unit])
                )
            }
            None => String::new(),
        };
        let results = concurrently(ids, n, |id| {
            let c = client.clone();
            async move {
                stop_task(c.clone(), id.clone()).await?;
                destroy_task(c, id).await
            }
        })
        .await;
        all_ok("StopTask/DestroyTask burst", results).map_err(|e| self.with_log(e))?;
        drop(tasks);
        self.assert_clean("burst").await?;
        // the smoke run asserts that a burst works, not its speed: no baseline there
        let base = if self.counts.quick {
            Duration::ZERO
        } else {
            self.bare_burst(n).await?
        };
        let mut f = Figure::new(
            format!("{n} StartTask at once (alloc dirs without tmpfs), wall"),
            "s",
            wall.as_secs_f64(),
        )
        .target(format!("all {n} running"), running == n);
        if base > Duration::ZERO {
            f = f.baseline(
                format!("bare, {BARE_IN_FLIGHT} in flight"),
                base.as_secs_f64(),
            );
        }
        self.figures.push(f);
        if running != n {
            return Err(self.with_log(format!(
                "burst: only {running} of {n} tasks running per InspectTask (the first: \
                 {first}), {active} units running per systemctl"
            )));
        }
        Ok(())
    }

    pub(crate) async fn bare_burst(&self, n: usize) -> R<Duration> {
        let tasks = bare_tasks_plain(n, &self.cfg, |_| sleeper())?;
        let bare = &self.bare;
        let t = Instant::now();
        let results = concurrently(tasks.iter().collect(), BARE_IN_FLIGHT, |u| async move {
            bare.start_planned(&u.plan).await
        })
        .await;
        let wall = t.elapsed();
        all_ok("bare StartTransientUnit burst", results)?;
        let results = concurrently(tasks.iter().collect(), BARE_IN_FLIGHT, |u| async move {
            bare.stop_unit(&u.plan.unit).await?;
            bare.reset_failed(&u.plan.unit).await;
            Ok(())
        })
        .await;
        all_ok("bare StopUnit burst", results)?;
        drop(tasks);
        self.assert_clean("bare burst").await?;
        Ok(wall)
    }

    pub(crate) async fn cleanup(&mut self, handles: &[(TaskHandle, PluginTask)]) -> R<()> {
        let n = handles.len();
        eprintln!("cleanup: StopTask + DestroyTask of {n} tasks");
        let client = self.client();
        let ids: Vec<String> = handles.iter().map(|(h, _)| task_id(h)).collect();
        let t = Instant::now();
        let results = concurrently(ids, self.counts.callers, |id| {
            let c = client.clone();
            async move {
                stop_task(c.clone(), id.clone()).await?;
                destroy_task(c, id).await
            }
        })
        .await;
        let wall = t.elapsed();
        all_ok("StopTask/DestroyTask at scale", results).map_err(|e| self.with_log(e))?;
        if let Some(held) = self.held.take() {
            held.expect_exits().await.map_err(|e| self.with_log(e))?;
        }
        self.assert_clean("cleanup").await?;
        self.notes.push(format!(
            "cleanup: StopTask + DestroyTask of {n} tasks from {} callers took {:.1} s",
            self.counts.callers,
            wall.as_secs_f64()
        ));
        Ok(())
    }

    pub(crate) async fn bare_scale(&mut self) -> R<()> {
        let (n, callers) = (self.counts.scale, self.counts.callers);
        let in_flight = callers.min(BARE_IN_FLIGHT);
        eprintln!("bare scale: {n} StartTransientUnit from {in_flight} concurrent callers");
        let sd_before = rss_mib(self.s.sd.pid)?;
        let (bare, cfg, sd_pid) = (&self.bare, &self.cfg, self.s.sd.pid);
        // the plugin's fill ran with a call counter (a `busctl monitor` and its parser): so does
        // this one, so that both fills share the machine with the same observer
        let calls = self.call_counter().await?;
        let t = Instant::now();
        // each alloc dir (and its two mounts) is built right before its start, as in the
        // plugin's fill, so both fills start each unit beside the same number of mounts
        let results = concurrently(vec![(); n], in_flight, |()| async move {
            let u = bare_task_async(sd_pid, cfg, |_| sleeper()).await?;
            bare.start_planned(&u.plan).await?;
            Ok(u)
        })
        .await;
        let wall = t.elapsed();
        drop(calls);
        let tasks = all_ok("bare StartTransientUnit at scale", results)?;
        let active = self.running_units();
        let sd_after = rss_mib(self.s.sd.pid)?;
        let results = concurrently(tasks.iter().collect(), in_flight, |u| async move {
            bare.stop_unit(&u.plan.unit).await?;
            bare.reset_failed(&u.plan.unit).await;
            Ok(())
        })
        .await;
        all_ok("bare StopUnit at scale", results)?;
        drop(tasks);
        self.assert_clean("bare scale").await?;
        let label = if in_flight < callers {
            format!("bare same units, {in_flight} callers")
        } else {
            "bare same units, same callers".to_string()
        };
        let plugin = self.scale_wall.as_secs_f64();
        // the fill's own target (10 s per 1,000) against the bare fill of the same units
        let fill = format!("{n} tasks started ({callers} callers, Nomad's alloc dirs), wall");
        if let Some(f) = self.figures.iter_mut().find(|f| f.name == fill) {
            f.floor = Some((
                "systemd's cost of this sandbox (bare fill of the same planned units)".into(),
                wall.as_secs_f64(),
                1.15,
            ));
        }
        self.figures.push(
            Figure::new(
                format!("{n} tasks started ({callers} callers) / bare"),
                "s",
                plugin,
            )
            .baseline(label, wall.as_secs_f64())
            .target("≤ 1.15×", plugin <= 1.15 * wall.as_secs_f64()),
        );
        self.notes.push(format!(
            "bare scale: {active}/{n} units running; systemd RSS {sd_before:.1} → {sd_after:.1} MiB \
             (second fill of the same PID 1, so freed memory is reused)"
        ));
        if active < n {
            return Err(format!("bare: only {active} of {n} units running"));
        }
        Ok(())
    }
}
