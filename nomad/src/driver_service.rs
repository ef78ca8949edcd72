//! `hashicorp.nomad.plugins.drivers.proto.Driver`: Nomad's task driver API over the engine.
//!
//! Engine calls block, so each runs in the runtime's blocking pool; a task's exit is
//! collected by its waiter thread (see [`crate::tasks`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{self, NodeFingerprint};
use crate::hclog;
use crate::plugin::{Configured, PLUGIN_VERSION, Plugin};
use crate::proto::drivers::{
    self as d, driver_capabilities as caps, driver_server, fingerprint_response::HealthState,
    network_isolation_spec::NetworkIsolationMode, start_task_response,
};
use crate::proto::structs::{Attribute, attribute};
use crate::start::{self, StartError};
use crate::stats::{self, CpuTracker};
use crate::status;
use crate::task_config;
use crate::tasks::{Finished, InsertError, TaskEntry, TaskMeta};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The TaskHandle format version written.
const TASK_HANDLE_VERSION: i32 = 1;
/// The stats interval when Nomad asks for none.
const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest stats interval honoured: each reading asks the task's supervisor.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(100);
/// The signal of a StopTask that names none.
const DEFAULT_STOP_SIGNAL: &str = "SIGINT";
/// The attribute prefix of everything this driver reports.
const ATTRIBUTE_PREFIX: &str = "driver.execdriver";

/// The Driver service.
#[derive(Debug)]
pub struct DriverService(pub Arc<Plugin>);

impl DriverService {
    fn configured(&self) -> Result<Arc<Configured>, Status> {
        self.0.configured().ok_or_else(status::not_configured)
    }

    fn entry(&self, task_id: &str) -> Result<Arc<TaskEntry>, Status> {
        self.0
            .tasks
            .get(task_id)
            .ok_or_else(|| status::unknown_task(task_id))
    }
}

/// Runs a blocking engine call in the blocking pool.
async fn blocking<T: Send + 'static>(
    context: &str,
    f: impl FnOnce() -> Result<T, engine::EngineError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(status::engine(context, &e)),
        Err(e) => Err(status::join(context, &e)),
    }
}

/// The driver's capabilities, as an exec-style driver with its own isolated root.
pub fn capabilities() -> d::DriverCapabilities {
    d::DriverCapabilities {
        send_signals: true,
        exec: true,
        // IMAGE: the task's root is built by the driver, so Nomad does not copy a chroot
        // into every task dir.
        fs_isolation: caps::FsIsolation::Image as i32,
        network_isolation_modes: vec![
            NetworkIsolationMode::Host as i32,
            NetworkIsolationMode::Group as i32,
        ],
        must_create_network: false,
        mount_configs: caps::MountConfigs::UnknownMounts as i32,
        disable_log_collection: false,
        dynamic_workload_users: false,
    }
}

