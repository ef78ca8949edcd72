//! The command line surface. Scripts depend on it: add, never rename.
//!
//! Values that need checking (sizes, durations, numbers, signals) are taken as strings and
//! parsed afterwards, so that a bad one is reported as one line naming it, with status 125.
//!
//! The doc comments here are the `--help` text, read in a terminal: `<id>` there is a
//! placeholder for people, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use execdriver_linux::DEFAULT_DATA_DIR;

/// Run commands isolated on this node: cgroup limits, a private root made of read-only host
/// dirs, private namespaces and an unprivileged user; supervised so that they survive the
/// caller and can be waited for, killed and inspected later by handle id or task id.
#[derive(Debug, Parser)]
#[command(name = "execdriver", version, propagate_version = true)]
#[command(
    after_help = "Exit status of run and wait: the task's own status, 128+N when \
it was killed by signal N, 125 when execdriver itself failed or refused its input (usage \
errors included), 126 when the command is not executable, 127 when it is not found. Every \
command exits 1 when the task it names does not exist."
)]
pub struct Cli {
    /// Where task state (tasks/<id>/) and the alloc dirs of run and start (allocs/<id>/) live.
    #[arg(
        long,
        global = true,
        env = "EXECDRIVER_DATA_DIR",
        default_value = DEFAULT_DATA_DIR,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// cgroup parent of task cgroups, relative to each hierarchy root [default: the caller's
    /// own cgroup where it can host them, else /<slice>.slice].
    #[arg(
        long,
        global = true,
        env = "EXECDRIVER_CGROUP_PARENT",
        value_name = "PATH"
    )]
    pub cgroup_parent: Option<String>,

    /// Name of the driver's own top-level cgroup slice (/<NAME>.slice): supervisors live in
    /// its `supervisors` cgroup, outside the caller's, and tasks go under it when the
    /// caller's own cgroup cannot host them.
    #[arg(
        long,
        global = true,
        env = "EXECDRIVER_SLICE",
        default_value = "execdriver",
        value_name = "NAME"
    )]
    pub slice: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a task and wait for it in the foreground: its stdout and stderr appear on ours,
    /// Ctrl-C or SIGTERM kills it gracefully, and its exit status becomes ours. The task is
    /// kept (logs, exit) until `rm`, unless --rm.
    Run(RunOptions),

    /// Start a task in the background: print its handle id as one line and return.
    Start(TaskOptions),

    /// Wait for a task to exit; exit with its status as `run` does (124 when --timeout
    /// passes first; the task keeps running). Asked again, it answers the same.
    Wait {
        /// Give up after this long (e.g. 500ms, 5s, 1m).
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        /// Print the result as one JSON object: exit_code, signal, oom_killed, error.
        #[arg(long)]
        json: bool,
        /// The handle id, `-` to read it from stdin, or a task id in the data dir.
        #[arg(value_name = "HANDLE")]
        handle: String,
    },

    /// Stop a task: its kill signal, then a force kill of everything in its cgroup after the
    /// kill timeout; then print how it ended, as `wait` would report it.
    Kill {
        /// The kill timeout to use instead of the task's own (capped at its recorded maximum).
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        /// Print nothing.
        #[arg(short, long)]
        quiet: bool,
        /// Print the result as one JSON object, as `wait --json` does.
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
        /// The handle id, `-` to read it from stdin, or a task id in the data dir.
        #[arg(value_name = "HANDLE")]
        handle: String,
    },

    /// Show whether a task runs, has exited, is unresponsive, or was lost; changes nothing.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The handle id, `-` to read it from stdin, or a task id in the data dir.
        #[arg(value_name = "HANDLE")]
        handle: String,
    },

    /// Send a signal to a running task.
    Signal {
        /// The handle id, `-` to read it from stdin, or a task id in the data dir.
        #[arg(value_name = "HANDLE")]
        handle: String,
        /// The signal: a name (TERM, SIGTERM) or a number.
        #[arg(value_name = "SIG")]
        signal: String,
    },

    /// Run a command inside a running task: its namespaces, root, cgroup, user, capabilities,
    /// seccomp filter and environment. Exits with the command's status (126: not executable,
    /// 127: not found, 125: execdriver failed).
    Exec(ExecOptions),

    /// Attach our terminal to the terminal of a task started with -t: its output from now
    /// on, our keys typed into it, our window size followed. Ctrl-P Ctrl-Q detaches (the
    /// task runs on); when the task exits, its status is ours.
    Attach(AttachOptions),

    /// Show running tasks' cpu %, memory and processes against their limits, live (as
    /// `docker stats`).
    Stats(StatsOpts),

    /// Print a task's output: its stdout on ours and its stderr on ours, in the order it
    /// arrived; or one of them (on our stdout).
    Logs(LogsOpts),

    /// List the tasks in the data dir: name, id, state, command and age.
    #[command(visible_alias = "ps")]
    List {
        /// Print one JSON array (fields: name, task_id, state, exit, reason, command,
        /// created, created_unix_ms, supervisor_pid, task_pid).
        #[arg(long)]
        json: bool,
    },

    /// Remove tasks and everything kept of them: records, logs, alloc dir, cgroup, name.
    #[command(visible_alias = "remove")]
    Rm {
        /// Kill a running task first (otherwise a running task is refused).
        #[arg(short, long)]
        force: bool,
        /// Task ids, names or handle ids.
        #[arg(required = true, value_name = "TASK")]
        tasks: Vec<String>,
    },

    /// Remove every task that has exited; print the id of each one removed.
    Prune {
        /// Only tasks started longer ago than this (e.g. 1h, 30m, 24h).
        #[arg(long, value_name = "DUR")]
        until: Option<String>,
    },

    /// Print everything known of a task as one JSON object: spec, handle, cgroup paths,
    /// limits, state, exit and log paths; exit 1 when there is no such task.
    Inspect {
        /// The task id, name, handle id, or `-` to read one from stdin.
        #[arg(value_name = "TASK")]
        handle: String,
    },

    /// Check whether this node can run tasks (root, cgroups and controllers, kernel); exit 1
    /// when it cannot.
    Fingerprint {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },

    /// Print a shell completion script (e.g. `execdriver completion bash >
    /// /etc/bash_completion.d/execdriver`).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff), or write one page per command into DIR (`execdriver.1`,
    /// `execdriver-run.1`, ...).
    Man {
        /// Write every page into this dir instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },

    /// Supervise one task (started by execdriver itself, not by hand).
    #[command(hide = true)]
    Supervise {
        /// The task's state dir, holding spec.json.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// How long to stay after the exit when nobody collects it, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 300_000)]
        linger_ms: u64,
        /// The fd on which the starter hands over the task's start lock.
        #[arg(long, value_name = "FD")]
        start_lock_fd: Option<i32>,
    },
}

