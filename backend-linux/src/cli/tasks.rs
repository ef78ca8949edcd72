//! The commands.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use execdriver_core::{
    Driver, DriverConfig, DriverError, ExitStatus, HandleId, Platform, Reattach, Signal,
    TaskConfig, TaskHandle, TaskSpec, WaitResult, validate_task_id,
};
use execdriver_linux::logs::Stream;
use execdriver_linux::mountinfo;
use execdriver_linux::platform::{LinuxConfig, LinuxPlatform};
use execdriver_linux::process::Pidfd;
use execdriver_linux::state::{self, StatePaths};
use execdriver_linux::supervisor::exit_record;
use execdriver_linux::supervisor::protocol::{self, Request, Response};
use serde::Serialize;

use super::args::{Cli, Command, TaskOptions};
use super::follow::{BrokenPipeTolerant, Follower};
use super::parse;
use super::{CliError, EXIT_DRIVER_FAILED, EXIT_STILL_RUNNING, errln, fail};

/// The longest kill timeout a task started from the command line may have.
const MAX_KILL_TIMEOUT: Duration = Duration::from_secs(3600);

type Result<T> = std::result::Result<T, CliError>;

struct Ctx {
    data_dir: PathBuf,
    cgroup_parent: Option<String>,
}

impl Ctx {
    fn platform(&self) -> LinuxPlatform {
        let mut config = LinuxConfig::new(&self.data_dir);
        config.cgroup_parent = self.cgroup_parent.clone();
        LinuxPlatform::new(config)
    }

    fn driver(&self) -> Driver<LinuxPlatform> {
        Driver::with_config(
            self.platform(),
            DriverConfig {
                max_kill_timeout: MAX_KILL_TIMEOUT,
                ..DriverConfig::default()
            },
        )
    }

    /// The data dir, resolved; it must exist.
    fn data(&self) -> Result<PathBuf> {
        fs::canonicalize(&self.data_dir)
            .map_err(|e| fail!("data dir {}: {e}", self.data_dir.display()))
    }
}

/// Runs the parsed command; `Ok` carries the exit status.
pub fn dispatch(cli: Cli) -> Result<u8> {
    let ctx = Ctx {
        data_dir: cli.data_dir,
        cgroup_parent: cli.cgroup_parent,
    };
    match cli.command {
        Command::Run(opts) => run(&ctx, &opts),
        Command::Start(opts) => start(&ctx, &opts),
        Command::Wait {
            timeout,
            json,
            handle,
        } => wait(&ctx, timeout.as_deref(), json, &handle),
        Command::Kill { timeout, handle } => kill(&ctx, timeout.as_deref(), &handle),
        Command::Status { json, handle } => status(&ctx, json, &handle),
        Command::Signal { handle, signal } => send_signal(&ctx, &handle, &signal),
        Command::Stats { json, handle } => stats(&ctx, json, &handle),
        Command::Logs {
            stderr,
            follow,
            handle,
        } => logs(&ctx, stderr, follow, &handle),
        Command::List { json } => list(&ctx, json),
        Command::Fingerprint { json } => fingerprint(&ctx, json),
        // Handled before dispatch: it must not install the CLI's panic hook.
        Command::Supervise { .. } => Err(fail!("supervise is handled by main")),
    }
}

/// Prints a line to stdout; a closed stdout (`| head`) is not an error worth a message.
fn out(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(fail!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| fail!("serializing output: {e}"))
}

// ---------------------------------------------------------------------------------------
// Building a spec

struct Prepared {
    spec: TaskSpec,
    alloc_dir: PathBuf,
}

