//! Starting the plugin binary the way Nomad does, and talking to it over its real socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use execdriver_nomad::handshake::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use execdriver_nomad::proto::base::base_plugin_client::BasePluginClient;
use execdriver_nomad::proto::drivers::driver_client::DriverClient;
use execdriver_nomad::proto::go_plugin::grpc_controller_client::GrpcControllerClient;
use execdriver_nomad::proto::health::health_client::HealthClient;
use execdriver_nomad::proto::{base, drivers};
use rmpv::Value as R;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long the plugin gets to print its handshake line (Nomad waits a minute).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The plugin binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_execdriver-nomad"))
}

/// A running plugin process, killed (by its pid, as our own child) when dropped.
pub struct PluginProcess {
    child: Option<Child>,
    /// The socket it announced.
    pub socket: PathBuf,
    /// The whole handshake line.
    pub line: String,
    stderr_log: PathBuf,
    _socket_parent: tempfile::TempDir,
}

impl PluginProcess {
    /// Starts the plugin with Nomad's environment.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts the plugin, then closes the read ends of its stdout and stderr, as a crashed
    /// agent leaves them.
    pub fn start_with_broken_pipes() -> Self {
        Self::start_with(true)
    }

    fn start_with(broken_pipes: bool) -> Self {
        let socket_parent = tempfile::tempdir().expect("socket tempdir");
        let stderr_log = socket_parent.path().join("stderr.log");
        let stderr = if broken_pipes {
            Stdio::piped()
        } else {
            Stdio::from(std::fs::File::create(&stderr_log).expect("stderr log"))
        };
        let mut child = Command::new(binary())
            .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
            .env("PLUGIN_PROTOCOL_VERSIONS", "2")
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .env("PLUGIN_UNIX_SOCKET_DIR", socket_parent.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn plugin");
        let stdout = child.stdout.take().expect("stdout");
        // Closed at once: nothing may be written to it, and the plugin must live with that.
        drop(child.stderr.take());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            if !broken_pipes {
                // Later stdout is discarded, as go-plugin does.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }
        });
        let line = match rx.recv_timeout(HANDSHAKE_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no handshake line within {HANDSHAKE_TIMEOUT:?}");
            }
        };
        let parts: Vec<&str> = line.trim_end_matches('\n').split('|').collect();
        assert_eq!(parts.len(), 6, "handshake line {line:?}");
        assert_eq!(&parts[..3], &["1", "2", "unix"], "handshake line {line:?}");
        assert_eq!(&parts[4..], &["grpc", ""], "handshake line {line:?}");
        let socket = PathBuf::from(parts[3]);
        Self {
            child: Some(child),
            socket,
            line,
            stderr_log,
            _socket_parent: socket_parent,
        }
    }

    /// The plugin's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A gRPC channel over the announced socket.
    pub async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::try_from("http://plugin.invalid")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .expect("connect to the plugin socket")
    }

    /// All the clients.
    pub async fn clients(&self) -> Clients {
        let channel = self.channel().await;
        Clients {
            base: BasePluginClient::new(channel.clone()),
            driver: DriverClient::new(channel.clone()),
            health: HealthClient::new(channel.clone()),
            controller: GrpcControllerClient::new(channel),
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process with SIGKILL, as a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the plugin wrote on stderr so far.
    pub fn stderr(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Sends a signal to the plugin process (our own child, by pid).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            nix::sys::signal::kill(pid, signal).expect("signal the plugin");
        }
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("plugin stderr:\n{}", self.stderr());
        }
        self.kill();
    }
}

/// The gRPC clients of one plugin.
pub struct Clients {
    /// BasePlugin.
    pub base: BasePluginClient<Channel>,
    /// Driver.
    pub driver: DriverClient<Channel>,
    /// grpc.health.v1.
    pub health: HealthClient<Channel>,
    /// go-plugin's controller.
    pub controller: GrpcControllerClient<Channel>,
}

/// cty-style msgpack of an object (keys sorted, as cty writes them).
pub fn msgpack(pairs: Vec<(&str, R)>) -> Vec<u8> {
    let mut pairs = pairs;
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let map = R::Map(pairs.into_iter().map(|(k, v)| (R::from(k), v)).collect());
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).expect("encode");
    out
}

/// A list of strings as msgpack.
pub fn strings(items: &[&str]) -> R {
    R::Array(items.iter().map(|s| R::from(*s)).collect())
}

/// The driver slice of a test's data dir: one of its own, so the node's `execdriver.slice`
/// is never touched; [`TaskGuard`] removes it.
pub fn slice_for(data_dir: &Path) -> String {
    let name: String = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("execdriver-test-nomad-{name}")
}

