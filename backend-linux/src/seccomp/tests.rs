//! The default program read through the interpreter on both ABIs, profile refusals, and
//! the programs installed in forked processes (no root needed: no_new_privs suffices).

use execdriver_core::seccomp::SeccompProfile;

use super::filter::tests::{AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, run};
use super::filter::{ABIS, Lookup};
use super::*;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

fn errno(n: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | n as u32
}

fn default_for(abi: &Abi) -> SeccompProgram {
    program_for(abi, &Seccomp::Default)
        .expect("the default builds")
        .expect("the default is a filter")
}

fn profile(text: &str) -> Seccomp {
    Seccomp::Profile(SeccompProfile::from_json(text).expect("profile parses"))
}

#[test]
fn every_default_name_is_a_system_call_somewhere() {
    for name in DENIED_SYSCALLS
        .iter()
        .chain(&["clone", "clone3", "personality"])
    {
        assert!(
            ABIS.iter().any(|a| matches!(a.lookup(name), Lookup::Number(_))),
            "{name} is on no ABI"
        );
    }
}

#[test]
fn the_default_denies_its_families_on_both_abis() {
    for (abi, arch) in [(&ABIS[0], AUDIT_ARCH_X86_64), (&ABIS[1], AUDIT_ARCH_AARCH64)] {
        let p = default_for(abi);
        let nr = |name: &str| match abi.lookup(name) {
            Lookup::Number(n) => n as u32,
            other => panic!("{name} on {}: {other:?}", abi.name),
        };
        let call = |name: &str, args: [u64; 6]| run(p.instructions(), arch, nr(name), args);
        for name in DENIED_SYSCALLS {
            if let Lookup::Number(n) = abi.lookup(name) {
                assert_eq!(
                    run(p.instructions(), arch, n as u32, [0; 6]),
                    errno(libc::EPERM),
                    "{name} on {}",
                    abi.name
                );
            }
        }
        for flag in CLONE_NAMESPACE_FLAGS {
            let flags = flag | libc::SIGCHLD as u64;
            assert_eq!(call("clone", [flags, 0, 0, 0, 0, 0]), errno(libc::EPERM));
        }
        // fork, vfork and threads as glibc makes them.
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        for flags in [libc::SIGCHLD as u64, thread, (libc::CLONE_VFORK | libc::CLONE_VM) as u64] {
            assert_eq!(call("clone", [flags, 0, 0, 0, 0, 0]), ALLOW, "{flags:#x}");
        }
        assert_eq!(call("clone3", [0; 6]), errno(libc::ENOSYS));
        for persona in ALLOWED_PERSONALITIES {
            assert_eq!(call("personality", [persona, 0, 0, 0, 0, 0]), ALLOW);
        }
        let no_aslr = libc::ADDR_NO_RANDOMIZE as u64;
        assert_eq!(
            call("personality", [no_aslr, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        for name in ["read", "write", "openat", "execve", "mkdirat", "seccomp", "prctl"] {
            assert_eq!(call(name, [0; 6]), ALLOW, "{name} on {}", abi.name);
        }
        assert_eq!(run(p.instructions(), AUDIT_ARCH_I386, 20, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    }
}

#[test]
fn profile_names_resolve_or_are_refused_by_field() {
    let abi = &ABIS[0];
    let p = program_for(
        abi,
        &profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]}"#,
        ),
    )
    .expect("builds")
    .expect("a filter");
    assert_eq!(run(p.instructions(), AUDIT_ARCH_X86_64, 83, [0; 6]), errno(28));
    assert_eq!(run(p.instructions(), AUDIT_ARCH_X86_64, 258, [0; 6]), errno(28));
    assert_eq!(run(p.instructions(), AUDIT_ARCH_X86_64, 0, [0; 6]), ALLOW);

    // x86_64's mkdir does not exist on aarch64: the rule keeps only mkdirat there.
    let p = program_for(
        &ABIS[1],
        &profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]}"#,
        ),
    )
    .expect("builds")
    .expect("a filter");
    assert_eq!(run(p.instructions(), AUDIT_ARCH_AARCH64, 34, [0; 6]), errno(28));

    for (text, field, needle) in [
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", "mkdri"], "action": "SCMP_ACT_ERRNO"}]}"#,
            "syscalls[0].names[1]",
            "not a system call",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]}"#,
            "architectures[1]",
            "only the native ABI",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
            "architectures[0]",
            "SCMP_ARCH_X86_64",
        ),
    ] {
        let err = program_for(abi, &profile(text)).expect_err(text);
        let message = err.to_string();
        assert!(
            matches!(&err, SeccompError::Profile(e) if e.field() == Some(field)),
            "{message} should be about {field}"
        );
        assert!(message.contains(needle), "{message} should say {needle}");
    }
    assert_eq!(program_for(abi, &Seccomp::Unconfined).expect("ok"), None);
}

