//! TaskStats cost, two ways: the plugin's CPU time per task per sample while streams run
//! (beside the CPU time of a bare in-process read of the same files for the same tasks), and
//! the wall time from opening a stream to its first sample (beside a gRPC round trip plus the
//! bare read of the same files).

use crate::*;

impl Bench {
    pub(crate) async fn stats(&mut self, handles: &[(TaskHandle, PluginTask)]) -> R<()> {
        let m = self.counts.stats_tasks.min(handles.len());
        let (interval, window) = (self.counts.stats_interval, self.counts.stats_window);
        eprintln!(
            "stats: {m} TaskStats streams every {} ms for {} s",
            interval.as_millis(),
            window.as_secs()
        );
        let chosen = &handles[..m];
        let (read_wall, read_cpu, pread_cpu) = self.read_cgroup_baseline(chosen).await?;
        self.first_sample_latency(chosen, read_wall).await?;
        let pid = self.plugin_pid();
        // what the plugin burns with nothing to do, over the same window
        let idle0 = cpu_seconds(pid)?;
        tokio::time::sleep(window).await;
        let idle = cpu_seconds(pid)? - idle0;
        let cpu0 = cpu_seconds(pid)?;
        let (samples, with_cgroup) = self.stream_stats(chosen, interval, window).await?;
        let cpu = cpu_seconds(pid)? - cpu0;
        if samples == 0 {
            return Err("no TaskStats sample arrived".into());
        }
        let per_sample = cpu * 1e3 / samples as f64;
        self.figures.push(
            Figure::new("TaskStats CPU per task per sample", "ms", per_sample)
                .baseline(
                    format!("bare in-process read of the same files, CPU, {m} tasks per sweep"),
                    read_cpu,
                )
                .target("≤ 0.05 ms", per_sample <= 0.05)
                .floor(
                    "the kernel's cost of these cgroup files (bare in-process pread of the same \
                     files kept open, CPU)",
                    pread_cpu,
                    1.10,
                ),
        );
        self.notes.push(format!(
            "stats: {samples} samples from {m} tasks in {} s, {with_cgroup} with cgroup memory.stat data; \
             plugin CPU {cpu:.2} s while streaming vs {idle:.2} s idle over the same window with {} tasks",
            window.as_secs(),
            handles.len()
        ));
        if with_cgroup < samples {
            return Err(format!(
                "{} of {samples} TaskStats samples carried no cgroup data",
                samples - with_cgroup
            ));
        }
        Ok(())
    }

