//! The task process (pid 2 of the namespace): from the init's fork to execve.
//!
//! Everything it needs (argv, environment, ids) is prepared by the supervisor before the
//! clone, so this side only makes system calls. A failure before or at exec is written as
//! one record to a CLOEXEC pipe the init reads: nothing arrives there when the exec works.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use execdriver_core::TaskSpec;

use super::IsolationError;
use crate::seccomp::SeccompProgram;
use super::sys::{self, check, check_int};
use super::user::TaskUser;
use super::wire::{FLAG_MISSING_INTERPRETER, FLAG_SEARCHED_PATH, Record};

/// The PATH a task gets unless its environment sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Step codes for failures of the task process (past the end of any setup plan).
pub(crate) mod step {
    /// setsid.
    pub const TASK_SETSID: u32 = 0xFFFF_0101;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    pub const TASK_NO_NEW_PRIVS: u32 = 0xFFFF_0102;
    /// setgroups.
    pub const TASK_SETGROUPS: u32 = 0xFFFF_0103;
    /// setresgid.
    pub const TASK_SETGID: u32 = 0xFFFF_0104;
    /// setresuid.
    pub const TASK_SETUID: u32 = 0xFFFF_0105;
    /// chdir to the working dir.
    pub const TASK_CHDIR: u32 = 0xFFFF_0106;
    /// execve (reported as exit 126/127, never as a setup failure).
    pub const TASK_EXEC: u32 = 0xFFFF_0107;
    /// Dropping capabilities outside [`super::TASK_CAPABILITIES`].
    pub const TASK_CAPABILITIES: u32 = 0xFFFF_0108;
    /// Installing the seccomp filter.
    pub const TASK_SECCOMP: u32 = 0xFFFF_0109;
    /// Making the terminal on stdin the controlling terminal (exec with a TTY).
    pub const TASK_CONTROLLING_TTY: u32 = 0xFFFF_010A;
}

/// The capabilities a task may keep, as in Docker's default set less NET_RAW and MKNOD:
/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// AUDIT_WRITE, SETFCAP. Only a task run as root ever holds them (a setuid to any other
/// user clears them); everything else (SYS_ADMIN, MKNOD, SYS_CHROOT, DAC_READ_SEARCH,
/// SYS_PTRACE, SYS_MODULE, SYS_RAWIO, NET_ADMIN, ...) leaves even the bounding set, so no
/// exec can get it back.
pub const TASK_CAPABILITIES: u64 = cap_mask(&[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
]);

const fn cap_mask(caps: &[u32]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < caps.len() {
        mask |= 1 << caps[i];
        i += 1;
    }
    mask
}

/// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap), or 63
/// when it cannot be read (dropping an unknown capability then fails with EINVAL, which
/// ends the loop).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(63, |n| n.min(63))
}

/// The kernel's capability header and data (version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This process's capability sets, as capget gives them. System calls only.
fn capabilities() -> Result<[CapData; 2], i32> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget with a local header and the two data words version 3 needs.
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    })?;
    Ok(data)
}

