//! End to end through the `execdriver` binary: the options of `run` people bring from docker
//! (-e, --env-file, -w, -v, --user UID:GID, -i, -t, --chroot-env, --spec, --dry-run, a
//! second Ctrl-C) and what a task sees (HOME, USER, PATH, alloc/data). Needs root (fails loudly
//! under CI without it).

mod cli_support;
#[path = "../../tests/tests/linux_support/mod.rs"]
mod linux_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::{CLEAN, command, env, text};
use execdriver_core::Signal;
use linux_support::{TestEnv, eventually, unique_id};

/// `run --id <new id> <args...>` with `prepare` applied to the command, tracked for the leak
/// check.
fn run_with(env: &TestEnv, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Output {
    let id = unique_id("o");
    env.track_id(&id);
    let mut all = vec!["run", "--id", &id];
    all.extend_from_slice(args);
    let mut cmd = command(env, &all);
    prepare(&mut cmd);
    cmd.output().expect("run execdriver")
}

fn run(env: &TestEnv, args: &[&str]) -> Output {
    run_with(env, args, |_| {})
}

/// The task's stdout, after checking it exited 0.
fn stdout_ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// A refusal: status 125 and one line on stderr that contains `needle`.
fn refused(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn workdir_env_pass_through_and_login_variables() {
    let Some(env) = env("workdir_env_pass_through_and_login_variables") else {
        return;
    };
    assert_eq!(
        stdout_ok(&run(&env, &["-w", "/usr", "--", "/bin/pwd"])),
        "/usr\n"
    );
    refused(
        &run(&env, &["-w", "/no-such-dir", "/bin/true"]),
        "/no-such-dir",
    );
    refused(&run(&env, &["-w", "usr", "/bin/true"]), "working dir");
    let script = "echo \"$FOO|$A|${UNSET_HERE-unset}|$HOME|$USER|$LOGNAME|$PATH\"";
    let out = run_with(
        &env,
        &[
            "-e",
            "FOO",
            "-e",
            "UNSET_HERE",
            "-e",
            "A=1=2",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
        |cmd| {
            cmd.env("FOO", "from the cli").env_remove("UNSET_HERE");
        },
    );
    assert_eq!(
        stdout_ok(&out),
        format!(
            "from the cli|1=2|unset|/|nobody|nobody|{}\n",
            execdriver_linux::isolation::DEFAULT_PATH
        )
    );
    // Root's home is not in the task root (no /root in the chroot env): HOME is /.
    let out = run(
        &env,
        &["--user", "root", "--", "/bin/sh", "-c", "echo $HOME $USER"],
    );
    assert_eq!(stdout_ok(&out), "/ root\n");
    // What the spec's env sets wins over what a login would set.
    let out = run(
        &env,
        &[
            "-e",
            "HOME=/tmp",
            "-e",
            "PATH=/bin",
            "--",
            "/bin/sh",
            "-c",
            "echo $HOME $PATH",
        ],
    );
    assert_eq!(stdout_ok(&out), "/tmp /bin\n");
    env.assert_clean(CLEAN);
}

#[test]
fn env_file_in_dockers_format_and_a_bad_line_named() {
    let Some(env) = env("env_file_in_dockers_format_and_a_bad_line_named") else {
        return;
    };
    let file = env.data.join("vars.env");
    std::fs::write(
        &file,
        "# a comment\n\nGREETING=hello world\nQUOTED=\"kept\"\n  INDENTED=yes\nPASSED\nOVERRIDDEN=file\n",
    )
    .expect("write env file");
    let file_arg = file.to_str().expect("utf-8");
    let script = "echo \"$GREETING|$QUOTED|$INDENTED|$PASSED|$OVERRIDDEN\"";
    let out = run_with(
        &env,
        &[
            "--env-file",
            file_arg,
            "-e",
            "OVERRIDDEN=flag",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
        |cmd| {
            cmd.env("PASSED", "through");
        },
    );
    assert_eq!(stdout_ok(&out), "hello world|\"kept\"|yes|through|flag\n");
    std::fs::write(&file, "A=1\n# fine\nNOT A VALID NAME=1\n").expect("write env file");
    let out = run(&env, &["--env-file", file_arg, "/bin/true"]);
    refused(&out, "line 3");
    refused(&out, file_arg);
    refused(
        &run(&env, &["--env-file", "/no/such.env", "/bin/true"]),
        "/no/such.env",
    );
    env.assert_clean(CLEAN);
}

#[test]
fn volumes_read_only_refuse_writes_and_read_write_ones_reach_the_host() {
    let Some(env) = env("volumes_read_only_refuse_writes_and_read_write_ones_reach_the_host")
    else {
        return;
    };
    let vol = env.data.join("vol");
    std::fs::create_dir(&vol).expect("mkdir");
    std::fs::write(vol.join("in"), "from the host\n").expect("write");
    let vol_arg = vol.to_str().expect("utf-8");
    let ro = format!("{vol_arg}:/data:ro");
    let out = run(
        &env,
        &[
            "--user",
            "root",
            "-v",
            &ro,
            "--",
            "/bin/sh",
            "-c",
            "cat /data/in; echo x > /data/out",
        ],
    );
    assert_eq!(text(&out.stdout), "from the host\n");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    assert!(!vol.join("out").exists());
    let rw = format!("{vol_arg}:/srv/data");
    let out = run(
        &env,
        &[
            "--user",
            "root",
            "-v",
            &rw,
            "--",
            "/bin/sh",
            "-c",
            "echo seen > /srv/data/out",
        ],
    );
    stdout_ok(&out);
    assert_eq!(
        std::fs::read_to_string(vol.join("out")).expect("read"),
        "seen\n"
    );
    // A file over an existing file of a chroot env dir: the host's /etc is not written.
    let hosts = vol.join("hosts");
    std::fs::write(&hosts, "10.9.8.7 bound\n").expect("write");
    let over_etc = format!("{}:/etc/hosts:ro", hosts.display());
    let out = run(&env, &["-v", &over_etc, "--", "/bin/cat", "/etc/hosts"]);
    assert_eq!(stdout_ok(&out), "10.9.8.7 bound\n");
    for (volume, needle) in [
        (format!("{vol_arg}:/proc/x"), "mounts itself"),
        (format!("{vol_arg}:/"), "cannot be `/`"),
        (format!("{vol_arg}:data"), "absolute"),
        (format!("{vol_arg}:/data:rx"), "ro or rw"),
        ("/no/such/source:/data".to_owned(), "/no/such/source"),
        (
            format!("{vol_arg}:/etc/no-such-dir-here"),
            "must exist already",
        ),
    ] {
        refused(&run(&env, &["-v", &volume, "/bin/true"]), needle);
    }
    env.assert_clean(CLEAN);
}

/// Unmounts, lazily, what a test mounted on the host, even when it fails.
struct HostMounts(Vec<PathBuf>);

impl Drop for HostMounts {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn a_slave_volume_shows_what_the_host_mounts_under_its_source_later() {
    let Some(env) = env("a_slave_volume_shows_what_the_host_mounts_under_its_source_later") else {
        return;
    };
    use nix::mount::{MsFlags, mount};
    let src = env.data.join("propagating");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    let mut mounts = HostMounts(Vec::new());
    // A shared mount of its own, whatever the host's propagation is.
    mount(
        Some(&src),
        &src,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind");
    mounts.0.push(src.clone());
    mount(
        None::<&str>,
        &src,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("shared");
    let volume = format!("{}:/data:ro,rslave", src.display());
    let id = unique_id("o");
    env.track_id(&id);
    let mut child = command(
        &env,
        &[
            "run",
            "--id",
            &id,
            "-v",
            &volume,
            "--",
            "/bin/sh",
            "-c",
            "echo up; while [ ! -e /data/sub/marker ]; do sleep 0.05; done; cat /data/sub/marker",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "up\n");
    // Mounted on the host after the task started: it appears in the task.
    let sub = src.join("sub");
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("tmpfs");
    mounts.0.push(sub.clone());
    std::fs::write(sub.join("marker"), "propagated\n").expect("write");
    line.clear();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "propagated\n");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    drop(mounts);
    // Nothing may be mounted inside a shared mount: it would be mounted on the host too.
    let shared = format!("{}:/data:rshared", src.display());
    let inner = format!("{}:/data/sub", env.data.display());
    refused(
        &run(&env, &["-v", &shared, "-v", &inner, "/bin/true"]),
        "shared mount",
    );
    env.assert_clean(CLEAN);
}

#[test]
fn numeric_user_and_group_need_no_passwd_entry() {
    let Some(env) = env("numeric_user_and_group_need_no_passwd_entry") else {
        return;
    };
    let out = run(
        &env,
        &["--user", "1000:1000", "--", "/bin/sh", "-c", "id -u; id -g"],
    );
    assert_eq!(stdout_ok(&out), "1000\n1000\n");
    let out = run(
        &env,
        &[
            "--user",
            "4242",
            "--",
            "/bin/sh",
            "-c",
            "id -u; id -g; echo $HOME",
        ],
    );
    assert_eq!(stdout_ok(&out), "4242\n4242\n/\n");
    refused(
        &run(&env, &["--user", "nobody:no-such-group-x", "/bin/true"]),
        "no-such-group-x",
    );
    refused(&run(&env, &["--user", "a:b:c", "/bin/true"]), "UID:GID");
    env.assert_clean(CLEAN);
}

#[test]
fn alloc_data_and_tmp_are_writable_by_the_task_user() {
    let Some(env) = env("alloc_data_and_tmp_are_writable_by_the_task_user") else {
        return;
    };
    let id = unique_id("o");
    env.track_id(&id);
    let out = command(
        &env,
        &[
            "start",
            "--id",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "echo t > /alloc/tmp/t && stat -c '%U %a' /alloc /alloc/data /alloc/tmp > \
             /alloc/data/stat; while [ ! -e /alloc/data/go ]; do sleep 0.05; done",
        ],
    )
    .output()
    .expect("start");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let alloc = env.data.join("allocs").join(&id);
    let stat = alloc.join("data/stat");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&stat).is_ok_and(|t| t.lines().count() == 3)
    }));
    // The alloc dir stays root's; its data is the task user's, its tmp everyone's (sticky).
    assert_eq!(
        std::fs::read_to_string(&stat).expect("read"),
        "root 755\nnobody 755\nroot 1777\n"
    );
    assert_eq!(std::fs::metadata(&stat).expect("stat").uid(), 65534);
    assert_eq!(
        std::fs::metadata(alloc.join("tmp/t")).expect("stat").uid(),
        65534
    );
    std::fs::write(alloc.join("data/go"), "").expect("go");
    let out = command(&env, &["wait", &id]).output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_clean(CLEAN);
}

#[test]
fn chroot_env_adds_to_the_defaults_replaces_them_on_request_and_names_a_missing_dir() {
    let Some(env) =
        env("chroot_env_adds_to_the_defaults_replaces_them_on_request_and_names_a_missing_dir")
    else {
        return;
    };
    // Not under the data dir: /tmp is the task's own.
    let extra = tempfile::Builder::new()
        .prefix("execdriver-test-chroot-")
        .tempdir_in("/var/tmp")
        .expect("temp dir");
    std::fs::set_permissions(
        extra.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(extra.path().join("f"), "extra\n").expect("write");
    let extra_arg = extra.path().to_str().expect("utf-8");
    let probe = format!("cat {extra_arg}/f; test -e /etc/passwd && echo etc");
    let out = run(
        &env,
        &["--chroot-env", extra_arg, "--", "/bin/sh", "-c", &probe],
    );
    assert_eq!(stdout_ok(&out), "extra\netc\n");
    let mut only = vec!["--chroot-env-only"];
    for dir in ["/bin", "/lib", "/lib64", "/lib32", "/sbin", "/usr"] {
        if Path::new(dir).exists() {
            only.extend(["--chroot-env", dir]);
        }
    }
    only.extend(["--chroot-env", extra_arg, "--", "/bin/sh", "-c", &probe]);
    let out = run(&env, &only);
    assert_eq!(text(&out.stdout), "extra\n", "{}", text(&out.stderr));
    refused(
        &run(&env, &["--chroot-env", "/no/such/chroot-dir", "/bin/true"]),
        "/no/such/chroot-dir",
    );
    env.assert_clean(CLEAN);
}

#[test]
fn interactive_gives_the_task_our_stdin_until_its_end() {
    let Some(env) = env("interactive_gives_the_task_our_stdin_until_its_end") else {
        return;
    };
    let id = unique_id("o");
    env.track_id(&id);
    let mut child = command(&env, &["run", "--id", &id, "-i", "--", "/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"abc\n").expect("write");
    // The end of our input is the end of the task's: cat exits.
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout_ok(&out), "abc\n");
    // Without -i the task reads /dev/null, even when we have input.
    let out = run_with(&env, &["--", "/bin/cat"], |cmd| {
        cmd.stdin(Stdio::piped());
    });
    assert_eq!(stdout_ok(&out), "");
    env.assert_clean(CLEAN);
}

#[test]
fn dry_run_prints_the_spec_that_spec_files_read_back_as_json_and_toml() {
    let Some(env) = env("dry_run_prints_the_spec_that_spec_files_read_back_as_json_and_toml")
    else {
        return;
    };
    let id = unique_id("o");
    let out = command(
        &env,
        &[
            "run",
            "--dry-run",
            "--id",
            &id,
            "-e",
            "A=1",
            "-w",
            "/usr",
            "-v",
            "/etc:/data:ro",
            "--",
            "/bin/sh",
            "-c",
            "echo $A; pwd; ls /data/passwd",
        ],
    )
    .output()
    .expect("dry run");
    let printed = stdout_ok(&out);
    let spec: serde_json::Value = serde_json::from_str(&printed).expect("json");
    assert_eq!(spec["task_id"], id.as_str());
    assert_eq!(spec["env"]["A"], "1");
    assert_eq!(spec["workdir"], "/usr");
    assert_eq!(spec["mounts"][0]["readonly"], true);
    assert!(
        !env.data.join("allocs").join(&id).exists(),
        "a dry run made an alloc dir"
    );
    assert!(
        !env.data.join("tasks").join(&id).exists(),
        "a dry run made a task"
    );
    // What --dry-run prints runs as printed (the task id taken from the file).
    let json = env.data.join("spec.json");
    std::fs::write(&json, &printed).expect("write");
    env.track_id(&id);
    let out = command(&env, &["run", "--spec", json.to_str().expect("utf-8")])
        .output()
        .expect("run --spec");
    assert_eq!(stdout_ok(&out), "1\n/usr\n/data/passwd\n");
    // TOML by the name; fields left out are defaults; flags beside it win.
    let toml = env.data.join("task.toml");
    std::fs::write(
        &toml,
        "user = \"root\"\nworkdir = \"/etc\"\n[config]\ncommand = \"/bin/sh\"\n\
         args = [\"-c\", \"echo $B $(id -u) $(pwd)\"]\n[env]\nB = \"from toml\"\n\
         [resources]\nmemory_limit_bytes = 67108864\n",
    )
    .expect("write");
    let toml_arg = toml.to_str().expect("utf-8");
    let out = run(&env, &["--spec", toml_arg]);
    assert_eq!(stdout_ok(&out), "from toml 0 /etc\n");
    let out = run(&env, &["--spec", toml_arg, "-e", "B=flag", "-w", "/usr"]);
    assert_eq!(stdout_ok(&out), "flag 0 /usr\n");
    std::fs::write(&toml, "bogus_field = 1\n").expect("write");
    refused(
        &run(&env, &["--spec", toml_arg, "/bin/true"]),
        "bogus_field",
    );
    std::fs::write(&toml, "user = [\n").expect("write");
    refused(&run(&env, &["--spec", toml_arg, "/bin/true"]), "TOML");
    env.assert_clean(CLEAN);
}

#[test]
fn a_second_ctrl_c_is_acknowledged_and_kills_at_once() {
    let Some(env) = env("a_second_ctrl_c_is_acknowledged_and_kills_at_once") else {
        return;
    };
    let id = unique_id("o");
    env.track_id(&id);
    let mut child = command(
        &env,
        &[
            "run",
            "--id",
            &id,
            "--kill-timeout",
            "60s",
            "--",
            "/bin/sh",
            "-c",
            "trap '' INT; echo up; while :; do sleep 0.05; done",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "up\n");
    // Our own child, unreaped: its pid cannot have been reused.
    let cli = execdriver_linux::process::Pidfd::open(pid).expect("pidfd");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    cli.signal(Signal::SIGINT).expect("first SIGINT");
    // Each signal only once the previous one was read: two pending would merge into one.
    let mut first = String::new();
    stderr.read_line(&mut first).expect("read");
    assert!(first.contains("Ctrl-C again"), "{first}");
    let forced = Instant::now();
    cli.signal(Signal::SIGINT).expect("second SIGINT");
    let mut second = String::new();
    stderr.read_line(&mut second).expect("read");
    assert!(second.contains("now (SIGKILL)"), "{second}");
    let status = child.wait().expect("wait");
    // Far inside the 60 s grace the first Ctrl-C gave.
    assert!(
        forced.elapsed() < Duration::from_secs(30),
        "{:?}",
        forced.elapsed()
    );
    assert_eq!(status.code(), Some(137));
    env.assert_clean(CLEAN);
}

#[test]
fn tty_gives_the_task_a_terminal_of_its_own_with_all_output_on_stdout() {
    let Some(env) = env("tty_gives_the_task_a_terminal_of_its_own_with_all_output_on_stdout")
    else {
        return;
    };
    // Our own stdio are pipes: the task's terminal is all the same.
    let out = run(
        &env,
        &[
            "-t",
            "--",
            "/bin/sh",
            "-c",
            "tty; test -t 0 && test -t 1 && test -t 2 && echo all-three; : < /dev/tty && \
             echo ctty; echo TERM=$TERM; echo to-stderr >&2; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let shown = text(&out.stdout).replace("\r\n", "\n");
    let mut lines = shown.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{shown:?}"
    );
    for want in ["all-three", "ctty", "to-stderr"] {
        assert!(shown.lines().any(|l| l == want), "{want} not in {shown:?}");
    }
    assert!(
        shown.lines().any(|l| l.starts_with("TERM=") && l.len() > 5),
        "{shown:?}"
    );
    // The terminal is the task's stdin: a spec that also asks for ours is refused.
    let spec_dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"config":{"command":"/bin/true"},"tty":{"rows":1,"cols":1},"stdin":"inherit"}"#,
    )
    .expect("write spec");
    let out = run(&env, &["--spec", spec.to_str().expect("utf-8")]);
    refused(&out, "reads its stdin from the terminal");
    env.assert_clean(CLEAN);
}

/// Reads `master` into `seen` until `needle` shows (or 20 s pass, which fails the test).
fn read_until(master: &std::os::fd::OwnedFd, seen: &mut String, needle: &str) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{needle:?} did not show; got {seen:?}");
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(master, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll: {e}"),
        }
        match rustix::io::read(master, &mut buf) {
            Ok(0) => panic!("the terminal closed before {needle:?}; got {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("reading the terminal before {needle:?} ({e}); got {seen:?}"),
        }
    }
}

/// A terminal of the test's own, `rows` x `cols`: its master, and its peer to run under.
fn test_terminal(rows: u16, cols: u16) -> (std::os::fd::OwnedFd, std::fs::File) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    rustix::termios::tcsetwinsize(&master, window(rows, cols)).expect("window size");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))
        .expect("open the terminal's peer");
    (master, slave)
}

fn window(rows: u16, cols: u16) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// `execdriver ARGS` on `terminal` as its controlling terminal (setsid -c), as from a
/// user's shell: resizing it sends SIGWINCH to execdriver.
fn spawn_on_terminal(
    env: &TestEnv,
    terminal: &std::fs::File,
    args: &[&str],
) -> std::process::Child {
    let dup = || terminal.try_clone().expect("dup");
    Command::new("setsid")
        .arg("-c")
        .arg(&env.binary)
        .arg("--data-dir")
        .arg(&env.data)
        .arg("--slice")
        .arg(&env.slice)
        .args(args)
        .stdin(dup())
        .stdout(dup())
        .stderr(dup())
        .spawn()
        .expect("setsid(1) is installed")
}

#[test]
fn interactive_tty_takes_our_keys_and_follows_our_window_size() {
    let Some(env) = env("interactive_tty_takes_our_keys_and_follows_our_window_size") else {
        return;
    };
    let (master, slave) = test_terminal(30, 100);
    let id = unique_id("o");
    env.track_id(&id);
    let script = "stty size; read x; echo got-$x; trap 'stty size; exit 7' WINCH; echo waiting; \
                  while :; do sleep 0.05; done";
    let mut child = spawn_on_terminal(
        &env,
        &slave,
        &[
            "run", "--id", &id, "-i", "-t", "--", "/bin/sh", "-c", script,
        ],
    );
    let mut seen = String::new();
    read_until(&master, &mut seen, "30 100");
    // Typed keys: `run` has our terminal in raw mode, the task's terminal makes the
    // carriage return a newline.
    rustix::io::write(&master, b"abc\r").expect("type");
    read_until(&master, &mut seen, "got-abc");
    read_until(&master, &mut seen, "waiting");
    rustix::termios::tcsetwinsize(&master, window(40, 120)).expect("resize");
    read_until(&master, &mut seen, "40 120");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7), "{seen:?}");
    env.assert_clean(CLEAN);
}