fn build_spec(ctx: &Ctx, opts: &TaskOptions) -> Result<Prepared> {
    let id = opts.id.clone().unwrap_or_else(parse::generate_task_id);
    validate_task_id(&id).map_err(|e| fail!("--id: {e}"))?;
    let Some((command, args)) = opts.command.split_first() else {
        return Err(fail!(
            "no command given: put it after the options, e.g. -- /bin/true"
        ));
    };
    let name = handle_task_name(opts);
    if RESERVED_NAMES.contains(&name.as_str()) {
        return Err(fail!(
            "--name {name:?} is reserved: the task dir would be the alloc dir's {name} dir"
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&ctx.data_dir)
        .map_err(|e| fail!("creating data dir {}: {e}", ctx.data_dir.display()))?;
    let alloc_dir = state::allocs_dir(&ctx.data()?).join(&id);
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
    if !opts.chroot_env.is_empty() {
        spec.chroot_env = opts.chroot_env.clone();
    }
    spec.validate(MAX_KILL_TIMEOUT)?;
    Ok(Prepared { spec, alloc_dir })
}

/// Creates the alloc dir and task dir of a spec; the task reads them as `nobody`.
fn create_alloc(prepared: &Prepared) -> Result<()> {
    let allocs = prepared
        .alloc_dir
        .parent()
        .ok_or_else(|| fail!("alloc dir {} has no parent", prepared.alloc_dir.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(allocs)
        .map_err(|e| fail!("creating {}: {e}", allocs.display()))?;
    match fs::DirBuilder::new()
        .mode(0o755)
        .create(&prepared.alloc_dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(fail!(
                "task id {} is already in use: {} exists",
                prepared.spec.task_id,
                prepared.alloc_dir.display()
            ));
        }
        Err(e) => return Err(fail!("creating {}: {e}", prepared.alloc_dir.display())),
    }
    let made = fs::DirBuilder::new()
        .mode(0o755)
        .create(&prepared.spec.task_dir)
        .and_then(|()| {
            // The umask may have taken bits the task user needs to enter its dirs.
            for dir in [&prepared.alloc_dir, &prepared.spec.task_dir] {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        });
    if let Err(e) = made {
        let _ = remove_alloc_dir(&prepared.alloc_dir);
        return Err(fail!("creating {}: {e}", prepared.spec.task_dir.display()));
    }
    Ok(())
}

/// Removes an alloc dir, unless something is still mounted inside it: deleting through a
/// leftover bind mount would delete the host's files.
fn remove_alloc_dir(dir: &Path) -> Result<()> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail!("reading /proc/self/mountinfo: {e}"))?;
    for mount in mountinfo::parse(&text) {
        if mount.mountpoint.starts_with(dir) {
            return Err(fail!(
                "alloc dir {} was not removed: {} is still mounted inside it",
                dir.display(),
                mount.mountpoint.display()
            ));
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fail!("removing alloc dir {}: {e}", dir.display())),
    }
}

/// Removes the alloc dir of a handle if it is one `run` or `start` created.
fn remove_cli_alloc(ctx: &Ctx, handle: &HandleId) -> Result<()> {
    let Ok(data) = ctx.data() else {
        return Ok(());
    };
    let ours = state::allocs_dir(&data).join(&handle.task_id);
    if handle.alloc_dir == ours {
        remove_alloc_dir(&ours)
    } else {
        Ok(())
    }
}

fn start_task(ctx: &Ctx, opts: &TaskOptions) -> Result<(TaskHandle<LinuxPlatform>, PathBuf)> {
    let prepared = build_spec(ctx, opts)?;
    create_alloc(&prepared)?;
    match ctx.driver().start(&prepared.spec) {
        Ok(handle) => {
            store_handle(&handle);
            Ok((handle, prepared.alloc_dir))
        }
        Err(e) => {
            let _ = remove_alloc_dir(&prepared.alloc_dir);
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------------------------------
// run and start

fn run(ctx: &Ctx, opts: &TaskOptions) -> Result<u8> {
    // Blocked before any thread exists so that every thread inherits the mask and only the
    // signal thread below receives them; the supervisor gets a clean mask from exec.
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| fail!("blocking signals: {e}"))?;
    let (handle, alloc_dir) = start_task(ctx, opts)?;
    let handle = Arc::new(handle);
    let task_name = handle_task_name(opts);
    let log_dir = alloc_dir.join("logs");
    let stop = Arc::new(AtomicBool::new(false));
    let mut followers = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        let (stop, log_dir, task_name) = (Arc::clone(&stop), log_dir.clone(), task_name.clone());
        let spawned = thread::Builder::new()
            .name(format!("follow-{stream:?}"))
            .spawn(move || {
                let mut follower = Follower::new(&log_dir, &task_name, stream);
                let result = match stream {
                    Stream::Stdout => follower.run(
                        &mut BrokenPipeTolerant {
                            inner: io::stdout(),
                        },
                        &stop,
                    ),
                    Stream::Stderr => follower.run(
                        &mut BrokenPipeTolerant {
                            inner: io::stderr(),
                        },
                        &stop,
                    ),
                };
                result.unwrap_or_else(|e| {
                    errln!("execdriver: following the task's {stream:?}: {e}");
                    0
                })
            });
        match spawned {
            Ok(thread) => followers.push((stream, thread)),
            // The task runs on; its output is still in the log files.
            Err(e) => errln!(
                "execdriver: cannot follow the task's {stream:?} (see `execdriver logs`): {e}"
            ),
        }
    }
    {
        let watched = Arc::clone(&handle);
        let spawned = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let handle = watched;
                let mut killing = false;
                while let Ok(sig) = signals.wait() {
                    if killing {
                        errln!("execdriver: {sig} received again; the kill is under way");
                        continue;
                    }
                    killing = true;
                    errln!(
                        "execdriver: {sig} received: killing task {}",
                        handle.task_id()
                    );
                    if let Err(e) = handle.kill() {
                        errln!("execdriver: killing task {}: {e}", handle.task_id());
                    }
                }
            });
        if let Err(e) = spawned {
            // With the signals blocked and nobody waiting for them, Ctrl-C would do nothing:
            // a foreground task nobody can stop is worse than no task.
            errln!(
                "execdriver: cannot watch for Ctrl-C ({e}): killing task {}",
                handle.task_id()
            );
            if let Err(e) = handle.kill() {
                errln!("execdriver: killing task {}: {e}", handle.task_id());
            }
        }
    }
    let result = handle.wait();
    stop.store(true, Ordering::Release);
    for (_, follower) in &followers {
        follower.thread().unpark();
    }
    let mut stderr_bytes = 0;
    for (stream, follower) in followers {
        let copied = follower.join().unwrap_or(0);
        if stream == Stream::Stderr {
            stderr_bytes = copied;
        }
    }
    // Only a collected task's alloc dir goes: after a failed wait the task may still run
    // in it (and `wait <task id>` can collect it later).
    let result = result?;
    if let Err(e) = remove_alloc_dir(&alloc_dir) {
        errln!("execdriver: {e}");
    }
    Ok(exit_code_of(handle.task_id(), &result, stderr_bytes == 0))
}

/// Names a task dir may not have: the task dir is `<alloc dir>/<name>`, next to `logs`.
const RESERVED_NAMES: [&str; 2] = ["logs", "alloc"];

/// The task's name: `--name`, else the command's file name unless that is reserved.
fn handle_task_name(opts: &TaskOptions) -> String {
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

fn start(ctx: &Ctx, opts: &TaskOptions) -> Result<u8> {
    let (handle, _alloc_dir) = start_task(ctx, opts)?;
    out(&handle.id())?;
    Ok(0)
}

/// Stores the handle id in the task's state dir, so that the task id alone finds it (also
/// for a task whose `run` was killed: `wait <task id>` then collects it).
fn store_handle(handle: &TaskHandle<LinuxPlatform>) {
    let id = handle.id();
    let paths = StatePaths::at(handle.handle_id().state_dir);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(paths.handle())
        .and_then(|mut f| f.write_all(id.as_bytes()));
    if let Err(e) = written {
        // Without it the task id does not resolve, but the handle id still works.
        errln!(
            "execdriver: writing {}: {e}; use the handle id instead of the task id",
            paths.handle().display()
        );
    }
}

/// The exit status for a result, with a line on stderr for what the status alone hides.
fn exit_code_of(task_id: &str, result: &WaitResult, explain_exec: bool) -> u8 {
    if result.oom_killed {
        errln!("execdriver: task {task_id} ran out of memory: the kernel killed it (oom)");
    }
    if let Some(error) = &result.error {
        errln!("execdriver: task {task_id}: {error}");
    }
    if explain_exec && result.signal.is_none() {
        match result.exit_code {
            126 => errln!(
                "execdriver: task {task_id} exited with 126: the command could not be executed"
            ),
            127 => {
                errln!("execdriver: task {task_id} exited with 127: the command was not found")
            }
            _ => {}
        }
    }
    u8::try_from(result.exit_code).unwrap_or(EXIT_DRIVER_FAILED)
}

// ---------------------------------------------------------------------------------------
// Commands on an existing task

/// Resolves HANDLE: a handle id, `-` (read from stdin), or a task id in the data dir.
fn resolve(ctx: &Ctx, arg: &str) -> Result<(String, HandleId)> {
    let text = if arg == "-" {
        let mut text = String::new();
        io::stdin()
            .lock()
            .take(execdriver_core::handle::MAX_HANDLE_LEN as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail!("reading the handle id from stdin: {e}"))?;
        text.trim().to_owned()
    } else if arg.trim_start().starts_with('{') {
        arg.trim().to_owned()
    } else {
        validate_task_id(arg).map_err(|_| {
            fail!("{arg:?} is neither a handle id nor a task id (task ids use A-Z a-z 0-9 . _ -)")
        })?;
        let data = ctx.data()?;
        let paths = StatePaths::new(&data, arg);
        match fs::read_to_string(paths.handle()) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if paths.dir.exists() {
                    fail!(
                        "task {arg} has no stored handle id in {}: pass the handle id instead",
                        paths.dir.display()
                    )
                } else {
                    fail!("no task {arg} in data dir {}", data.display())
                });
            }
            Err(e) => return Err(fail!("reading {}: {e}", paths.handle().display())),
        }
    };
    let handle = HandleId::parse(&text).map_err(|e| fail!("invalid handle id: {e}"))?;
    Ok((text, handle))
}