/// This process's permitted capabilities, one bit per capability. System calls only.
pub(super) fn permitted_capabilities() -> Result<u64, i32> {
    let data = capabilities()?;
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// Drops every capability outside `keep` from the bounding set, leaves only `keep` (of
/// what the process has) in the effective and permitted sets, clears the inheritable and
/// ambient sets. System calls only: runs in the forked task.
fn restrict_capabilities(keep: u64, last_cap: u32) -> Result<(), i32> {
    // SAFETY: prctl and capget/capset with local, correctly sized structs.
    unsafe {
        for cap in 0..=last_cap {
            if keep & (1 << cap) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                match sys::errno() {
                    // Past the kernel's last capability.
                    libc::EINVAL => break,
                    e => return Err(e),
                }
            }
        }
        let mut data = capabilities()?;
        for (i, word) in data.iter_mut().enumerate() {
            let keep_word = (keep >> (32 * i)) as u32;
            word.permitted &= keep_word;
            word.effective &= word.permitted;
            word.inheritable = 0;
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        check(libc::syscall(
            libc::SYS_capset,
            &header as *const CapHeader,
            data.as_ptr(),
        ))?;
        // Kernels before 4.3 have no ambient set (EINVAL): nothing to clear there, and an
        // ambient capability needs an inheritable one, which is already gone.
        match check_int(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )) {
            Ok(_) | Err(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The working directory of a task whose spec names none: the root of the task dir, as in
/// Nomad and docker, so a relative path such as `local/run.sh` in a command works.
pub const TASK_CWD: &CStr = c"/";

/// The environment a task gets: `spec.env`, then the driver's own variables (which win,
/// since they describe where things really are); then what a login sets, unless `spec.env`
/// sets it: PATH, HOME (`home`), and USER and LOGNAME when the user has a name (`user`).
pub fn task_environment(
    spec: &TaskSpec,
    user: Option<&str>,
    home: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    let mut login = vec![("HOME", home.to_string_lossy().into_owned())];
    if let Some(name) = user {
        login.push(("USER", name.to_owned()));
        login.push(("LOGNAME", name.to_owned()));
    }
    for (key, value) in login {
        env.entry(key.to_owned()).or_insert(value);
    }
    for (key, value) in [
        ("EXECDRIVER_TASK_DIR", "/local"),
        ("EXECDRIVER_ALLOC_DIR", "/alloc"),
        ("EXECDRIVER_SECRETS_DIR", "/secrets"),
        ("EXECDRIVER_TASK_NAME", spec.task_name.as_str()),
        ("EXECDRIVER_TASK_ID", spec.task_id.as_str()),
    ] {
        env.insert(key.to_owned(), value.to_owned());
    }
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    env
}

/// argv, envp and ids, ready for execve in the child.
#[derive(Debug)]
pub(crate) struct ExecPlan {
    /// The command as given (argv[0]).
    pub command: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    /// The PATH used to look up a bare command name.
    pub path: Vec<u8>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    last_cap: u32,
    /// The seccomp filter, built here so that the task only installs it.
    seccomp: Option<SeccompProgram>,
    /// The working dir, in the task's root.
    pub cwd: CString,
    /// Whether stdin is a terminal to make the controlling terminal of the new session.
    controlling_tty: bool,
}

fn nul_free(what: impl FnOnce() -> String, s: &str) -> Result<CString, IsolationError> {
    CString::new(s).map_err(|_| IsolationError::Nul { what: what() })
}

impl ExecPlan {
    /// Builds the exec arguments for `spec` run as `user`, whose HOME in the task root is
    /// `home`.
    pub(crate) fn new(
        spec: &TaskSpec,
        user: &TaskUser,
        home: &std::path::Path,
    ) -> Result<Self, IsolationError> {
        let command = nul_free(|| "command".into(), &spec.config.command)?;
        let mut argv = vec![command.clone()];
        for (i, arg) in spec.config.args.iter().enumerate() {
            argv.push(nul_free(|| format!("args[{i}]"), arg)?);
        }
        let env_map = task_environment(
            spec,
            user.entry.as_ref().map(|e| e.name.as_str()),
            home,
        );
        let cwd = match &spec.workdir {
            Some(dir) => nul_free(|| format!("working dir {dir:?}"), &dir.to_string_lossy())?,
            None => TASK_CWD.to_owned(),
        };
        let path = env_map
            .get("PATH")
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default();
        let mut env = Vec::with_capacity(env_map.len());
        for (key, value) in &env_map {
            env.push(nul_free(
                || format!("environment variable {key:?}"),
                &format!("{key}={value}"),
            )?);
        }
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let env_ptrs = env
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(Self {
            command,
            _argv: argv,
            argv_ptrs,
            _env: env,
            env_ptrs,
            path,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            last_cap: cap_last_cap(),
            seccomp: crate::seccomp::program(&spec.seccomp)?,
            cwd,
            controlling_tty: false,
        })
    }

    /// Runs in `cwd` instead of [`TASK_CWD`].
    pub(crate) fn with_cwd(mut self, cwd: &str) -> Result<Self, IsolationError> {
        self.cwd = nul_free(|| "working dir".into(), cwd)?;
        Ok(self)
    }

    /// Makes stdin (a terminal) the controlling terminal of the process's new session.
    pub(crate) fn with_controlling_tty(mut self) -> Self {
        self.controlling_tty = true;
        self
    }
}

/// The exit status of a task whose exec failed with `errno`: 127 when there was nothing to
/// run, 126 when something was found but could not be run (as shells do).
pub(crate) fn exec_failure_code(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => 127,
        _ => 126,
    }
}

fn fail(exec_w: RawFd, step: u32, errno: i32, flags: u32, code: i32) -> ! {
    sys::write_all(exec_w, &Record::TaskFailed { step, errno, flags }.encode());
    // SAFETY: leaving the child without running any Rust cleanup.
    unsafe { libc::_exit(code) }
}

/// Runs in the forked task process: session, signals, privileges, fds, exec. Never returns.
///
/// # Safety
/// Call only in a freshly forked child of the init; only system calls are made.
pub(crate) unsafe fn task_main(plan: &ExecPlan, exec_w: RawFd) -> ! {
    // SAFETY: plain system calls on values prepared before the clone.
    unsafe {
        if libc::setsid() < 0 {
            fail(exec_w, step::TASK_SETSID, sys::errno(), 0, 126);
        }
        if plan.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(exec_w, step::TASK_CONTROLLING_TTY, sys::errno(), 0, 126);
        }
        // The init blocked everything and installed catch-all handlers: give the program
        // default dispositions first, then unblock, so no signal is lost in between.
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                sys::reset_signal_default(sig);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        if let Err(e) = check_int(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
            fail(exec_w, step::TASK_NO_NEW_PRIVS, e, 0, 126);
        }
        // Before the uid switch, which needs SETUID/SETGID (kept). A task run as root keeps
        // only the allowlist; anyone else loses even that at setresuid.
        if let Err(e) = restrict_capabilities(TASK_CAPABILITIES, plan.last_cap) {
            fail(exec_w, step::TASK_CAPABILITIES, e, 0, 126);
        }
        // Raw system calls: glibc's wrappers would try to sync ids across threads this
        // copy of the process does not have.
        if let Err(e) = check(libc::syscall(
            libc::SYS_setgroups,
            plan.groups.len(),
            plan.groups.as_ptr(),
        )) {
            fail(exec_w, step::TASK_SETGROUPS, e, 0, 126);
        }
        if let Err(e) = check(libc::syscall(
            libc::SYS_setresgid,
            plan.gid,
            plan.gid,
            plan.gid,
        )) {
            fail(exec_w, step::TASK_SETGID, e, 0, 126);
        }
        if let Err(e) = check(libc::syscall(
            libc::SYS_setresuid,
            plan.uid,
            plan.uid,
            plan.uid,
        )) {
            fail(exec_w, step::TASK_SETUID, e, 0, 126);
        }
        libc::umask(0o022);
        if let Err(e) = check_int(libc::chdir(plan.cwd.as_ptr())) {
            fail(exec_w, step::TASK_CHDIR, e, 0, 126);
        }
        sys::close_all_but(exec_w);
        // Last, so nothing above needs what it denies; no_new_privs (set above) lets an
        // unprivileged task install it. From here on only faccessat, execve, write and
        // _exit are made, none of which the default denies.
        if let Some(program) = &plan.seccomp
            && let Err(e) = sys::install_seccomp_filter(&program.fprog())
        {
            fail(exec_w, step::TASK_SECCOMP, e, 0, 126);
        }
        let (errno, flags) = exec_search(plan);
        fail(
            exec_w,
            step::TASK_EXEC,
            errno,
            flags,
            exec_failure_code(errno),
        )
    }
}

fn exists(path: *const libc::c_char) -> bool {
    // SAFETY: path is a valid C string.
    unsafe { libc::faccessat(libc::AT_FDCWD, path, libc::F_OK, 0) == 0 }
}

/// execve the command, searching PATH for a bare name like execvp does (but never falling
/// back to /bin/sh). Returns only on failure: the errno and `FLAG_*` bits.
fn exec_search(plan: &ExecPlan) -> (i32, u32) {
    let argv = plan.argv_ptrs.as_ptr();
    let envp = plan.env_ptrs.as_ptr();
    let name = plan.command.to_bytes();
    if name.contains(&b'/') {
        // SAFETY: null-terminated arrays of valid C strings.
        unsafe { libc::execve(plan.command.as_ptr(), argv, envp) };
        let e = sys::errno();
        let flags = if e == libc::ENOENT && exists(plan.command.as_ptr()) {
            FLAG_MISSING_INTERPRETER
        } else {
            0
        };
        return (e, flags);
    }
    let mut buf = [0u8; 4096];
    let mut denied = false;
    for dir in plan.path.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + name.len();
        if len + 1 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(name);
        buf[len] = 0;
        let candidate = buf.as_ptr().cast::<libc::c_char>();
        // SAFETY: buf holds a nul-terminated path; argv/envp as above.
        unsafe { libc::execve(candidate, argv, envp) };
        match sys::errno() {
            libc::EACCES => denied = true,
            libc::ENOENT if exists(candidate) => {
                return (libc::ENOENT, FLAG_SEARCHED_PATH | FLAG_MISSING_INTERPRETER);
            }
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENAMETOOLONG | libc::ELOOP => {}
            e => return (e, FLAG_SEARCHED_PATH),
        }
    }
    let errno = if denied { libc::EACCES } else { libc::ENOENT };
    (errno, FLAG_SEARCHED_PATH)
}

/// A message in a fixed buffer, so the init can write it without allocating.
pub(crate) struct StackMessage {
    buf: [u8; 1024],
    len: usize,
}

impl StackMessage {
    /// An empty message.
    pub(crate) fn new() -> Self {
        Self {
            buf: [0; 1024],
            len: 0,
        }
    }

    /// Appends `bytes`, as much of them as fits.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// Appends `n` in decimal.
    pub(crate) fn push_number(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// The message bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn errno_text(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::ENOENT => "no such file or directory",
        libc::EACCES => "permission denied",
        libc::EPERM => "operation not permitted",
        libc::ENOEXEC => "exec format error (not a program this machine can run)",
        libc::ENOTDIR => "a component of the path is not a directory",
        libc::EISDIR => "is a directory",
        libc::ELOOP => "too many levels of symbolic links",
        libc::ENAMETOOLONG => "file name too long",
        libc::E2BIG => "argument list too long",
        libc::ENOMEM => "out of memory",
        libc::ETXTBSY => "text file busy",
        libc::EIO => "input/output error",
        libc::EAGAIN => "resource temporarily unavailable",
        libc::EINVAL => "invalid executable",
        _ => return None,
    })
}

