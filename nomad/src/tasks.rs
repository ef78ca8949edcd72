//! The plugin's table of tasks, by Nomad task id, and the one waiter thread per task that
//! collects its exit as soon as it happens (so the engine releases the task's supervisor and
//! cgroup at once) and keeps the result for every WaitTask until DestroyTask.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};

use crate::engine::{Exit, Task};
use crate::hclog;
use crate::proto::drivers::DriverTaskEvent;

/// A waiter thread only waits on a socket; this is plenty.
const WAITER_STACK: usize = 512 * 1024;
/// The longest pause between retries of a wait the engine could not answer.
const MAX_WAIT_BACKOFF: Duration = Duration::from_secs(30);

/// A task's result and when it was collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// How it ended.
    pub exit: Exit,
    /// When the plugin learned of it.
    pub completed_at: SystemTime,
}

/// What the plugin knows of one task.
#[derive(Debug)]
pub struct TaskEntry {
    /// Nomad's task id.
    pub nomad_id: String,
    /// Nomad's task name.
    pub name: String,
    /// Nomad's alloc id.
    pub alloc_id: String,
    /// The engine's task.
    pub task: Arc<Task>,
    /// When it was started, if by this plugin process.
    pub started_at: Option<SystemTime>,
    finished: watch::Receiver<Option<Finished>>,
}

impl TaskEntry {
    /// The result, once collected.
    pub fn finished(&self) -> Option<Finished> {
        self.finished.borrow().clone()
    }

    /// A receiver that sees the result once it is collected.
    pub fn watch(&self) -> watch::Receiver<Option<Finished>> {
        self.finished.clone()
    }
}

/// Identity of a task for [`TaskTable::insert`].
#[derive(Debug, Clone)]
pub struct TaskMeta {
    /// Nomad's task id.
    pub nomad_id: String,
    /// Nomad's task name.
    pub name: String,
    /// Nomad's alloc id.
    pub alloc_id: String,
    /// When it was started, if by this plugin process.
    pub started_at: Option<SystemTime>,
}

/// Why a task could not be added.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// Another task has this id.
    #[error("task {task_id:?} is already known to the plugin")]
    Exists {
        /// The task's Nomad id.
        task_id: String,
        /// The task that was not added.
        task: Arc<Task>,
    },
    /// No waiter thread could be started.
    #[error("cannot start the waiter thread of task {task_id}: {source}")]
    Thread {
        /// The task's Nomad id.
        task_id: String,
        /// Why.
        source: std::io::Error,
        /// The task, still running: the caller must not leave it so.
        task: Arc<Task>,
    },
}

/// The tasks, by Nomad task id.
#[derive(Debug)]
pub struct TaskTable {
    tasks: Mutex<HashMap<String, Arc<TaskEntry>>>,
    events: broadcast::Sender<DriverTaskEvent>,
}

impl Default for TaskTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InsertError {
    /// The task that was not added.
    pub fn into_task(self) -> Arc<Task> {
        match self {
            InsertError::Exists { task, .. } | InsertError::Thread { task, .. } => task,
        }
    }
}

impl TaskTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            tasks: Mutex::new(HashMap::new()),
            events: broadcast::channel(64).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TaskEntry>>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task with Nomad id `id`.
    pub fn get(&self, id: &str) -> Option<Arc<TaskEntry>> {
        self.lock().get(id).cloned()
    }

    /// Whether a task with this id is known.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// How many tasks are known.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no task is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a task (DestroyTask).
    pub fn remove(&self, id: &str) -> Option<Arc<TaskEntry>> {
        self.lock().remove(id)
    }

    /// Task events (OOM kills, lost supervisors) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DriverTaskEvent> {
        self.events.subscribe()
    }

    /// Adds a task and starts its waiter thread.
    pub fn insert(&self, meta: TaskMeta, task: Task) -> Result<Arc<TaskEntry>, InsertError> {
        let mut tasks = self.lock();
        let task = Arc::new(task);
        if tasks.contains_key(&meta.nomad_id) {
            return Err(InsertError::Exists {
                task_id: meta.nomad_id,
                task,
            });
        }
        let (tx, rx) = watch::channel(None);
        let entry = Arc::new(TaskEntry {
            nomad_id: meta.nomad_id.clone(),
            name: meta.name.clone(),
            alloc_id: meta.alloc_id.clone(),
            task: Arc::clone(&task),
            started_at: meta.started_at,
            finished: rx,
        });
        let events = self.events.clone();
        let waited = Arc::clone(&task);
        std::thread::Builder::new()
            .name("task-waiter".into())
            .stack_size(WAITER_STACK)
            .spawn(move || wait_for_exit(&waited, &tx, &events, &meta))
            .map_err(|source| InsertError::Thread {
                task_id: entry.nomad_id.clone(),
                source,
                task,
            })?;
        tasks.insert(entry.nomad_id.clone(), Arc::clone(&entry));
        Ok(entry)
    }
}

fn wait_for_exit(
    task: &Task,
    tx: &watch::Sender<Option<Finished>>,
    events: &broadcast::Sender<DriverTaskEvent>,
    meta: &TaskMeta,
) {
    let mut backoff = Duration::from_secs(1);
    let exit = loop {
        match task.wait() {
            Ok(exit) => break exit,
            Err(e) => {
                // Destroyed while the engine could not answer: nobody is left to tell.
                if tx.is_closed() {
                    return;
                }
                hclog::warn(
                    "waiting for the task failed; trying again",
                    &[("task_id", &meta.nomad_id), ("error", &e.message)],
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_WAIT_BACKOFF);
            }
        }
    };
    let completed_at = SystemTime::now();
    let code = exit.exit_code.to_string();
    hclog::info(
        "task exited",
        &[
            ("task_id", &meta.nomad_id),
            ("exit_code", &code),
            ("error", exit.error.as_deref().unwrap_or("")),
        ],
    );
    for message in event_messages(&exit) {
        let _ = events.send(DriverTaskEvent {
            task_id: meta.nomad_id.clone(),
            alloc_id: meta.alloc_id.clone(),
            task_name: meta.name.clone(),
            timestamp: Some(prost_types::Timestamp::from(completed_at)),
            message,
            annotations: HashMap::new(),
        });
    }
    let _ = tx.send(Some(Finished { exit, completed_at }));
}

/// The task events an exit is worth: an OOM kill, and a driver-side failure.
fn event_messages(exit: &Exit) -> Vec<String> {
    let mut out = Vec::new();
    if exit.oom_killed {
        out.push("the task was OOM-killed: a process of it went over its memory limit".into());
    }
    if let Some(error) = &exit.error {
        out.push(format!("execdriver: {error}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_and_driver_errors_become_events() {
        let clean = Exit {
            exit_code: 0,
            signal: 0,
            oom_killed: false,
            error: None,
        };
        assert!(event_messages(&clean).is_empty());
        let bad = Exit {
            exit_code: 137,
            signal: 9,
            oom_killed: true,
            error: Some("supervisor lost: gone".into()),
        };
        let messages = event_messages(&bad);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].contains("OOM"));
        assert!(messages[1].contains("supervisor lost"));
    }
}
