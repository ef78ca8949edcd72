//! The plugin process: handshake, gRPC server on the unix socket, and an orderly exit.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::base_service::Base;
use crate::driver_service::DriverService;
use crate::go_plugin::{Broker, Controller, Health, Stdio};
use crate::handshake::{self, HandshakeError, SocketDir};
use crate::hclog;
use crate::plugin::Plugin;
use crate::proto::base::base_plugin_server::BasePluginServer;
use crate::proto::drivers::driver_server::DriverServer;
use crate::proto::go_plugin::grpc_broker_server::GrpcBrokerServer;
use crate::proto::go_plugin::grpc_controller_server::GrpcControllerServer;
use crate::proto::go_plugin::grpc_stdio_server::GrpcStdioServer;
use crate::proto::health::health_server::HealthServer;

/// How long in-flight calls get to finish once shutdown is asked for. go-plugin's client
/// kills the process 2 s after its Shutdown call, so this stays well below that.
const DRAIN: Duration = Duration::from_millis(500);
/// Exit status when the plugin cannot start.
pub const EXIT_FAILED: i32 = 1;

/// Runs the plugin until it is told to stop; returns the process exit status.
pub fn run() -> i32 {
    let env = |key: &str| std::env::var_os(key);
    if let Err(e) = handshake::check_env(env) {
        // For a person at a terminal, so plain text rather than a JSON log line.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "execdriver-nomad: {e}");
        return EXIT_FAILED;
    }
    let socket_dir = match SocketDir::create(&handshake::socket_parent(env)) {
        Ok(dir) => dir,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            hclog::error(
                "cannot build the async runtime",
                &[("error", &e.to_string())],
            );
            return EXIT_FAILED;
        }
    };
    let code = runtime.block_on(serve(&socket_dir));
    // Blocking calls still running (a stop waiting out its timeout) are not waited for:
    // the tasks live on under their supervisors, and Nomad recovers them.
    runtime.shutdown_timeout(Duration::ZERO);
    drop(socket_dir);
    code
}

fn fail(e: &HandshakeError) -> i32 {
    hclog::error("cannot start the plugin", &[("error", &e.to_string())]);
    EXIT_FAILED
}

async fn serve(socket_dir: &SocketDir) -> i32 {
    let socket = socket_dir.socket_path();
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(source) => {
            return fail(&HandshakeError::Io {
                what: "binding the plugin socket",
                path: socket,
                source,
            });
        }
    };
    let plugin = Arc::new(Plugin::new());
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                hclog::error("cannot handle SIGTERM", &[("error", &e.to_string())]);
                return EXIT_FAILED;
            }
        };
    {
        let plugin = Arc::clone(&plugin);
        tokio::spawn(async move {
            if terminate.recv().await.is_some() {
                hclog::info("SIGTERM received; exiting", &[]);
                plugin.shut_down();
            }
        });
    }
    if let Err(e) = handshake::announce(&socket) {
        hclog::error(
            "cannot write the handshake line to stdout",
            &[("error", &e.to_string())],
        );
        return EXIT_FAILED;
    }
    let server = tonic::transport::Server::builder()
        .add_service(HealthServer::new(Health(Arc::clone(&plugin))))
        .add_service(GrpcControllerServer::new(Controller(Arc::clone(&plugin))))
        .add_service(GrpcStdioServer::new(Stdio(Arc::clone(&plugin))))
        .add_service(GrpcBrokerServer::new(Broker(Arc::clone(&plugin))))
        .add_service(BasePluginServer::new(Base(Arc::clone(&plugin))))
        .add_service(DriverServer::new(DriverService(Arc::clone(&plugin))))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), plugin.shutting_down());
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = plugin.shutting_down() => {
            // Streams end on the same signal; what is still running after the drain is a
            // blocking engine call, which must not hold the exit up.
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    let tasks = plugin.tasks.len().to_string();
    match result {
        Ok(()) => {
            hclog::info("plugin exiting", &[("tasks_left_running", &tasks)]);
            0
        }
        Err(e) => {
            hclog::error("the gRPC server failed", &[("error", &e.to_string())]);
            EXIT_FAILED
        }
    }
}

/// The process entry point: the supervisor mode, or the plugin.
pub fn main_with_args(args: &[OsString]) -> i32 {
    let _ = args;
    if let Some(code) = crate::engine::supervisor_main() {
        return code;
    }
    // Nomad's agent gets Ctrl-C as a process group; the plugin must outlive it. Ignored
    // dispositions survive exec, so supervisors ignore it too (their tasks get SIG_DFL back).
    // SAFETY: setting a signal disposition to SIG_IGN before any thread exists.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    std::panic::set_hook(Box::new(|info| {
        hclog::error(
            "internal error",
            &[("panic", &info.to_string().replace('\n', " "))],
        );
    }));
    run()
}
