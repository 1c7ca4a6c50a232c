//! `run`: plays the Nomad client for one job file, locally — launches this binary as the plugin
//! the way Nomad does, builds alloc dirs and log FIFOs, starts every `driver = "systemd"` task,
//! streams its logs, and on exit (or Ctrl-C, or `--stop-after`) stops and destroys it. With
//! `--private-systemd` it first boots a private systemd in namespaces (for machines whose PID 1
//! is not systemd, such as CI containers).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::time::Duration;

use tonic::transport::Channel;

use super::job::{self, Task};
use super::{say, say_err};
use crate::config::PluginConfig;
use crate::config::TaskUserConfig;
use crate::config::cty::Fields;
use crate::nomad_standin::alloc::{Alloc, Echo, JobConfig};
use crate::nomad_standin::client;
use crate::nomad_standin::private_systemd::PrivateSystemd;
use crate::proto::base::base_plugin_client::BasePluginClient;
use crate::proto::base::{NomadConfig, NomadDriverConfig, SetConfigRequest};
use crate::proto::drivers::driver_client::DriverClient;
use crate::proto::drivers::{
    AllocatedCpuResources, AllocatedMemoryResources, AllocatedTaskResources, DestroyTaskRequest,
    FingerprintRequest, InitRequest, LinuxResources, Resources, StartTaskRequest, StopTaskRequest,
    TaskConfig, WaitTaskRequest, fingerprint_response::HealthState,
};
use crate::proto::plugin::Empty;
use crate::proto::plugin::grpc_controller_client::GrpcControllerClient;

/// Options of `run`.
pub struct Options<'a> {
    pub file: &'a Path,
    pub config: Option<&'a Path>,
    pub private_systemd: bool,
    pub stop_after: Option<Duration>,
    pub alloc_root: &'a Path,
}

type Failure = String;

pub fn run(opts: &Options<'_>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_err(&format!("run: {e}"));
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run_job(opts)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            say_err(&format!("run: {e}"));
            ExitCode::from(2)
        }
    }
}

/// A task of the job, started.
struct Started {
    name: String,
    id: String,
    _alloc: Alloc,
}

async fn run_job(opts: &Options<'_>) -> Result<bool, Failure> {
    let text =
        std::fs::read_to_string(opts.file).map_err(|e| format!("{}: {e}", opts.file.display()))?;
    let job = job::parse(&text).map_err(|p| format!("{}: {p}", opts.file.display()))?;
    let tasks: Vec<(String, Task)> = job
        .groups
        .iter()
        .flat_map(|g| g.tasks.iter().map(|t| (g.name.clone(), t.clone())))
        .filter(|(_, t)| t.driver == "systemd")
        .collect();
    if tasks.is_empty() {
        return Err(format!(
            "{}: no task with driver = \"systemd\"",
            opts.file.display()
        ));
    }
    let plugin_cfg = PluginConfig::load(opts.config).map_err(|e| e.to_string())?;

    let sandbox = if opts.private_systemd {
        say("booting a private systemd (namespaces; nothing on the host is touched)");
        Some(PrivateSystemd::try_start()?)
    } else {
        None
    };
    let mut env: Vec<(&str, String)> = Vec::new();
    if let Some(sd) = &sandbox {
        env.push(("DBUS_SYSTEM_BUS_ADDRESS", sd.bus_address()));
        env.push((
            "NOMAD_DRIVER_SYSTEMD_RUNTIME_DIR",
            sd.runtime_dir().display().to_string(),
        ));
    }
    let (mut child, channel) = launch(&env).await?;
    let result = drive(&job, &tasks, opts, &plugin_cfg, &channel).await;
    let _ = GrpcControllerClient::new(channel).shutdown(Empty {}).await;
    let _ = child.wait();
    drop(sandbox);
    result
}

