//! BasePlugin: PluginInfo, ConfigSchema, SetConfig (validate and store; no side effects).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::config::{PluginConfig, schema};
use crate::driver::Driver;
use crate::proto::base::base_plugin_server::BasePlugin;
use crate::proto::base::{
    ConfigSchemaRequest, ConfigSchemaResponse, PluginInfoRequest, PluginInfoResponse, PluginType,
    SetConfigRequest, SetConfigResponse,
};
use crate::systemd::Systemd;

/// The plugin API version Nomad accepts.
pub const API_VERSION: &str = "v0.1.0";
/// What jobs write in `driver = "..."`.
pub const DRIVER_NAME: &str = "systemd";

pub struct Base<S: Systemd> {
    pub core: Arc<Driver<S>>,
}

#[tonic::async_trait]
impl<S: Systemd> BasePlugin for Base<S> {
    async fn plugin_info(
        &self,
        _: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        Ok(Response::new(PluginInfoResponse {
            r#type: PluginType::Driver as i32,
            plugin_api_versions: vec![API_VERSION.into()],
            plugin_version: env!("CARGO_PKG_VERSION").into(),
            name: DRIVER_NAME.into(),
        }))
    }

    async fn config_schema(
        &self,
        _: Request<ConfigSchemaRequest>,
    ) -> Result<Response<ConfigSchemaResponse>, Status> {
        Ok(Response::new(ConfigSchemaResponse {
            spec: Some(convert::spec(&schema::plugin_schema())),
        }))
    }

    async fn set_config(
        &self,
        request: Request<SetConfigRequest>,
    ) -> Result<Response<SetConfigResponse>, Status> {
        let req = request.into_inner();
        let cfg = PluginConfig::from_msgpack(&req.msgpack_config).map_err(|e| {
            Status::invalid_argument(format!("invalid nomad-driver-systemd plugin config: {e}"))
        })?;
        let real_launch = req.nomad_config.is_some();
        self.core
            .set_config(cfg, convert::compute(req.nomad_config.as_ref()));
        // a validation launch (no agent config) must have no side effects
        if real_launch {
            self.core.resume_removals();
        }
        Ok(Response::new(SetConfigResponse {}))
    }
}
