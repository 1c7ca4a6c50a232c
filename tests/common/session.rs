//! A private systemd plus a long-lived plugin launch (SetConfig with nomad_config, Init), the
//! way the Nomad client's driver manager sets one up.

use std::time::Duration;

use nomad_driver_systemd::proto::base::{NomadConfig, NomadDriverConfig, SetConfigRequest};
use nomad_driver_systemd::proto::drivers::{
    DestroyTaskRequest, InitRequest, RecoverTaskRequest, StartTaskRequest, StartTaskResponse,
    StopTaskRequest, TaskConfig, TaskHandle, WaitTaskRequest, WaitTaskResponse,
};

use super::plugin::Plugin;
use super::systemd::PrivateSystemd;

pub struct Session {
    pub sd: PrivateSystemd,
    pub plugin: Option<Plugin>,
    pub config: Vec<u8>,
}

/// What Nomad hands back to RecoverTask after an agent restart: the stored handle, with no
/// task id and no driver config.
pub fn recover_request(handle: &TaskHandle) -> RecoverTaskRequest {
    let mut handle = handle.clone();
    if let Some(c) = handle.config.as_mut() {
        c.msgpack_driver_config.clear();
    }
    RecoverTaskRequest {
        task_id: String::new(),
        handle: Some(handle),
    }
}

/// TOML-free plugin config: a cty-msgpack map of the given string-list / string / bool keys.
pub fn plugin_config(pairs: &[(&str, rmpv::Value)]) -> Vec<u8> {
    let map = rmpv::Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (rmpv::Value::from(*k), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).unwrap();
    out
}

impl Session {
    pub async fn new(config: Vec<u8>) -> Self {
        let sd = PrivateSystemd::start();
        let mut s = Self {
            sd,
            plugin: None,
            config,
        };
        s.relaunch().await;
        s
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DBUS_SYSTEM_BUS_ADDRESS", self.sd.bus_address()),
            (
                "NOMAD_DRIVER_SYSTEMD_RUNTIME_DIR",
                self.sd.runtime_dir().display().to_string(),
            ),
        ]
    }

    /// A new plugin process, set up like launch #3.
    pub async fn relaunch(&mut self) {
        let env = self.env();
        let p = Plugin::launch(&env).await;
        self.configure(p).await;
    }

    /// A session whose plugin runs as the service `unit` of the private systemd, as under a
    /// Nomad agent's unit on a node: inside its namespaces (journald sees the plugin's PID and
    /// unit), with systemd's default settings plus `properties` (`systemd-run -p`). The plugin
    /// reaches systemd and journald at their default paths; its stdout and stderr are the test's
    /// pipes (`systemd-run --pipe`).
    pub async fn new_in_unit(config: Vec<u8>, unit: &str, properties: &[&str]) -> Self {
        let sd = PrivateSystemd::start();
        let base = crate::common::plugin::nomad_command(&[]);
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["--target", &sd.pid.to_string()])
            .args(["--mount", "--pid", "--uts", "--ipc", "--"])
            .args(["systemd-run", "--quiet", "--pipe", "--collect"])
            .arg(format!("--unit={unit}"));
        for p in properties {
            cmd.arg(format!("--property={p}"));
        }
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
                cmd.arg(format!("--setenv={k}={v}"));
            }
        }
        cmd.arg("--").arg(base.get_program()).args(base.get_args());
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut s = Self {
            sd,
            plugin: None,
            config,
        };
        let p = Plugin::launch_command(cmd).await;
        s.configure(p).await;
        s
    }

    async fn configure(&mut self, p: Plugin) {
        p.base()
            .set_config(SetConfigRequest {
                msgpack_config: self.config.clone(),
                nomad_config: Some(NomadConfig {
                    driver: Some(NomadDriverConfig {
                        client_max_port: 14512,
                        client_min_port: 14000,
                        topology: None,
                    }),
                }),
                plugin_api_version: "v0.1.0".into(),
            })
            .await
            .expect("SetConfig");
        p.driver().init(InitRequest {}).await.expect("Init");
        self.plugin = Some(p);
    }

    pub fn plugin(&self) -> &Plugin {
        self.plugin.as_ref().expect("plugin running")
    }

    /// Graceful agent shutdown: go-plugin kill, tasks untouched.
    pub async fn stop_plugin(&mut self) {
        let p = self.plugin.take().expect("plugin running");
        assert!(p.kill().await, "plugin did not exit gracefully");
    }

    pub async fn start(&self, task: TaskConfig) -> Result<StartTaskResponse, tonic::Status> {
        let mut client = self.plugin().driver();
        let call = client.start_task(StartTaskRequest { task: Some(task) });
        self.bounded("StartTask", call)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Awaits an RPC for at most a minute; a hang fails the test with the plugin's log.
    pub async fn bounded<T>(&self, what: &str, fut: impl std::future::Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(60), fut).await {
            Ok(v) => v,
            Err(_) => panic!(
                "{what} hung for 60 s; plugin log:\n{}",
                self.plugin().stderr_text()
            ),
        }
    }

    pub async fn wait(&self, id: &str) -> WaitTaskResponse {
        tokio::time::timeout(
            Duration::from_secs(60),
            self.plugin()
                .driver()
                .wait_task(WaitTaskRequest { task_id: id.into() }),
        )
        .await
        .expect("WaitTask timed out")
        .expect("WaitTask")
        .into_inner()
    }

    pub async fn stop(&self, id: &str, timeout: Duration, signal: &str) {
        let mut client = self.plugin().driver();
        let call = client.stop_task(StopTaskRequest {
            task_id: id.into(),
            timeout: Some(timeout.try_into().unwrap()),
            signal: signal.into(),
        });
        self.bounded("StopTask", call).await.expect("StopTask");
    }

    pub async fn destroy(&self, id: &str) {
        let mut client = self.plugin().driver();
        let call = client.destroy_task(DestroyTaskRequest {
            task_id: id.into(),
            force: true,
        });
        self.bounded("DestroyTask", call)
            .await
            .expect("DestroyTask");
    }

    /// After a test: none of our units may remain loaded.
    pub async fn assert_clean(&self) {
        for _ in 0..50 {
            if self.sd.nomad_units().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("units left behind: {:?}", self.sd.nomad_units());
    }

    pub async fn finish(mut self) {
        self.assert_clean().await;
        if let Some(p) = self.plugin.take() {
            assert!(p.kill().await, "plugin did not exit gracefully");
        }
    }
}
