//! From Nomad's `TaskConfig` to a [`StartRequest`]: the task config, the user policy, the
//! resources, and a clear refusal of what the engine cannot do yet.

use std::collections::BTreeMap;
use std::path::PathBuf;

use execdriver_core::devices::DEFAULT_DEVICE_PERMISSIONS;
use execdriver_core::{BindMount, CpuList, DeviceMapping, Propagation};

use crate::engine::{Dns, StartRequest};
use crate::proto::drivers::{self, network_isolation_spec::NetworkIsolationMode};
use crate::settings::Settings;
use crate::task_config;

const MIB: u64 = 1024 * 1024;
/// The cgroup v1 `cpu.shares` range the engine accepts; Nomad's MHz figures are clamped in.
const CPU_SHARES: (u64, u64) = (2, 262_144);
/// The engine's task id limit.
const MAX_ENGINE_ID: usize = 64;

/// Why a task cannot be started as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The job's `config` block.
    #[error("task config: {0}")]
    Config(#[from] crate::cty::DecodeError),
    /// A field Nomad always sets is missing.
    #[error("the request has no {0}")]
    Missing(&'static str),
    /// The job names a user the operator does not allow.
    #[error("user {user:?} is not allowed by this node's execdriver plugin; allowed: {allowed:?}")]
    UserNotAllowed {
        /// The user asked for.
        user: String,
        /// The plugin's `allowed_users`.
        allowed: Vec<String>,
    },
    /// A cpuset or device that is not usable (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// Something the engine does not offer.
    #[error("{0} is not supported by execdriver yet")]
    Unsupported(String),
    /// A mount whose propagation mode is not one of Nomad's.
    #[error(
        "mount of {host_path:?} at {task_path:?}: propagation mode {mode:?} is not one of \
         private, host-to-task, bidirectional"
    )]
    Propagation {
        /// The host path.
        host_path: String,
        /// The path in the task.
        task_path: String,
        /// The mode given.
        mode: String,
    },
}

/// The engine task id for Nomad's task id.
///
/// Nomad's ids are `<alloc id>/<task name>/<8 hex>`: the name may hold anything and runs
/// long, while the engine's id names a cgroup and a dir (at most 64 of `A-Za-z0-9._-`). The
/// alloc id and the random suffix are unique together, so they make the id; an id of
/// another shape is made safe character by character, with a hash to keep it unique.
pub fn engine_task_id(nomad_id: &str) -> String {
    let parts: Vec<&str> = nomad_id.split('/').collect();
    if let [alloc, _, suffix] = parts.as_slice() {
        let id = format!("{alloc}-{suffix}");
        if is_engine_safe(&id) {
            return id;
        }
    }
    if is_engine_safe(nomad_id) {
        return nomad_id.to_owned();
    }
    let safe: String = nomad_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_ENGINE_ID - 17)
        .collect();
    format!(
        "{}-{:016x}",
        safe.trim_start_matches(['-', '_']),
        fnv1a(nomad_id)
    )
    .trim_start_matches('-')
    .to_owned()
}

