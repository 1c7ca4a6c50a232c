//! Sequential StartTask / StopTask latency, each start beside two bare baselines (the same
//! planned unit, and the minimal unit), each stop beside a bare kill-and-wait.

use crate::*;

/// Nomad's `SIGINT` (the bench's stop signal) as a number, for the bare `KillUnit`.
const STOP_SIGNO: i32 = libc::SIGINT;

/// The pause before each timed start, so that it does not meet systemd still busy with the
/// previous start or stop (its queued D-Bus signals, a unit's teardown): each start is timed
/// from the same quiet state, as the start of a task on a quiet node.
pub(crate) const SETTLE: Duration = Duration::from_millis(30);

/// Start latencies of one sequential round, in the order plugin, same unit, minimal unit.
pub(crate) type Starts = [Duration; 3];

impl Bench {
    pub(crate) async fn latency(&mut self) -> R<()> {
        let (n, warmup) = (self.counts.latency, self.counts.warmup);
        eprintln!(
            "latency: {} sequential rounds of StartTask + bare same-unit start + bare minimal \
             start, then StopTask beside a bare KillUnit + wait",
            n + warmup
        );
        let calls = self.call_counter().await?;
        let (mut starts, mut stops, mut calls_in) = (Vec::new(), Vec::new(), Vec::new());
        let mut reads: [Vec<Duration>; 4] = Default::default();
        for i in 0..n + warmup {
            let trio = Trio::new(&self.cfg)?;
            let (s, handle) = self.three_starts(&trio, i).await?;
            if i >= warmup && i - warmup < 50 {
                // what each of the driver's post-start reads costs, on the running same unit
                let r = self.bare.status_reads(&trio.same.plan.unit).await?;
                for (c, d) in reads.iter_mut().zip(r) {
                    c.push(d);
                }
            }
            let stop = self.stop_pair(&handle, &trio, i).await?;
            let call = self.idle_call().await?;
            if i >= warmup {
                starts.push(s);
                stops.push(stop);
                calls_in.push(call);
            }
        }
        let per_round = calls.take(n + warmup).await;
        self.assert_clean("latency").await?;
        let col = |v: &[Starts], k: usize| v.iter().map(|s| s[k]).collect::<Vec<_>>();
        let (p, same, min) = (col(&starts, 0), col(&starts, 1), col(&starts, 2));
        for pct in [50, 99] {
            let (a, b, c) = (
                ms(percentile(&p, pct)),
                ms(percentile(&same, pct)),
                ms(percentile(&min, pct)),
            );
            let mut f = Figure::new(format!("StartTask p{pct} / same unit"), "ms", a)
                .baseline("bare StartTransientUnit + job, same planned unit", b);
            if pct == 50 {
                f = f.target("≤ 1.10×", a <= 1.10 * b);
            }
            self.figures.push(f);
            let mut f = Figure::new(format!("StartTask p{pct} / minimal unit"), "ms", a)
                .baseline("bare StartTransientUnit + job, ExecStart only", c);
            if pct == 50 {
                f = f.target("≤ 2.0×", a <= 2.0 * c).floor(
                    "systemd's cost of this sandbox (bare same planned unit)",
                    b,
                    1.10,
                );
            }
            self.figures.push(f);
        }
        let (ps, bs): (Vec<_>, Vec<_>) = stops.into_iter().unzip();
        let call = ms(percentile(&calls_in, 50));
        let (stop_plugin, stop_bare) = (ms(percentile(&ps, 50)), ms(percentile(&bs, 50)));
        for pct in [50, 99] {
            let (a, b) = (ms(percentile(&ps, pct)), ms(percentile(&bs, pct)));
            let mut f = Figure::new(format!("StopTask p{pct}"), "ms", a)
                .baseline("bare KillUnit(main) + wait for the exit signal", b);
            if pct == 50 {
                f = f.target("≤ 1.2×", a <= 1.2 * b).floor(
                    format!(
                        "the bare KillUnit + wait plus a gRPC call into the idle plugin \
                         ({call:.2} ms p50, InspectTask after the same pause)"
                    ),
                    b + call,
                    1.10,
                );
            }
            self.figures.push(f);
        }
        self.notes.push(format!(
            "stop: a gRPC call into the idle plugin (InspectTask of an unknown id after a {settle} \
             ms pause, once per round) takes {call:.3} ms p50; it is part of every StopTask and \
             of no bare kill and wait; the bare kill and wait plus that call: {floor:.2} ms p50, \
             StopTask {ratio:.2}× that",
            settle = SETTLE.as_millis(),
            floor = stop_bare + call,
            ratio = stop_plugin / (stop_bare + call),
        ));
        self.notes.push(format!(
            "latency: {n} sequential rounds (after {warmup} warm-up), task `/bin/sleep infinity` \
             with Nomad's alloc dirs (tmpfs secrets/ and private/), FIFOs and 256 MB / 100 MHz; \
             each round starts the same task three ways, in each of the six orders in turn, \
             each start after a {settle} ms pause, and stops each before the next round \
             (nothing else running); StopTask signal {STOP_SIGNAL}, DestroyTask \
             untimed, like the bare unit's teardown",
            settle = SETTLE.as_millis(),
        ));
        let med = |v: &[Duration]| ms(percentile(v, 50));
        self.notes.push(format!(
            "D-Bus reads on this systemd, bare client, median of {}: GetUnit {:.2} ms, \
             GetAll(Unit) {:.2} ms, GetAll(Service) {:.2} ms, one Get(ActiveState) {:.2} ms",
            reads[0].len(),
            med(&reads[0]),
            med(&reads[1]),
            med(&reads[2]),
            med(&reads[3])
        ));
        self.notes.push(format!(
            "plugin D-Bus calls to systemd per StartTask + StopTask + DestroyTask (sequential): \
             {per_round}"
        ));
        Ok(())
    }

