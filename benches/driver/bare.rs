//! The bare baseline client: a minimal zbus client doing only the systemd work each figure
//! needs, and a `busctl monitor` call counter.

use crate::*;

/// A minimal systemd client on its own connection: only what the baselines need, and an
/// independent count of systemd's `Reloading(true)` signals.
pub(crate) struct Bare {
    pub(crate) conn: zbus::Connection,
    /// The private systemd's `/run` as this process reaches it (for environment files).
    pub(crate) run_dir: PathBuf,
    pub(crate) jobs: Arc<Mutex<Jobs>>,
    pub(crate) reloads: Arc<AtomicU64>,
    pub(crate) dispatcher: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub(crate) struct Jobs {
    pub(crate) waiting: HashMap<String, oneshot::Sender<String>>,
    pub(crate) done: HashMap<String, String>,
    /// Unit object paths whose next `ActiveState` of inactive or failed someone awaits.
    pub(crate) exits: HashMap<String, oneshot::Sender<()>>,
}

pub(crate) fn zerr(e: impl std::fmt::Display) -> String {
    format!("bare D-Bus client: {e}")
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Bare {
    pub(crate) async fn connect(address: &str, run_dir: PathBuf) -> R<Self> {
        let conn = zbus::connection::Builder::address(address)
            .map_err(zerr)?
            .build()
            .await
            .map_err(zerr)?;
        let rule = |member: &'static str| {
            zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface(MANAGER)
                .and_then(|b| b.member(member))
                .map(|b| b.build())
                .map_err(zerr)
        };
        let jobs_stream =
            zbus::MessageStream::for_match_rule(rule("JobRemoved")?, &conn, Some(1 << 16))
                .await
                .map_err(zerr)?;
        let reload_stream = zbus::MessageStream::for_match_rule(rule("Reloading")?, &conn, None)
            .await
            .map_err(zerr)?;
        // a transient unit that exits cleanly is unloaded at once: systemd then sends
        // UnitRemoved instead of a last PropertiesChanged
        let removed_stream =
            zbus::MessageStream::for_match_rule(rule("UnitRemoved")?, &conn, Some(1 << 16))
                .await
                .map_err(zerr)?;
        let changes = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(PROPS)
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path_namespace("/org/freedesktop/systemd1/unit"))
            .map(|b| b.build())
            .map_err(zerr)?;
        let change_stream = zbus::MessageStream::for_match_rule(changes, &conn, Some(1 << 16))
            .await
            .map_err(zerr)?;
        conn.call_method(Some(DEST), PATH, Some(MANAGER), "Subscribe", &())
            .await
            .map_err(zerr)?;
        let jobs = Arc::new(Mutex::new(Jobs::default()));
        let reloads = Arc::new(AtomicU64::new(0));
        let dispatcher = tokio::spawn(dispatch(
            futures::stream::select(
                futures::stream::select(jobs_stream, reload_stream),
                futures::stream::select(change_stream, removed_stream),
            ),
            Arc::clone(&jobs),
            Arc::clone(&reloads),
        ));
        Ok(Self {
            conn,
            run_dir,
            jobs,
            reloads,
            dispatcher,
        })
    }