#[test]
fn attach_types_into_a_started_terminal_detaches_and_ends_with_the_task() {
    let Some(env) = env("attach_types_into_a_started_terminal_detaches_and_ends_with_the_task")
    else {
        return;
    };
    let id = unique_id("o");
    env.track_id(&id);
    let out = command(&env, &["start", "--id", &id, "-t", "--", "/bin/sh"])
        .output()
        .expect("start");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (master, slave) = test_terminal(24, 80);
    let mut attach = spawn_on_terminal(&env, &slave, &["attach", &id]);
    let mut seen = String::new();
    rustix::io::write(&master, b"echo one-$((40+2))\r").expect("type");
    read_until(&master, &mut seen, "one-42");
    // Ctrl-P Ctrl-Q: we leave, the task stays.
    rustix::io::write(&master, b"\x10\x11").expect("detach");
    read_until(&master, &mut seen, "detached");
    assert_eq!(attach.wait().expect("wait").code(), Some(0), "{seen:?}");
    let status = cli_support::cli(&env, &["status", &id]);
    assert!(
        text(&status.stdout).contains("running"),
        "{}",
        text(&status.stdout)
    );
    // Again, until the task ends: its status is ours.
    let mut attach = spawn_on_terminal(&env, &slave, &["attach", &id]);
    rustix::io::write(&master, b"exit 3\r").expect("type");
    assert_eq!(attach.wait().expect("wait").code(), Some(3), "{seen:?}");
    // A task without a terminal has nothing to attach to.
    let plain = unique_id("o");
    env.track_id(&plain);
    let out = command(&env, &["start", "--id", &plain, "--", "/bin/sleep", "600"])
        .output()
        .expect("start");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    refused(
        &cli_support::cli(&env, &["attach", &plain]),
        "has no terminal",
    );
    assert_eq!(
        cli_support::cli(&env, &["rm", "-f", &plain]).status.code(),
        Some(0)
    );
    env.assert_clean(CLEAN);
}
