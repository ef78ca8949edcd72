//! The services go-plugin's client expects of any gRPC plugin: health, controller, stdio and
//! broker.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::hclog;
use crate::plugin::Plugin;
use crate::proto::go_plugin::{
    self as gp, grpc_broker_server, grpc_controller_server, grpc_stdio_server,
};
use crate::proto::health::{self, health_check_response::ServingStatus, health_server};

/// The service name go-plugin's client checks.
pub const HEALTH_SERVICE: &str = "plugin";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream that sends nothing and ends when the plugin shuts down.
fn idle_stream<T: Send + 'static>(plugin: &Plugin) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel::<Result<T, Status>>(1);
    let down = plugin.shutting_down();
    tokio::spawn(async move {
        tokio::select! {
            () = down => {}
            () = tx.closed() => {}
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// `grpc.health.v1.Health`.
#[derive(Debug)]
pub struct Health(pub Arc<Plugin>);

fn serving(service: &str) -> Result<health::HealthCheckResponse, Status> {
    if service.is_empty() || service == HEALTH_SERVICE {
        Ok(health::HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        })
    } else {
        Err(Status::not_found(format!("unknown service {service:?}")))
    }
}

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        request: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        serving(&request.into_inner().service).map(Response::new)
    }

    type WatchStream = BoxStream<health::HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<health::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = serving(&request.into_inner().service)?;
        let (tx, rx) = mpsc::channel(1);
        let down = self.0.shutting_down();
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_ok() {
                tokio::select! {
                    () = down => {}
                    () = tx.closed() => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// `plugin.GRPCController`: Shutdown ends the plugin process; tasks live on under their
/// supervisors.
#[derive(Debug)]
pub struct Controller(pub Arc<Plugin>);

#[tonic::async_trait]
impl grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _: Request<gp::Empty>) -> Result<Response<gp::Empty>, Status> {
        hclog::info("shutdown requested by the plugin client", &[]);
        self.0.shut_down();
        Ok(Response::new(gp::Empty {}))
    }
}

/// `plugin.GRPCStdio`: an open stream. Our logs go to stderr, which go-plugin reads itself.
#[derive(Debug)]
pub struct Stdio(pub Arc<Plugin>);

#[tonic::async_trait]
impl grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<gp::StdioData>;

    async fn stream_stdio(
        &self,
        _: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(idle_stream(&self.0)))
    }
}

/// `plugin.GRPCBroker`: accepted and idle; a Nomad driver opens no sub-connections.
#[derive(Debug)]
pub struct Broker(pub Arc<Plugin>);

#[tonic::async_trait]
impl grpc_broker_server::GrpcBroker for Broker {
    type StartStreamStream = BoxStream<gp::ConnInfo>;

    async fn start_stream(
        &self,
        request: Request<Streaming<gp::ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<gp::ConnInfo, Status>>(1);
        let down = self.0.shutting_down();
        tokio::spawn(async move {
            tokio::pin!(down);
            loop {
                tokio::select! {
                    () = &mut down => break,
                    () = tx.closed() => break,
                    message = incoming.message() => match message {
                        Ok(Some(info)) => {
                            let id = info.service_id.to_string();
                            hclog::debug(
                                "ignoring a broker connection offer",
                                &[("service_id", &id), ("address", &info.address)],
                            );
                        }
                        // The client closed its side, or the connection went.
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