    /// One `read_cgroup` of a task's cgroup (the files the driver's sample reads), swept over
    /// the chosen tasks `read_rounds` times: wall and this thread's CPU time per task, in ms;
    /// then the same files opened once (the driver's `CgroupFiles`) and only read again, swept
    /// the same way: this thread's CPU time per task, in ms — the floor of a kept-fd sample.
    pub(crate) async fn read_cgroup_baseline(
        &self,
        chosen: &[(TaskHandle, PluginTask)],
    ) -> R<(f64, f64, f64)> {
        let root = Path::new(CGROUP_ROOT);
        let layout = detect_layout(root).ok_or("no cgroup layout under /sys/fs/cgroup")?;
        let mut cgroups = Vec::new();
        for (h, _) in chosen {
            cgroups.push(self.bare.control_group(&unit_of(h)?).await?);
        }
        let rounds = self.counts.read_rounds;
        let cpu0 = thread_cpu_ms();
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            for cg in &cgroups {
                read_cgroup(root, layout, cg).map_err(|e| format!("read_cgroup {cg}: {e}"))?;
            }
        }
        let per = (rounds * cgroups.len()).max(1) as f64;
        let (wall, cpu) = (ms(t.elapsed()) / per, (thread_cpu_ms() - cpu0) / per);
        let mut kept = Vec::new();
        for cg in &cgroups {
            kept.push(CgroupFiles::open(root, layout, cg).map_err(|e| format!("open {cg}: {e}"))?);
        }
        let cpu0 = thread_cpu_ms();
        for _ in 0..rounds {
            for files in &mut kept {
                files.read().ok_or("a kept cgroup file stopped reading")?;
            }
        }
        Ok((wall, cpu, (thread_cpu_ms() - cpu0) / per))
    }

    /// Per task in sequence: open a TaskStats stream and wait for its first sample (the driver
    /// samples at once), beside a gRPC round trip without D-Bus (InspectTask) plus the bare
    /// read of the same files (`read_wall`, per task).
    async fn first_sample_latency(
        &mut self,
        chosen: &[(TaskHandle, PluginTask)],
        read_wall: f64,
    ) -> R<()> {
        let (mut first, mut rtt) = (Vec::new(), Vec::new());
        for (h, _) in chosen {
            let mut c = self.client();
            let req = stats_every_second(task_id(h));
            let t = Instant::now();
            let mut stream = rpc("TaskStats", c.task_stats(req)).await?;
            match tokio::time::timeout(RPC_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(msg))) if has_cgroup_data(&msg) => first.push(t.elapsed()),
                other => return Err(format!("first TaskStats sample: {other:?}")),
            }
            drop(stream);
            rtt.push(timed(is_running(self.client(), task_id(h))).await?.1);
        }
        let p = ms(percentile(&first, 50));
        let base = ms(percentile(&rtt, 50)) + read_wall;
        self.figures.push(
            Figure::new("TaskStats first sample, wall per task (p50)", "ms", p).baseline(
                "gRPC round trip (InspectTask) + bare read of the same files",
                base,
            ),
        );
        Ok(())
    }

    /// Opens one stream per task; counts samples (and those with cgroup data) until `window`.
    pub(crate) async fn stream_stats(
        &self,
        chosen: &[(TaskHandle, PluginTask)],
        interval: Duration,
        window: Duration,
    ) -> R<(u64, u64)> {
        let deadline = Instant::now() + window;
        let samples = Arc::new(AtomicU64::new(0));
        let with_cgroup = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        let interval = prost_types::Duration::try_from(interval).map_err(|e| e.to_string())?;
        for (h, _) in chosen {
            let mut c = self.client();
            let req = TaskStatsRequest {
                task_id: task_id(h),
                collection_interval: Some(interval),
            };
            let (samples, with_cgroup) = (Arc::clone(&samples), Arc::clone(&with_cgroup));
            set.spawn(async move {
                let mut stream = rpc("TaskStats", c.task_stats(req)).await?;
                loop {
                    match tokio::time::timeout_at(deadline, stream.message()).await {
                        Err(_) => return Ok(()),
                        Ok(Ok(Some(msg))) => {
                            samples.fetch_add(1, Ordering::Relaxed);
                            if has_cgroup_data(&msg) {
                                with_cgroup.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Ok(None)) => return Err("TaskStats stream ended early".to_string()),
                        Ok(Err(s)) => return Err(format!("TaskStats: {}", s.message())),
                    }
                }
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(r.map_err(|e| e.to_string()).and_then(|r| r));
        }
        all_ok("TaskStats", results)?;
        Ok((
            samples.load(Ordering::Relaxed),
            with_cgroup.load(Ordering::Relaxed),
        ))
    }

    /// Opens a TaskStats stream at Nomad's default 1 s interval for every task at once, as the
    /// client does after a restart; the time until every stream delivered its first sample,
    /// and how many of those carried cgroup data.
    pub(crate) async fn first_samples(&self, ids: &[String]) -> R<(Duration, usize)> {
        let client = self.client();
        let t = Instant::now();
        let results = futures::future::join_all(ids.iter().map(|id| {
            let mut c = client.clone();
            let req = stats_every_second(id.clone());
            async move {
                let mut stream = rpc("TaskStats", c.task_stats(req)).await?;
                match tokio::time::timeout(RPC_TIMEOUT, stream.message()).await {
                    Ok(Ok(Some(msg))) => Ok(has_cgroup_data(&msg)),
                    Ok(Ok(None)) => Err("TaskStats ended before its first sample".to_string()),
                    Ok(Err(s)) => Err(format!("TaskStats: {}", s.message())),
                    Err(_) => Err("no first TaskStats sample within the timeout".to_string()),
                }
            }
        }))
        .await;
        let wall = t.elapsed();
        let with_data = all_ok("TaskStats after the restart", results)?
            .into_iter()
            .filter(|d| *d)
            .count();
        Ok((wall, with_data))
    }
}

/// CPU time this thread has used, in ms.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime on a local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}
