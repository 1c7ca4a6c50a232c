//! Where a start's time goes: the minimal unit (`ExecStart` only) plus one group of the
//! planner's real properties at a time, and the full plan minus one group, each its own row.
//!
//! Every row is built from the property list the driver's planner makes for the bench task
//! (so a change to the planner shows up here without touching the bench): the minimal unit
//! is the planned `ExecStart` alone, and a row is either that **plus** one group of the
//! planned properties, or the full plan **minus** one group (beside the full plan): the costs
//! of settings sharing one mount namespace do not add up, so both views are shown. Settings
//! that each create or change a mount namespace get a row each; the other groups are named
//! below. A "plus" row carries the planned `Type=exec` too and stands beside the minimal unit
//! with `Type=exec`: without it the start job ends at `fork()`, before systemd's child builds
//! the namespace, and the row would time only what PID 1 does for the group before the fork
//! (the cgroup, `PrivateTmp`'s directories, reading the environment file). The `Type=exec` row
//! itself stands beside the minimal unit. Every start waits [`SETTLE`] first.

use std::collections::BTreeMap;

use super::latency::SETTLE;
use crate::*;

/// The row a planned property belongs to.
fn group_of(name: &str) -> String {
    let own_row = [
        "PrivateTmp",
        "ProtectSystem",
        "ProtectHome",
        "PrivateDevices",
        "InaccessiblePaths",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "ExecPaths",
        "NoExecPaths",
        "TemporaryFileSystem",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "PrivateMounts",
        "MountAPIVFS",
        "RootDirectory",
        "MountFlags",
        "PrivateNetwork",
        "PrivateIPC",
        "PrivateUsers",
        "ProtectHostname",
    ];
    let group = match name {
        "BindPaths" => "binds (BindPaths)",
        // the bench task mounts no volumes: this is the alloc root's cover alone
        "BindReadOnlyPaths" => "alloc root hidden (BindReadOnlyPaths)",
        n if own_row.contains(&n) => n,
        "DynamicUser" | "User" | "Group" | "SupplementaryGroups" => "DynamicUser / User",
        n if n.starts_with("StandardOutput")
            || n.starts_with("StandardError")
            || n.starts_with("StandardInput") =>
        {
            "FIFO logs (StandardOutput/StandardError=file:)"
        }
        n if n.starts_with("CPU")
            || n.starts_with("Memory")
            || n.starts_with("Tasks")
            || n.starts_with("IO")
            || n.starts_with("Allowed")
            || n.starts_with("Startup")
            || n.ends_with("Accounting") =>
        {
            "resources (CPU, memory, tasks)"
        }
        "Type" => "Type=exec",
        "Environment" | "EnvironmentFiles" | "UnsetEnvironment" => "environment file",
        _ => "other settings (no namespace)",
    };
    group.to_string()
}