#[test]
fn an_allowlist_profile_denies_the_rest() {
    let p = program_for(
        &ABIS[0],
        &profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                             {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#,
        ),
    )
    .expect("builds")
    .expect("a filter");
    let at = |nr| run(p.instructions(), AUDIT_ARCH_X86_64, nr, [0; 6]);
    assert_eq!(at(0), ALLOW);
    assert_eq!(at(1), ALLOW);
    assert_eq!(at(231), ALLOW);
    assert_eq!(at(39), libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(at(83), errno(libc::EPERM));
}

/// What a probe in a filtered child returned: the result, or -errno.
fn raw(ret: libc::c_long) -> i64 {
    if ret < 0 {
        -i64::from(crate::isolation::sys::errno())
    } else {
        ret
    }
}

/// Forks a child that installs `program` (if any), runs `probe` (system calls only) and
/// writes the returned values to a pipe; returns them and how the child ended.
fn in_child(program: Option<&SeccompProgram>, probe: fn() -> [i64; 16]) -> (Vec<i64>, i32) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    use std::os::fd::AsRawFd;
    let fprog = program.map(SeccompProgram::fprog);
    // SAFETY: the child makes system calls only (no allocation, no locks) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(90);
            }
            if let Some(fprog) = &fprog
                && crate::isolation::sys::install_seccomp_filter(fprog).is_err()
            {
                libc::_exit(91);
            }
            let results = probe();
            let bytes = std::slice::from_raw_parts(results.as_ptr().cast::<u8>(), 16 * 8);
            crate::isolation::sys::write_all(w.as_raw_fd(), bytes);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out).expect("read");
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let values = out
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect();
    (values, status)
}

fn probe_families() -> [i64; 16] {
    let mut r = [0i64; 16];
    // SAFETY: each call either fails or changes only this (throw-away) process.
    unsafe {
        r[0] = raw(libc::syscall(libc::SYS_getpid));
        r[1] = raw(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER));
        r[2] = raw(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS));
        r[3] = raw(libc::syscall(libc::SYS_setns, -1, 0));
        r[4] = raw(libc::syscall(
            libc::SYS_mount,
            c"x".as_ptr(),
            c"/nonexistent-execdriver".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            0,
        ));
        // KEYCTL_GET_KEYRING_ID of the session keyring.
        r[5] = raw(libc::syscall(libc::SYS_keyctl, 0, -3, 0));
        // BPF_MAP_CREATE with an empty attr: EINVAL (root) or EPERM (others) unfiltered.
        r[6] = raw(libc::syscall(libc::SYS_bpf, 0, 0, 0));
        // CLONE_NEWUSER with CLONE_FS: EINVAL unfiltered, so nothing is ever created.
        r[7] = raw(libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::CLONE_FS | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        ));
        // clone3 with no arguments: EINVAL unfiltered.
        r[8] = raw(libc::syscall(libc::SYS_clone3, 0, 0));
        r[9] = raw(libc::syscall(libc::SYS_personality, 0xffff_ffffu64));
        r[10] = raw(libc::syscall(
            libc::SYS_personality,
            libc::ADDR_NO_RANDOMIZE as u64,
        ));
        // An invalid ptrace request of no process: ESRCH unfiltered.
        r[11] = raw(libc::syscall(libc::SYS_ptrace, -1, 0, 0, 0));
        // perf_event_open without an attr: EFAULT unfiltered.
        r[12] = raw(libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0));
        // A plain fork still works (the child leaves at once).
        let child = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
        if child == 0 {
            libc::_exit(0);
        }
        r[13] = raw(child);
        if child > 0 {
            let mut status = 0;
            libc::waitpid(child as i32, &mut status, 0);
        }
        r[14] = raw(libc::syscall(
            libc::SYS_mkdirat,
            libc::AT_FDCWD,
            c"/nonexistent-execdriver/x".as_ptr(),
            0o700,
        ));
    }
    r
}