/// The one-line message the init writes to the task's stderr when the exec failed.
pub(crate) fn exec_failure_message(command: &[u8], errno: i32, flags: u32) -> StackMessage {
    let mut m = StackMessage::new();
    m.push(b"execdriver: cannot run \"");
    m.push(&command[..command.len().min(512)]);
    m.push(b"\": ");
    if flags & FLAG_MISSING_INTERPRETER != 0 {
        m.push(
            b"no such file or directory (the file exists, but its interpreter or \
              dynamic loader is missing from the task root)",
        );
    } else if flags & FLAG_SEARCHED_PATH != 0 && errno == libc::ENOENT {
        m.push(b"command not found in PATH");
    } else if let Some(text) = errno_text(errno) {
        m.push(text.as_bytes());
    } else {
        m.push(b"error ");
        m.push_number(errno.unsigned_abs());
    }
    m.push(b"\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use execdriver_core::TaskConfig;

    fn spec() -> TaskSpec {
        TaskSpec::new(
            "t-1",
            "web",
            "/a",
            "/a/web",
            TaskConfig::new("/bin/echo", ["hi"]),
        )
    }

    #[test]
    fn environment_has_the_task_dirs_and_a_default_path() {
        let mut s = spec();
        s.env.insert("FOO".into(), "bar".into());
        s.env
            .insert("EXECDRIVER_TASK_DIR".into(), "/elsewhere".into());
        let env = task_environment(&s, None, std::path::Path::new("/"));
        assert_eq!(env["FOO"], "bar");
        assert_eq!(env["HOME"], "/");
        assert!(!env.contains_key("USER"));
        assert_eq!(env["EXECDRIVER_TASK_DIR"], "/local");
        assert_eq!(env["EXECDRIVER_ALLOC_DIR"], "/alloc");
        assert_eq!(env["EXECDRIVER_SECRETS_DIR"], "/secrets");
        assert_eq!(env["EXECDRIVER_TASK_NAME"], "web");
        assert_eq!(env["EXECDRIVER_TASK_ID"], "t-1");
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env.len(), 8);
        let home = std::path::Path::new("/home/web");
        let env = task_environment(&s, Some("web"), home);
        assert_eq!(
            (&*env["HOME"], &*env["USER"], &*env["LOGNAME"]),
            ("/home/web", "web", "web")
        );
        for key in ["PATH", "HOME", "USER"] {
            s.env.insert(key.into(), "/opt/bin".into());
        }
        let env = task_environment(&s, Some("web"), home);
        assert_eq!(
            (&*env["PATH"], &*env["HOME"], &*env["USER"]),
            ("/opt/bin", "/opt/bin", "/opt/bin")
        );
    }

    #[test]
    fn exec_plan_is_null_terminated() {
        let user = TaskUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            entry: None,
        };
        let plan = ExecPlan::new(&spec(), &user, std::path::Path::new("/")).expect("plan");
        assert_eq!(plan.argv_ptrs.len(), 3);
        assert!(plan.argv_ptrs[2].is_null());
        assert_eq!(plan.env_ptrs.len(), 8);
        assert!(plan.env_ptrs.last().is_some_and(|p| p.is_null()));
        assert_eq!(plan.path, DEFAULT_PATH.as_bytes());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exec_failure_code(libc::ENOENT), 127);
        assert_eq!(exec_failure_code(libc::EACCES), 126);
        assert_eq!(exec_failure_code(libc::ENOEXEC), 126);
    }

    #[test]
    fn messages_name_the_command_and_the_reason() {
        let m = exec_failure_message(b"/bin/nope", libc::ENOENT, 0);
        assert_eq!(
            m.as_bytes(),
            b"execdriver: cannot run \"/bin/nope\": no such file or directory\n"
        );
        let m = exec_failure_message(b"nope", libc::ENOENT, FLAG_SEARCHED_PATH);
        assert!(m.as_bytes().ends_with(b"command not found in PATH\n"));
        let m = exec_failure_message(b"/x", libc::ENOENT, FLAG_MISSING_INTERPRETER);
        assert!(String::from_utf8_lossy(m.as_bytes()).contains("interpreter"));
        let m = exec_failure_message(b"/x", libc::EACCES, 0);
        assert!(m.as_bytes().ends_with(b"permission denied\n"));
        let m = exec_failure_message(b"/x", 4242, 0);
        assert!(m.as_bytes().ends_with(b"error 4242\n"));
        let long = vec![b'a'; 5000];
        let m = exec_failure_message(&long, libc::ENOENT, 0);
        assert!(m.as_bytes().len() < 1024);
        assert!(m.as_bytes().ends_with(b"\n"));
    }
}