impl Bench {
    pub(crate) async fn decompose(&mut self) -> R<()> {
        let k = self.counts.decompose;
        let probe = bare_tasks(1, &self.cfg, |_| sleeper())?;
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, _) in &probe[0].plan.properties {
            if name != "ExecStart" {
                groups.entry(group_of(name)).or_default().push(name.clone());
            }
        }
        drop(probe);
        // (label, the group's property names, whether the row adds them to the minimal unit
        // or removes them from the full plan); row 0 is the minimal unit, row 1 the full plan
        let mut rows: Vec<(String, Vec<String>, bool)> = vec![
            ("minimal".into(), vec![], true),
            ("full plan".into(), vec![], false),
        ];
        rows.extend(
            groups
                .iter()
                .map(|(g, names)| (g.clone(), names.clone(), true)),
        );
        rows.extend(
            groups
                .iter()
                .map(|(g, names)| (g.clone(), names.clone(), false)),
        );
        eprintln!(
            "decompose: {k} sequential starts for each of {} rows (minimal unit + one property group, full plan − one)",
            rows.len()
        );
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        for i in 0..k + 1 {
            // rows interleaved, so that a slow patch of the machine spreads over all of them,
            // in a new order each pass and each start after a pause: a start right after a
            // sandboxed unit's stop is slower (systemd is still tearing that unit down), and in
            // a fixed order the rows that follow the heaviest paid for it every time
            shuffle(&mut order, i as u64);
            for &r in &order {
                let (_, names, add) = &rows[r];
                if failed.contains_key(&r) {
                    continue;
                }
                let task = bare_tasks(1, &self.cfg, |_| sleeper())?;
                let plan = &task[0].plan;
                let props: Vec<(String, DValue)> = plan
                    .properties
                    .iter()
                    .filter(|(n, _)| {
                        if *add {
                            n == "ExecStart" || names.contains(n) || (r > 0 && n == "Type")
                        } else {
                            !names.contains(n)
                        }
                    })
                    .cloned()
                    .collect();
                self.bare.write_env_file(plan)?;
                tokio::time::sleep(SETTLE).await;
                match timed(self.bare.start_transient(&plan.unit, &props)).await {
                    Ok(((), t)) => {
                        if i > 0 {
                            samples[r].push(t);
                        }
                    }
                    Err(e) => {
                        failed.insert(r, e);
                    }
                }
                let _ = self.bare.stop_unit(&plan.unit).await;
                self.bare.reset_failed(&plan.unit).await;
            }
        }
        self.assert_clean("decompose").await?;
        let p50 = |r: usize| (!samples[r].is_empty()).then(|| ms(percentile(&samples[r], 50)));
        let (Some(minimal), Some(full)) = (p50(0), p50(1)) else {
            return Err(format!(
                "decompose: the minimal or the full planned unit does not start: {failed:?}"
            ));
        };
        let exec_row = rows
            .iter()
            .position(|(_, names, add)| *add && names.iter().any(|n| n == "Type"));
        let with_exec = exec_row.and_then(p50);
        for (r, (name, _, add)) in rows.iter().enumerate().skip(1) {
            let Some(m) = p50(r) else {
                let e = failed.get(&r).cloned().unwrap_or_default();
                let sign = if *add { "+" } else { "−" };
                self.notes.push(format!(
                    "decompose: row `{sign} {name}` could not start: {e}"
                ));
                continue;
            };
            let f = match (r, add) {
                (1, _) => Figure::new("decompose: bare full planned unit p50", "ms", m)
                    .baseline("bare: ExecStart only p50", minimal),
                (_, true) if Some(r) == exec_row => {
                    Figure::new(format!("decompose: bare ExecStart + {name} p50"), "ms", m)
                        .baseline("bare: ExecStart only p50", minimal)
                }
                (_, true) => {
                    let Some(base) = with_exec else {
                        self.notes.push(format!(
                            "decompose: row `+ {name}` has no baseline: the minimal unit with \
                             Type=exec did not start or the plan has no Type"
                        ));
                        continue;
                    };
                    Figure::new(
                        format!("decompose: bare ExecStart + Type=exec + {name} p50"),
                        "ms",
                        m,
                    )
                    .baseline("bare: ExecStart + Type=exec p50", base)
                }
                (_, false) => {
                    Figure::new(format!("decompose: bare full plan − {name} p50"), "ms", m)
                        .baseline("bare: full planned unit p50", full)
                }
            };
            self.figures.push(f);
        }
        let listed: Vec<String> = groups
            .iter()
            .map(|(g, n)| format!("{g} = {}", n.join(" ")))
            .collect();
        self.notes.push(format!(
            "decompose: each row is the planner's ExecStart plus one group of its other planned \
             properties (with its Type=exec, so that the start is timed to the exec), or its \
             full plan minus one group ({k} sequential starts per row, rows \
             interleaved in a new random order each pass, each start after a {settle} ms \
             pause, nothing else running, environment file written before the timer); \
             groups: {}",
            listed.join("; "),
            settle = SETTLE.as_millis(),
        ));
        Ok(())
    }
}

/// A seeded Fisher–Yates shuffle (xorshift64*): the same passes in every run, each pass in its
/// own order.
fn shuffle(v: &mut [usize], pass: u64) {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ pass.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for i in (1..v.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let j =
            usize::try_from(x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}
