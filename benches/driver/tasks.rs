//! Tasks as the Nomad client hands them over, plans as the driver makes them, and the RPCs.

use crate::*;

/// A task the plugin runs.
pub(crate) struct PluginTask {
    pub(crate) _alloc: Alloc,
    pub(crate) config: TaskConfig,
}

/// A unit the bare client runs, planned exactly as the driver would plan it.
pub(crate) struct BareTask {
    pub(crate) _alloc: Alloc,
    pub(crate) plan: UnitPlan,
}

pub(crate) fn sleeper() -> JobConfig {
    JobConfig::command("/bin/sleep", &["infinity"])
}

pub(crate) fn instance_job(alloc: &Alloc) -> JobConfig {
    JobConfig {
        unit: Some(format!("bench@{}.service", alloc.id)),
        ..JobConfig::default()
    }
}

pub(crate) fn plugin_tasks(n: usize, job: impl Fn(&Alloc) -> JobConfig) -> Vec<PluginTask> {
    tasks_in(n, job, Alloc::new)
}

/// [`plugin_tasks`] with plain `secrets/` and `private/` directories instead of Nomad's tmpfs
/// mounts ([`Alloc::new_plain`]).
pub(crate) fn plugin_tasks_plain(n: usize, job: impl Fn(&Alloc) -> JobConfig) -> Vec<PluginTask> {
    tasks_in(n, job, Alloc::new_plain)
}

fn tasks_in(
    n: usize,
    job: impl Fn(&Alloc) -> JobConfig,
    alloc: impl Fn(&str) -> Alloc,
) -> Vec<PluginTask> {
    (0..n)
        .map(|_| plugin_task_of(alloc("bench"), &job))
        .collect()
}

fn plugin_task_of(alloc: Alloc, job: impl Fn(&Alloc) -> JobConfig) -> PluginTask {
    let config = alloc.task_config(1, &job(&alloc));
    PluginTask {
        _alloc: alloc,
        config,
    }
}

/// One alloc dir as Nomad builds it (two tmpfs mounts in the mount namespace of the private
/// systemd `sd_pid`), made on a blocking thread so that the caller's other futures (D-Bus and
/// gRPC replies of the starts in flight) keep being polled meanwhile.
async fn alloc_async(sd_pid: u32) -> R<Alloc> {
    tokio::task::spawn_blocking(move || {
        Alloc::create_in(Path::new(ALLOC_ROOT), "bench", Some(sd_pid), None, None)
    })
    .await
    .map_err(|e| format!("alloc dir: {e}"))?
    .map_err(|e| format!("alloc dir: {e}"))
}

/// A plugin task in a fresh alloc dir built off the async thread ([`alloc_async`]).
pub(crate) async fn plugin_task_async(
    sd_pid: u32,
    job: impl Fn(&Alloc) -> JobConfig,
) -> R<PluginTask> {
    Ok(plugin_task_of(alloc_async(sd_pid).await?, job))
}

/// A bare task in a fresh alloc dir built off the async thread ([`alloc_async`]).
pub(crate) async fn bare_task_async(
    sd_pid: u32,
    cfg: &PluginConfig,
    job: impl Fn(&Alloc) -> JobConfig,
) -> R<BareTask> {
    bare_task_of(alloc_async(sd_pid).await?, cfg, job)
}

pub(crate) fn bare_tasks(
    n: usize,
    cfg: &PluginConfig,
    job: impl Fn(&Alloc) -> JobConfig,
) -> R<Vec<BareTask>> {
    bare_tasks_in(n, cfg, job, Alloc::new)
}

/// [`bare_tasks`] with plain `secrets/` and `private/` directories ([`Alloc::new_plain`]).
pub(crate) fn bare_tasks_plain(
    n: usize,
    cfg: &PluginConfig,
    job: impl Fn(&Alloc) -> JobConfig,
) -> R<Vec<BareTask>> {
    bare_tasks_in(n, cfg, job, Alloc::new_plain)
}

fn bare_tasks_in(
    n: usize,
    cfg: &PluginConfig,
    job: impl Fn(&Alloc) -> JobConfig,
    alloc: impl Fn(&str) -> Alloc,
) -> R<Vec<BareTask>> {
    (0..n)
        .map(|_| bare_task_of(alloc("bench"), cfg, &job))
        .collect()
}