#[test]
fn the_default_program_denies_in_a_real_process() {
    let program = program(&Seccomp::Default).expect("build").expect("filter");
    let (r, status) = in_child(Some(&program), probe_families);
    assert_eq!(status, 0, "the filtered child failed (wait status {status:#x})");
    let eperm = -i64::from(libc::EPERM);
    assert!(r[0] > 0, "getpid: {}", r[0]);
    for (i, what) in [
        (1, "unshare(CLONE_NEWUSER)"),
        (2, "unshare(CLONE_NEWNS)"),
        (3, "setns"),
        (4, "mount"),
        (5, "keyctl"),
        (6, "bpf"),
        (7, "clone(CLONE_NEWUSER)"),
        (10, "personality(ADDR_NO_RANDOMIZE)"),
        (11, "ptrace"),
        (12, "perf_event_open"),
    ] {
        assert_eq!(r[i], eperm, "{what}");
    }
    assert_eq!(r[8], -i64::from(libc::ENOSYS), "clone3");
    assert!(r[9] >= 0, "personality query: {}", r[9]);
    assert!(r[13] > 0, "fork: {}", r[13]);
    assert_eq!(r[14], -i64::from(libc::ENOENT), "mkdirat is allowed");

    // The same probes without a filter: they reach the kernel (so the ones above were
    // refused by the filter, not by the kernel).
    let (r, status) = in_child(None, probe_families);
    assert_eq!(status, 0);
    assert_eq!(r[7], -i64::from(libc::EINVAL), "clone(CLONE_NEWUSER|CLONE_FS)");
    assert_eq!(r[8], -i64::from(libc::EINVAL), "clone3(NULL, 0)");
    assert_eq!(r[11], -i64::from(libc::ESRCH), "ptrace(-1, 0)");
    assert_eq!(r[12], -i64::from(libc::EFAULT), "perf_event_open(NULL)");
}

/// Reads this process's "Seccomp:" mode from /proc without allocating; -1 if not found.
fn seccomp_mode() -> [i64; 16] {
    let mut r = [-1i64; 16];
    let mut buf = [0u8; 4096];
    // SAFETY: open/read/close into a local buffer.
    unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return r;
        }
        let n = crate::isolation::sys::read_full(fd, &mut buf).unwrap_or(0);
        libc::close(fd);
        let text = &buf[..n];
        let key = b"\nSeccomp:\t";
        if let Some(at) = text.windows(key.len()).position(|w| w == key) {
            r[0] = i64::from(text[at + key.len()] - b'0');
        }
    }
    r
}

#[test]
fn a_filtered_process_reports_filter_mode() {
    let program = program(&Seccomp::Default).expect("build").expect("filter");
    assert_eq!(in_child(Some(&program), seccomp_mode).0[0], 2);
    assert_eq!(in_child(None, seccomp_mode).0[0], 0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_and_i386_calls_kill_the_process() {
    fn x32_getpid() -> [i64; 16] {
        // SAFETY: getpid under its x32 number; ENOSYS where the kernel has no x32.
        let r = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
        [raw(r); 16]
    }
    fn i386_getpid() -> [i64; 16] {
        let ret: i64;
        // SAFETY: the 32-bit entry (int 0x80) with i386's getpid (20), which touches no memory.
        unsafe {
            std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
        }
        [ret; 16]
    }
    let program = program(&Seccomp::Default).expect("build").expect("filter");
    for probe in [x32_getpid as fn() -> [i64; 16], i386_getpid] {
        let (out, status) = in_child(Some(&program), probe);
        assert!(out.is_empty(), "the call returned {out:?}");
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "wait status {status:#x}"
        );
    }
    // Unfiltered, the same calls return (the kernel here may lack x32: ENOSYS).
    let (out, status) = in_child(None, x32_getpid);
    assert_eq!((status, out.len()), (0, 16));
}

#[test]
fn a_profile_errno_reaches_the_caller() {
    let seccomp = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]}"#,
    );
    let program = program(&seccomp).expect("build").expect("filter");
    let (r, status) = in_child(Some(&program), probe_families);
    assert_eq!(status, 0);
    assert_eq!(r[14], -i64::from(libc::ENOSPC), "mkdirat");
    assert!(r[13] > 0, "fork");
}

