//! Nomad's gRPC services as thin adapters over the driver core: convert at the edge
//! (`convert`), map errors in one place (`status`).

mod base;
pub mod codec;
pub mod convert;
mod driver;
mod goplugin;
pub mod status;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::driver::Driver as Core;
use crate::proto::base::base_plugin_server::BasePluginServer;
use crate::proto::drivers::driver_server::DriverServer;
use crate::proto::plugin::grpc_broker_server::GrpcBrokerServer;
use crate::proto::plugin::grpc_controller_server::GrpcControllerServer;
use crate::proto::plugin::grpc_stdio_server::GrpcStdioServer;
use crate::systemd::Systemd;

/// Every Nomad-facing service, bound to one driver core.
pub fn routes<S: Systemd>(core: Arc<Core<S>>, shutdown: CancellationToken) -> Routes {
    let base = base::Base {
        core: Arc::clone(&core),
    };
    let driver = driver::DriverService {
        core,
        shutdown: shutdown.clone(),
    };
    let max = crate::config::task::limits::GRPC_MESSAGE;
    Routes::new(BasePluginServer::new(base).max_decoding_message_size(max))
        .add_service(DriverServer::new(driver).max_decoding_message_size(max))
        .add_service(GrpcControllerServer::new(goplugin::Controller {
            shutdown: shutdown.clone(),
        }))
        .add_service(GrpcStdioServer::new(goplugin::Stdio {
            shutdown: shutdown.clone(),
        }))
        .add_service(GrpcBrokerServer::new(goplugin::Broker { shutdown }))
}
