//! execdriver-linux: the [`execdriver_core::Platform`] for Linux, and the `execdriver` binary.
//!
//! An agent needs three things from this crate: [`LinuxPlatform`] (with its
//! [`LinuxConfig`]) to put in a `Driver`, the supervisor entry point to ship, and, if it has
//! no alloc dirs of its own, [`AllocDir`]. Everything else is internal.
//!
//! ```no_run
//! use std::time::Duration;
//! use execdriver_core::{Driver, DriverError, PlatformError, TaskConfig, TaskSpec};
//! use execdriver_linux::{AllocDir, LinuxConfig, LinuxPlatform};
//!
//! // In the agent's own `main`, first: serve `<binary> supervise ...` when started so.
//! if let Some(code) = execdriver_linux::supervise_main() {
//!     std::process::exit(code);
//! }
//! let data = "/var/lib/myagent/execdriver";
//! let driver = Driver::new(LinuxPlatform::new(LinuxConfig::new(data)));
//! let alloc = AllocDir::create(data, "web-1", "web")?;
//! let config = TaskConfig::new("/usr/bin/python3", ["-m", "http.server"]);
//! let task = match driver.start(&TaskSpec::new("web-1", "web", alloc.dir(), alloc.task_dir(), config)) {
//!     Ok(task) => task,
//!     Err(DriverError::Spawn { source: PlatformError::Spawn { step, .. }, .. }) => {
//!         panic!("the start failed while {step}")
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! let handle_id = task.id(); // persist it; after a restart: driver.open(&handle_id)
//! task.kill()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layers, top to bottom (nothing points up):
//! - `platform/`: the agent side: spawn, client, liveness, confine, reattach, orphan
//!   cleanup, the tasks of a data dir;
//! - `protocol`: the supervisor protocol, the one thing both sides share about talking;
//! - `supervisor/`: the daemon, one event loop (it imports nothing of `platform/`);
//! - the ground both stand on: `state/` (the state dir records), `cgroups/`, `isolation/`,
//!   `process/` (identities, pidfds, the footprint), `logs/`, `mountinfo`, `fingerprint`, `seccomp`.

// What only the workspace's tests use through `test-support` looks dead in a unit-test
// build without it (`cargo test -p execdriver-linux --lib`).
#![cfg_attr(
    all(test, not(feature = "test-support")),
    allow(dead_code, unused_imports)
)]

// The internals are public only to this workspace's tests, behind `test-support`.
macro_rules! internal {
    ($($(#[$attr:meta])* mod $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "test-support")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "test-support"))]
        mod $name;
    )*};
}

internal! {
    mod cgroups;
    mod isolation;
    mod process;
    mod state;
    mod logs;
    mod mountinfo;
    mod protocol;
    mod seccomp;
}

mod allocdir;
mod clock;
pub mod exec_io;
mod fingerprint;
mod platform;
mod supervisor;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod testing;
#[cfg(all(test, not(feature = "test-support")))]
mod testing;

pub use allocdir::{AllocDir, AllocDirError};
pub use platform::{
    DEFAULT_DATA_DIR, DEFAULT_LINGER, DEFAULT_READY_TIMEOUT, LinuxConfig, LinuxPlatform,
    SUPERVISOR_ENTRY, SupervisorConn,
};
pub use seccomp::SeccompError;
pub use supervisor::SuperviseOptions;

/// Runs the supervisor of one task with `options`: what `<binary> supervise ...` does.
/// Returns the process exit code; call it in a process of its own (it daemonizes).
pub fn supervise(options: &SuperviseOptions) -> i32 {
    supervisor::run(options)
}

/// Checks that a task's seccomp setting can be built into a filter on this node (the
/// system call names, the ABIs, the size), without starting anything: what a start would
/// refuse, refused early, naming the profile's field.
pub fn check_seccomp(seccomp: &execdriver_core::Seccomp) -> Result<(), SeccompError> {
    seccomp::check(seccomp)
}

/// The supervisor entry point for an agent's own binary: when the process was started as
/// `<binary> supervise --state-dir DIR [--linger-ms N] [--slice NAME]
/// [--start-lock-fd FD]` (as [`LinuxPlatform`] starts its supervisor binary), runs the
/// supervisor and returns its exit code; otherwise `None`, and the agent carries on.
pub fn supervise_main() -> Option<i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().map(|a| a.as_os_str()) != Some(std::ffi::OsStr::new("supervise")) {
        return None;
    }
    set_supervisor_panic_hook();
    Some(match parse_supervise_args(&args[1..]) {
        Ok(options) => supervise(&options),
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "supervise: {e}");
            2
        }
    })
}

/// A bug must not take the task down with it unnoticed: the supervisor notes a panic in its
/// log (its stderr) as one line, without a backtrace.
pub fn set_supervisor_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "supervisor: internal error: {}",
            panic_message(info)
        );
    }));
}