fn wait(ctx: &Ctx, timeout: Option<&str>, as_json: bool, arg: &str) -> Result<u8> {
    let timeout = timeout
        .map(|t| parse::duration(t).map_err(|e| fail!("--timeout: {e}")))
        .transpose()?;
    let (text, handle) = resolve(ctx, arg)?;
    let task = open(ctx, &text, &handle)?;
    let result = match timeout {
        None => task.wait()?,
        Some(timeout) => match task.wait_timeout(timeout)? {
            Some(result) => result,
            None => {
                errln!(
                    "execdriver: task {} still runs after {}",
                    handle.task_id,
                    parse::human_duration(timeout)
                );
                return Ok(EXIT_STILL_RUNNING);
            }
        },
    };
    if let Err(e) = remove_cli_alloc(ctx, &handle) {
        errln!("execdriver: {e}");
    }
    if as_json {
        out(&json(&result)?)?;
    }
    Ok(exit_code_of(&handle.task_id, &result, true))
}

/// Driver::open; when the task turns out lost, its cgroup and state are cleaned up by the
/// driver, and the alloc dir we created goes too.
fn open(ctx: &Ctx, text: &str, handle: &HandleId) -> Result<TaskHandle<LinuxPlatform>> {
    match ctx.driver().open(text) {
        Ok(task) => Ok(task),
        Err(e @ DriverError::ReattachFailed { .. }) => {
            if let Err(rm) = remove_cli_alloc(ctx, handle) {
                errln!("execdriver: {rm}");
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

fn kill(ctx: &Ctx, timeout: Option<&str>, arg: &str) -> Result<u8> {
    let timeout = timeout
        .map(|t| parse::duration(t).map_err(|e| fail!("--timeout: {e}")))
        .transpose()?;
    let (text, handle) = resolve(ctx, arg)?;
    let task = open(ctx, &text, &handle)?;
    if let Some(timeout) = timeout {
        let effective = task.update(timeout);
        if effective < timeout {
            errln!(
                "execdriver: kill timeout capped at the task's maximum of {}",
                parse::human_duration(effective)
            );
        }
    }
    task.kill()?;
    let result = task.wait()?;
    if let Err(e) = remove_cli_alloc(ctx, &handle) {
        errln!("execdriver: {e}");
    }
    match &result.error {
        Some(error) => Err(fail!("task {}: {error}", handle.task_id)),
        None => Ok(0),
    }
}

#[derive(Serialize)]
struct StatusReport {
    task_id: String,
    state: &'static str,
    supervisor_pid: i32,
    task_pid: i32,
    exit: Option<ExitStatus>,
    reason: Option<String>,
}

fn status(ctx: &Ctx, as_json: bool, arg: &str) -> Result<u8> {
    let (_, handle) = resolve(ctx, arg)?;
    let platform = ctx.platform();
    let mut report = StatusReport {
        task_id: handle.task_id.clone(),
        state: "running",
        supervisor_pid: handle.supervisor.process.pid,
        task_pid: handle.task.pid,
        exit: None,
        reason: None,
    };
    match platform.reattach(&handle)? {
        Reattach::Live(conn) => {
            if let Some(status) = platform.wait(&conn, Some(platform.now()))? {
                report.state = "exited";
                report.exit = Some(status);
            }
        }
        Reattach::Exited(status) => {
            report.state = "exited";
            report.exit = Some(status);
        }
        Reattach::Gone { reason } => {
            report.state = "lost";
            report.reason = Some(reason);
        }
    }
    if as_json {
        out(&json(&report)?)?;
    } else {
        let detail = match (&report.exit, &report.reason) {
            (Some(exit), _) => describe_exit(exit),
            (None, Some(reason)) => reason.clone(),
            (None, None) => format!(
                "supervisor pid {}, task pid {}",
                report.supervisor_pid, report.task_pid
            ),
        };
        out(&format!("{}: {} ({detail})", report.task_id, report.state))?;
    }
    Ok(0)
}

fn describe_exit(exit: &ExitStatus) -> String {
    let mut text = match exit.signal {
        Some(signal) => format!("killed by {signal}, status {}", exit.exit_code),
        None => format!("exit code {}", exit.exit_code),
    };
    if exit.oom_killed {
        text.push_str(", out of memory");
    }
    text
}

/// A live supervisor for a command that needs one, or a one-line reason why there is none.
fn live(
    ctx: &Ctx,
    arg: &str,
) -> Result<(
    LinuxPlatform,
    execdriver_linux::platform::SupervisorConn,
    HandleId,
)> {
    let (_, handle) = resolve(ctx, arg)?;
    let platform = ctx.platform();
    match platform.reattach(&handle)? {
        Reattach::Live(conn) => Ok((platform, conn, handle)),
        Reattach::Exited(exit) => Err(fail!(
            "task {} has exited ({})",
            handle.task_id,
            describe_exit(&exit)
        )),
        Reattach::Gone { reason } => Err(fail!("task {} is lost: {reason}", handle.task_id)),
    }
}

fn send_signal(ctx: &Ctx, arg: &str, sig: &str) -> Result<u8> {
    let signal: Signal = sig.parse().map_err(|e| fail!("{e}"))?;
    let (platform, conn, _) = live(ctx, arg)?;
    platform.signal(&conn, signal)?;
    Ok(0)
}

fn stats(ctx: &Ctx, as_json: bool, arg: &str) -> Result<u8> {
    let (platform, conn, handle) = live(ctx, arg)?;
    let stats = platform.stats(&conn)?;
    if as_json {
        out(&json(&stats)?)?;
    } else {
        let m = stats.memory;
        let c = stats.cpu;
        out(&format!(
            "{}: memory rss {} cache {} swap {} max {}; cpu user {:.3}s system {:.3}s throttled {} periods {:.3}s; pids {}",
            handle.task_id,
            m.rss,
            m.cache,
            m.swap,
            m.max_usage,
            c.user_ns as f64 / 1e9,
            c.system_ns as f64 / 1e9,
            c.throttled_periods,
            c.throttled_ns as f64 / 1e9,
            stats.pids
        ))?;
    }
    Ok(0)
}

fn logs(ctx: &Ctx, stderr: bool, follow: bool, arg: &str) -> Result<u8> {
    let (_, handle) = resolve(ctx, arg)?;
    // Where the logs are comes from the spec we wrote, not from the handle's paths.
    let paths = StatePaths::new(&ctx.data()?, &handle.task_id);
    let spec_text = fs::read(paths.spec()).map_err(|e| {
        fail!(
            "task {} has no spec in {}: {e}",
            handle.task_id,
            paths.dir.display()
        )
    })?;
    let spec: TaskSpec = serde_json::from_slice(&spec_text)
        .map_err(|e| fail!("spec of task {} is invalid: {e}", handle.task_id))?;
    let stream = if stderr {
        Stream::Stderr
    } else {
        Stream::Stdout
    };
    let log_dir = spec.alloc_dir.join("logs");
    let mut follower = Follower::new(&log_dir, &spec.task_name, stream);
    let mut sink = BrokenPipeTolerant {
        inner: io::stdout().lock(),
    };
    let mut polls = 0u32;
    loop {
        let mut finished = !follow || !paths.dir.exists() || paths.exit_record().exists();
        // A supervisor that died without an exit record writes no more: stop following.
        // Checked about once a second; a pidfd open per poll would be wasteful.
        let dead = follow && !finished && polls.is_multiple_of(10) && supervisor_dead(&handle);
        finished |= dead;
        polls = polls.wrapping_add(1);
        follower
            .poll(&mut sink)
            .map_err(|e| fail!("reading logs in {}: {e}", log_dir.display()))?;
        if dead {
            errln!(
                "execdriver: supervisor {} of task {} is gone and left no exit record; no more output will come",
                handle.supervisor.process.pid,
                handle.task_id
            );
        }
        if finished {
            return Ok(0);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the handle's supervisor is certainly dead (gone, or a zombie).
fn supervisor_dead(handle: &HandleId) -> bool {
    match Pidfd::open_verified(&handle.supervisor.process) {
        Ok(None) => true,
        Ok(Some(pidfd)) => pidfd.wait_exit(Some(Duration::ZERO)).unwrap_or(false),
        Err(_) => false,
    }
}

#[derive(Serialize)]
struct ListEntry {
    task_id: String,
    state: &'static str,
    supervisor_pid: Option<i32>,
    task_pid: Option<i32>,
    exit: Option<ExitStatus>,
}

fn list(ctx: &Ctx, as_json: bool) -> Result<u8> {
    let mut entries = Vec::new();
    let data = match ctx.data() {
        Ok(data) => Some(data),
        Err(_) if !ctx.data_dir.exists() => None,
        Err(e) => return Err(e),
    };
    if let Some(data) = data {
        let tasks = state::tasks_dir(&data);
        let dir = match fs::read_dir(&tasks) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail!("reading {}: {e}", tasks.display())),
        };
        for entry in dir.into_iter().flatten().flatten() {
            let Some(task_id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_task_id(&task_id).is_err() {
                continue;
            }
            entries.push(probe(&StatePaths::new(&data, &task_id), task_id));
        }
    }
    entries.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    if as_json {
        out(&json(&entries)?)?;
    } else {
        out(&format!(
            "{:<40} {:<8} {:>8} {:>8}  EXIT",
            "TASK ID", "STATE", "SUP PID", "TASK PID"
        ))?;
        for e in &entries {
            let pid = |p: Option<i32>| p.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            let exit = e.exit.as_ref().map(describe_exit).unwrap_or_default();
            out(&format!(
                "{:<40} {:<8} {:>8} {:>8}  {exit}",
                e.task_id,
                e.state,
                pid(e.supervisor_pid),
                pid(e.task_pid)
            ))?;
        }
    }
    Ok(0)
}

/// What a state dir says about its task, without changing anything.
fn probe(paths: &StatePaths, task_id: String) -> ListEntry {
    let mut entry = ListEntry {
        task_id,
        state: "lost",
        supervisor_pid: None,
        task_pid: None,
        exit: None,
    };
    let hello = protocol::call_once(
        &paths.socket(),
        &Request::Hello,
        Some(Duration::from_secs(2)),
    );
    if let Ok(Response::Hello(hello)) = hello {
        entry.supervisor_pid = Some(hello.supervisor.pid);
        entry.task_pid = Some(hello.task.pid);
        entry.state = "running";
    }
    if let Ok(Some(exit)) = exit_record::read(&paths.exit_record()) {
        entry.state = "exited";
        entry.exit = Some(exit.status);
    }
    entry
}

fn fingerprint(ctx: &Ctx, as_json: bool) -> Result<u8> {
    let fp = ctx.platform().fingerprint();
    if as_json {
        out(&json(&fp)?)?;
    } else {
        out(&format!(
            "healthy: {}",
            if fp.healthy { "yes" } else { "no" }
        ))?;
        if let Some(reason) = &fp.reason {
            out(&format!("reason: {reason}"))?;
        }
        for (key, value) in &fp.attributes {
            out(&format!("{key} = {value}"))?;
        }
    }
    Ok(if fp.healthy { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let ok = WaitResult::from(ExitStatus::code(3));
        assert_eq!(exit_code_of("t", &ok, false), 3);
        let killed = WaitResult::from(ExitStatus::signaled(Signal::SIGKILL));
        assert_eq!(exit_code_of("t", &killed, false), 137);
        assert_eq!(exit_code_of("t", &WaitResult::failed("x"), false), 125);
    }
}
