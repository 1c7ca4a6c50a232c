//! The real systemd client: one long-lived system-bus connection, one dispatcher task that
//! routes `PropertiesChanged` to per-unit watchers and `JobRemoved` to job waiters, and
//! reconnects when the bus goes away.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use zbus::zvariant::{Array, OwnedObjectPath, OwnedValue, Signature, StructureBuilder, Value};
use zbus::{Connection, MatchRule, MessageStream, message};

use super::{
    DROPIN_FILE, KillWho, Result, Systemd, SystemdError, UnitInfo, UnitState, UnitStatus,
    unit_object_path,
};
use crate::vocab::DValue;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
const PROPS_IFACE: &str = "org.freedesktop.DBus.Properties";
/// Finished jobs nobody waits for yet are kept this long (their waiter may be just behind).
const DONE_JOBS_KEPT: usize = 4096;
/// dbus-daemon refuses a call with `LimitsExceeded` once a connection has
/// `max_replies_per_connection` calls awaiting replies (128 on the system bus by default);
/// concurrent StartTasks and monitors share one connection, so calls wait their turn below it.
const MAX_PENDING_CALLS: usize = 64;
/// systemd follows the client of every job it queues with a bus match rule of its own (`sd_bus_track`
/// per job, `src/core/dbus-job.c` `bus_job_track_sender`), and dbus-daemon lets one connection
/// hold 512 (`max_match_rules_per_connection` on the system bus): past that it refuses
/// systemd's next rule and systemd drops off the bus, losing every subscriber and job signal.
/// A stop of 1,000 tasks at once queued that many jobs, so the driver keeps at most this many
/// of its jobs queued, leaving the rest of the budget to systemd and other clients.
const MAX_PENDING_JOBS: usize = 128;
/// No method call waits longer for its reply (dbus-daemon's own reply timeout may be longer or
/// disabled); a late reply is dropped by zbus.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A start job ends when the task's process has been spawned (`Type=exec`) or systemd's own
/// `TimeoutStartSec` fails it (which a job may set only up to the plugin's `start_timeout`),
/// so the wait has its own end: `start_timeout` (see [`DbusSystemd::set_start_timeout`]).
const START_JOB_TIMEOUT: Duration = crate::config::plugin::DEFAULT_START_TIMEOUT;
/// How long a read of a unit's state is repeated while systemd is unreachable: long enough
/// for a `daemon-reexec` (which drops the calls in flight with `NoReply`), short enough that a
/// bus that is really down is reported soon.
const READ_RETRY: Duration = Duration::from_secs(5);
/// Stop jobs run after the driver has SIGKILLed the unit's processes (only a unit's `ExecStop=`
/// or a process stuck in the kernel can make them slow); on this deadline every process of the
/// unit gets SIGKILL again and the caller gets a recoverable error to retry with.
const STOP_JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A systemd client on the system bus. Cheap to clone. Connects on first use, not before.
#[derive(Clone)]
pub struct DbusSystemd {
    inner: Arc<Inner>,
}

struct Inner {
    conn: tokio::sync::Mutex<Option<Connection>>,
    /// Per unit object path: the change counter its watchers wait on, and what its
    /// `PropertiesChanged` signals said.
    watchers: Mutex<HashMap<String, Watcher>>,
    jobs: Mutex<Jobs>,
    reload_lock: tokio::sync::Mutex<()>,
    reload_requested: AtomicU64,
    reload_done: AtomicU64,
    reloads: AtomicU64,
    /// The start job's deadline in ns (the plugin's `start_timeout`).
    start_timeout_ns: AtomicU64,
    runtime_dir: PathBuf,
    shutdown: CancellationToken,
    /// Permits for calls awaiting a reply (see [`MAX_PENDING_CALLS`]).
    calls: tokio::sync::Semaphore,
    /// Permits for jobs queued in systemd, from the call that queues one until its
    /// `JobRemoved` (see [`MAX_PENDING_JOBS`]).
    job_slots: tokio::sync::Semaphore,
    /// Units whose state callers wait for, served together by the next `ListUnitsByNames`.
    listing_queue: Mutex<Vec<(String, StateReply)>>,
    /// One `ListUnitsByNames` at a time; callers arriving meanwhile form the next batch.
    listing: tokio::sync::Mutex<()>,
}

/// Where a [`Systemd::unit_state`] caller waits for its answer.
type StateReply = oneshot::Sender<Result<Option<UnitState>>>;

/// One unit's watchers and the values its signals carried.
struct Watcher {
    tx: watch::Sender<u64>,
    seen: Seen,
}

/// The properties of one unit that `PropertiesChanged` reported, latest value each (`None`:
/// not signalled since the watch began or the bus reconnected, or invalidated).
#[derive(Default, Clone)]
struct Seen {
    load_state: Option<String>,
    active_state: Option<String>,
    sub_state: Option<String>,
    invocation_id: Option<String>,
    result: Option<String>,
    main_pid: Option<u32>,
    exec_main_code: Option<i32>,
    exec_main_status: Option<i32>,
    control_group: Option<String>,
    exec_main_start_usec: Option<u64>,
    exec_main_exit_usec: Option<u64>,
}