async fn launch(env: &[(&str, String)]) -> Result<(Child, Channel), Failure> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut child = client::nomad_command(&me, env)
        .spawn()
        .map_err(|e| format!("launching the plugin: {e}"))?;
    // the plugin logs hclog JSON on stderr: show the messages
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let msg = v["@message"].as_str().unwrap_or(&line);
                let level = v["@level"].as_str().unwrap_or("");
                say_err(&format!("  plugin [{level}] {msg}"));
            }
        });
    }
    let mut out = BufReader::new(child.stdout.take().ok_or("no plugin stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)
        .map_err(|e| format!("reading the handshake: {e}"))?;
    // like go-plugin, keep draining stdout
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let socket = client::parse_handshake(&line)?;
    let channel = client::connect(&socket)
        .await
        .map_err(|e| format!("connecting to the plugin: {e}"))?;
    Ok((child, channel))
}

async fn drive(
    job: &job::Job,
    tasks: &[(String, Task)],
    opts: &Options<'_>,
    plugin_cfg: &PluginConfig,
    channel: &Channel,
) -> Result<bool, Failure> {
    let rpc = |e: tonic::Status| e.message().to_string();
    BasePluginClient::new(channel.clone())
        .set_config(SetConfigRequest {
            msgpack_config: plugin_cfg.to_msgpack(),
            nomad_config: Some(NomadConfig {
                driver: Some(NomadDriverConfig::default()),
            }),
            plugin_api_version: "v0.1.0".into(),
        })
        .await
        .map_err(rpc)?;
    let mut driver = DriverClient::new(channel.clone());
    driver.init(InitRequest {}).await.map_err(rpc)?;
    let mut fp = driver
        .fingerprint(FingerprintRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let first = fp.message().await.map_err(rpc)?.ok_or("no fingerprint")?;
    if first.health != HealthState::Healthy as i32 {
        return Err(format!("driver not healthy: {}", first.health_description));
    }
    let mut started = Vec::new();
    for (group, task) in tasks {
        match start(job, group, task, opts, &mut driver).await {
            Ok(s) => started.push(s),
            Err(e) => say_err(&format!("{group}/{}: {e}", task.name)),
        }
    }
    let ok = started.len() == tasks.len();
    let waits = started.iter().map(|s| {
        let mut d = driver.clone();
        let id = s.id.clone();
        async move { d.wait_task(WaitTaskRequest { task_id: id }).await }
    });
    let all = futures::future::join_all(waits);
    tokio::pin!(all);
    let stop_after = opts.stop_after.unwrap_or(Duration::MAX);
    let results = tokio::select! {
        r = &mut all => r,
        _ = tokio::signal::ctrl_c() => { stop_all(&started, &mut driver).await; all.await }
        _ = tokio::time::sleep(stop_after) => { stop_all(&started, &mut driver).await; all.await }
    };
    let mut success = ok;
    for (s, r) in started.iter().zip(results) {
        match r {
            Ok(w) => {
                let w = w.into_inner();
                let r = w.result.unwrap_or_default();
                say(&format!(
                    "{}: exited: exit code {}, signal {}{}{}",
                    s.name,
                    r.exit_code,
                    r.signal,
                    if r.oom_killed { ", OOM-killed" } else { "" },
                    if w.err.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", w.err)
                    }
                ));
                success &= r.exit_code == 0 || opts.stop_after.is_some();
            }
            Err(e) => {
                say_err(&format!("{}: wait failed: {}", s.name, e.message()));
                success = false;
            }
        }
        let _ = driver
            .destroy_task(DestroyTaskRequest {
                task_id: s.id.clone(),
                force: true,
            })
            .await;
    }
    Ok(success)
}

async fn stop_all(started: &[Started], driver: &mut DriverClient<Channel>) {
    for s in started {
        say(&format!("{}: stopping", s.name));
        let _ = driver
            .stop_task(StopTaskRequest {
                task_id: s.id.clone(),
                timeout: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                signal: String::new(),
            })
            .await;
    }
}

fn echo(prefix: String, to_stderr: bool) -> Echo {
    Box::new(move |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let line = format!("{prefix} {line}\n");
            // never panic over a closed terminal
            let _ = if to_stderr {
                std::io::stderr().write_all(line.as_bytes())
            } else {
                std::io::stdout().write_all(line.as_bytes())
            };
        }
    })
}