/// The fingerprint as Nomad reads it: every attribute under `driver.execdriver`.
pub fn fingerprint_response(fp: &NodeFingerprint) -> d::FingerprintResponse {
    let string = |s: &str| Attribute {
        value: Some(attribute::Value::StringVal(s.to_owned())),
        unit: String::new(),
    };
    let mut attributes = HashMap::new();
    for (key, value) in &fp.attributes {
        // The engine's own health flag becomes Nomad's `driver.<name>` bool below.
        if key == "driver.exec" {
            continue;
        }
        attributes.insert(format!("{ATTRIBUTE_PREFIX}.{key}"), string(value));
    }
    attributes.insert(
        format!("{ATTRIBUTE_PREFIX}.version"),
        string(PLUGIN_VERSION),
    );
    if fp.healthy {
        attributes.insert(
            ATTRIBUTE_PREFIX.to_owned(),
            Attribute {
                value: Some(attribute::Value::BoolVal(true)),
                unit: String::new(),
            },
        );
    }
    d::FingerprintResponse {
        attributes,
        health: if fp.healthy {
            HealthState::Healthy
        } else {
            HealthState::Unhealthy
        } as i32,
        health_description: if fp.healthy {
            "healthy".to_owned()
        } else {
            fp.reason.clone().unwrap_or_else(|| "unhealthy".to_owned())
        },
        err: String::new(),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn exit_result(finished: &Finished) -> d::ExitResult {
    d::ExitResult {
        exit_code: finished.exit.exit_code,
        signal: finished.exit.signal,
        oom_killed: finished.exit.oom_killed,
    }
}

fn proto_duration(d: Option<&prost_types::Duration>) -> Duration {
    d.and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or(Duration::ZERO)
}

fn start_error_status(e: &StartError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl driver_server::Driver for DriverService {
    async fn task_config_schema(
        &self,
        _: Request<d::TaskConfigSchemaRequest>,
    ) -> Result<Response<d::TaskConfigSchemaResponse>, Status> {
        Ok(Response::new(d::TaskConfigSchemaResponse {
            spec: Some(task_config::schema()),
        }))
    }

    async fn capabilities(
        &self,
        _: Request<d::CapabilitiesRequest>,
    ) -> Result<Response<d::CapabilitiesResponse>, Status> {
        Ok(Response::new(d::CapabilitiesResponse {
            capabilities: Some(capabilities()),
        }))
    }

    type FingerprintStream = BoxStream<d::FingerprintResponse>;

    async fn fingerprint(
        &self,
        _: Request<d::FingerprintRequest>,
    ) -> Result<Response<Self::FingerprintStream>, Status> {
        self.configured()?;
        let plugin = Arc::clone(&self.0);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let down = plugin.shutting_down();
            tokio::pin!(down);
            let mut last: Option<d::FingerprintResponse> = None;
            loop {
                // Read each round, so a SetConfig in between takes effect.
                let Some(configured) = plugin.configured() else {
                    break;
                };
                let engine = Arc::clone(&configured.engine);
                let response = match tokio::task::spawn_blocking(move || engine.fingerprint()).await
                {
                    Ok(fp) => fingerprint_response(&fp),
                    Err(e) => d::FingerprintResponse {
                        health: HealthState::Undetected as i32,
                        health_description: "fingerprint failed".into(),
                        err: format!("the fingerprint did not finish: {e}"),
                        ..Default::default()
                    },
                };
                if last.as_ref() != Some(&response) {
                    if tx.send(Ok(response.clone())).await.is_err() {
                        break;
                    }
                    last = Some(response);
                }
                tokio::select! {
                    () = tokio::time::sleep(configured.settings.fingerprint_period) => {}
                    () = &mut down => break,
                    () = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn recover_task(
        &self,
        request: Request<d::RecoverTaskRequest>,
    ) -> Result<Response<d::RecoverTaskResponse>, Status> {
        let request = request.into_inner();
        let task_id = request.task_id;
        // Idempotent: after an agent restart the plugin still has the task.
        if self.0.tasks.contains(&task_id) {
            return Ok(Response::new(d::RecoverTaskResponse {}));
        }
        let handle = request
            .handle
            .ok_or_else(|| status::invalid(format!("recovering task {task_id:?}: no handle")))?;
        let handle_id = String::from_utf8(handle.driver_state).map_err(|_| {
            status::invalid(format!(
                "recovering task {task_id:?}: driver_state is not an execdriver handle id"
            ))
        })?;
        let want = start::engine_task_id(&task_id);
        let found = engine::task_id_of_handle(&handle_id)
            .map_err(|e| status::engine(&format!("recovering task {task_id:?}"), &e))?;
        if found != want {
            return Err(status::invalid(format!(
                "recovering task {task_id:?}: its handle is for task {found:?}, not {want:?}"
            )));
        }
        let configured = self.configured()?;
        let engine = Arc::clone(&configured.engine);
        let context = format!("recovering task {task_id:?}");
        let task = blocking(&context, move || engine.recover(&handle_id)).await?;
        let (name, alloc_id) = handle
            .config
            .map(|c| (c.name, c.alloc_id))
            .unwrap_or_default();
        let meta = TaskMeta {
            nomad_id: task_id.clone(),
            name,
            alloc_id,
            started_at: None,
        };
        match self.0.tasks.insert(meta, task) {
            Ok(_) => hclog::info("task recovered", &[("task_id", &task_id)]),
            // Another RecoverTask for the same task won the race: that one is kept.
            Err(InsertError::Exists { .. }) => {}
            Err(e) => return Err(Status::internal(format!("{context}: {e}"))),
        }
        Ok(Response::new(d::RecoverTaskResponse {}))
    }

    async fn start_task(
        &self,
        request: Request<d::StartTaskRequest>,
    ) -> Result<Response<d::StartTaskResponse>, Status> {
        let begun = Instant::now();
        let configured = self.configured()?;
        let task = request
            .into_inner()
            .task
            .ok_or_else(|| status::invalid("StartTask without a task"))?;
        let context = format!("starting task {:?}", task.id);
        let req = start::start_request(&task, &configured.settings)
            .map_err(|e| start_error_status(&e))?;
        if self.0.tasks.contains(&task.id) {
            return Err(Status::already_exists(format!(
                "{context}: a task with this id is already running here"
            )));
        }
        let engine = Arc::clone(&configured.engine);
        let started = blocking(&context, move || engine.start(&req)).await?;
        let handle_id = started.handle_id();
        let meta = TaskMeta {
            nomad_id: task.id.clone(),
            name: task.name.clone(),
            alloc_id: task.alloc_id.clone(),
            started_at: Some(SystemTime::now()),
        };
        if let Err(e) = self.0.tasks.insert(meta, started) {
            // Nobody could ever wait for or stop it: do not leave it running.
            let why = e.to_string();
            hclog::error(
                "task started but cannot be tracked; killing it",
                &[("task_id", &task.id), ("error", &why)],
            );
            let orphan = e.into_task();
            let killed = match blocking(&context, move || orphan.force_kill()).await {
                Ok(()) => "it was killed".to_owned(),
                Err(s) => format!("killing it failed: {}", s.message()),
            };
            return Err(Status::internal(format!("{context}: {why}; {killed}")));
        }
        let millis = begun.elapsed().as_millis().to_string();
        hclog::info(
            "task started",
            &[("task_id", &task.id), ("start_ms", &millis)],
        );
        Ok(Response::new(d::StartTaskResponse {
            result: start_task_response::Result::Success as i32,
            driver_error_msg: String::new(),
            handle: Some(d::TaskHandle {
                version: TASK_HANDLE_VERSION,
                config: Some(task),
                state: d::TaskState::Running as i32,
                driver_state: handle_id.into_bytes(),
            }),
            network_override: None,
        }))
    }

    async fn wait_task(
        &self,
        request: Request<d::WaitTaskRequest>,
    ) -> Result<Response<d::WaitTaskResponse>, Status> {
        let task_id = request.into_inner().task_id;
        let entry = self.entry(&task_id)?;
        let mut rx = entry.watch();
        let down = self.0.shutting_down();
        let finished = tokio::select! {
            finished = rx.wait_for(Option::is_some) => match finished {
                Ok(f) => f.clone(),
                Err(_) => {
                    return Err(Status::internal(format!(
                        "waiting for task {task_id:?}: its waiter is gone without a result"
                    )));
                }
            },
            () = down => return Err(Status::unavailable("the plugin is shutting down")),
        };
        let Some(finished) = finished else {
            return Err(Status::internal("waiter delivered no result"));
        };
        Ok(Response::new(d::WaitTaskResponse {
            result: Some(exit_result(&finished)),
            err: finished.exit.error.clone().unwrap_or_default(),
        }))
    }

    async fn stop_task(
        &self,
        request: Request<d::StopTaskRequest>,
    ) -> Result<Response<d::StopTaskResponse>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.task_id)?;
        let name = if request.signal.is_empty() {
            DEFAULT_STOP_SIGNAL
        } else {
            request.signal.as_str()
        };
        let context = format!("stopping task {:?}", request.task_id);
        let signal = engine::parse_signal(name).map_err(|e| status::engine(&context, &e))?;
        let timeout = proto_duration(request.timeout.as_ref());
        let task = Arc::clone(&entry.task);
        blocking(&context, move || task.stop(signal, timeout)).await?;
        Ok(Response::new(d::StopTaskResponse {}))
    }

    async fn destroy_task(
        &self,
        request: Request<d::DestroyTaskRequest>,
    ) -> Result<Response<d::DestroyTaskResponse>, Status> {
        let request = request.into_inner();
        // Destroying what is not there is done already.
        let Some(entry) = self.0.tasks.get(&request.task_id) else {
            return Ok(Response::new(d::DestroyTaskResponse {}));
        };
        let context = format!("destroying task {:?}", request.task_id);
        if entry.task.is_running() && !request.force {
            return Err(status::with_recoverable(
                tonic::Code::FailedPrecondition,
                format!("{context}: it is still running; stop it first or destroy with force"),
                false,
            ));
        }
        // Through the driver's removal: the task's records go with it (a forced one is
        // killed first). A failure keeps the entry, so that Nomad's retry can finish it.
        let task = Arc::clone(&entry.task);
        let force = request.force;
        blocking(&context, move || task.remove(force)).await?;
        self.0.tasks.remove(&request.task_id);
        hclog::info("task destroyed", &[("task_id", &request.task_id)]);
        Ok(Response::new(d::DestroyTaskResponse {}))
    }

    async fn inspect_task(
        &self,
        request: Request<d::InspectTaskRequest>,
    ) -> Result<Response<d::InspectTaskResponse>, Status> {
        let task_id = request.into_inner().task_id;
        let entry = self.entry(&task_id)?;
        let finished = entry.finished();
        let state = if finished.is_some() {
            d::TaskState::Exited
        } else {
            d::TaskState::Running
        };
        let mut attributes = HashMap::new();
        attributes.insert("engine_task_id".to_owned(), entry.task.task_id().to_owned());
        Ok(Response::new(d::InspectTaskResponse {
            task: Some(d::TaskStatus {
                id: entry.nomad_id.clone(),
                name: entry.name.clone(),
                state: state as i32,
                started_at: entry.started_at.map(timestamp),
                completed_at: finished.as_ref().map(|f| timestamp(f.completed_at)),
                result: finished.as_ref().map(exit_result),
            }),
            driver: Some(d::TaskDriverStatus { attributes }),
            network_override: None,
        }))
    }

    type TaskStatsStream = BoxStream<d::TaskStatsResponse>;

    async fn task_stats(
        &self,
        request: Request<d::TaskStatsRequest>,
    ) -> Result<Response<Self::TaskStatsStream>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.task_id)?;
        let interval = match proto_duration(request.collection_interval.as_ref()) {
            d if d.is_zero() => DEFAULT_STATS_INTERVAL,
            d => d.max(MIN_STATS_INTERVAL),
        };
        let (tx, rx) = mpsc::channel(1);
        let down = self.0.shutting_down();
        tokio::spawn(async move {
            tokio::pin!(down);
            let mhz = tokio::task::spawn_blocking(stats::cpu_mhz_per_core)
                .await
                .ok()
                .flatten();
            let mut tracker = CpuTracker::new(mhz);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let context = format!("reading stats of task {:?}", entry.nomad_id);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = &mut down => break,
                    () = tx.closed() => break,
                }
                let task = Arc::clone(&entry.task);
                let usage = match blocking(&context, move || task.usage()).await {
                    Ok(Some(usage)) => usage,
                    // Exited: the stream is over.
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                let read_at = usage.read_at.unwrap_or_else(SystemTime::now);
                let stats = d::TaskStats {
                    id: entry.nomad_id.clone(),
                    timestamp: Some(timestamp(read_at)),
                    agg_resource_usage: Some(tracker.record(usage)),
                    resource_usage_by_pid: HashMap::new(),
                };
                let response = d::TaskStatsResponse { stats: Some(stats) };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TaskEventsStream = BoxStream<d::DriverTaskEvent>;

    async fn task_events(
        &self,
        _: Request<d::TaskEventsRequest>,
    ) -> Result<Response<Self::TaskEventsStream>, Status> {
        let mut events = self.0.tasks.subscribe();
        let (tx, rx) = mpsc::channel(16);
        let down = self.0.shutting_down();
        tokio::spawn(async move {
            tokio::pin!(down);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => {
                            if tx.send(Ok(event)).await.is_err() {
                                break;
                            }
                        }
                        // A slow reader missed some: go on with the next.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    () = &mut down => break,
                    () = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn signal_task(
        &self,
        request: Request<d::SignalTaskRequest>,
    ) -> Result<Response<d::SignalTaskResponse>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.task_id)?;
        let context = format!("signalling task {:?}", request.task_id);
        let signal =
            engine::parse_signal(&request.signal).map_err(|e| status::engine(&context, &e))?;
        let task = Arc::clone(&entry.task);
        blocking(&context, move || task.signal(signal)).await?;
        Ok(Response::new(d::SignalTaskResponse {}))
    }

    async fn exec_task(
        &self,
        _: Request<d::ExecTaskRequest>,
    ) -> Result<Response<d::ExecTaskResponse>, Status> {
        Err(exec_unimplemented())
    }

    type ExecTaskStreamingStream = BoxStream<d::ExecTaskStreamingResponse>;

    async fn exec_task_streaming(
        &self,
        _: Request<Streaming<d::ExecTaskStreamingRequest>>,
    ) -> Result<Response<Self::ExecTaskStreamingStream>, Status> {
        Err(exec_unimplemented())
    }

    async fn create_network(
        &self,
        _: Request<d::CreateNetworkRequest>,
    ) -> Result<Response<d::CreateNetworkResponse>, Status> {
        Err(Status::unimplemented(
            "execdriver does not create networks (must_create_network is false)",
        ))
    }

    async fn destroy_network(
        &self,
        _: Request<d::DestroyNetworkRequest>,
    ) -> Result<Response<d::DestroyNetworkResponse>, Status> {
        Err(Status::unimplemented(
            "execdriver does not create networks (must_create_network is false)",
        ))
    }

    async fn init(&self, _: Request<d::InitRequest>) -> Result<Response<d::InitResponse>, Status> {
        Ok(Response::new(d::InitResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<d::ShutdownRequest>,
    ) -> Result<Response<d::ShutdownResponse>, Status> {
        // Tasks outlive the plugin by design; the process itself ends by the controller.
        Ok(Response::new(d::ShutdownResponse {}))
    }
}

fn exec_unimplemented() -> Status {
    Status::unimplemented(
        "exec into a running task is not supported by execdriver yet: the engine has no exec \
         API (issue 8, item 5)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn capabilities_are_an_image_driver_with_host_and_group_networking() {
        let c = capabilities();
        assert!(c.send_signals && c.exec);
        assert_eq!(c.fs_isolation, caps::FsIsolation::Image as i32);
        assert_eq!(c.network_isolation_modes, vec![0, 1]);
        assert_eq!(c.mount_configs, 0);
        assert!(!c.must_create_network);
    }

    #[test]
    fn fingerprint_attributes_live_under_the_driver_name() {
        let mut attributes = BTreeMap::new();
        attributes.insert("driver.exec".to_owned(), "1".to_owned());
        attributes.insert("unique.cgroup.version".to_owned(), "v1".to_owned());
        let healthy = fingerprint_response(&NodeFingerprint {
            healthy: true,
            reason: None,
            attributes: attributes.clone(),
        });
        assert_eq!(healthy.health, HealthState::Healthy as i32);
        assert_eq!(
            healthy.attributes["driver.execdriver"].value,
            Some(attribute::Value::BoolVal(true))
        );
        assert!(
            healthy
                .attributes
                .contains_key("driver.execdriver.unique.cgroup.version")
        );
        assert!(
            !healthy
                .attributes
                .contains_key("driver.execdriver.driver.exec")
        );
        let sick = fingerprint_response(&NodeFingerprint {
            healthy: false,
            reason: Some("must run as root".into()),
            attributes,
        });
        assert_eq!(sick.health, HealthState::Unhealthy as i32);
        assert_eq!(sick.health_description, "must run as root");
        assert!(!sick.attributes.contains_key("driver.execdriver"));
    }
}