/// A panic's payload and location as one line (for a log or a message on stderr).
pub fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    match info.location() {
        Some(l) => format!("{payload} at {}:{}", l.file(), l.line()).replace('\n', " "),
        None => payload.replace('\n', " "),
    }
}

fn parse_supervise_args(args: &[std::ffi::OsString]) -> Result<SuperviseOptions, String> {
    let mut state_dir = None;
    let mut options = SuperviseOptions::new("");
    let (mut user_ids, mut login, mut home) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        let number = |what: &str| {
            value
                .to_str()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{what} {value:?} is not a whole number"))
        };
        match flag.to_str() {
            Some("--state-dir") => state_dir = Some(std::path::PathBuf::from(value)),
            Some("--linger-ms") => {
                options =
                    options.with_linger(std::time::Duration::from_millis(number("--linger-ms")?));
            }
            Some("--slice") => {
                let slice = value
                    .to_str()
                    .ok_or_else(|| format!("--slice {value:?} is not utf-8"))?;
                options = options.with_slice(slice);
            }
            Some("--start-lock-fd") => {
                let fd = i32::try_from(number("--start-lock-fd")?)
                    .map_err(|_| format!("--start-lock-fd {value:?} is out of range"))?;
                options = options.with_start_lock_fd(Some(fd));
            }
            Some("--user-ids") => user_ids = Some(value),
            Some("--user-login") => {
                let name = value
                    .to_str()
                    .ok_or_else(|| format!("--user-login {value:?} is not utf-8"))?;
                login = Some(name.to_owned());
            }
            Some("--user-home") => home = Some(std::path::PathBuf::from(value)),
            _ => return Err(format!("unknown option {}", flag.to_string_lossy())),
        }
    }
    let state_dir = state_dir.ok_or("--state-dir is required")?;
    let entry = match (login, home) {
        (Some(name), Some(home)) => Some(isolation::UserEntry { name, home }),
        (None, None) => None,
        _ => return Err("--user-login and --user-home go together".into()),
    };
    if let Some(ids) = user_ids {
        let text = ids
            .to_str()
            .ok_or_else(|| format!("--user-ids {ids:?} is not utf-8"))?;
        let user = isolation::TaskUser::from_ids_arg("", text, entry)
            .ok_or_else(|| format!("--user-ids {text:?} is not UID:GID:GROUP,..."))?;
        options.user = Some(user);
    } else if entry.is_some() {
        return Err("--user-login and --user-home need --user-ids".into());
    }
    Ok(SuperviseOptions {
        state_dir,
        ..options
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervise_arguments_parse_and_bad_ones_are_named() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let o = parse_supervise_args(&args(&[
            "--state-dir",
            "/d",
            "--linger-ms",
            "5",
            "--slice",
            "s",
            "--start-lock-fd",
            "3",
        ]))
        .expect("parse");
        assert_eq!(o.state_dir, std::path::Path::new("/d"));
        assert_eq!(o.linger, std::time::Duration::from_millis(5));
        assert_eq!(o.slice, "s");
        assert_eq!(o.start_lock_fd, Some(3));
        let e = parse_supervise_args(&args(&["--linger-ms", "x"])).expect_err("bad");
        assert!(e.contains("--linger-ms"), "{e}");
        let e = parse_supervise_args(&args(&[])).expect_err("missing");
        assert!(e.contains("--state-dir"), "{e}");
        let e = parse_supervise_args(&args(&["--bogus", "1"])).expect_err("unknown");
        assert!(e.contains("--bogus"), "{e}");
    }

    #[test]
    fn the_agents_user_reaches_the_supervisor_and_a_bad_one_is_named() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let o = parse_supervise_args(&args(&["--state-dir", "/d"])).expect("parse");
        assert_eq!(o.user, None);
        let o = parse_supervise_args(&args(&[
            "--state-dir",
            "/d",
            "--user-ids",
            "65534:65534:65534,5",
            "--user-login",
            "nobody",
            "--user-home",
            "/nonexistent",
        ]))
        .expect("parse");
        let user = o.user.expect("user");
        assert_eq!(
            (user.uid, user.gid, user.groups),
            (65534, 65534, vec![65534, 5])
        );
        assert_eq!(
            user.entry,
            Some(isolation::UserEntry {
                name: "nobody".into(),
                home: "/nonexistent".into(),
            })
        );
        for (bad, named) in [
            (&["--user-ids", "1:x:"][..], "--user-ids"),
            (
                &["--user-ids", "1:2:", "--user-login", "u"][..],
                "--user-home",
            ),
            (
                &["--user-login", "u", "--user-home", "/h"][..],
                "--user-ids",
            ),
        ] {
            let mut a = vec!["--state-dir", "/d"];
            a.extend_from_slice(bad);
            let e = parse_supervise_args(&args(&a)).expect_err("bad user");
            assert!(e.contains(named), "{bad:?}: {e}");
        }
    }
}