/// `run`: how to start the task, and what to do after.
#[derive(Debug, Args)]
pub struct RunOptions {
    /// Remove the task (logs, alloc dir, records, name) once it has exited.
    #[arg(long)]
    pub rm: bool,

    /// How to start the task.
    #[command(flatten)]
    pub task: TaskOptions,
}

/// How to start a task.
#[derive(Debug, Args)]
pub struct TaskOptions {
    /// Memory limit (64M, 1G, or bytes; K/M/G/T with optional i or B); above it the task is
    /// OOM-killed [default: 300M].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Hard memory maximum above --memory: the task is OOM-killed above it and reclaimed
    /// towards --memory (cgroup v2 memory.max with memory.high at --memory; v1
    /// memory.limit_in_bytes with memory.soft_limit_in_bytes at --memory).
    #[arg(long, value_name = "SIZE")]
    pub memory_max: Option<String>,

    /// Relative cpu weight, 2 to 262144 [default: 1024].
    #[arg(long, value_name = "N")]
    pub cpu_shares: Option<String>,

    /// Hard cpu limit in cpus, 0.01 to 1024 (1.5 = one and a half cpus per 100 ms period;
    /// cgroup v1 cpu.cfs_quota_us, v2 cpu.max) [default: no limit].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cpus: Option<String>,