/// The plugin config pointing at `data_dir` and its slice, every other setting default.
pub fn plugin_config(data_dir: &Path) -> Vec<u8> {
    msgpack(vec![
        ("data_dir", R::from(data_dir.display().to_string())),
        ("slice_name", R::from(slice_for(data_dir))),
    ])
}

/// SetConfig with `config`.
pub fn set_config_request(config: Vec<u8>) -> base::SetConfigRequest {
    base::SetConfigRequest {
        msgpack_config: config,
        nomad_config: Some(base::NomadConfig {
            driver: Some(base::NomadDriverConfig {
                client_max_port: 25000,
                client_min_port: 10000,
                topology: None,
            }),
        }),
        plugin_api_version: "v0.1.0".into(),
    }
}

/// An alloc dir laid out as Nomad lays it out for an image-isolated driver.
pub struct AllocDir {
    /// Holds everything; removed on drop.
    pub root: tempfile::TempDir,
    /// `<root>/alloc-id`: what Nomad sends as `alloc_dir`.
    pub dir: PathBuf,
}

impl AllocDir {
    /// `<alloc>/alloc` (shared, writable by the task user) and `<alloc>/<task>/{local,secrets}`.
    pub fn new(task: &str) -> Self {
        let root = tempfile::tempdir().expect("alloc tempdir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let dir = root.path().join("0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11");
        for sub in ["alloc", "alloc/logs", task] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        std::fs::set_permissions(dir.join("alloc"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod alloc");
        for sub in [dir.clone(), dir.join(task)] {
            std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Self { root, dir }
    }

    /// The shared dir, `/alloc` in the task.
    pub fn shared(&self) -> PathBuf {
        self.dir.join("alloc")
    }
}

/// A Nomad TaskConfig for `name` in `alloc`, running `command args`.
pub fn task_config(
    alloc: &AllocDir,
    name: &str,
    suffix: &str,
    command: &str,
    args: &[&str],
) -> drivers::TaskConfig {
    drivers::TaskConfig {
        id: format!("0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11/{name}/{suffix}"),
        name: name.into(),
        alloc_id: "0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11".into(),
        alloc_dir: alloc.dir.display().to_string(),
        msgpack_driver_config: msgpack(vec![
            ("args", strings(args)),
            ("command", R::from(command)),
        ]),
        env: [
            ("NOMAD_ALLOC_DIR", "/alloc"),
            ("NOMAD_TASK_DIR", "/local"),
            ("NOMAD_SECRETS_DIR", "/secrets"),
            ("FOO", "bar"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        resources: Some(drivers::Resources {
            allocated_resources: Some(drivers::AllocatedTaskResources {
                cpu: Some(drivers::AllocatedCpuResources { cpu_shares: 100 }),
                memory: Some(drivers::AllocatedMemoryResources {
                    memory_mb: 64,
                    memory_max_mb: 0,
                }),
                networks: vec![],
            }),
            ..Default::default()
        }),
        stdout_path: "/dev/null".into(),
        stderr_path: "/dev/null".into(),
        ..Default::default()
    }
}

/// Waits (bounded) until `path` holds a whole line (a shell's `echo > path` creates the file
/// before it writes it); returns its contents.
pub fn wait_for_line(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = wait_for_file(path, timeout);
        if text.ends_with('\n') {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} held no whole line within {timeout:?}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until `path` exists; returns its contents.
pub fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a task left running by a failed test, straight through the engine.
pub struct TaskGuard {
    data_dir: PathBuf,
    handle_id: Option<String>,
}

impl TaskGuard {
    /// A guard for tasks under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            handle_id: None,
        }
    }

    /// The task to kill if the test fails.
    pub fn arm(&mut self, handle_id: &[u8]) {
        self.handle_id = Some(String::from_utf8_lossy(handle_id).into_owned());
    }

    /// The task is gone: nothing to do.
    pub fn disarm(&mut self) {
        self.handle_id = None;
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let slice = slice_for(&self.data_dir);
        if let Some(handle_id) = self.handle_id.take() {
            let config = execdriver_linux::LinuxConfig::new(&self.data_dir)
                .with_slice_name(&slice)
                .with_supervisor_binary(binary());
            let driver = execdriver_core::Driver::new(execdriver_linux::LinuxPlatform::new(config));
            match driver.open(&handle_id) {
                Ok(task) => {
                    let _ = task.kill();
                    let _ = task.wait();
                }
                Err(e) => eprintln!("task guard: {e}"),
            }
        }
        // The slice goes once its supervisors have left it (each exits after its release).
        let Ok(dirs) = execdriver_linux::cgroups::supervisors_cgroup_paths(&slice) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in dirs {
            while dir.exists() && std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
