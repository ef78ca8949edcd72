//! execdriver-nomad: a Nomad task driver plugin (go-plugin, gRPC) over execdriver's engine.
//!
//! - [`server`]: the process: handshake, the gRPC server on its unix socket, exit.
//! - [`handshake`]: go-plugin's cookie, versions, socket dir and stdout line.
//! - [`go_plugin`]: health, controller, stdio and broker services go-plugin expects.
//! - [`base_service`]: BasePlugin (PluginInfo, ConfigSchema, SetConfig).
//! - [`driver_service`]: Nomad's Driver service.
//! - [`engine`]: the one adapter over `Driver<LinuxPlatform>`; nothing else calls the engine.
//! - [`start`]: Nomad's TaskConfig to a start request (resources, user policy, refusals).
//! - [`tasks`]: the task table and the waiter threads that collect exits.
//! - [`settings`], [`task_config`]: the two schemas and their decoding.
//! - [`cty`], [`hclspec`]: go-cty msgpack decoding and hclspec building.
//! - [`stats`], [`status`], [`duration`], [`hclog`]: small helpers.
//! - [`proto`]: the code generated from our `.proto` files.
//!
//! The plugin's binary is all of `main`; a Nomad agent starts it and speaks go-plugin on its
//! stdout:
//!
//! ```no_run
//! let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
//! std::process::exit(execdriver_nomad::server::main_with_args(&args));
//! ```
//!
//! Durations in its settings and jobs are written as Nomad's users write them:
//!
//! ```
//! use std::time::Duration;
//! assert_eq!(execdriver_nomad::duration::parse("1m30s"), Ok(Duration::from_secs(90)));
//! assert!(execdriver_nomad::duration::parse("-5s").is_err());
//! ```

pub mod base_service;
pub mod cty;
pub mod driver_service;
pub mod duration;
pub mod engine;
pub mod exec;
pub mod go_plugin;
pub mod handshake;
pub mod hclog;
pub mod hclspec;
pub mod plugin;
pub mod proto;
pub mod server;
pub mod settings;
pub mod start;
pub mod stats;
pub mod status;
pub mod task_config;
pub mod tasks;