    /// The three starts of round `i`, each after a pause of [`SETTLE`], in the `i % 6`-th of
    /// the six orders: over six rounds each start follows each of the others (and the round's
    /// beginning) equally often. A rotation (`(i + k) % 3`) would give each start the same
    /// predecessor every round — the bare same-unit start would always follow the StartTask,
    /// and the minimal unit the bare sandboxed start — and a start is slower while systemd is
    /// still busy with the one before.
    pub(crate) async fn three_starts(&self, trio: &Trio, i: usize) -> R<(Starts, TaskHandle)> {
        const ORDERS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut d = [Duration::ZERO; 3];
        let mut handle = None;
        for k in ORDERS[i % ORDERS.len()] {
            tokio::time::sleep(SETTLE).await;
            match k {
                0 => {
                    let (h, t) = timed(start_task(self.client(), trio.plugin.config.clone()))
                        .await
                        .map_err(|e| self.with_log(e))?;
                    handle = Some(h);
                    d[0] = t;
                }
                1 => d[1] = timed(self.bare.start_planned(&trio.same.plan)).await?.1,
                _ => {
                    let props = minimal_properties(&trio.minimal.plan);
                    d[2] = timed(self.bare.start_transient(&trio.minimal.plan.unit, &props))
                        .await?
                        .1;
                }
            }
        }
        Ok((d, handle.ok_or("no StartTask handle")?))
    }

    /// What a gRPC call costs that finds the plugin idle, as StopTask does (the round's starts
    /// ended some tens of ms before): after a pause, and the same GetUnit that precedes each
    /// StopTask, one InspectTask of an unknown id (an answer without D-Bus or a task).
    async fn idle_call(&self) -> R<Duration> {
        tokio::time::sleep(SETTLE).await;
        self.bare.unit_path("dbus.service").await?;
        let t = Instant::now();
        match task_state(self.client(), "no-such-task".into()).await {
            Err(e) if e.contains("NotFound") => Ok(t.elapsed()),
            other => Err(format!("InspectTask of an unknown id: {other:?}")),
        }
    }

    /// StopTask (then an untimed DestroyTask) beside the bare equivalent of what StopTask does
    /// before it returns: KillUnit(main) and the wait for the exit (then an untimed cleanup),
    /// each after a pause of [`SETTLE`]. The minimal unit is stopped untimed.
    pub(crate) async fn stop_pair(
        &self,
        handle: &TaskHandle,
        trio: &Trio,
        i: usize,
    ) -> R<(Duration, Duration)> {
        let unit = &trio.same.plan.unit;
        let path = self.bare.unit_path(unit).await?;
        let plugin = timed(stop_task(self.client(), task_id(handle)));
        let base = async {
            timed(self.bare.kill_and_wait(unit, &path, STOP_SIGNO))
                .await
                .map_err(|e| {
                    format!(
                        "{e}\n{}",
                        self.s
                            .sd
                            .exec(&["systemctl", "status", "--no-pager", "-l", unit])
                    )
                })
        };
        // each stop after the same pause as the idle call; which goes first alternates every
        // six rounds, so that each of the six start orders meets both stop orders
        let (((), p), ((), q)) = if (i / 6).is_multiple_of(2) {
            tokio::time::sleep(SETTLE).await;
            let a = plugin.await.map_err(|e| self.with_log(e))?;
            tokio::time::sleep(SETTLE).await;
            (a, base.await?)
        } else {
            tokio::time::sleep(SETTLE).await;
            let q = base.await?;
            tokio::time::sleep(SETTLE).await;
            (plugin.await.map_err(|e| self.with_log(e))?, q)
        };
        destroy_task(self.client(), task_id(handle)).await?;
        // the teardown, untimed on both sides: the unit remains after its exit
        self.bare.stop_unit(unit).await?;
        self.bare.reset_failed(unit).await;
        self.bare.stop_unit(&trio.minimal.plan.unit).await?;
        self.bare.reset_failed(&trio.minimal.plan.unit).await;
        Ok((p, q))
    }
}
