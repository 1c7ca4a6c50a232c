//! Unit mode: concurrent template-instance starts and the daemon-reloads they cost.

use crate::*;

impl Bench {
    pub(crate) async fn unit_mode(&mut self, n: usize) -> R<()> {
        eprintln!(
            "unit mode: {n} concurrent template-instance starts, plugin and one-reload-per-start"
        );
        self.install_template().await?;
        let tasks = plugin_tasks(n, instance_job);
        let client = self.client();
        let r0 = self.bare.reloads();
        let t = Instant::now();
        let results = futures::future::join_all(
            tasks
                .iter()
                .map(|t| start_task(client.clone(), t.config.clone())),
        )
        .await;
        let wall = t.elapsed();
        let handles = all_ok("unit-mode StartTask", results).map_err(|e| self.with_log(e))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reloads = self.bare.reloads() - r0;
        let ids: Vec<String> = handles.iter().map(task_id).collect();
        let running = self.count_running(&ids).await?;
        if running != n {
            return Err(self.with_log(format!(
                "unit mode: only {running} of {n} instances running"
            )));
        }
        let results = concurrently(ids, self.counts.callers, |id| {
            let c = client.clone();
            async move {
                stop_task(c.clone(), id.clone()).await?;
                destroy_task(c, id).await
            }
        })
        .await;
        all_ok("unit-mode StopTask/DestroyTask", results)?;
        drop(tasks);
        let (base_reloads, base_wall) = self.prototype_starts(n, false).await?;
        let (co_reloads, co_wall) = self.prototype_starts(n, true).await?;
        let reload_target = (n == 20).then(|| ("≤ 3".to_string(), reloads <= 3));
        let mut f = Figure::new(
            format!("unit mode: {n} concurrent starts, daemon-reloads"),
            "",
            reloads as f64,
        )
        .baseline("reload per start", base_reloads as f64);
        f.target = reload_target;
        self.figures.push(f);
        self.figures.push(
            Figure::new(
                format!("unit mode: {n} concurrent starts, wall"),
                "s",
                wall.as_secs_f64(),
            )
            .baseline("reload per start", base_wall.as_secs_f64()),
        );
        self.figures.push(
            Figure::new(
                format!("unit mode: {n} concurrent starts, daemon-reloads / coalescing bare"),
                "",
                reloads as f64,
            )
            .baseline("bare: all drop-ins, one reload", co_reloads as f64),
        );
        self.figures.push(
            Figure::new(
                format!("unit mode: {n} concurrent starts, wall / coalescing bare"),
                "s",
                wall.as_secs_f64(),
            )
            .baseline("bare: all drop-ins, one reload", co_wall.as_secs_f64()),
        );
        Ok(())
    }

    pub(crate) async fn install_template(&self) -> R<()> {
        let dir = self.s.sd.runtime_dir().join("system");
        let path = dir.join(TEMPLATE);
        if path.exists() {
            return Ok(());
        }
        std::fs::write(&path, TEMPLATE_TEXT).map_err(|e| format!("{}: {e}", path.display()))?;
        let r0 = self.bare.reloads();
        self.bare.reload().await?;
        for _ in 0..100 {
            if self.bare.reloads() > r0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the reload counter saw no Reloading signal for an explicit Reload".into())
    }

    /// Two bare baselines for `n` concurrent instance starts. Without `coalesce`, the seed's
    /// pattern: per start, write the drop-in and environment file, `Reload`, `StartUnit`. With
    /// it, what a perfect coalescer does: write every drop-in and environment file, one
    /// `Reload`, then every `StartUnit` at once.
    pub(crate) async fn prototype_starts(&self, n: usize, coalesce: bool) -> R<(u64, Duration)> {
        let tasks = bare_tasks(n, &self.cfg, instance_job)?;
        let system = self.s.sd.runtime_dir().join("system");
        let bare = &self.bare;
        let r0 = bare.reloads();
        let write = |u: &BareTask| -> R<()> {
            let dir = system.join(format!("{}.d", u.plan.unit));
            let text = u.plan.dropin.as_deref().ok_or("no drop-in planned")?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(dir.join(DROPIN_FILE), text).map_err(|e| e.to_string())?;
            bare.write_env_file(&u.plan)
        };
        let t = Instant::now();
        let results = if coalesce {
            tasks.iter().try_for_each(write)?;
            bare.reload().await?;
            futures::future::join_all(tasks.iter().map(|u| bare.start_unit(&u.plan.unit))).await
        } else {
            futures::future::join_all(tasks.iter().map(|u| async move {
                write(u)?;
                bare.reload().await?;
                bare.start_unit(&u.plan.unit).await
            }))
            .await
        };
        let wall = t.elapsed();
        all_ok("prototype unit-mode starts", results)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reloads = bare.reloads() - r0;
        for u in &tasks {
            bare.stop_unit(&u.plan.unit).await?;
            bare.reset_failed(&u.plan.unit).await;
            let _ = std::fs::remove_dir_all(system.join(format!("{}.d", u.plan.unit)));
        }
        Ok((reloads, wall))
    }
}