fn is_engine_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ENGINE_ID
        && !id.starts_with(['.', '-'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// 64-bit FNV-1a: only to keep sanitized ids apart, not against an adversary (a collision
/// is refused by the engine as an id in use).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Builds the start request for `task` under `settings`; errors before anything starts.
pub fn start_request(
    task: &drivers::TaskConfig,
    settings: &Settings,
) -> Result<StartRequest, StartError> {
    if task.id.is_empty() {
        return Err(StartError::Missing("task id"));
    }
    if task.name.is_empty() {
        return Err(StartError::Missing("task name"));
    }
    if task.alloc_dir.is_empty() {
        return Err(StartError::Missing("alloc dir"));
    }
    let config = task_config::decode(&task.msgpack_driver_config)?;
    let user = if task.user.is_empty() {
        settings.default_user.clone()
    } else {
        task.user.clone()
    };
    if !settings.allowed_users.is_empty() && !settings.allowed_users.contains(&user) {
        return Err(StartError::UserNotAllowed {
            user,
            allowed: settings.allowed_users.clone(),
        });
    }
    let mut env: BTreeMap<String, String> = task
        .device_env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(task.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (cpu_shares, memory_limit_bytes, memory_max_bytes) = resources(task.resources.as_ref());
    Ok(StartRequest {
        task_id: engine_task_id(&task.id),
        name: task.name.clone(),
        alloc_dir: PathBuf::from(&task.alloc_dir),
        command: config.command,
        args: config.args,
        env,
        user,
        cpu_shares,
        memory_limit_bytes,
        memory_max_bytes,
        network_path: network_path(task)?,
        dns: dns(task),
        stdout_path: log_path(&task.stdout_path),
        stderr_path: log_path(&task.stderr_path),
        seccomp: config.seccomp,
        cpuset_cpus: cpuset(task)?,
        cpuset_cgroup: cpuset_cgroup(task)?,
        devices: devices(task)?,
        mounts: mounts(task)?,
    })
}

/// Nomad's volume and host mounts as bind mounts: its propagation modes are the kernel's
/// rprivate, rslave and rshared (an empty mode is Nomad's default, private).
fn mounts(task: &drivers::TaskConfig) -> Result<Vec<BindMount>, StartError> {
    task.mounts
        .iter()
        .map(|m| {
            let propagation = match m.propagation_mode.as_str() {
                "" | "private" => Propagation::Rprivate,
                "host-to-task" => Propagation::Rslave,
                "bidirectional" => Propagation::Rshared,
                mode => {
                    return Err(StartError::Propagation {
                        host_path: m.host_path.clone(),
                        task_path: m.task_path.clone(),
                        mode: mode.to_owned(),
                    });
                }
            };
            Ok(BindMount {
                readonly: m.readonly,
                propagation,
                ..BindMount::new(&m.host_path, &m.task_path)
            })
        })
        .collect()
}

/// Nomad's reserved cores (`resources { cores = N }`, sent as `cpuset_cpus`) as the task's
/// cpuset; `None` when the job reserves none.
fn cpuset(task: &drivers::TaskConfig) -> Result<Option<String>, StartError> {
    let Some(text) = task
        .resources
        .as_ref()
        .and_then(|r| r.linux_resources.as_ref())
        .map(|l| l.cpuset_cpus.as_str())
        .filter(|c| !c.trim().is_empty())
    else {
        return Ok(None);
    };
    let list = CpuList::parse(text).map_err(|e| StartError::Invalid(e.to_string()))?;
    Ok(Some(list.to_string()))
}

/// Nomad's `cpuset_cgroup`: the cgroup its client made for the task's cpuset partition
/// (the shared one, whose cpus it narrows as other tasks reserve cores, or the task's own
/// reserved one); `None` when empty (an older client, or a node without cgroups). The engine
/// makes the task's own cgroup beneath it (or, on v1 without reserved cores, has the task join
/// it in the cpuset hierarchy), so it still creates, kills by and removes only cgroups of its
/// own; the path is checked here as a path, and against the node's mounts by the engine.
fn cpuset_cgroup(task: &drivers::TaskConfig) -> Result<Option<PathBuf>, StartError> {
    let Some(path) = task
        .resources
        .as_ref()
        .and_then(|r| r.linux_resources.as_ref())
        .map(|l| l.cpuset_cgroup.as_str())
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    execdriver_core::validate_cpuset_cgroup(&path)
        .map_err(|e| StartError::Invalid(e.to_string()))?;
    Ok(Some(path))
}

/// Nomad's `devices` (from device plugins) as the task's device mappings: an empty task path
/// is the host path, empty permissions are `rwm`, as Nomad's own drivers take them.
fn devices(task: &drivers::TaskConfig) -> Result<Vec<DeviceMapping>, StartError> {
    task.devices
        .iter()
        .map(|d| {
            let task_path = if d.task_path.is_empty() {
                &d.host_path
            } else {
                &d.task_path
            };
            let permissions = if d.cgroup_permissions.is_empty() {
                DEFAULT_DEVICE_PERMISSIONS
            } else {
                &d.cgroup_permissions
            };
            let mapping = DeviceMapping {
                host_path: PathBuf::from(&d.host_path),
                task_path: PathBuf::from(task_path),
                permissions: permissions.to_owned(),
            };
            mapping
                .validate_syntax()
                .map_err(|e| StartError::Invalid(e.to_string()))?;
            Ok(mapping)
        })
        .collect()
}

/// The network namespace to join: none for HOST (the host's), the group's file for GROUP.
/// Nomad creates no TASK network for a driver that does not ask for one, and NONE is
/// never advertised.
fn network_path(task: &drivers::TaskConfig) -> Result<Option<PathBuf>, StartError> {
    let Some(net) = &task.network_isolation_spec else {
        return Ok(None);
    };
    match NetworkIsolationMode::try_from(net.mode) {
        Ok(NetworkIsolationMode::Host) => Ok(None),
        Ok(NetworkIsolationMode::Group) if !net.path.is_empty() => {
            Ok(Some(PathBuf::from(&net.path)))
        }
        Ok(NetworkIsolationMode::Group) => Err(StartError::Unsupported(
            "group networking without a network namespace path".into(),
        )),
        Ok(mode) => Err(StartError::Unsupported(format!(
            "network isolation mode {}",
            mode.as_str_name()
        ))),
        Err(_) => Err(StartError::Unsupported(format!(
            "network isolation mode {}",
            net.mode
        ))),
    }
}

/// The task's resolver settings, when Nomad sent any.
fn dns(task: &drivers::TaskConfig) -> Option<Dns> {
    task.dns
        .as_ref()
        .filter(|d| !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty())
        .map(|d| Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        })
}

/// A log path Nomad sent; empty: none (the engine's own files).
fn log_path(path: &str) -> Option<PathBuf> {
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// cpu shares, memory limit and memory max from what Nomad allocated.
fn resources(resources: Option<&drivers::Resources>) -> (Option<u64>, Option<u64>, Option<u64>) {
    let allocated = resources.and_then(|r| r.allocated_resources.as_ref());
    let linux = resources.and_then(|r| r.linux_resources.as_ref());
    let shares = allocated
        .and_then(|a| a.cpu.as_ref())
        .map(|c| c.cpu_shares)
        .filter(|s| *s > 0)
        .or_else(|| linux.map(|l| l.cpu_shares).filter(|s| *s > 0))
        .map(|s| {
            u64::try_from(s)
                .unwrap_or(0)
                .clamp(CPU_SHARES.0, CPU_SHARES.1)
        });
    let memory = allocated.and_then(|a| a.memory.as_ref());
    let mb = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let limit = memory
        .and_then(|m| mb(m.memory_mb))
        .map(|v| v.saturating_mul(MIB))
        .or_else(|| linux.and_then(|l| mb(l.memory_limit_bytes)));
    let max = memory
        .and_then(|m| mb(m.memory_max_mb))
        .map(|v| v.saturating_mul(MIB))
        .filter(|max| limit.is_none_or(|limit| *max > limit));
    (shares, limit, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as R;

    fn config(pairs: Vec<(&str, R)>) -> Vec<u8> {
        let map = R::Map(pairs.into_iter().map(|(k, v)| (R::from(k), v)).collect());
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &map).expect("encode");
        out
    }

    fn task() -> drivers::TaskConfig {
        drivers::TaskConfig {
            id: "0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11/web/1a2b3c4d".into(),
            name: "web".into(),
            alloc_dir: "/var/nomad/alloc/0b4e2d6a".into(),
            msgpack_driver_config: config(vec![
                ("args", R::Array(vec![R::from("-c"), R::from("echo hi")])),
                ("command", R::from("/bin/sh")),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn nomad_ids_become_engine_ids() {
        assert_eq!(
            engine_task_id("0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11/web server/1a2b3c4d"),
            "0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11-1a2b3c4d"
        );
        assert_eq!(engine_task_id("plain-id"), "plain-id");
        let odd = engine_task_id("../a b/../c/d/e");
        assert!(is_engine_safe(&odd), "{odd}");
        assert_ne!(odd, engine_task_id("../a b/../c/d/f"));
        let long = engine_task_id(&"x/".repeat(100));
        assert!(is_engine_safe(&long), "{long}");
        assert!(
            is_engine_safe(&engine_task_id("-/.")),
            "{}",
            engine_task_id("-/.")
        );
    }

    #[test]
    fn a_plain_task_maps_to_a_start_request() {
        let mut t = task();
        t.env.insert("NOMAD_TASK_DIR".into(), "/local".into());
        t.device_env.insert("DEV".into(), "1".into());
        t.resources = Some(drivers::Resources {
            allocated_resources: Some(drivers::AllocatedTaskResources {
                cpu: Some(drivers::AllocatedCpuResources { cpu_shares: 500 }),
                memory: Some(drivers::AllocatedMemoryResources {
                    memory_mb: 256,
                    memory_max_mb: 512,
                }),
                networks: vec![],
            }),
            ..Default::default()
        });
        let req = start_request(&t, &Settings::default()).expect("request");
        assert_eq!(req.task_id, "0b4e2d6a-1f3c-4c55-9a0e-3c2c5f0d9e11-1a2b3c4d");
        assert_eq!(req.command, "/bin/sh");
        assert_eq!(req.args, vec!["-c".to_owned(), "echo hi".to_owned()]);
        assert_eq!(req.user, "nobody");
        assert_eq!(
            req.env.get("NOMAD_TASK_DIR").map(String::as_str),
            Some("/local")
        );
        assert_eq!(req.env.get("DEV").map(String::as_str), Some("1"));
        assert_eq!(req.cpu_shares, Some(500));
        assert_eq!(req.memory_limit_bytes, Some(256 * MIB));
        assert_eq!(req.memory_max_bytes, Some(512 * MIB));
        assert_eq!(req.alloc_dir, PathBuf::from("/var/nomad/alloc/0b4e2d6a"));
    }

    #[test]
    fn resources_are_clamped_and_defaulted() {
        assert_eq!(resources(None), (None, None, None));
        let r = drivers::Resources {
            allocated_resources: Some(drivers::AllocatedTaskResources {
                cpu: Some(drivers::AllocatedCpuResources { cpu_shares: 1 }),
                memory: Some(drivers::AllocatedMemoryResources {
                    memory_mb: 100,
                    memory_max_mb: 100,
                }),
                networks: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(resources(Some(&r)), (Some(2), Some(100 * MIB), None));
    }

    #[test]
    fn the_user_policy_holds() {
        let mut t = task();
        t.user = "root".into();
        let settings = Settings {
            allowed_users: vec!["nobody".into()],
            ..Settings::default()
        };
        let err = start_request(&t, &settings).expect_err("root not allowed");
        assert!(
            err.to_string().contains("user \"root\" is not allowed"),
            "{err}"
        );
        assert_eq!(
            start_request(&t, &Settings::default()).map(|r| r.user),
            Ok("root".into())
        );
    }

    #[test]
    fn reserved_cores_and_devices_reach_the_request() {
        let mut t = task();
        t.resources = Some(drivers::Resources {
            linux_resources: Some(drivers::LinuxResources {
                cpuset_cpus: "3,1,2".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        t.devices.push(drivers::Device {
            host_path: "/dev/null".into(),
            ..Default::default()
        });
        t.devices.push(drivers::Device {
            host_path: "/dev/zero".into(),
            task_path: "/dev/z".into(),
            cgroup_permissions: "r".into(),
        });
        let req = start_request(&t, &Settings::default()).unwrap();
        assert_eq!(req.cpuset_cpus.as_deref(), Some("1-3"));
        let got: Vec<(&str, &str, &str)> = req
            .devices
            .iter()
            .map(|d| {
                (
                    d.host_path.to_str().unwrap(),
                    d.task_path.to_str().unwrap(),
                    d.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/dev/null", "/dev/null", "rwm"),
                ("/dev/zero", "/dev/z", "r")
            ]
        );
        t.devices[1].task_path = "/etc/z".into();
        let err = start_request(&t, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/z") && err.contains("under /dev"),
            "{err}"
        );
        t.devices.clear();
        t.resources = Some(drivers::Resources {
            linux_resources: Some(drivers::LinuxResources {
                cpuset_cpus: "2-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = start_request(&t, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpuset") && err.contains("2-1"), "{err}");
    }

    #[test]
    fn the_cpuset_cgroup_reaches_the_request_and_a_bad_one_is_refused() {
        let mut t = task();
        assert_eq!(
            start_request(&t, &Settings::default())
                .unwrap()
                .cpuset_cgroup,
            None
        );
        let with = |path: &str| drivers::Resources {
            linux_resources: Some(drivers::LinuxResources {
                cpuset_cgroup: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        t.resources = Some(with(""));
        assert_eq!(
            start_request(&t, &Settings::default())
                .unwrap()
                .cpuset_cgroup,
            None
        );
        let scope = "/sys/fs/cgroup/nomad.slice/share.slice/a1.web.scope";
        t.resources = Some(with(scope));
        assert_eq!(
            start_request(&t, &Settings::default())
                .unwrap()
                .cpuset_cgroup,
            Some(PathBuf::from(scope))
        );
        for bad in ["nomad/share", "/sys/fs/cgroup/cpuset/../memory"] {
            t.resources = Some(with(bad));
            let err = start_request(&t, &Settings::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("cpuset cgroup") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn mounts_keep_their_paths_and_map_nomads_propagation_modes() {
        let mut t = task();
        for (mode, readonly) in [
            ("", true),
            ("private", false),
            ("host-to-task", false),
            ("bidirectional", true),
        ] {
            t.mounts.push(drivers::Mount {
                host_path: format!("/srv/{mode}"),
                task_path: format!("/data/{mode}"),
                readonly,
                propagation_mode: mode.into(),
                ..Default::default()
            });
        }
        let mounts = start_request(&t, &Settings::default())
            .expect("request")
            .mounts;
        let got: Vec<_> = mounts
            .iter()
            .map(|m| {
                (
                    m.source.display().to_string(),
                    m.destination.display().to_string(),
                    m.readonly,
                    m.propagation,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/srv/".into(), "/data/".into(), true, Propagation::Rprivate),
                (
                    "/srv/private".into(),
                    "/data/private".into(),
                    false,
                    Propagation::Rprivate
                ),
                (
                    "/srv/host-to-task".into(),
                    "/data/host-to-task".into(),
                    false,
                    Propagation::Rslave
                ),
                (
                    "/srv/bidirectional".into(),
                    "/data/bidirectional".into(),
                    true,
                    Propagation::Rshared
                ),
            ]
        );
        t.mounts[0].propagation_mode = "sideways".into();
        let err = start_request(&t, &Settings::default()).expect_err("refused");
        assert!(
            err.to_string().contains("sideways") && err.to_string().contains("/data/"),
            "{err}"
        );
    }

    #[test]
    fn what_the_engine_cannot_do_is_refused_by_name() {
        type Mutation = fn(&mut drivers::TaskConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |t| {
                    t.network_isolation_spec = Some(drivers::NetworkIsolationSpec {
                        mode: NetworkIsolationMode::Group as i32,
                        ..Default::default()
                    });
                },
                "group networking without a network namespace path",
            ),
            (
                |t| {
                    t.network_isolation_spec = Some(drivers::NetworkIsolationSpec {
                        mode: NetworkIsolationMode::Task as i32,
                        ..Default::default()
                    });
                },
                "network isolation mode TASK",
            ),
        ];
        for (mutate, needle) in cases {
            let mut t = task();
            mutate(&mut t);
            let err = start_request(&t, &Settings::default()).expect_err(needle);
            assert!(err.to_string().contains(needle), "{err}");
            assert!(err.to_string().contains("not supported"), "{err}");
        }
        let mut t = task();
        t.network_isolation_spec = Some(drivers::NetworkIsolationSpec::default());
        t.dns = Some(drivers::DnsConfig::default());
        let req = start_request(&t, &Settings::default()).expect("host network, no dns");
        assert_eq!((req.network_path, req.dns), (None, None));
    }

    #[test]
    fn group_network_dns_and_log_fifos_reach_the_request() {
        let mut t = task();
        t.network_isolation_spec = Some(drivers::NetworkIsolationSpec {
            mode: NetworkIsolationMode::Group as i32,
            path: "/var/run/netns/0b4e2d6a".into(),
            ..Default::default()
        });
        t.dns = Some(drivers::DnsConfig {
            servers: vec!["10.0.0.2".into()],
            searches: vec!["service.consul".into()],
            options: vec!["ndots:2".into()],
        });
        t.stdout_path = "/var/nomad/alloc/0b4e2d6a/alloc/logs/.web.stdout.fifo".into();
        let req = start_request(&t, &Settings::default()).expect("request");
        assert_eq!(
            req.network_path,
            Some(PathBuf::from("/var/run/netns/0b4e2d6a"))
        );
        assert_eq!(
            req.dns,
            Some(Dns {
                servers: vec!["10.0.0.2".into()],
                searches: vec!["service.consul".into()],
                options: vec!["ndots:2".into()],
            })
        );
        assert_eq!(
            req.stdout_path,
            Some(PathBuf::from(
                "/var/nomad/alloc/0b4e2d6a/alloc/logs/.web.stdout.fifo"
            ))
        );
        assert_eq!(req.stderr_path, None);
    }

    #[test]
    fn a_bad_task_config_is_named() {
        let mut t = task();
        t.msgpack_driver_config = config(vec![("command", R::from(1))]);
        let err = start_request(&t, &Settings::default()).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "task config: `command` must be a string, found a number"
        );
        let mut t = task();
        t.alloc_dir.clear();
        assert_eq!(
            start_request(&t, &Settings::default()).map_err(|e| e.to_string()),
            Err("the request has no alloc dir".into())
        );
    }
}