    /// `Reloading(true)` signals seen so far.
    pub(crate) fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::SeqCst)
    }

    pub(crate) async fn call<B>(&self, method: &str, body: &B) -> R<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(Some(DEST), PATH, Some(MANAGER), method, body)
            .await
            .map_err(|e| format!("bare {method}: {e}"))
    }

    /// Calls a job-returning method and waits for the job's result.
    pub(crate) async fn job<B>(&self, method: &str, body: &B) -> R<String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let reply = self.call(method, body).await?;
        let job: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        let rx = {
            let mut jobs = lock(&self.jobs);
            if let Some(result) = jobs.done.remove(job.as_str()) {
                return Ok(result);
            }
            let (tx, rx) = oneshot::channel();
            jobs.waiting.insert(job.as_str().to_string(), tx);
            rx
        };
        match tokio::time::timeout(RPC_TIMEOUT, rx).await {
            Ok(Ok(result)) => Ok(result),
            _ => Err(format!("bare {method}: no JobRemoved for {}", job.as_str())),
        }
    }

    /// What the driver does for a transient start: the task's root-only environment file,
    /// then `StartTransientUnit` with the planned properties (which name that file).
    pub(crate) async fn start_planned(&self, plan: &UnitPlan) -> R<()> {
        self.write_env_file(plan)?;
        self.start_transient(&plan.unit, &plan.properties).await
    }

    /// The task's root-only environment file, where the driver writes it.
    pub(crate) fn write_env_file(&self, plan: &UnitPlan) -> R<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.run_dir.join(
            nomad_driver_systemd::vocab::env_file_path(&plan.unit).trim_start_matches("/run/"),
        );
        let dir = path.parent().unwrap_or(&path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("bare env dir: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("bare env file: {e}"))?;
        std::io::Write::write_all(&mut f, plan.env_file.as_bytes())
            .map_err(|e| format!("bare env file: {e}"))
    }

    pub(crate) async fn start_transient(&self, unit: &str, props: &[(String, DValue)]) -> R<()> {
        let props = props
            .iter()
            .map(|(k, v)| Ok((k.as_str(), to_value(v)?)))
            .collect::<R<Vec<_>>>()?;
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let result = self
            .job("StartTransientUnit", &(unit, "fail", props, aux))
            .await?;
        done(unit, "StartTransientUnit", &result)
    }

    pub(crate) async fn start_unit(&self, unit: &str) -> R<()> {
        let result = self.job("StartUnit", &(unit, "fail")).await?;
        done(unit, "StartUnit", &result)
    }

    pub(crate) async fn stop_unit(&self, unit: &str) -> R<()> {
        let result = self.job("StopUnit", &(unit, "replace")).await?;
        done(unit, "StopUnit", &result)
    }

    /// What the driver's StopTask does before it returns: `KillUnit(main, signal)`, then wait
    /// for systemd to report the main process gone (a `PropertiesChanged` signal with the
    /// sub-state `exited`, `dead` or `failed`) or the unit unloaded (`UnitRemoved`); no
    /// polling. The unit's teardown, which the driver leaves to DestroyTask, is not included.
    pub(crate) async fn kill_and_wait(&self, unit: &str, path: &str, signal: i32) -> R<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.jobs).exits.insert(path.to_string(), tx);
        self.call("KillUnit", &(unit, "main", signal)).await?;
        match tokio::time::timeout(RPC_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                lock(&self.jobs).exits.remove(path);
                let state = self
                    .property(path, "org.freedesktop.systemd1.Unit", "ActiveState")
                    .await
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_else(|e| e);
                Err(format!(
                    "bare KillUnit {unit}: no exit seen (ActiveState now {state})"
                ))
            }
        }
    }

    /// A unit's object path (`GetUnit`).
    pub(crate) async fn unit_path(&self, unit: &str) -> R<String> {
        let reply = self.call("GetUnit", &(unit,)).await?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        Ok(path.as_str().to_string())
    }

    /// The batched status read a recovery needs at the floor: one `ListUnitsByNames` for every
    /// unit, then each unit's invocation id from the symlink systemd keeps under
    /// `/run/systemd/units/`. Returns how many units are active with an invocation id.
    pub(crate) async fn batched_status(&self, units: &[String]) -> R<usize> {
        type Row = (
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        );
        let reply = self.call("ListUnitsByNames", &(units,)).await?;
        let rows: Vec<Row> = reply.body().deserialize().map_err(zerr)?;
        let dir = self.run_dir.join("systemd/units");
        let mut active = 0;
        for r in &rows {
            let invocation = std::fs::read_link(dir.join(format!("invocation:{}", r.0)));
            if r.3 == "active" && invocation.is_ok_and(|l| !l.as_os_str().is_empty()) {
                active += 1;
            }
        }
        Ok(active)
    }

    pub(crate) async fn reset_failed(&self, unit: &str) {
        // not failed / already unloaded are both fine
        let _ = self.call("ResetFailedUnit", &(unit,)).await;
    }

    pub(crate) async fn reload(&self) -> R<()> {
        self.call("Reload", &()).await.map(drop)
    }

    /// The reads the driver makes of a unit's status (GetUnit, GetAll of the Unit and of the
    /// Service interface), each timed.
    pub(crate) async fn status_reads(&self, unit: &str) -> R<[Duration; 4]> {
        let t = Instant::now();
        let reply = self.call("GetUnit", &(unit,)).await?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        let get_unit = t.elapsed();
        let t = Instant::now();
        self.get_all(path.as_str(), "org.freedesktop.systemd1.Unit")
            .await?;
        let unit_props = t.elapsed();
        let t = Instant::now();
        self.get_all(path.as_str(), "org.freedesktop.systemd1.Service")
            .await?;
        let service_props = t.elapsed();
        let t = Instant::now();
        self.property(
            path.as_str(),
            "org.freedesktop.systemd1.Unit",
            "ActiveState",
        )
        .await?;
        Ok([get_unit, unit_props, service_props, t.elapsed()])
    }

    pub(crate) async fn get_all(&self, path: &str, iface: &str) -> R<()> {
        let reply = self
            .conn
            .call_method(Some(DEST), path, Some(PROPS), "GetAll", &(iface,))
            .await
            .map_err(zerr)?;
        let props: HashMap<String, OwnedValue> = reply.body().deserialize().map_err(zerr)?;
        if props.is_empty() {
            return Err(format!("bare GetAll {path} {iface}: no properties"));
        }
        Ok(())
    }

    pub(crate) async fn property(&self, path: &str, iface: &str, name: &str) -> R<OwnedValue> {
        let reply = self
            .conn
            .call_method(Some(DEST), path, Some(PROPS), "Get", &(iface, name))
            .await
            .map_err(zerr)?;
        reply.body().deserialize().map_err(zerr)
    }

    pub(crate) async fn version(&self) -> R<String> {
        let v = self.property(PATH, MANAGER, "Version").await?;
        String::try_from(v).map_err(zerr)
    }

    pub(crate) async fn control_group(&self, unit: &str) -> R<String> {
        let reply = self.call("GetUnit", &(unit,)).await?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(zerr)?;
        let v = self
            .property(
                path.as_str(),
                "org.freedesktop.systemd1.Service",
                "ControlGroup",
            )
            .await?;
        String::try_from(v).map_err(zerr)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

pub(crate) fn done(unit: &str, method: &str, result: &str) -> R<()> {
    if result == "done" {
        Ok(())
    } else {
        Err(format!("bare {method} {unit}: job result {result}"))
    }
}

pub(crate) async fn dispatch(
    mut signals: impl futures::Stream<Item = zbus::Result<zbus::Message>> + Unpin,
    jobs: Arc<Mutex<Jobs>>,
    reloads: Arc<AtomicU64>,
) {
    while let Some(msg) = signals.next().await {
        let Ok(msg) = msg else { continue };
        let member = msg.header().member().map(|m| m.as_str().to_string());
        match member.as_deref() {
            Some("JobRemoved") => {
                let Ok((_, job, _, result)) = msg
                    .body()
                    .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                let mut jobs = lock(&jobs);
                match jobs.waiting.remove(job.as_str()) {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => {
                        // the plugin's jobs land here too; keep the table bounded
                        if jobs.done.len() > 100_000 {
                            jobs.done.clear();
                        }
                        jobs.done.insert(job.as_str().to_string(), result);
                    }
                }
            }
            Some("UnitRemoved") => {
                let Ok((_, path)) = msg.body().deserialize::<(String, OwnedObjectPath)>() else {
                    continue;
                };
                if let Some(tx) = lock(&jobs).exits.remove(path.as_str()) {
                    let _ = tx.send(());
                }
            }
            Some("PropertiesChanged") => {
                let Some(path) = msg.header().path().map(|p| p.as_str().to_string()) else {
                    continue;
                };
                let Ok((iface, changed, _)) =
                    msg.body()
                        .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
                else {
                    continue;
                };
                // the driver's units RemainAfterExit: the main process's exit shows as the
                // sub-state `exited` (or `dead`/`failed`), the unit staying active
                let state = |k: &str| {
                    changed
                        .get(k)
                        .and_then(|v| <&str>::try_from(v).ok())
                        .map(str::to_string)
                };
                let exited = iface == "org.freedesktop.systemd1.Unit"
                    && (matches!(state("ActiveState").as_deref(), Some("inactive" | "failed"))
                        || matches!(
                            state("SubState").as_deref(),
                            Some("exited" | "dead" | "failed")
                        ));
                if exited && let Some(tx) = lock(&jobs).exits.remove(&path) {
                    let _ = tx.send(());
                }
            }
            Some("Reloading") if msg.body().deserialize::<bool>().unwrap_or(false) => {
                reloads.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// The planner's D-Bus value → zvariant, for the bare `StartTransientUnit` (the driver's own
/// conversion, so both sides send identical values).
pub(crate) fn to_value(v: &DValue) -> R<Value<'static>> {
    nomad_driver_systemd::systemd::dbus::to_value(v).map_err(zerr)
}

/// Counts method calls to systemd by member with `busctl monitor` (a child process,
/// independent of both clients), from every sender but `exclude`.
pub(crate) struct CallCounter {
    child: std::process::Child,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    pub(crate) async fn start(address: &str, exclude: String) -> R<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("busctl")
            .arg(format!("--address={address}"))
            .args(["monitor", "--json=short"])
            .arg(format!("--match=type='method_call',destination='{DEST}'"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("busctl monitor: {e}"))?;
        let out = child.stdout.take().ok_or("busctl monitor: no stdout")?;
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = Arc::clone(&counts);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Json>(&line) else {
                    continue;
                };
                if v["sender"].as_str() == Some(exclude.as_str()) {
                    continue;
                }
                let member = v["member"].as_str().unwrap_or("?").to_string();
                *lock(&sink).entry(member).or_insert(0) += 1;
            }
        });
        // let the monitor register before anything is counted
        tokio::time::sleep(Duration::from_millis(500)).await;
        lock(&counts).clear();
        Ok(Self { child, counts })
    }

    /// Calls since the last take, per `per` operations, e.g. `GetAll 2.0, GetUnit 1.0`.
    pub(crate) async fn take(&self, per: usize) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counts = std::mem::take(&mut *lock(&self.counts));
        let per = per.max(1) as f64;
        let parts: Vec<String> = counts
            .iter()
            .map(|(m, n)| match *n as f64 / per {
                r if r >= 0.05 => format!("{m} {r:.1}"),
                _ => format!("{m} ({n} in all)"),
            })
            .collect();
        if parts.is_empty() {
            "none seen".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Drop for CallCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