fn bare_task_of(
    alloc: Alloc,
    cfg: &PluginConfig,
    job: impl Fn(&Alloc) -> JobConfig,
) -> R<BareTask> {
    let config = alloc.task_config(1, &job(&alloc));
    let user = TaskUserConfig::from_msgpack(&config.msgpack_driver_config)
        .map_err(|e| format!("job config: {e}"))?;
    let plan = plan(&task_spec(&config), &user, cfg).map_err(|e| format!("plan: {e}"))?;
    Ok(BareTask {
        _alloc: alloc,
        plan,
    })
}

/// A TaskStats request at the Nomad client's default collection interval (1 s).
pub(crate) fn stats_every_second(task_id: String) -> TaskStatsRequest {
    TaskStatsRequest {
        task_id,
        collection_interval: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    }
}

pub(crate) async fn start_task(mut c: Client, task: TaskConfig) -> R<TaskHandle> {
    let resp = rpc(
        "StartTask",
        c.start_task(StartTaskRequest { task: Some(task) }),
    )
    .await?;
    resp.handle
        .ok_or_else(|| "StartTask returned no handle".to_string())
}

pub(crate) async fn stop_task(mut c: Client, id: String) -> R<()> {
    let req = StopTaskRequest {
        task_id: id,
        timeout: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        signal: STOP_SIGNAL.into(),
    };
    rpc("StopTask", c.stop_task(req)).await.map(drop)
}

pub(crate) async fn destroy_task(mut c: Client, id: String) -> R<()> {
    let req = DestroyTaskRequest {
        task_id: id,
        force: true,
    };
    rpc("DestroyTask", c.destroy_task(req)).await.map(drop)
}

pub(crate) async fn is_running(c: Client, id: String) -> R<bool> {
    Ok(task_state(c, id).await? == Some(TaskState::Running))
}

/// The task's state per InspectTask.
pub(crate) async fn task_state(mut c: Client, id: String) -> R<Option<TaskState>> {
    let resp = rpc(
        "InspectTask",
        c.inspect_task(InspectTaskRequest { task_id: id }),
    )
    .await?;
    Ok(resp.task.and_then(|t| TaskState::try_from(t.state).ok()))
}

/// Whether a sample carries figures read from the cgroup (memory.stat), not only the D-Bus
/// fallback.
pub(crate) fn has_cgroup_data(msg: &TaskStatsResponse) -> bool {
    let rss = memory_usage::Fields::Rss as i32;
    msg.stats
        .as_ref()
        .and_then(|s| s.agg_resource_usage.as_ref())
        .and_then(|u| u.memory.as_ref())
        .is_some_and(|m| m.measured_fields.contains(&rss))
}

pub(crate) fn unit_of(handle: &TaskHandle) -> R<String> {
    DriverState::decode(&handle.driver_state)
        .map(|s| s.unit)
        .map_err(|e| format!("driver_state: {e}"))
}

pub(crate) fn task_id(handle: &TaskHandle) -> String {
    handle
        .config
        .as_ref()
        .map(|c| c.id.clone())
        .unwrap_or_default()
}

/// The minimal unit of the same task: the planner's `ExecStart` and nothing else.
pub(crate) fn minimal_properties(plan: &UnitPlan) -> Vec<(String, DValue)> {
    plan.properties
        .iter()
        .filter(|(k, _)| k == "ExecStart")
        .cloned()
        .collect()
}

/// One task three ways: for the plugin, for a bare start of the same planned unit, and for a
/// bare start of the minimal unit (each its own alloc dir, so unit names differ).
pub(crate) struct Trio {
    pub(crate) plugin: PluginTask,
    pub(crate) same: BareTask,
    pub(crate) minimal: BareTask,
}

impl Trio {
    pub(crate) fn new(cfg: &PluginConfig) -> R<Self> {
        let plugin = plugin_tasks(1, |_| sleeper()).pop().ok_or("no task")?;
        let mut bare = bare_tasks(2, cfg, |_| sleeper())?;
        let minimal = bare.pop().ok_or("no task")?;
        let same = bare.pop().ok_or("no task")?;
        Ok(Self {
            plugin,
            same,
            minimal,
        })
    }
}
