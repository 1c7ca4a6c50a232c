//! The Driver service: each handler converts, calls the core, converts back.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::status::to_status;
use crate::config::{TaskUserConfig, schema};
use crate::driver::{Driver, DriverError};
use crate::proto::drivers::driver_server::Driver as DriverRpc;
use crate::proto::drivers::*;
use crate::systemd::Systemd;
use crate::task::TaskState as CoreState;
use crate::task::state::STATE_VERSION;

/// How often Fingerprint re-probes systemd.
const FINGERPRINT_EVERY: Duration = Duration::from_secs(30);

pub struct DriverService<S: Systemd> {
    pub core: Arc<Driver<S>>,
    pub shutdown: CancellationToken,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn duration(d: Option<&prost_types::Duration>) -> Duration {
    d.and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or_default()
}

/// What the driver can do today: only what works, because Nomad trusts every claim
/// (docs/nomad-contract.md, *Capabilities*).
pub fn capabilities() -> DriverCapabilities {
    DriverCapabilities {
        send_signals: true,
        exec: true,
        fs_isolation: driver_capabilities::FsIsolation::Image as i32,
        network_isolation_modes: vec![
            network_isolation_spec::NetworkIsolationMode::Host as i32,
            network_isolation_spec::NetworkIsolationMode::Group as i32,
        ],
        must_create_network: false,
        mount_configs: driver_capabilities::MountConfigs::UnknownMounts as i32,
        disable_log_collection: false,
        dynamic_workload_users: false,
    }
}

#[tonic::async_trait]
impl<S: Systemd> DriverRpc for DriverService<S> {
    async fn init(&self, _: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        // resumes what a previous plugin process left (reattached or not); never fails
        self.core.resume_removals();
        Ok(Response::new(InitResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        // tasks keep running; only our watchers stop
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn task_config_schema(
        &self,
        _: Request<TaskConfigSchemaRequest>,
    ) -> Result<Response<TaskConfigSchemaResponse>, Status> {
        Ok(Response::new(TaskConfigSchemaResponse {
            spec: Some(convert::spec(&schema::task_schema())),
        }))
    }

    async fn capabilities(
        &self,
        _: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        Ok(Response::new(CapabilitiesResponse {
            capabilities: Some(capabilities()),
        }))
    }

    type FingerprintStream = BoxStream<FingerprintResponse>;

    async fn fingerprint(
        &self,
        _: Request<FingerprintRequest>,
    ) -> Result<Response<Self::FingerprintStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let core = Arc::clone(&self.core);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let fp = core.fingerprint().await;
                if last.as_ref() != Some(&fp) {
                    if tx.send(Ok(convert::fingerprint(&fp))).await.is_err() {
                        return;
                    }
                    last = Some(fp);
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(FINGERPRINT_EVERY) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn recover_task(
        &self,
        request: Request<RecoverTaskRequest>,
    ) -> Result<Response<RecoverTaskResponse>, Status> {
        let req = request.into_inner();
        let handle = req
            .handle
            .ok_or_else(|| Status::invalid_argument("handle is missing"))?;
        let id = match (&req.task_id, &handle.config) {
            (id, _) if !id.is_empty() => id.clone(),
            (_, Some(c)) => c.id.clone(),
            _ => String::new(),
        };
        self.core
            .recover(&id, &handle.driver_state)
            .await
            .map_err(to_status)?;
        if let Some(c) = &handle.config {
            self.core.resume_logs(&super::convert::task_spec(c)).await;
        }
        Ok(Response::new(RecoverTaskResponse {}))
    }

    async fn start_task(
        &self,
        request: Request<StartTaskRequest>,
    ) -> Result<Response<StartTaskResponse>, Status> {
        let config = request
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("task is missing"))?;
        let user = TaskUserConfig::from_msgpack(&config.msgpack_driver_config)
            .map_err(|e| to_status(DriverError::from(e)))?;
        let handle = self
            .core
            .start(convert::task_spec(&config), user)
            .await
            .map_err(to_status)?;
        Ok(Response::new(StartTaskResponse {
            result: start_task_response::Result::Success as i32,
            driver_error_msg: String::new(),
            handle: Some(TaskHandle {
                version: i32::try_from(STATE_VERSION).unwrap_or(1),
                // echoed, so Nomad recovers (not restarts) the task after an agent restart
                config: Some(config),
                state: TaskState::Running as i32,
                driver_state: handle.state.encode(),
            }),
            network_override: None,
        }))
    }

    async fn wait_task(
        &self,
        request: Request<WaitTaskRequest>,
    ) -> Result<Response<WaitTaskResponse>, Status> {
        let id = request.into_inner().task_id;
        let result = self.core.wait(&id).await.map_err(to_status)?;
        Ok(Response::new(WaitTaskResponse {
            result: Some(convert::exit_result(&result)),
            err: result.err.unwrap_or_default(),
        }))
    }

    async fn stop_task(
        &self,
        request: Request<StopTaskRequest>,
    ) -> Result<Response<StopTaskResponse>, Status> {
        let req = request.into_inner();
        self.core
            .stop(&req.task_id, duration(req.timeout.as_ref()), &req.signal)
            .await
            .map_err(to_status)?;
        Ok(Response::new(StopTaskResponse {}))
    }

    async fn destroy_task(
        &self,
        request: Request<DestroyTaskRequest>,
    ) -> Result<Response<DestroyTaskResponse>, Status> {
        let req = request.into_inner();
        self.core
            .destroy(&req.task_id, req.force)
            .await
            .map_err(to_status)?;
        Ok(Response::new(DestroyTaskResponse {}))
    }

    async fn inspect_task(
        &self,
        request: Request<InspectTaskRequest>,
    ) -> Result<Response<InspectTaskResponse>, Status> {
        let i = self
            .core
            .inspect(&request.into_inner().task_id)
            .map_err(to_status)?;
        let (state, result, completed) = match &i.state {
            CoreState::Running => (TaskState::Running, ExitResult::default(), None),
            CoreState::Exited { result, at } => {
                (TaskState::Exited, convert::exit_result(result), Some(*at))
            }
        };
        Ok(Response::new(InspectTaskResponse {
            task: Some(TaskStatus {
                id: i.id,
                name: i.name,
                state: state as i32,
                started_at: Some(convert::timestamp(i.started_at)),
                completed_at: Some(
                    completed.map_or_else(convert::go_zero_time, convert::timestamp),
                ),
                result: Some(result),
            }),
            driver: Some(TaskDriverStatus {
                attributes: [("unit".to_string(), i.unit)].into_iter().collect(),
            }),
            network_override: None,
        }))
    }

    type TaskStatsStream = BoxStream<TaskStatsResponse>;

    async fn task_stats(
        &self,
        request: Request<TaskStatsRequest>,
    ) -> Result<Response<Self::TaskStatsStream>, Status> {
        let req = request.into_inner();
        let interval = duration(req.collection_interval.as_ref());
        let interval = if interval.is_zero() {
            Duration::from_secs(1)
        } else {
            interval
        };
        let samples = self.core.stats(&req.task_id, interval).map_err(to_status)?;
        let id = req.task_id;
        let stream = samples.map(move |s| {
            Ok(TaskStatsResponse {
                stats: Some(convert::stats(&id, &s)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type TaskEventsStream = BoxStream<DriverTaskEvent>;

    async fn task_events(
        &self,
        _: Request<TaskEventsRequest>,
    ) -> Result<Response<Self::TaskEventsStream>, Status> {
        let mut events = self.core.events();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                    ev = events.recv() => match ev {
                        Ok(ev) => if tx.send(Ok(convert::event(&ev))).await.is_err() { return },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(dropped = n, "task events dropped: the client reads too slowly");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn signal_task(
        &self,
        request: Request<SignalTaskRequest>,
    ) -> Result<Response<SignalTaskResponse>, Status> {
        let req = request.into_inner();
        self.core
            .signal(&req.task_id, &req.signal)
            .await
            .map_err(to_status)?;
        Ok(Response::new(SignalTaskResponse {}))
    }

    async fn exec_task(
        &self,
        request: Request<ExecTaskRequest>,
    ) -> Result<Response<ExecTaskResponse>, Status> {
        let req = request.into_inner();
        let out = self
            .core
            .exec_task(&req.task_id, req.command, duration(req.timeout.as_ref()))
            .await
            .map_err(to_status)?;
        Ok(Response::new(ExecTaskResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            result: Some(convert::exit_result(&out.result)),
        }))
    }

    type ExecTaskStreamingStream = BoxStream<ExecTaskStreamingResponse>;

    async fn exec_task_streaming(
        &self,
        request: Request<Streaming<ExecTaskStreamingRequest>>,
    ) -> Result<Response<Self::ExecTaskStreamingStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("exec stream ended before its setup message")
        })?;
        let setup = first.setup.clone().ok_or_else(|| {
            Status::invalid_argument("the first exec stream message must carry setup")
        })?;
        let session = self
            .core
            .exec_streaming(&setup.task_id, setup.command, setup.tty)
            .await
            .map_err(to_status)?;
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(32);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(32);
        tokio::spawn(async move {
            // a client half-close or error only ends the input; the session goes on
            let mut next = Some(first);
            while let Some(msg) = next {
                for input in convert::exec_inputs(&msg) {
                    if in_tx.send(input).await.is_err() {
                        return;
                    }
                }
                next = inbound.message().await.ok().flatten();
            }
        });
        tokio::spawn(session.run(in_rx, out_tx));
        let frames = ReceiverStream::new(out_rx).map(|o| Ok(convert::exec_frame(o)));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn create_network(
        &self,
        _: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        Err(Status::unimplemented(
            "this driver does not create networks (must_create_network = false)",
        ))
    }

    async fn destroy_network(
        &self,
        _: Request<DestroyNetworkRequest>,
    ) -> Result<Response<DestroyNetworkResponse>, Status> {
        Err(Status::unimplemented(
            "this driver does not create networks (must_create_network = false)",
        ))
    }
}