async fn start(
    job: &job::Job,
    group: &str,
    task: &Task,
    opts: &Options<'_>,
    driver: &mut DriverClient<Channel>,
) -> Result<Started, Failure> {
    let alloc = Alloc::create(
        opts.alloc_root,
        &task.name,
        Some(echo(format!("[{}]", task.name), false)),
        Some(echo(format!("[{} stderr]", task.name), true)),
    )
    .map_err(|e| format!("alloc dir under {}: {e}", opts.alloc_root.display()))?;
    let mut env: HashMap<String, String> = [
        ("NOMAD_ALLOC_DIR", "/alloc".to_string()),
        ("NOMAD_TASK_DIR", "/local".to_string()),
        ("NOMAD_SECRETS_DIR", "/secrets".to_string()),
        ("NOMAD_ALLOC_ID", alloc.id.clone()),
        ("NOMAD_SHORT_ALLOC_ID", alloc.id[..8].to_string()),
        ("NOMAD_ALLOC_NAME", format!("{}.{group}[0]", job.id)),
        ("NOMAD_ALLOC_INDEX", "0".to_string()),
        ("NOMAD_TASK_NAME", task.name.clone()),
        ("NOMAD_GROUP_NAME", group.to_string()),
        ("NOMAD_JOB_ID", job.id.clone()),
        ("NOMAD_JOB_NAME", job.name.clone()),
        ("NOMAD_NAMESPACE", job.namespace.clone()),
        ("NOMAD_DC", "local".to_string()),
        ("NOMAD_REGION", "global".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let memory = task.resources.memory.unwrap_or(300);
    env.insert("NOMAD_MEMORY_LIMIT".into(), memory.to_string());
    env.insert(
        "NOMAD_CPU_LIMIT".into(),
        task.resources.cpu.unwrap_or(100).to_string(),
    );
    for (k, v) in &task.env {
        let v = interpolate(v, &env).map_err(|e| format!("env.{k}: {e}"))?;
        env.insert(k.clone(), v);
    }
    let raw = task.config.clone().map_err(|p| p.to_string())?;
    let cfg = decode_config(&raw, &env)?;
    let job_cfg = JobConfig {
        command: cfg.command,
        args: (!cfg.args.is_empty()).then_some(cfg.args),
        unit: cfg.unit,
        properties: (!cfg.properties.is_empty()).then(|| cfg.properties.into_iter().collect()),
        work_dir: cfg.work_dir,
    };
    let mut config: TaskConfig = alloc.task_config(1, &job_cfg);
    config.env = env;
    config.user = task.user.clone();
    config.job_name = job.name.clone();
    config.job_id = job.id.clone();
    config.task_group_name = group.to_string();
    let cpu = task.resources.cpu.unwrap_or(100);
    config.resources = Some(Resources {
        allocated_resources: Some(AllocatedTaskResources {
            cpu: Some(AllocatedCpuResources { cpu_shares: cpu }),
            memory: Some(AllocatedMemoryResources {
                memory_mb: memory,
                memory_max_mb: task.resources.memory_max.unwrap_or(0),
            }),
            networks: vec![],
        }),
        linux_resources: Some(LinuxResources {
            cpu_shares: cpu,
            ..LinuxResources::default()
        }),
        ports: vec![],
    });
    let id = config.id.clone();
    let resp = driver
        .start_task(StartTaskRequest { task: Some(config) })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let unit = resp
        .handle
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h.driver_state).ok())
        .and_then(|s| s["unit"].as_str().map(str::to_string))
        .unwrap_or_default();
    say(&format!("{group}/{}: started as {unit}", task.name));
    Ok(Started {
        name: task.name.clone(),
        id,
        _alloc: alloc,
    })
}

/// Resolves `${NAME}` and `${env["NAME"]}` from the task environment, as Nomad does before the
/// driver sees a config; `$${` is a literal `${`.
pub fn interpolate(s: &str, env: &HashMap<String, String>) -> Result<String, Failure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
        let expr = rest[i + 2..i + end].trim();
        let name = expr
            .strip_prefix("env[\"")
            .and_then(|e| e.strip_suffix("\"]"))
            .unwrap_or(expr);
        let value = env.get(name).ok_or_else(|| {
            format!("unknown variable {name:?} (run resolves task environment variables only)")
        })?;
        out.push_str(value);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_json(
    v: &serde_json::Value,
    env: &HashMap<String, String>,
) -> Result<rmpv::Value, Failure> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => rmpv::Value::Nil,
        J::Bool(b) => rmpv::Value::from(*b),
        J::Number(n) => n
            .as_i64()
            .map(rmpv::Value::from)
            .or_else(|| n.as_f64().map(rmpv::Value::from))
            .unwrap_or(rmpv::Value::Nil),
        J::String(s) => rmpv::Value::from(interpolate(s, env)?),
        J::Array(a) => rmpv::Value::Array(
            a.iter()
                .map(|x| resolve_json(x, env))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => rmpv::Value::Map(
            o.iter()
                .map(|(k, x)| Ok((rmpv::Value::from(k.as_str()), resolve_json(x, env)?)))
                .collect::<Result<_, Failure>>()?,
        ),
    })
}

fn decode_config(
    raw: &serde_json::Value,
    env: &HashMap<String, String>,
) -> Result<TaskUserConfig, Failure> {
    let value = resolve_json(raw, env)?;
    let fields = Fields::from_value(value, "config.").map_err(|e| e.to_string())?;
    TaskUserConfig::from_fields(fields).map_err(|e| e.to_string())
}

/// Default root for `run`'s alloc dirs.
pub fn default_alloc_root() -> PathBuf {
    PathBuf::from("/var/lib/nomad-driver-systemd/run")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env: HashMap<String, String> = [("NOMAD_ALLOC_ID".to_string(), "a1".to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            interpolate("web@${NOMAD_ALLOC_ID}.service", &env).unwrap(),
            "web@a1.service"
        );
        assert_eq!(
            interpolate("${env[\"NOMAD_ALLOC_ID\"]}", &env).unwrap(),
            "a1"
        );
        assert_eq!(interpolate("$${HOME}", &env).unwrap(), "${HOME}");
        assert!(interpolate("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(interpolate("${x", &env).is_err());
    }
}
