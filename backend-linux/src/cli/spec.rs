//! Building a task spec from the options of `run` and `start`.

use std::collections::BTreeMap;
use std::path::Path;

use execdriver_core::seccomp::MAX_PROFILE_BYTES;
use execdriver_core::{Seccomp, SeccompProfile, Signal, TaskConfig, TaskSpec, validate_task_id};
use execdriver_linux::AllocDir;

use super::args::TaskOptions;
use super::context::{Ctx, MAX_KILL_TIMEOUT};
use super::{Result, fail, parse};

/// Names a task dir may not have: the task dir is `<alloc dir>/<name>`, next to `logs`.
const RESERVED_NAMES: [&str; 2] = ["logs", "alloc"];

/// The spec of `opts`, validated; nothing is created.
pub fn build(ctx: &Ctx, opts: &TaskOptions) -> Result<TaskSpec> {
    let id = opts.id.clone().unwrap_or_else(parse::generate_task_id);
    validate_task_id(&id).map_err(|e| fail!("--id: {e}"))?;
    let Some((command, args)) = opts.command.split_first() else {
        return Err(fail!(
            "no command given: put it after the options, e.g. -- /bin/true"
        ));
    };
    let name = task_name(opts);
    if RESERVED_NAMES.contains(&name.as_str()) {
        return Err(fail!(
            "--name {name:?} is reserved: the task dir would be the alloc dir's {name} dir"
        ));
    }
    let data = std::fs::canonicalize(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone());
    let alloc_dir = AllocDir::path(&data, &id);
    let task_dir = alloc_dir.join(&name);
    let mut spec = TaskSpec::new(
        &id,
        &name,
        &alloc_dir,
        &task_dir,
        TaskConfig::new(command.clone(), args.iter().cloned()),
    );
    let number = |option: &str, text: &str| -> Result<u64> {
        text.trim()
            .parse()
            .map_err(|_| fail!("{option}: {text:?} is not a whole number"))
    };
    if let Some(text) = &opts.memory {
        spec.resources.memory_limit_bytes =
            parse::size(text).map_err(|e| fail!("--memory: {e}"))?;
    }
    if let Some(text) = &opts.memory_max {
        spec.resources.memory_max_bytes =
            Some(parse::size(text).map_err(|e| fail!("--memory-max: {e}"))?);
    }
    if let Some(text) = &opts.cpu_shares {
        spec.resources.cpu_shares = number("--cpu-shares", text)?;
    }
    if let Some(text) = &opts.pids_max {
        spec.resources.pids_max = number("--pids-max", text)?;
    }
    if let Some(text) = &opts.cpus {
        spec.resources.cpu_max_millicores =
            Some(execdriver_core::spec::parse_cpus(text).map_err(|e| fail!("--cpus: {e}"))?);
    }
    if let Some(text) = &opts.cpuset_cpus {
        let list =
            execdriver_core::CpuList::parse(text).map_err(|e| fail!("--cpuset-cpus: {e}"))?;
        spec.resources.cpuset_cpus = Some(list.to_string());
    }
    for text in &opts.devices {
        let device =
            execdriver_core::DeviceMapping::parse(text).map_err(|e| fail!("--device: {e}"))?;
        spec.resources.devices.push(device);
    }
    if let Some(user) = &opts.user {
        spec.user = user.clone();
    }
    let mut env = BTreeMap::new();
    for pair in &opts.env {
        let (key, value) = parse::env_pair(pair).map_err(|e| fail!("--env: {e}"))?;
        env.insert(key, value);
    }
    spec.env = env;
    if let Some(text) = &opts.kill_timeout {
        spec.kill_timeout = parse::duration(text).map_err(|e| fail!("--kill-timeout: {e}"))?;
    }
    if let Some(text) = &opts.kill_signal {
        spec.kill_signal = text
            .parse::<Signal>()
            .map_err(|e| fail!("--kill-signal: {e}"))?;
    }
    if let Some(text) = &opts.log_rate {
        spec.logs.rate_bytes_per_sec = log_rate(text)?;
    }
    if !opts.chroot_env.is_empty() {
        spec.chroot_env = opts.chroot_env.clone();
    }
    if opts.no_default_masks {
        spec.masked_paths.clear();
    }
    spec.masked_paths.extend(opts.mask.iter().cloned());
    if let Some(text) = &opts.network {
        spec.network = text.parse().map_err(|e| fail!("--network: {e}"))?;
    }
    if let Some(text) = &opts.seccomp {
        spec.seccomp = seccomp(text).map_err(|e| fail!("--seccomp {text}: {e}"))?;
    }
    spec.validate(MAX_KILL_TIMEOUT)?;
    // What names the kernel knows and which ABIs are filtered is the platform's to say:
    // asked here, so a bad profile is refused before anything exists.
    execdriver_linux::check_seccomp(&spec.seccomp).map_err(|e| {
        fail!(
            "--seccomp {}: {e}",
            opts.seccomp.as_deref().unwrap_or("default")
        )
    })?;
    Ok(spec)
}

/// `default`, `unconfined`, or a profile file read and checked.
fn seccomp(text: &str) -> std::result::Result<Seccomp, String> {
    match text {
        "default" => return Ok(Seccomp::Default),
        "unconfined" => return Ok(Seccomp::Unconfined),
        _ => {}
    }
    let file = std::fs::File::open(text).map_err(|e| format!("cannot open the profile: {e}"))?;
    let mut body = String::new();
    // One byte past the limit is enough to refuse it, without reading a huge file whole.
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_PROFILE_BYTES as u64 + 1),
        &mut body,
    )
    .map_err(|e| format!("cannot read the profile: {e}"))?;
    SeccompProfile::from_json(&body)
        .map(Seccomp::Profile)
        .map_err(|e| e.to_string())
}

/// A `--log-rate`: a size per second, or `unlimited`.
fn log_rate(text: &str) -> Result<Option<u64>> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    match parse::size(text).map_err(|e| fail!("--log-rate: {e}, or unlimited"))? {
        0 => Err(fail!(
            "--log-rate: 0 would drop everything the task writes; use unlimited for no limit"
        )),
        rate => Ok(Some(rate)),
    }
}

/// The task's name: `--name`, else the command's file name unless that is reserved.
pub fn task_name(opts: &TaskOptions) -> String {
    match &opts.name {
        Some(name) => name.clone(),
        None => opts
            .command
            .first()
            .and_then(|c| Path::new(c).file_name())
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .filter(|n| !RESERVED_NAMES.contains(n))
            .unwrap_or("task")
            .to_owned(),
    }
}