    /// The cpus the task may run on, in the kernel's list format such as 0-2,4 (cgroup
    /// cpuset.cpus; they must be among the cpus the cgroup parent allows) [default: the
    /// parent's].
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,

    /// A host device node given to the task, HOST[:TASK][:PERMS] (repeatable): bound at TASK
    /// (default: HOST, under /dev) and allowed with PERMS, a subset of rwm [default: rwm].
    /// cgroup v1 only: the task's devices cgroup then denies every other device.
    #[arg(long = "device", value_name = "HOST[:TASK][:PERMS]")]
    pub devices: Vec<String>,

    /// Most processes and threads the task may have at once, counting its init (the
    /// task's pid 1 inside its namespace) [default: 4096].
    #[arg(long, value_name = "N")]
    pub pids_max: Option<String>,

    /// The user the task runs as: NAME, UID, UID:GID or NAME:GROUP (a number needs no
    /// passwd entry; a user with an entry gets its supplementary groups) [default: nobody].
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// An environment variable of the task (repeatable; after --env-file, so it wins): KEY=VALUE,
    /// or KEY alone for our own value of KEY (left unset when we have none). The task gets
    /// no other besides EXECDRIVER_* and HOME, USER, LOGNAME and PATH.
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from FILE (repeatable): KEY=VALUE lines (the value taken
    /// as written, quotes included), KEY alone to pass ours through, `#` comments and blank
    /// lines skipped, as docker reads an env file.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// The task's working dir, an absolute path in its root that must exist there [default: /].
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Bind a host file or dir into the task's root: SRC:DST, read-write, or SRC:DST:ro
    /// (repeatable); a propagation may follow, comma-separated (SRC:DST:ro,rslave): private,
    /// rprivate (the default), slave, rslave (host mounts under SRC appear in the task),
    /// shared, rshared. Both absolute; SRC must exist; DST may not be / or in /proc, /dev,
    /// /alloc, /local, /secrets or /tmp, and when it is in a chroot env dir it must exist
    /// there already.
    #[arg(short, long = "volume", value_name = "SRC:DST[:OPTIONS]")]
    pub volume: Vec<String>,

    /// Give the task our stdin (`echo hi | execdriver run -i -- cat`); without it the task's
    /// stdin is /dev/null. With -t, our input is typed into the task's terminal instead.
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the task a terminal of its own (a new pseudo-terminal in its devpts) as stdin,
    /// stdout and stderr; its output, all of it, goes to the stdout log. `run` follows our
    /// window size and, with -i, puts our terminal in raw mode and types our input into it.
    #[arg(short, long)]
    pub tty: bool,

    /// Time the kill signal gets before everything is force-killed (500ms, 5s, 1m) [default: 5s].
    #[arg(long, value_name = "DUR")]
    pub kill_timeout: Option<String>,

    /// The signal that asks the task to stop [default: SIGINT].
    #[arg(long, value_name = "SIG")]
    pub kill_signal: Option<String>,

    /// Most bytes per second of each of stdout and stderr written to the task's logs (4M,
    /// 512K, or unlimited). A task writing faster is held back; after a second of that, what
    /// it writes beyond the rate is dropped, counted in `stats` and marked in the log
    /// [default: 4M].
    #[arg(long, value_name = "SIZE")]
    pub log_rate: Option<String>,

    /// A host dir made visible read-only in the task's root (repeatable; adds to the
    /// default list /bin /etc /lib /lib32 /lib64 /run/resolvconf /sbin /usr, of which those
    /// the host lacks are skipped). A dir given here that does not exist is an error.
    #[arg(long, value_name = "DIR")]
    pub chroot_env: Vec<PathBuf>,

    /// The --chroot-env dirs replace the default list instead of adding to it.
    #[arg(long, requires = "chroot_env")]
    pub chroot_env_only: bool,

    /// A path inside the chroot env the task sees as an empty read-only file or dir
    /// (repeatable; adds to the defaults: /etc/shadow, /etc/gshadow, /etc/sudoers, ssh host
    /// private keys and the like, see the README). `*` in the last component matches any
    /// run of characters.
    #[arg(long = "mask", value_name = "PATH")]
    pub mask: Vec<PathBuf>,

    /// Mask none of the default paths; only those given with --mask.
    #[arg(long)]
    pub no_default_masks: bool,

    /// The task's network: `host` (the host's network namespace), `none` (a private one with
    /// only loopback, up), or the path of a network namespace to join (such as
    /// /var/run/netns/NAME or /proc/PID/ns/net) [default: host].
    #[arg(long, value_name = "host|none|PATH")]
    pub network: Option<String>,

    /// The task's system call filter: `default` (the namespace, mount, module, keyring,
    /// bpf, perf, ptrace, clock, reboot and swap families fail with EPERM), `unconfined`
    /// (none), or a FILE holding a profile in the OCI/Docker JSON format (`./default` for a
    /// file of that name) [default: default].
    #[arg(long, value_name = "unconfined|default|FILE")]
    pub seccomp: Option<String>,

    /// The task's name, unique among the tasks of the data dir until the task is removed;
    /// usable wherever a task id is. Also names its log files and its dir in the alloc dir,
    /// so `logs` and `alloc` are reserved [default: no unique name; files are named after
    /// the command's file name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The task's id, unique on this node [default: generated from the time and our pid].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// Start from the task spec in FILE (JSON, or TOML when the name ends in .toml), as
    /// --dry-run prints it; fields left out take their defaults, and the options given
    /// beside it override its fields (COMMAND its config; --env, -v, --mask and --chroot-env
    /// add to its lists). Its alloc_dir and task_dir are replaced by ours in the data dir.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

    /// Print the fully resolved task spec as JSON and exit 0; nothing is started or created.
    #[arg(long)]
    pub dry_run: bool,

    /// The command and its arguments (after `--` when an argument starts with `-`).
    #[arg(
        required_unless_present = "spec",
        trailing_var_arg = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_options() {
        let cli = Cli::try_parse_from([
            "execdriver",
            "run",
            "--memory",
            "64M",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--",
            "/bin/sh",
            "-c",
            "echo hi",
        ])
        .expect("parse");
        let Command::Run(RunOptions { task: opts, .. }) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(opts.memory.as_deref(), Some("64M"));
        assert_eq!(opts.cpus, None);
        assert_eq!(opts.env, vec!["A=1", "B=2"]);
        assert_eq!(opts.command, vec!["/bin/sh", "-c", "echo hi"]);
        let cli =
            Cli::try_parse_from(["execdriver", "start", "/bin/echo", "-n", "--x"]).expect("parse");
        let Command::Start(opts) = cli.command else {
            panic!("not start: {:?}", cli.command);
        };
        assert_eq!(opts.command, vec!["/bin/echo", "-n", "--x"]);
        let cli = Cli::try_parse_from(["execdriver", "run", "--cpus", "1.5", "/bin/true"])
            .expect("parse");
        let Command::Run(RunOptions { task: opts, .. }) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(opts.cpus.as_deref(), Some("1.5"));
        assert_eq!(opts.seccomp, None);
        let cli = Cli::try_parse_from([
            "execdriver",
            "start",
            "--seccomp",
            "unconfined",
            "/bin/true",
        ])
        .expect("parse");
        let Command::Start(opts) = cli.command else {
            panic!("not start: {:?}", cli.command);
        };
        assert_eq!(opts.seccomp.as_deref(), Some("unconfined"));
        assert_eq!(opts.log_rate, None);
        let cli = Cli::try_parse_from(["execdriver", "run", "--log-rate", "512K", "/bin/true"])
            .expect("parse");
        let Command::Run(RunOptions { task: opts, .. }) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(opts.log_rate.as_deref(), Some("512K"));
        let err = Cli::try_parse_from(["execdriver", "run", "--bogus", "--", "/bin/true"])
            .expect_err("unknown option");
        assert_eq!(err.exit_code(), 2);
        let cli = Cli::try_parse_from([
            "execdriver",
            "run",
            "-i",
            "-e",
            "A",
            "-e",
            "B=1",
            "-w",
            "/srv",
            "-v",
            "/a:/b:ro",
            "-u",
            "1000:1000",
            "/bin/true",
        ])
        .expect("parse");
        let Command::Run(opts) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert!(opts.task.interactive);
        assert_eq!(opts.task.env, vec!["A", "B=1"]);
        assert_eq!(opts.task.workdir, Some(PathBuf::from("/srv")));
        assert_eq!(opts.task.volume, vec!["/a:/b:ro"]);
        assert_eq!(opts.task.user.as_deref(), Some("1000:1000"));
        let cli = Cli::try_parse_from(["execdriver", "run", "--spec", "t.toml"]).expect("parse");
        let Command::Run(opts) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert!(opts.task.command.is_empty());
        Cli::try_parse_from(["execdriver", "run", "--chroot-env-only", "/bin/true"])
            .expect_err("--chroot-env-only needs --chroot-env");
    }

    #[test]
    fn every_subcommand_and_option_has_help() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() {
                continue;
            }
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some() || arg.get_id() == "help" || arg.get_id() == "version",
                    "{} {} has no help",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }
}

