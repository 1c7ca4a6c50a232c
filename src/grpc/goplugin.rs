//! go-plugin's infrastructure services: Controller (graceful exit), Stdio and Broker (held
//! open, unused by Nomad drivers).

use std::pin::Pin;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::plugin::grpc_broker_server::GrpcBroker;
use crate::proto::plugin::grpc_controller_server::GrpcController;
use crate::proto::plugin::grpc_stdio_server::GrpcStdio;
use crate::proto::plugin::{ConnInfo, Empty, StdioData};

pub struct Controller {
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::debug!("host asked the plugin to exit");
        // answer first, then stop serving: the process exits once the server drains
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            token.cancel();
        });
        Ok(Response::new(Empty {}))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A stream that yields nothing and ends when the plugin shuts down.
fn idle<T: Send + 'static>(shutdown: CancellationToken) -> BoxStream<T> {
    Box::pin(
        futures::stream::once(async move {
            shutdown.cancelled().await;
        })
        .filter_map(|()| async { None }),
    )
}

use futures::StreamExt;

pub struct Stdio {
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<StdioData>;

    async fn stream_stdio(
        &self,
        _: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        // our logs go to stderr as hclog lines; nothing is forwarded here
        Ok(Response::new(idle(self.shutdown.clone())))
    }
}

pub struct Broker {
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = BoxStream<ConnInfo>;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let shutdown = self.shutdown.clone();
        // drain (and ignore) what the host sends until it closes or we shut down
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    msg = incoming.next() => if !matches!(msg, Some(Ok(_))) { return },
                }
            }
        });
        Ok(Response::new(idle(self.shutdown.clone())))
    }
}
