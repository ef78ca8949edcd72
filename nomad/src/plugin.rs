//! The state every service shares: the configuration (set by SetConfig), the task table and
//! the shutdown signal.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::watch;

use crate::engine::Engine;
use crate::settings::Settings;
use crate::tasks::TaskTable;

/// The plugin name jobs use in `driver = "..."`.
pub const PLUGIN_NAME: &str = "execdriver";
/// The Nomad plugin API versions spoken.
pub const PLUGIN_API_VERSIONS: [&str; 1] = ["v0.1.0"];
/// This plugin's version.
pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The settings and the engine built from them.
#[derive(Debug)]
pub struct Configured {
    /// The decoded settings.
    pub settings: Settings,
    /// The engine.
    pub engine: Arc<Engine>,
}

/// Shared by all services.
#[derive(Debug)]
pub struct Plugin {
    config: RwLock<Option<Arc<Configured>>>,
    /// The tasks.
    pub tasks: TaskTable,
    shutdown: watch::Sender<bool>,
}

impl Default for Plugin {
    fn default() -> Self {
        Self::new()
    }
}

impl Plugin {
    /// A plugin not yet configured.
    pub fn new() -> Self {
        Self {
            config: RwLock::new(None),
            tasks: TaskTable::new(),
            shutdown: watch::channel(false).0,
        }
    }

    /// The configuration, once SetConfig has succeeded.
    pub fn configured(&self) -> Option<Arc<Configured>> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the configuration. Tasks started earlier keep the engine they started with.
    pub fn configure(&self, settings: Settings) {
        let engine = Arc::new(Engine::new(&settings));
        *self.config.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(Configured { settings, engine }));
    }

    /// Asks the server and every open stream to end.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown was asked for.
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            // An error means the sender is gone, which also ends everything.
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}