/// Options of `stats`.
#[derive(Debug, clap::Args)]
pub struct StatsOpts {
    /// Print one table (two samples a second apart, for the cpu %) and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Print one JSON object per task and sample, one a line, instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Handle ids, `-` to read one from stdin, or task ids in the data dir; none for every
    /// running task in the data dir.
    #[arg(value_name = "HANDLE")]
    pub handles: Vec<String>,
}

/// Options of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsOpts {
    /// Only the stdout log.
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    /// Only the stderr log, printed on our stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing as the task writes, until it exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (of both streams together, by arrival), or `all`.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<String>,
    /// Only the lines that arrived since this: a duration back from now (10m, 1h30m), an
    /// RFC 3339 time in UTC (2026-12-03T10:00:00Z), or unix seconds.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Prefix each line with the time it arrived from the task (RFC 3339, nanoseconds, UTC).
    #[arg(short, long)]
    pub timestamps: bool,
    /// The handle id, `-` to read it from stdin, or a task id in the data dir.
    #[arg(value_name = "HANDLE")]
    pub handle: String,
}

/// Options of `attach`.
#[derive(Debug, Args)]
pub struct AttachOptions {
    /// Only watch: our input is not typed into the task's terminal (and our terminal stays
    /// as it is; Ctrl-C then ends the attach, not the task).
    #[arg(long)]
    pub no_stdin: bool,
    /// The handle id, `-` to read it from stdin, or a task id or name in the data dir.
    #[arg(value_name = "HANDLE")]
    pub handle: String,
}

/// Options of `exec`.
#[derive(Debug, Args)]
pub struct ExecOptions {
    /// Pass our stdin to the command (without it, its stdin is /dev/null).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal of its own (a new pseudo-terminal in the task); ours is
    /// put in raw mode while attached, and its window size follows ours.
    #[arg(short, long)]
    pub tty: bool,
    /// Add K=V to the command's environment (repeatable; wins over the task's own).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the task's root [default: /].
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The handle id, `-` to read it from stdin, or a task id in the data dir.
    #[arg(value_name = "TASK")]
    pub handle: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}
