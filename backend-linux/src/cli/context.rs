//! What every command needs: the driver of the data dir, and the task an argument names.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use execdriver_core::{
    Driver, DriverConfig, DriverError, HandleId, TaskHandle, TaskStatus, validate_task_id,
};
use execdriver_linux::{AllocDir, LinuxConfig, LinuxPlatform};

use super::{Result, errln, fail};

/// The longest kill timeout a task started from the command line may have.
pub const MAX_KILL_TIMEOUT: Duration = Duration::from_secs(3600);

/// The command line's view of the node.
pub struct Ctx {
    pub data_dir: PathBuf,
    driver: Arc<Driver<LinuxPlatform>>,
}

/// A task as an argument names it.
pub enum Target {
    /// By handle id.
    Handle(HandleId),
    /// By task id, in the data dir (a unique name given is resolved to it).
    Task(String),
}

impl Target {
    /// The task id either way.
    pub fn task_id(&self) -> &str {
        match self {
            Target::Handle(h) => &h.task_id,
            Target::Task(id) => id,
        }
    }
}

impl Ctx {
    pub fn new(data_dir: PathBuf, cgroup_parent: Option<String>, slice: String) -> Self {
        let mut config = LinuxConfig::new(&data_dir)
            .with_slice_name(slice)
            .with_supervisor_entry_beside();
        if let Some(parent) = cgroup_parent {
            config = config.with_cgroup_parent(parent);
        }
        let driver = Driver::with_config(
            LinuxPlatform::new(config),
            DriverConfig::default().with_max_kill_timeout(MAX_KILL_TIMEOUT),
        );
        Self {
            data_dir,
            driver: Arc::new(driver),
        }
    }

    pub fn driver(&self) -> &Driver<LinuxPlatform> {
        &self.driver
    }

    /// The driver, for threads that may outlive the call that started them.
    pub fn shared_driver(&self) -> Arc<Driver<LinuxPlatform>> {
        Arc::clone(&self.driver)
    }

    /// Resolves HANDLE: a handle id, `-` (a handle id, task id or name read from stdin), a
    /// task id in the data dir, or a task's unique name.
    pub fn target(&self, arg: &str) -> Result<Target> {
        let text = if arg == "-" {
            let mut text = String::new();
            io::stdin()
                .lock()
                .take(execdriver_core::handle::MAX_HANDLE_LEN as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| fail!("reading the handle id from stdin: {e}"))?;
            text.trim().to_owned()
        } else {
            arg.trim().to_owned()
        };
        if text.starts_with('{') {
            return HandleId::parse(&text)
                .map(Target::Handle)
                .map_err(|e| fail!("invalid handle id: {e}"));
        }
        validate_task_id(&text).map_err(|_| {
            fail!(
                "{text:?} is neither a handle id nor a task id or name (they use A-Z a-z 0-9 . _ -)"
            )
        })?;
        // An id unknown by either way stays as given: the command then says it is not there.
        match self.driver.resolve(&text) {
            Ok(task_id) => Ok(Target::Task(task_id)),
            Err(DriverError::NotFound { .. }) => Ok(Target::Task(text)),
            Err(e) => Err(e.into()),
        }
    }

    /// The handle id of a target.
    pub fn handle_of(&self, target: &Target) -> Result<HandleId> {
        match target {
            Target::Handle(h) => Ok(h.clone()),
            Target::Task(id) => self.driver.handle_of(id).map_err(|e| self.explain(id, e)),
        }
    }

    /// What is known of a target, changing nothing.
    pub fn probe(&self, target: &Target) -> Result<TaskStatus> {
        match target {
            Target::Handle(h) => Ok(self.driver.probe(h)?),
            Target::Task(id) => self.driver.probe_task(id).map_err(|e| self.explain(id, e)),
        }
    }

    /// Opens a target. A task that was lost was cleaned up by the driver and is kept (as
    /// lost) until `rm`; a start that was abandoned had its debris removed, and the alloc
    /// dir we made for it goes too.
    pub fn open(&self, target: &Target) -> Result<TaskHandle<LinuxPlatform>> {
        let opened = match target {
            Target::Handle(h) => self.driver.open(&h.to_string()),
            Target::Task(id) => self.driver.open_task(id),
        };
        match opened {
            Ok(task) => Ok(task),
            Err(e @ DriverError::ReattachFailed { .. }) => Err(e.into()),
            Err(e @ DriverError::NeverStarted { .. }) => {
                self.remove_alloc(target.task_id());
                Err(e.into())
            }
            Err(e) => Err(self.explain(target.task_id(), e)),
        }
    }

    /// A task id unknown to the driver whose alloc dir `run` or `start` made, and which no
    /// live `run` or `start` holds, is the debris of a caller killed before the task was
    /// claimed: say so, and remove it.
    pub fn explain(&self, task_id: &str, e: DriverError) -> super::CliError {
        if let DriverError::NotFound { .. } = e {
            let unclaimed = || {
                matches!(
                    self.driver.probe_task(task_id),
                    Err(DriverError::NotFound { .. })
                )
            };
            match AllocDir::remove_abandoned(&self.data_dir, task_id, unclaimed) {
                Ok(true) => {
                    return super::CliError::no_such_task(format!(
                        "task {task_id} never started (its starter died first); removed its \
                         alloc dir {}",
                        AllocDir::path(&self.data_dir, task_id).display()
                    ));
                }
                Ok(false) => {}
                Err(rm) => errln!("execdriver: {rm}"),
            }
        }
        e.into()
    }

    /// Removes the alloc dir `run` or `start` made for `task_id`.
    pub fn remove_alloc(&self, task_id: &str) {
        let Ok(data) = std::fs::canonicalize(&self.data_dir) else {
            return;
        };
        if let Err(e) = AllocDir::remove(&AllocDir::path(&data, task_id)) {
            errln!("execdriver: {e}");
        }
    }
}