impl Seen {
    /// Takes in one signal's changed and invalidated properties of `iface`.
    fn merge(&mut self, iface: &str, changed: &Props, invalidated: &[String]) {
        fn set<T: TryFrom<OwnedValue>>(
            slot: &mut Option<T>,
            key: &str,
            changed: &Props,
            invalidated: &[String],
        ) {
            if let Some(v) = prop::<T>(changed, key) {
                *slot = Some(v);
            } else if invalidated.iter().any(|k| k == key) {
                *slot = None;
            }
        }
        if iface == UNIT_IFACE {
            set(&mut self.load_state, "LoadState", changed, invalidated);
            set(&mut self.active_state, "ActiveState", changed, invalidated);
            set(&mut self.sub_state, "SubState", changed, invalidated);
            if let Some(id) = prop::<Vec<u8>>(changed, "InvocationID") {
                self.invocation_id = Some(hex(&id));
            } else if invalidated.iter().any(|k| k == "InvocationID") {
                self.invocation_id = None;
            }
        } else if iface == SERVICE_IFACE {
            set(&mut self.result, "Result", changed, invalidated);
            set(&mut self.main_pid, "MainPID", changed, invalidated);
            set(
                &mut self.exec_main_code,
                "ExecMainCode",
                changed,
                invalidated,
            );
            set(
                &mut self.exec_main_status,
                "ExecMainStatus",
                changed,
                invalidated,
            );
            set(
                &mut self.control_group,
                "ControlGroup",
                changed,
                invalidated,
            );
            set(
                &mut self.exec_main_start_usec,
                "ExecMainStartTimestamp",
                changed,
                invalidated,
            );
            set(
                &mut self.exec_main_exit_usec,
                "ExecMainExitTimestamp",
                changed,
                invalidated,
            );
        }
    }

    /// A status when every field the driver judges a task by has been signalled.
    fn status(&self) -> Option<UnitStatus> {
        Some(UnitStatus {
            // systemd 252 does not signal LoadState; a unit that signals is loaded
            load_state: self
                .load_state
                .clone()
                .unwrap_or_else(|| "loaded".to_string()),
            active_state: self.active_state.clone()?,
            sub_state: self.sub_state.clone()?,
            result: self.result.clone()?,
            main_pid: self.main_pid?,
            exec_main_code: self.exec_main_code?,
            exec_main_status: self.exec_main_status?,
            invocation_id: self.invocation_id.clone()?,
            control_group: self.control_group.clone().unwrap_or_default(),
            exec_main_start_usec: self.exec_main_start_usec.unwrap_or_default(),
            exec_main_exit_usec: self.exec_main_exit_usec.unwrap_or_default(),
            memory_current: None,
            cpu_usage_nsec: None,
        })
    }
}

/// Whether a unit that had invocation `before` (empty: none) has been started since: it has
/// another invocation, or it is not inactive any more. What a `StartUnit` whose reply was lost
/// did, read back before the call is sent again.
fn started_since(st: &UnitStatus, before: &str) -> bool {
    (!st.invocation_id.is_empty() && st.invocation_id != before) || !st.is_dead()
}

/// Lowercase hex of a byte string (systemd's 128-bit ids).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Jobs {
    waiting: HashMap<String, oneshot::Sender<Result<String>>>,
    done: HashMap<String, String>,
    done_order: VecDeque<String>,
}

impl DbusSystemd {
    /// A client for the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured). Drop-ins go under
    /// `<runtime_dir>/system/` (normally `/run/systemd`).
    pub fn new(runtime_dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: tokio::sync::Mutex::new(None),
                watchers: Mutex::new(HashMap::new()),
                jobs: Mutex::new(Jobs::default()),
                reload_lock: tokio::sync::Mutex::new(()),
                reload_requested: AtomicU64::new(0),
                reload_done: AtomicU64::new(0),
                reloads: AtomicU64::new(0),
                start_timeout_ns: AtomicU64::new(nanos(START_JOB_TIMEOUT)),
                runtime_dir: runtime_dir.into(),
                shutdown: CancellationToken::new(),
                calls: tokio::sync::Semaphore::new(MAX_PENDING_CALLS),
                job_slots: tokio::sync::Semaphore::new(MAX_PENDING_JOBS),
                listing_queue: Mutex::new(Vec::new()),
                listing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_nanos(self.inner.start_timeout_ns.load(Ordering::Relaxed))
    }

    /// Stops the dispatcher task.
    pub fn close(&self) {
        self.inner.shutdown.cancel();
    }

