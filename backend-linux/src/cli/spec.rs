//! Building a task spec from the options of `run` and `start`.

use std::path::Path;

use execdriver_core::seccomp::MAX_PROFILE_BYTES;
use execdriver_core::{
    BindMount, Seccomp, SeccompProfile, Signal, Stdin, TaskConfig, TaskSpec, TerminalSize,
    validate_task_id,
};
use execdriver_linux::AllocDir;

use super::args::TaskOptions;
use super::context::{Ctx, MAX_KILL_TIMEOUT};
use super::{Result, fail, parse};

/// Names a task dir may not have: the task dir is `<alloc dir>/<name>`, next to `logs`.
const RESERVED_NAMES: [&str; 2] = ["logs", "alloc"];

/// The spec of `opts` (over the `--spec` file's, if any), validated; nothing is created.
pub fn build(ctx: &Ctx, opts: &TaskOptions) -> Result<TaskSpec> {
    let file = match &opts.spec {
        Some(path) => Some(read_spec_file(path)?),
        None => None,
    };
    let from_file = |key: &str| {
        file.as_ref()
            .and_then(|f| f.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let id = opts
        .id
        .clone()
        .or_else(|| from_file("task_id"))
        .unwrap_or_else(parse::generate_task_id);
    validate_task_id(&id).map_err(|e| fail!("--id: {e}"))?;
    let config = match opts.command.split_first() {
        Some((command, args)) => Some(TaskConfig::new(command.clone(), args.iter().cloned())),
        None if file.as_ref().is_some_and(|f| f.get("config").is_some()) => None,
        None => {
            return Err(fail!(
                "no command given: put it after the options, e.g. -- /bin/true"
            ));
        }
    };
    let name = opts
        .name
        .clone()
        .or_else(|| from_file("task_name"))
        .unwrap_or_else(|| {
            let file_command = file
                .as_ref()
                .and_then(|f| f.get("config")?.get("command")?.as_str());
            task_name(opts.command.first().map(String::as_str).or(file_command))
        });
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
        config.clone().unwrap_or_default(),
    );
    if let (Some(file), Some(path)) = (file, &opts.spec) {
        spec = overlay(&spec, file).map_err(|e| fail!("--spec {}: {e}", path.display()))?;
        // Ours whatever the file says: the CLI makes the alloc dir, under the data dir.
        spec.task_id = id;
        spec.task_name = name;
        spec.alloc_dir = alloc_dir;
        spec.task_dir = task_dir;
        if let Some(config) = config {
            spec.config = config;
        }
    }
    // Only a name asked for (by --name, or by the spec file) is claimed: a second
    // `run -- /bin/true` must not fail because the first is still kept.
    spec.name = opts.name.clone().or(spec.name.take());
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
    for path in &opts.env_file {
        for (key, value) in env_file(path)? {
            spec.env.insert(key, value);
        }
    }
    for text in &opts.env {
        match text.split_once('=') {
            Some(_) => {
                let (key, value) = parse::env_pair(text).map_err(|e| fail!("--env: {e}"))?;
                spec.env.insert(key, value);
            }
            None => {
                if let Some(value) = passed_through(text).map_err(|e| fail!("--env: {e}"))? {
                    spec.env.insert(text.clone(), value);
                }
            }
        }
    }
    if let Some(dir) = &opts.workdir {
        spec.workdir = Some(dir.clone());
    }
    for text in &opts.volume {
        spec.mounts
            .push(volume(text).map_err(|e| fail!("-v {text}: {e}"))?);
    }
    if opts.tty {
        // The terminal is the task's stdin: `run -i` types our input into it.
        let size = super::terminal::window_size();
        spec.tty = Some(TerminalSize {
            rows: size.map_or(0, |s| s.ws_row),
            cols: size.map_or(0, |s| s.ws_col),
        });
        spec.stdin = Stdin::Null;
        // As docker and podman do with -t: programs look at TERM to drive the terminal.
        if !spec.env.contains_key("TERM") {
            let term = std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty() && t != "dumb")
                .unwrap_or_else(|| "xterm".to_owned());
            spec.env.insert("TERM".to_owned(), term);
        }
    } else if opts.interactive {
        spec.stdin = Stdin::Inherit;
    }
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
    if opts.chroot_env_only {
        spec.chroot_env.clear();
    }
    for dir in &opts.chroot_env {
        if !spec.chroot_env.contains(dir) {
            spec.chroot_env.push(dir.clone());
        }
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

/// Largest spec file read: a spec is a few KiB, a seccomp profile in it some more.
const MAX_SPEC_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The `--spec` file as a JSON object: TOML when its name ends in `.toml`, else JSON (or
/// TOML, when it does not parse as JSON and does as TOML: the content decides).
fn read_spec_file(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| fail!("--spec {shown}: cannot open it: {e}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_SPEC_FILE_BYTES + 1),
        &mut text,
    )
    .map_err(|e| fail!("--spec {shown}: cannot read it: {e}"))?;
    if text.len() as u64 > MAX_SPEC_FILE_BYTES {
        return Err(fail!(
            "--spec {shown}: it is over {MAX_SPEC_FILE_BYTES} bytes"
        ));
    }
    let toml_named = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let from_toml = |text: &str| {
        toml::from_str::<toml::Table>(text)
            .map_err(|e| format!("not valid TOML: {}", e.to_string().trim_end()))
            .and_then(|t| serde_json::to_value(t).map_err(|e| e.to_string()))
    };
    let value = if toml_named {
        from_toml(&text)
    } else {
        serde_json::from_str::<serde_json::Value>(&text).or_else(|json| {
            from_toml(&text).map_err(|_| format!("not valid JSON ({json}) nor TOML"))
        })
    }
    .map_err(|e| fail!("--spec {shown}: {e}"))?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(fail!(
            "--spec {shown}: the spec must be an object (a table)"
        )),
    }
}

/// `base` with the file's fields over it: a field of `resources`, `logs` or `config` replaces
/// only that field, any other top-level field the whole value.
fn overlay(
    base: &TaskSpec,
    file: serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<TaskSpec, String> {
    let mut merged = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let Some(target) = merged.as_object_mut() else {
        return Err("the default spec is not an object".into());
    };
    for (key, value) in file {
        match (target.get_mut(&key), value) {
            (Some(serde_json::Value::Object(inner)), serde_json::Value::Object(fields))
                if matches!(key.as_str(), "resources" | "logs" | "config") =>
            {
                inner.extend(fields);
            }
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

/// Our own value of `key` for `-e KEY`, `None` when we have none (then the task gets none,
/// as with docker).
fn passed_through(key: &str) -> std::result::Result<Option<String>, String> {
    if key.is_empty() {
        return Err("an empty name: give KEY=VALUE or KEY".into());
    }
    match std::env::var_os(key) {
        None => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|_| format!("our value of {key} is not UTF-8")),
    }
}

/// The variables of an env file, in docker's format: `KEY=VALUE` (the value as written),
/// `KEY` alone for our own value, `#` comments and blank lines skipped.
fn env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail!("--env-file {shown}: cannot read it: {e}"))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(fail!(
                "--env-file {shown} line {}: {line:?} is not KEY=VALUE or KEY (a name may not \
                 be empty or hold whitespace)",
                n + 1
            ));
        }
        let value = match value {
            Some(value) => Some(value),
            None => {
                passed_through(key).map_err(|e| fail!("--env-file {shown} line {}: {e}", n + 1))?
            }
        };
        if let Some(value) = value {
            vars.push((key.to_owned(), value));
        }
    }
    Ok(vars)
}

/// A `-v SRC:DST[:OPTIONS]`, OPTIONS a comma-separated list of `ro` or `rw` and a
/// propagation (`private`, `rprivate`, `slave`, `rslave`, `shared`, `rshared`), as docker's.
fn volume(text: &str) -> std::result::Result<BindMount, String> {
    use execdriver_core::Propagation as P;
    let mut parts = text.split(':');
    let (Some(source), Some(destination)) = (parts.next(), parts.next()) else {
        return Err("give SRC:DST, SRC:DST:ro or SRC:DST:rw".into());
    };
    let mut mount = BindMount::new(source, destination);
    for option in parts.next().into_iter().flat_map(|o| o.split(',')) {
        match option {
            "rw" => mount.readonly = false,
            "ro" => mount.readonly = true,
            "private" => mount.propagation = P::Private,
            "rprivate" => mount.propagation = P::Rprivate,
            "slave" => mount.propagation = P::Slave,
            "rslave" => mount.propagation = P::Rslave,
            "shared" => mount.propagation = P::Shared,
            "rshared" => mount.propagation = P::Rshared,
            other => {
                return Err(format!(
                    "unknown option {other:?}: use ro or rw, and private, rprivate, slave, \
                     rslave, shared or rshared"
                ));
            }
        }
    }
    if parts.next().is_some() || source.is_empty() || destination.is_empty() {
        return Err("give SRC:DST, SRC:DST:ro or SRC:DST:rw (paths cannot hold `:`)".into());
    }
    mount.validate().map_err(|e| e.to_string())?;
    Ok(mount)
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

/// The default task name: the command's file name unless that is reserved.
fn task_name(command: Option<&str>) -> String {
    command
        .and_then(|c| Path::new(c).file_name())
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .filter(|n| !RESERVED_NAMES.contains(n))
        .unwrap_or("task")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_with_their_mode() {
        let m = volume("/srv/a:/data").expect("rw");
        assert_eq!(
            (m.source.to_str(), m.destination.to_str(), m.readonly),
            (Some("/srv/a"), Some("/data"), false)
        );
        assert!(volume("/srv/a:/data:ro").expect("ro").readonly);
        assert!(!volume("/srv/a:/data:rw").expect("rw").readonly);
        let m = volume("/srv/a:/data:ro,rslave").expect("ro,rslave");
        assert!(m.readonly);
        assert_eq!(m.propagation, execdriver_core::Propagation::Rslave);
        for (bad, needle) in [
            ("/srv/a", "SRC:DST"),
            ("/srv/a:/data:rx", "ro or rw"),
            ("/srv/a:/data:ro:x", "`:`"),
            (":/data", "SRC:DST"),
            ("/srv/a:/proc/x", "mounts itself"),
            ("a:/data", "absolute"),
        ] {
            let err = volume(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn env_files_read_as_docker_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vars");
        // Set nowhere: a KEY line for it is left out, as `-e KEY` would be.
        let unset = "EXECDRIVER_TEST_ENV_FILE_UNSET";
        let path = std::env::var("PATH").expect("PATH");
        std::fs::write(
            &file,
            format!("# c\n\n A=1\nB= two = \nPATH\n{unset}\nC=\"q\"\n"),
        )
        .expect("write");
        let vars = env_file(&file).expect("parse");
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), " two = ".into()),
                ("PATH".into(), path),
                ("C".into(), "\"q\"".into()),
            ]
        );
        std::fs::write(&file, "A=1\n=x\n").expect("write");
        let err = env_file(&file).expect_err("empty name").to_string();
        assert!(err.contains("line 2") && err.contains("vars"), "{err}");
    }

    #[test]
    fn a_spec_file_overlays_the_defaults_field_by_field() {
        let base = TaskSpec::new("t", "n", "/a", "/a/n", TaskConfig::new("/bin/true", ["x"]));
        let file: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"user": "root", "resources": {"pids_max": 64}, "config": {"args": ["y"]}}"#,
        )
        .expect("json");
        let spec = overlay(&base, file).expect("overlay");
        assert_eq!(spec.user, "root");
        assert_eq!(spec.resources.pids_max, 64);
        assert_eq!(spec.resources.cpu_shares, base.resources.cpu_shares);
        assert_eq!(spec.config, TaskConfig::new("/bin/true", ["y"]));
        let bad: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"usr": "root"}"#).expect("json");
        assert!(overlay(&base, bad).expect_err("unknown").contains("usr"));
    }
}
