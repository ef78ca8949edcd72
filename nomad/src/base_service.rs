//! `hashicorp.nomad.plugins.base.proto.BasePlugin`: who the plugin is, its config schema, and
//! its config.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::hclog;
use crate::plugin::{PLUGIN_API_VERSIONS, PLUGIN_NAME, PLUGIN_VERSION, Plugin};
use crate::proto::base::{self, base_plugin_server};
use crate::settings;

/// The BasePlugin service.
#[derive(Debug)]
pub struct Base(pub Arc<Plugin>);

#[tonic::async_trait]
impl base_plugin_server::BasePlugin for Base {
    async fn plugin_info(
        &self,
        _: Request<base::PluginInfoRequest>,
    ) -> Result<Response<base::PluginInfoResponse>, Status> {
        Ok(Response::new(base::PluginInfoResponse {
            r#type: base::PluginType::Driver as i32,
            plugin_api_versions: PLUGIN_API_VERSIONS
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
            plugin_version: PLUGIN_VERSION.to_owned(),
            name: PLUGIN_NAME.to_owned(),
        }))
    }

    async fn config_schema(
        &self,
        _: Request<base::ConfigSchemaRequest>,
    ) -> Result<Response<base::ConfigSchemaResponse>, Status> {
        Ok(Response::new(base::ConfigSchemaResponse {
            spec: Some(settings::schema()),
        }))
    }

    async fn set_config(
        &self,
        request: Request<base::SetConfigRequest>,
    ) -> Result<Response<base::SetConfigResponse>, Status> {
        let request = request.into_inner();
        let version = request.plugin_api_version.as_str();
        // An agent that sends no version predates the negotiation and speaks v0.1.0.
        if !version.is_empty() && !PLUGIN_API_VERSIONS.contains(&version) {
            return Err(Status::invalid_argument(format!(
                "plugin api version {version:?} is not supported; this plugin speaks {}",
                PLUGIN_API_VERSIONS.join(", ")
            )));
        }
        let settings = settings::decode(&request.msgpack_config)
            .map_err(|e| Status::invalid_argument(format!("execdriver plugin config: {e}")))?;
        let data_dir = settings.data_dir.display().to_string();
        self.0.configure(settings);
        hclog::debug(
            "configured",
            &[("data_dir", &data_dir), ("plugin_api_version", version)],
        );
        Ok(Response::new(base::SetConfigResponse {}))
    }
}