    async fn conn(&self) -> Result<Connection> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let (conn, streams) = connect().await?;
        *guard = Some(conn.clone());
        drop(guard);
        let this = self.clone();
        tokio::spawn(async move { this.dispatch(streams).await });
        Ok(conn)
    }

    /// Routes signals until the connection ends, then reconnects and wakes every watcher.
    async fn dispatch(self, mut streams: Streams) {
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                msg = streams.next() => match msg {
                    Some(Ok(msg)) => self.route(&msg),
                    Some(Err(e)) => tracing::debug!(error = %e, "bad message on the bus"),
                    None => {
                        tracing::warn!("system bus connection lost; reconnecting");
                        *self.inner.conn.lock().await = None;
                        self.fail_waiters("the bus connection was lost while waiting for a job");
                        streams = match self.reconnect().await {
                            Some(s) => s,
                            None => return,
                        };
                        self.wake_all();
                    }
                }
            }
        }
    }

    async fn reconnect(&self) -> Option<Streams> {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            match connect().await {
                Ok((conn, streams)) => {
                    *self.inner.conn.lock().await = Some(conn);
                    tracing::info!("system bus connection restored");
                    return Some(streams);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn route(&self, msg: &zbus::Message) {
        let header = msg.header();
        let member = header.member().map(|m| m.as_str().to_owned());
        match member.as_deref() {
            Some("JobRemoved") => {
                if let Ok((_id, job, _unit, result)) =
                    msg.body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                {
                    self.job_finished(job.as_str(), result);
                }
            }
            Some("NameOwnerChanged") => {
                if let Ok((name, _old, new)) = msg.body().deserialize::<(String, String, String)>()
                    && name == DEST
                    && !new.is_empty()
                {
                    let this = self.clone();
                    tokio::spawn(async move { this.systemd_rejoined().await });
                }
            }
            Some("PropertiesChanged") => {
                if let Some(path) = header.path() {
                    let mut watchers = lock(&self.inner.watchers);
                    if let Some(w) = watchers.get_mut(path.as_str()) {
                        if w.tx.receiver_count() == 0 {
                            watchers.remove(path.as_str());
                        } else {
                            // the values first, so a woken watcher finds them
                            if let Ok((iface, changed, invalidated)) =
                                msg.body().deserialize::<(String, Props, Vec<String>)>()
                            {
                                w.seen.merge(&iface, &changed, &invalidated);
                            }
                            w.tx.send_modify(|n| *n += 1);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// systemd came back on the bus under a new name (after dbus-daemon dropped it, or a
    /// re-execution): subscribe again, since a dropped systemd forgot its subscribers (a
    /// re-executed one kept them and answers `AlreadySubscribed`), and make every watcher read
    /// its unit, since signals were lost meanwhile. Job waiters are left alone: a re-executed
    /// systemd still signals their jobs' ends, and after a drop a lost `JobRemoved` ends the
    /// wait at its deadline, a recoverable error.
    async fn systemd_rejoined(&self) {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        match self
            .call_retrying(deadline, PATH, MANAGER, "Subscribe", &())
            .await
        {
            Ok(_) => tracing::info!("systemd rejoined the bus; subscribed again"),
            Err(SystemdError::Refused(m)) if m.contains("AlreadySubscribed") => {
                tracing::debug!("systemd rejoined the bus and kept our subscription");
            }
            Err(e) => {
                tracing::warn!(error = %e, "systemd rejoined the bus; subscribing again failed")
            }
        }
        self.wake_all();
    }

    fn job_finished(&self, job: &str, result: String) {
        let mut jobs = lock(&self.inner.jobs);
        if let Some(tx) = jobs.waiting.remove(job) {
            let _ = tx.send(Ok(result));
            return;
        }
        jobs.done.insert(job.to_string(), result);
        jobs.done_order.push_back(job.to_string());
        while jobs.done_order.len() > DONE_JOBS_KEPT {
            if let Some(old) = jobs.done_order.pop_front() {
                jobs.done.remove(&old);
            }
        }
    }

    fn fail_waiters(&self, why: &str) {
        let mut jobs = lock(&self.inner.jobs);
        for (_, tx) in jobs.waiting.drain() {
            let _ = tx.send(Err(SystemdError::Unreachable(why.to_string())));
        }
    }

    fn wake_all(&self) {
        let mut watchers = lock(&self.inner.watchers);
        watchers.retain(|_, w| w.tx.receiver_count() > 0);
        for w in watchers.values_mut() {
            // signals may have been missed while the bus was away
            w.seen = Seen::default();
            w.tx.send_modify(|n| *n += 1);
        }
    }

    /// Waits for a job's `JobRemoved` (the signal may have arrived before we ask), at most
    /// `within`; a waiter that gives up leaves no entry behind.
    async fn wait_job(&self, job: &OwnedObjectPath, within: Duration) -> Result<String> {
        let rx = {
            let mut jobs = lock(&self.inner.jobs);
            if let Some(result) = jobs.done.remove(job.as_str()) {
                return Ok(result);
            }
            let (tx, rx) = oneshot::channel();
            jobs.waiting.insert(job.as_str().to_string(), tx);
            rx
        };
        // removes our entry however this future ends (deadline, or the caller dropping it)
        struct Unregister<'a>(&'a Mutex<Jobs>, &'a str);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                lock(self.0).waiting.remove(self.1);
            }
        }
        let _unregister = Unregister(&self.inner.jobs, job.as_str());
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SystemdError::Unreachable("job waiter dropped".into())),
            Err(_) => Err(SystemdError::Timeout(format!(
                "job {} did not finish within {}s",
                job.as_str(),
                within.as_secs_f64()
            ))),
        }
    }

    /// A method call to systemd, at most [`MAX_PENDING_CALLS`] in flight at once.
    async fn call<B>(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let conn = self.conn().await?;
        // never closed, so acquiring cannot fail; the permit is held until the reply
        let _permit = self.inner.calls.acquire().await;
        match tokio::time::timeout(
            CALL_TIMEOUT,
            conn.call_method(Some(DEST), path, Some(iface), method, body),
        )
        .await
        {
            Ok(reply) => reply.map_err(map_err).inspect_err(|e| {
                if e.is_transient() {
                    tracing::debug!(method, path, error = %e, "call failed");
                }
            }),
            Err(_) => Err(SystemdError::Timeout(format!(
                "{method} got no reply within {}s",
                CALL_TIMEOUT.as_secs()
            ))),
        }
    }

    /// A transient start call, repeated while systemd cannot be reached (a `daemon-reexec`
    /// drops the calls in flight with `NoReply`; a restarting bus refuses them), until
    /// `deadline`. Safe to repeat: a transient unit the lost call did create answers
    /// `UnitExists` (the driver adopts it, its name being the task's). An installed unit's
    /// `StartUnit` is not repeated blindly (see `start_unit`).
    async fn call_until<B>(
        &self,
        deadline: tokio::time::Instant,
        method: &str,
        body: &B,
    ) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.call_retrying(deadline, PATH, MANAGER, method, body)
            .await
    }

    /// [`DbusSystemd::call`], repeated while systemd cannot be reached, until `deadline`.
    async fn call_retrying<B>(
        &self,
        deadline: tokio::time::Instant,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.call(path, iface, method, body).await {
                Err(SystemdError::Unreachable(why))
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(method, why, "systemd unreachable; calling again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                r => return r,
            }
        }
    }

    /// [`Systemd::status`], read again while systemd cannot be reached, until `deadline`.
    async fn status_until(
        &self,
        unit: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<UnitStatus>> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.status(unit).await {
                Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                r => return r,
            }
        }
    }

    /// A slot for one more queued job (see [`MAX_PENDING_JOBS`]), waited for until `deadline`;
    /// held by the caller until its job's wait ends.
    async fn job_slot(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout_at(deadline, self.inner.job_slots.acquire()).await {
            // never closed
            Ok(permit) => permit.map_err(|e| SystemdError::Unreachable(e.to_string())),
            Err(_) => Err(SystemdError::Timeout(format!(
                "{MAX_PENDING_JOBS} of the driver's jobs stayed queued in systemd"
            ))),
        }
    }

    /// What is left until `deadline` (at least a moment, so a late reply is still read).
    fn until(&self, deadline: tokio::time::Instant) -> Duration {
        deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(100))
    }

    async fn manager_call<B>(&self, method: &str, body: &B) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.call(PATH, MANAGER, method, body).await
    }

    async fn run_job(
        &self,
        unit: &str,
        method: &str,
        reply: zbus::Message,
        within: Duration,
    ) -> Result<()> {
        let job: OwnedObjectPath = reply.body().deserialize().map_err(map_err)?;
        let result = self.wait_job(&job, within).await?;
        tracing::debug!(unit, method, result, "job finished");
        if result == "done" {
            Ok(())
        } else {
            Err(SystemdError::JobFailed {
                unit: unit.to_string(),
                result,
            })
        }
    }

    async fn get_all(&self, path: &str, iface: &str) -> Result<HashMap<String, OwnedValue>> {
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let reply = self
            .call_retrying(deadline, path, PROPS_IFACE, "GetAll", &(iface,))
            .await?;
        reply.body().deserialize().map_err(map_err)
    }

    /// Serves every queued [`Systemd::unit_state`] request with one `ListUnitsByNames`.
    async fn list_queued(&self) {
        let batch = std::mem::take(&mut *lock(&self.inner.listing_queue));
        if batch.is_empty() {
            return; // an earlier holder of the lock served us
        }
        let names: Vec<&str> = batch.iter().map(|(n, _)| n.as_str()).collect();
        let listed = self.list_by_names(&names).await;
        for (name, tx) in batch {
            let _ = tx.send(match &listed {
                Ok(map) => Ok(map.get(&name).cloned()),
                Err(e) => Err(e.clone()),
            });
        }
    }

    /// `ListUnitsByNames`: the loaded ones of `names` (a unit whose file is not found is left
    /// out).
    async fn list_by_names(&self, names: &[&str]) -> Result<HashMap<String, UnitState>> {
        // a `daemon-reexec` during a recovery drops the call: read again for a moment
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let reply = self
            .call_retrying(deadline, PATH, MANAGER, "ListUnitsByNames", &(names,))
            .await?;
        let units: Vec<ListedUnit> = reply.body().deserialize().map_err(map_err)?;
        Ok(units
            .into_iter()
            .filter(|u| u.2 != "not-found")
            .map(|u| {
                (
                    u.0,
                    UnitState {
                        load_state: u.2,
                        active_state: u.3,
                        sub_state: u.4,
                    },
                )
            })
            .collect())
    }

    /// One property of a unit, read at the object path its name maps to (no `GetUnit` first:
    /// the path is systemd's escaping of the name). `None` when systemd has no such unit.
    async fn unit_prop(&self, unit: &str, iface: &str, name: &str) -> Result<Option<OwnedValue>> {
        let path = unit_object_path(unit);
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let got = self
            .call_retrying(deadline, &path, PROPS_IFACE, "Get", &(iface, name))
            .await;
        let reply = match got {
            Ok(reply) => reply,
            Err(SystemdError::NoSuchUnit(_)) => return Ok(None),
            // a unit with no such interface (not a service, or not loaded)
            Err(SystemdError::Refused(m))
                if m.contains("UnknownInterface") || m.contains("UnknownProperty") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        reply.body().deserialize().map(Some).map_err(map_err)
    }

    /// A loaded unit's `Unit` and `Service` properties; `None` when systemd has no such unit or
    /// its file is not found. Reads are repeated for a moment while systemd is unreachable (a
    /// `daemon-reexec` drops the calls in flight), see [`READ_RETRY`].
    async fn loaded_unit(&self, unit: &str) -> Result<Option<(Props, Props)>> {
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let got = self
            .call_retrying(deadline, PATH, MANAGER, "GetUnit", &(unit,))
            .await;
        let path: OwnedObjectPath = match got {
            Ok(reply) => reply.body().deserialize().map_err(map_err)?,
            Err(SystemdError::NoSuchUnit(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let u = self.get_all(path.as_str(), UNIT_IFACE).await?;
        if prop::<String>(&u, "LoadState").as_deref() == Some("not-found") {
            return Ok(None);
        }
        let s = self.get_all(path.as_str(), SERVICE_IFACE).await?;
        Ok(Some((u, s)))
    }

    /// Where this process reaches the unit's environment file: [`crate::vocab::env_file_path`]
    /// under the `/run` that holds `runtime_dir` (`/run/systemd`; a private systemd's
    /// `/proc/<pid>/root/run/systemd` when the plugin runs outside its namespace).
    fn env_file(&self, unit: &str) -> PathBuf {
        let path = crate::vocab::env_file_path(unit);
        let run = self.inner.runtime_dir.parent().unwrap_or(Path::new("/run"));
        run.join(path.trim_start_matches("/run/"))
    }

    /// The directory of [`Systemd::persist_removal`]'s records, beside the environment files.
    fn removals_dir(&self) -> PathBuf {
        let env_dir = crate::vocab::ENV_DIR;
        let run = self.inner.runtime_dir.parent().unwrap_or(Path::new("/run"));
        let base = run.join(env_dir.trim_start_matches("/run/"));
        base.with_file_name("removals")
    }

    /// A unit's record: named as its environment file is (injective), without `.env`.
    fn removal_record(&self, unit: &str) -> PathBuf {
        let env = crate::vocab::env_file_path(unit);
        let name = Path::new(&env)
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".env").to_string())
            .unwrap_or_default();
        self.removals_dir().join(name)
    }

    fn dropin_dir(&self, unit: &str) -> PathBuf {
        self.inner
            .runtime_dir
            .join("system")
            .join(format!("{unit}.d"))
    }
}

type Streams = futures::stream::SelectAll<MessageStream>;
/// One entry of `ListUnits*`: name, description, load, active and sub state, followed unit,
/// object path, job id, job type, job path.
type ListedUnit = (
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
/// One interface's properties, as `GetAll` returns them.
type Props = HashMap<String, OwnedValue>;

async fn connect() -> Result<(Connection, Streams)> {
    // not reaching the bus at all is always worth a retry, whatever zbus calls the failure
    let unreachable = |e: zbus::Error| SystemdError::Unreachable(e.to_string());
    let conn = zbus::connection::Builder::system()
        .map_err(unreachable)?
        .build()
        .await
        .map_err(unreachable)?;
    let props = MatchRule::builder()
        .msg_type(message::Type::Signal)
        .sender(DEST)
        .and_then(|b| b.interface(PROPS_IFACE))
        .and_then(|b| b.member("PropertiesChanged"))
        .and_then(|b| b.path_namespace("/org/freedesktop/systemd1/unit"))
        .map_err(map_err)?
        .build();
    let jobs = MatchRule::builder()
        .msg_type(message::Type::Signal)
        .sender(DEST)
        .and_then(|b| b.interface(MANAGER))
        .and_then(|b| b.member("JobRemoved"))
        .and_then(|b| b.path(PATH))
        .map_err(map_err)?
        .build();
    // systemd itself leaving and rejoining the bus (dbus-daemon dropped it): it forgets its
    // subscribers and the clients of its jobs, so the dispatcher subscribes again
    let owner = MatchRule::builder()
        .msg_type(message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .and_then(|b| b.interface("org.freedesktop.DBus"))
        .and_then(|b| b.member("NameOwnerChanged"))
        .and_then(|b| b.arg(0, DEST))
        .map_err(map_err)?
        .build();
    let props = MessageStream::for_match_rule(props, &conn, Some(4096))
        .await
        .map_err(map_err)?;
    let jobs = MessageStream::for_match_rule(jobs, &conn, Some(4096))
        .await
        .map_err(map_err)?;
    let owner = MessageStream::for_match_rule(owner, &conn, Some(64))
        .await
        .map_err(map_err)?;
    // Signals about units flow only to subscribers.
    conn.call_method(Some(DEST), PATH, Some(MANAGER), "Subscribe", &())
        .await
        .map_err(map_err)?;
    Ok((conn, futures::stream::select_all([props, jobs, owner])))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The unit named in systemd's `NoSuchUnit` messages (`Unit web@x.service not found.`,
/// `Unit web@x.service not loaded.`), so that errors say `unit web@x.service is not loaded`
/// rather than repeating systemd's sentence; any other message is kept whole.
fn unit_of_message(msg: &str) -> &str {
    msg.strip_prefix("Unit ")
        .and_then(|rest| {
            rest.strip_suffix(" not found.")
                .or_else(|| rest.strip_suffix(" not loaded."))
        })
        .unwrap_or(msg)
}

fn map_err(e: zbus::Error) -> SystemdError {
    match &e {
        zbus::Error::MethodError(name, msg, _) => {
            let msg = msg.clone().unwrap_or_default();
            match name.as_str() {
                "org.freedesktop.systemd1.NoSuchUnit" => {
                    SystemdError::NoSuchUnit(unit_of_message(&msg).to_string())
                }
                "org.freedesktop.systemd1.UnitExists" => SystemdError::UnitExists(msg),
                "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Timeout"
                | "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.Disconnected"
                | "org.freedesktop.DBus.Error.LimitsExceeded" => {
                    SystemdError::Unreachable(format!("{name}: {msg}"))
                }
                _ => SystemdError::Refused(format!("{msg} ({name})")),
            }
        }
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
            SystemdError::Unreachable(e.to_string())
        }
        _ => SystemdError::Refused(e.to_string()),
    }
}

/// Our D-Bus value → zvariant.
pub fn to_value(v: &DValue) -> Result<Value<'static>> {
    let sig_err = |e: zbus::zvariant::Error| SystemdError::Refused(format!("bad signature: {e}"));
    Ok(match v {
        DValue::Bool(b) => Value::from(*b),
        DValue::I32(i) => Value::from(*i),
        DValue::U32(u) => Value::from(*u),
        DValue::I64(i) => Value::from(*i),
        DValue::U64(u) => Value::from(*u),
        DValue::Str(s) => Value::from(s.clone()),
        DValue::StrList(l) => Value::from(l.clone()),
        DValue::Bytes(b) => Value::from(b.clone()),
        DValue::Struct(fields) => {
            let mut sb = StructureBuilder::new();
            for f in fields {
                sb = sb.append_field(to_value(f)?);
            }
            Value::from(sb.build().map_err(sig_err)?)
        }
        DValue::Array { sig, items } => {
            let sig = Signature::try_from(sig.as_str())
                .map_err(|e| SystemdError::Refused(format!("bad signature {sig:?}: {e}")))?;
            let mut arr = Array::new(&sig);
            for item in items {
                arr.append(to_value(item)?).map_err(sig_err)?;
            }
            Value::from(arr)
        }
    })
}

fn prop<T>(map: &HashMap<String, OwnedValue>, key: &str) -> Option<T>
where
    T: TryFrom<OwnedValue>,
{
    map.get(key)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| T::try_from(v).ok())
}

/// systemd reports "not set" as `u64::MAX`.
fn set_u64(map: &HashMap<String, OwnedValue>, key: &str) -> Option<u64> {
    prop::<u64>(map, key).filter(|v| *v != u64::MAX)
}

impl Systemd for DbusSystemd {
    async fn version(&self) -> Result<String> {
        let reply = self
            .call(PATH, PROPS_IFACE, "Get", &(MANAGER, "Version"))
            .await?;
        let v: OwnedValue = reply.body().deserialize().map_err(map_err)?;
        String::try_from(v).map_err(|e| SystemdError::Refused(e.to_string()))
    }

    async fn start_transient(&self, unit: &str, properties: &[(String, DValue)]) -> Result<()> {
        let props = properties
            .iter()
            .map(|(k, v)| Ok((k.as_str(), to_value(v)?)))
            .collect::<Result<Vec<_>>>()?;
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let deadline = tokio::time::Instant::now() + self.start_timeout();
        let _slot = self.job_slot(deadline).await?;
        let reply = self
            .call_until(
                deadline,
                "StartTransientUnit",
                &(unit, "fail", &props, &aux),
            )
            .await?;
        self.run_job(unit, "StartTransientUnit", reply, self.until(deadline))
            .await
    }

    async fn start_unit(&self, unit: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.start_timeout();
        // An installed unit is started again and again: a `StartUnit` lost to a
        // `daemon-reexec` (NoReply) may have started a run that has already failed, and
        // sending it again would start a second one. The invocation from before tells.
        let before = self.invocation_id(unit).await?.unwrap_or_default();
        let _slot = self.job_slot(deadline).await?;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.call(PATH, MANAGER, "StartUnit", &(unit, "fail")).await {
                Ok(reply) => {
                    return self
                        .run_job(unit, "StartUnit", reply, self.until(deadline))
                        .await;
                }
                Err(SystemdError::Unreachable(why))
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(unit, why, "StartUnit got no answer; reading the unit");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    let now = self.status_until(unit, deadline).await?;
                    if now.as_ref().is_some_and(|st| started_since(st, &before)) {
                        tracing::info!(
                            unit,
                            "the unanswered StartUnit did start the unit; adopting that run"
                        );
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn stop_unit(&self, unit: &str) -> Result<()> {
        let _slot = self
            .job_slot(tokio::time::Instant::now() + STOP_JOB_TIMEOUT)
            .await?;
        match self.manager_call("StopUnit", &(unit, "replace")).await {
            Ok(reply) => match self
                .run_job(unit, "StopUnit", reply, STOP_JOB_TIMEOUT)
                .await
            {
                // "done" or, for a unit that was already stopping, "canceled"/"skipped"
                Err(SystemdError::JobFailed { .. }) | Ok(()) => Ok(()),
                Err(e @ SystemdError::Timeout(_)) => {
                    // whatever holds the stop up (an ExecStop=, TimeoutStopSec=infinity) dies
                    let _ = self
                        .manager_call("KillUnit", &(unit, "all", libc::SIGKILL))
                        .await;
                    Err(e)
                }
                Err(e) => Err(e),
            },
            Err(SystemdError::NoSuchUnit(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn kill_unit(&self, unit: &str, who: KillWho, signal: i32) -> Result<()> {
        self.manager_call("KillUnit", &(unit, who.as_str(), signal))
            .await
            .map(drop)
    }

    async fn reset_failed(&self, unit: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let got = self
            .call_retrying(deadline, PATH, MANAGER, "ResetFailedUnit", &(unit,))
            .await;
        match got {
            Ok(_) | Err(SystemdError::NoSuchUnit(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn status(&self, unit: &str) -> Result<Option<UnitStatus>> {
        let Some((u, s)) = self.loaded_unit(unit).await? else {
            return Ok(None);
        };
        let invocation: Vec<u8> = prop(&u, "InvocationID").unwrap_or_default();
        Ok(Some(UnitStatus {
            load_state: prop(&u, "LoadState").unwrap_or_default(),
            active_state: prop(&u, "ActiveState").unwrap_or_default(),
            sub_state: prop(&u, "SubState").unwrap_or_default(),
            result: prop(&s, "Result").unwrap_or_default(),
            main_pid: prop(&s, "MainPID").unwrap_or_default(),
            exec_main_code: prop(&s, "ExecMainCode").unwrap_or_default(),
            exec_main_status: prop(&s, "ExecMainStatus").unwrap_or_default(),
            invocation_id: hex(&invocation),
            control_group: prop(&s, "ControlGroup").unwrap_or_default(),
            exec_main_start_usec: prop(&s, "ExecMainStartTimestamp").unwrap_or_default(),
            exec_main_exit_usec: prop(&s, "ExecMainExitTimestamp").unwrap_or_default(),
            memory_current: set_u64(&s, "MemoryCurrent"),
            cpu_usage_nsec: set_u64(&s, "CPUUsageNSec"),
        }))
    }

    async fn watch(&self, unit: &str) -> Result<watch::Receiver<u64>> {
        // connect first so the match rules exist before the caller reads the status; a
        // connection made as systemd re-executes loses its Subscribe call (NoReply): again
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let mut delay = Duration::from_millis(50);
        let _conn = loop {
            match self.conn().await {
                Err(SystemdError::Unreachable(why))
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::debug!(why, "connecting to systemd failed; again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                r => break r?,
            }
        };
        let path = unit_object_path(unit);
        let mut watchers = lock(&self.inner.watchers);
        // watchers of destroyed tasks and vanished units go here (their units may never
        // signal again)
        watchers.retain(|_, w| w.tx.receiver_count() > 0);
        let w = watchers.entry(path).or_insert_with(|| Watcher {
            tx: watch::channel(0).0,
            seen: Seen::default(),
        });
        // only what is signalled from now on counts: values from before (an earlier run of an
        // installed unit) must never stand for the run about to start
        w.seen = Seen::default();
        Ok(w.tx.subscribe())
    }

    fn signalled(&self, unit: &str) -> Option<UnitStatus> {
        let path = unit_object_path(unit);
        let watchers = lock(&self.inner.watchers);
        // values that disagree with each other (signals merged out of order, one dropped, a
        // reload's signal about an earlier run) are not trusted: the caller reads instead
        watchers
            .get(&path)
            .and_then(|w| w.seen.status())
            .filter(UnitStatus::is_consistent)
    }

    async fn invocation_id(&self, unit: &str) -> Result<Option<String>> {
        let Some(v) = self.unit_prop(unit, UNIT_IFACE, "InvocationID").await? else {
            return Ok(None);
        };
        let id = Vec::<u8>::try_from(v).map_err(|e| SystemdError::Refused(e.to_string()))?;
        Ok(Some(hex(&id)))
    }

    async fn control_group(&self, unit: &str) -> Result<Option<String>> {
        let Some(v) = self.unit_prop(unit, SERVICE_IFACE, "ControlGroup").await? else {
            return Ok(None);
        };
        String::try_from(v)
            .map(Some)
            .map_err(|e| SystemdError::Refused(e.to_string()))
    }

    async fn unit_state(&self, unit: &str) -> Result<Option<UnitState>> {
        // a batch whose call is abandoned half-way (its caller's RPC cancelled) is asked again
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel();
            lock(&self.inner.listing_queue).push((unit.to_string(), tx));
            {
                let _turn = self.inner.listing.lock().await;
                self.list_queued().await;
            }
            if let Ok(r) = rx.await {
                return r;
            }
        }
        Err(SystemdError::Unreachable(format!(
            "listing unit {unit} was abandoned"
        )))
    }

    fn recorded_invocation(&self, unit: &str) -> Option<String> {
        let link = self
            .inner
            .runtime_dir
            .join("units")
            .join(format!("invocation:{unit}"));
        let target = std::fs::read_link(link).ok()?;
        let id = target.to_str()?;
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    }

    async fn reload(&self) -> Result<()> {
        let mine = self.inner.reload_requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.inner.reload_lock.lock().await;
        if self.inner.reload_done.load(Ordering::SeqCst) >= mine {
            return Ok(()); // a reload that began after our request covered it
        }
        let covers = self.inner.reload_requested.load(Ordering::SeqCst);
        // repeated while systemd cannot be reached (a `daemon-reexec` drops it with NoReply):
        // one more reload is harmless
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        self.call_retrying(deadline, PATH, MANAGER, "Reload", &())
            .await?;
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        self.inner.reload_done.store(covers, Ordering::SeqCst);
        Ok(())
    }

    async fn write_env_file(&self, unit: &str, text: &str) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let path = self.env_file(unit);
        let err = |e: std::io::Error| SystemdError::DropIn {
            unit: unit.to_string(),
            message: format!("environment file {}: {e}", path.display()),
        };
        let dir = path.parent().unwrap_or(&path).to_path_buf();
        // a name no concurrent writer shares (create_new refuses an existing file)
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(
            ".{}.{}.{nanos}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let text = text.to_string();
        let (dir2, tmp2, path2) = (dir.clone(), tmp.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir2)?;
            // a directory made earlier with a looser mode is tightened
            std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o700))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp2)?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp2, &path2).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp2);
            })
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)
    }

    async fn remove_env_file(&self, unit: &str) -> Result<()> {
        match tokio::fs::remove_file(self.env_file(unit)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SystemdError::DropIn {
                unit: unit.to_string(),
                message: format!("environment file: {e}"),
            }),
        }
    }

    async fn write_dropin(&self, unit: &str, text: &str) -> Result<()> {
        let dir = self.dropin_dir(unit);
        let err = |e: std::io::Error| SystemdError::DropIn {
            unit: unit.to_string(),
            message: e.to_string(),
        };
        tokio::fs::create_dir_all(&dir).await.map_err(err)?;
        let tmp = dir.join(format!(".{DROPIN_FILE}.tmp"));
        tokio::fs::write(&tmp, text).await.map_err(err)?;
        tokio::fs::rename(&tmp, dir.join(DROPIN_FILE))
            .await
            .map_err(err)
    }

    async fn remove_dropin(&self, unit: &str) -> Result<()> {
        let dir = self.dropin_dir(unit);
        match tokio::fs::remove_file(dir.join(DROPIN_FILE)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SystemdError::DropIn {
                    unit: unit.to_string(),
                    message: e.to_string(),
                });
            }
        }
        // the directory goes too when nothing else lives in it
        let _ = tokio::fs::remove_dir(&dir).await;
        Ok(())
    }

    async fn has_dropin(&self, unit: &str) -> Result<bool> {
        Ok(
            tokio::fs::try_exists(self.dropin_dir(unit).join(DROPIN_FILE))
                .await
                .unwrap_or(false),
        )
    }

    async fn read_dropin(&self, unit: &str) -> Result<Option<String>> {
        match tokio::fs::read_to_string(self.dropin_dir(unit).join(DROPIN_FILE)).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SystemdError::DropIn {
                unit: unit.to_string(),
                message: e.to_string(),
            }),
        }
    }

    async fn list_units(&self, patterns: &[&str]) -> Result<Vec<String>> {
        let states: Vec<&str> = Vec::new();
        let reply = self
            .manager_call("ListUnitsByPatterns", &(states, patterns))
            .await?;
        let units: Vec<ListedUnit> = reply.body().deserialize().map_err(map_err)?;
        Ok(units.into_iter().map(|u| u.0).collect())
    }

    async fn slice_units(&self, slice: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for unit in self.list_units(&["*.service"]).await? {
            // `Slice` belongs to the Service interface (units with a cgroup), not to Unit
            let s = match self.get_all(&unit_object_path(&unit), SERVICE_IFACE).await {
                Ok(s) => s,
                Err(e) if e.is_transient() => return Err(e),
                // unloaded since the listing
                Err(_) => continue,
            };
            if prop::<String>(&s, "Slice").as_deref() == Some(slice) {
                out.push(unit);
            }
        }
        Ok(out)
    }

    async fn unit_info(&self, unit: &str) -> Result<Option<UnitInfo>> {
        let Some((u, s)) = self.loaded_unit(unit).await? else {
            return Ok(None);
        };
        Ok(Some(UnitInfo {
            description: prop(&u, "Description").unwrap_or_default(),
            slice: prop(&s, "Slice").unwrap_or_default(),
            active_state: prop(&u, "ActiveState").unwrap_or_default(),
            sub_state: prop(&u, "SubState").unwrap_or_default(),
            state_change_usec: prop(&u, "StateChangeTimestamp").unwrap_or_default(),
            fragment_path: prop(&u, "FragmentPath").unwrap_or_default(),
            log_fields: prop::<Vec<Vec<u8>>>(&s, "LogExtraFields")
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| String::from_utf8(f).ok())
                .collect(),
            stdout: prop(&s, "StandardOutput").unwrap_or_default(),
            stderr: prop(&s, "StandardError").unwrap_or_default(),
            memory_current: set_u64(&s, "MemoryCurrent"),
            cpu_usage_nsec: set_u64(&s, "CPUUsageNSec"),
            control_group: prop(&s, "ControlGroup").unwrap_or_default(),
        }))
    }

    async fn dropin_units(&self) -> Result<Vec<String>> {
        let dir = self.inner.runtime_dir.join("system");
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(SystemdError::DropIn {
                    unit: String::new(),
                    message: format!("{}: {e}", dir.display()),
                });
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(unit) = name.strip_suffix(".d")
                && tokio::fs::try_exists(entry.path().join(DROPIN_FILE))
                    .await
                    .unwrap_or(false)
            {
                out.push(unit.to_string());
            }
        }
        Ok(out)
    }

    fn reload_count(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    fn persist_removal(&self, unit: &str, record: &str) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.removal_record(unit);
        let dir = self.removals_dir();
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            std::io::Write::write_all(&mut f, record.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| SystemdError::DropIn {
            unit: unit.to_string(),
            message: format!("removal record {}: {e}", path.display()),
        })
    }

    fn forget_removal(&self, unit: &str) {
        let path = self.removal_record(unit);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(unit, error = %e, "removing the removal record failed");
        }
    }

    fn pending_removals(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.removals_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }

    fn set_start_timeout(&self, within: Duration) {
        self.inner
            .start_timeout_ns
            .store(nanos(within), Ordering::Relaxed);
    }

    fn bookkeeping(&self) -> super::Bookkeeping {
        let watchers = {
            let mut w = lock(&self.inner.watchers);
            w.retain(|_, w| w.tx.receiver_count() > 0);
            w.len()
        };
        super::Bookkeeping {
            watchers,
            job_waiters: lock(&self.inner.jobs).waiting.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: Vec<(&str, Value<'_>)>) -> Props {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().expect("owned value")))
            .collect()
    }

    /// As systemd 252 sends it: no `LoadState`.
    fn unit_signal(active: &str, sub: &str, invocation: &[u8]) -> Props {
        props(vec![
            ("ActiveState", Value::from(active)),
            ("SubState", Value::from(sub)),
            ("InvocationID", Value::from(invocation.to_vec())),
            ("Description", Value::from("ignored")),
        ])
    }

    fn service_signal(main_pid: u32, code: i32, status: i32, result: &str) -> Props {
        props(vec![
            ("MainPID", Value::from(main_pid)),
            ("ExecMainCode", Value::from(code)),
            ("ExecMainStatus", Value::from(status)),
            ("Result", Value::from(result)),
        ])
    }

    #[test]
    fn a_lost_start_counts_as_started_once_the_unit_ran_again() {
        let failed = UnitStatus {
            active_state: "failed".into(),
            sub_state: "failed".into(),
            invocation_id: "aa".into(),
            ..UnitStatus::default()
        };
        // the lost call did not reach systemd: same invocation, still failed → send again
        assert!(!started_since(&failed, "aa"));
        // it did, and the run has already failed: a new invocation → adopt, never re-send
        let again = UnitStatus {
            invocation_id: "bb".into(),
            ..failed.clone()
        };
        assert!(started_since(&again, "aa"));
        // first run of the unit
        assert!(started_since(&again, ""));
        assert!(!started_since(
            &UnitStatus {
                active_state: "inactive".into(),
                invocation_id: String::new(),
                ..failed.clone()
            },
            ""
        ));
        // it did, and the run is still going
        for active in ["activating", "active"] {
            let st = UnitStatus {
                active_state: active.into(),
                ..failed.clone()
            };
            assert!(started_since(&st, "aa"), "{active}");
        }
    }

    #[test]
    fn signalled_values_make_a_status_once_both_interfaces_reported() {
        let mut seen = Seen::default();
        assert_eq!(seen.status(), None);
        seen.merge(
            UNIT_IFACE,
            &unit_signal("active", "running", &[0xab, 0x01]),
            &[],
        );
        // the service's half is still missing
        assert_eq!(seen.status(), None);
        seen.merge(SERVICE_IFACE, &service_signal(42, 0, 0, "success"), &[]);
        let st = seen.status().expect("complete");
        assert_eq!(
            (
                st.active_state.as_str(),
                st.main_pid,
                st.invocation_id.as_str()
            ),
            ("active", 42, "ab01")
        );
        assert!(!st.main_exited());
        // the exit, as the next signals say it: the latest value of each property counts
        seen.merge(SERVICE_IFACE, &service_signal(0, 1, 3, "exit-code"), &[]);
        seen.merge(
            UNIT_IFACE,
            &unit_signal("failed", "failed", &[0xab, 0x01]),
            &[],
        );
        let st = seen.status().expect("complete");
        assert!(st.main_exited());
        assert_eq!((st.exec_main_status, st.result.as_str()), (3, "exit-code"));
        // another interface's signal changes nothing
        seen.merge(
            "org.freedesktop.systemd1.Scope",
            &service_signal(9, 0, 0, "x"),
            &[],
        );
        assert_eq!(seen.status().map(|s| s.main_pid), Some(0));
    }

    #[test]
    fn an_invalidated_property_is_unknown_again() {
        let mut seen = Seen::default();
        seen.merge(UNIT_IFACE, &unit_signal("active", "running", &[1]), &[]);
        seen.merge(SERVICE_IFACE, &service_signal(7, 0, 0, "success"), &[]);
        assert!(seen.status().is_some());
        seen.merge(SERVICE_IFACE, &Props::new(), &["MainPID".to_string()]);
        assert_eq!(seen.status(), None);
    }

    #[test]
    fn no_such_unit_messages_name_the_unit() {
        let of = super::unit_of_message;
        assert_eq!(of("Unit web@x.service not found."), "web@x.service");
        assert_eq!(of("Unit web@x.service not loaded."), "web@x.service");
        assert_eq!(of("something else"), "something else");
    }
}
