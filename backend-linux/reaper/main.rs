//! The task's init once the task runs: the init, a fork of the supervisor, execs this
//! program so that what waits out the task for its whole life is a few KiB of code and a
//! stack instead of the supervisor's address space (its libraries, heap and page tables).
//!
//! It runs the wait the init runs when it waits in place (`src/isolation/wait_out.rs`, the
//! same file, included here): forward to the task the signals sent to pid 1 from outside
//! the namespace and those the supervisor asks for, reap every child, report the task's end
//! on the report pipe, then exit (the kernel kills what is left in the namespace). What is
//! here is the start and the system calls.
//!
//! Built by `build.rs` with rustc alone (no std, no libc: static-pie, no relocations, so
//! the kernel loads it at a random address with nothing to resolve) and embedded in the
//! binary. The init hands it, in the environment variable `EXECDRIVER_INIT`,
//! `TASK_PID:SIGNAL_FD`; the control socket and the report pipe are where `wire` says.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

#[path = "../src/isolation/wire.rs"]
#[allow(dead_code)]
mod wire;

#[path = "../src/isolation/wait_out.rs"]
mod wait_out;

use wait_out::Sys;
use wire::{RECORD_LEN, Record};

const CTL_FD: usize = wire::CTL_FD as usize;
const REPORT_FD: usize = wire::REPORT_FD as usize;

const SYS_READ: usize = 0;
const SYS_WRITE: usize = 1;
const SYS_POLL: usize = 7;
const SYS_RECVFROM: usize = 45;
const SYS_WAIT4: usize = 61;
const SYS_KILL: usize = 62;
const SYS_PRCTL: usize = 157;
const SYS_EXIT_GROUP: usize = 231;

const EINTR: isize = 4;
const EAGAIN: isize = 11;
const POLLIN: i16 = 1;
const WNOHANG: usize = 1;
const MSG_DONTWAIT: usize = 0x40;
const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_NAME: usize = 15;
const SIGKILL: usize = 9;
/// Exit status when the init's handover is not what this program expects: the init's own
/// setup failure code (`INIT_SETUP_FAILED`), since the task then dies with the namespace.
const BAD_HANDOVER: usize = 125;

global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym start,
);

/// A system call with up to six arguments; the kernel's return value (-errno on failure).
///
/// # Safety
/// The arguments must be valid for system call `n`.
unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 system call convention; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes a status and does not return.
        unsafe { syscall(SYS_EXIT_GROUP, [code, 0, 0, 0, 0, 0]) };
    }
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/// The leading fields of `struct signalfd_siginfo` (128 bytes in all).
#[repr(C)]
struct SignalInfo {
    signo: u32,
    errno: i32,
    code: i32,
    pid: u32,
    rest: [u8; 112],
}

/// Reads a decimal number at `p`, up to `stop`: the number and the address after `stop`.
///
/// # Safety
/// `p` must point into a nul-terminated string.
unsafe fn number(mut p: *const u8, stop: u8) -> Option<(usize, *const u8)> {
    let mut n = 0usize;
    let mut digits = 0;
    loop {
        // SAFETY: within the string, whose nul ends the loop at the latest.
        let b = unsafe { *p };
        // SAFETY: at most one past the byte just read, which is within the string or its
        // nul; nothing is read there unless that byte was not the nul.
        p = unsafe { p.add(1) };
        if b == stop && digits > 0 {
            return Some((n, p));
        }
        if !b.is_ascii_digit() || digits == 10 {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
        digits += 1;
    }
}

/// `EXECDRIVER_INIT=TASK_PID:SIGNAL_FD` among the nul-terminated strings of `envp`.
///
/// # Safety
/// `envp` must be the process's environment vector, ended by a null pointer.
unsafe fn handover(mut envp: *const *const u8) -> Option<(i32, i32)> {
    const KEY: &[u8] = b"EXECDRIVER_INIT=";
    loop {
        // SAFETY: envp points into the vector the kernel set up, up to its null end.
        let entry = unsafe { *envp };
        if entry.is_null() {
            return None;
        }
        // Compared byte by byte: a nul in the entry differs from every byte of KEY, so
        // nothing is read past it.
        // SAFETY: each entry is nul-terminated.
        let matches = KEY
            .iter()
            .enumerate()
            .all(|(i, &k)| unsafe { *entry.add(i) } == k);
        if matches {
            // SAFETY: past KEY, still within the nul-terminated entry.
            let (task, rest) = unsafe { number(entry.add(KEY.len()), b':') }?;
            // SAFETY: `rest` is past the colon, within the entry.
            let (sfd, _) = unsafe { number(rest, 0) }?;
            return Some((i32::try_from(task).ok()?, i32::try_from(sfd).ok()?));
        }
        // SAFETY: not yet at the null end.
        envp = unsafe { envp.add(1) };
    }
}

/// Entered from `_start` with the initial stack: argc, argv..., null, envp..., null.
unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack layout.
    let envp = unsafe {
        let argc = *sp;
        sp.add(1 + argc + 1) as *const *const u8
    };
    // SAFETY: a 16-byte buffer with the name and its nul.
    unsafe {
        syscall(
            SYS_PRCTL,
            [
                PR_SET_NAME,
                c"execdriver-init".as_ptr() as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    // Kept by the exec, which changes no credential (the init checks that first); set again
    // all the same, since the task must never outlive its supervisor unsupervised.
    // SAFETY: prctl with a signal number.
    unsafe { syscall(SYS_PRCTL, [PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0, 0]) };
    // SAFETY: the environment vector from the kernel.
    let Some((task, sfd)) = (unsafe { handover(envp) }) else {
        exit(BAD_HANDOVER)
    };
    wait_out::wait_out(&Raw, task, sfd)
}

/// The wait's system calls, made directly.
struct Raw;

impl Sys for Raw {
    const SIGCHLD: i32 = 17;

    fn poll_in(&self, fds: [i32; 2]) -> Option<[bool; 2]> {
        let watch = |fd| PollFd {
            fd,
            events: POLLIN,
            revents: 0,
        };
        let mut polled = [watch(fds[0]), watch(fds[1])];
        // SAFETY: two pollfds on the stack; a timeout of -1 (the int the kernel reads).
        let n = unsafe {
            syscall(
                SYS_POLL,
                [polled.as_mut_ptr() as usize, 2, usize::MAX, 0, 0, 0],
            )
        };
        (n >= 0).then_some([polled[0].revents != 0, polled[1].revents != 0])
    }

    fn read_signal(&self, sfd: i32) -> Option<(i32, i32, u32)> {
        let mut info = SignalInfo {
            signo: 0,
            errno: 0,
            code: 0,
            pid: 0,
            rest: [0; 112],
        };
        let size = core::mem::size_of::<SignalInfo>();
        let at = &mut info as *mut SignalInfo as usize;
        // SAFETY: whole signalfd_siginfo records into a local of that size.
        let n = unsafe { syscall(SYS_READ, [sfd as usize, at, size, 0, 0, 0]) };
        (n == size as isize).then_some((info.signo as i32, info.code, info.pid))
    }

    fn recv_control(&self, buf: &mut [u8; RECORD_LEN]) -> Option<usize> {
        let at = buf.as_mut_ptr() as usize;
        // SAFETY: one message into the caller's buffer of RECORD_LEN bytes.
        let n = unsafe { syscall(SYS_RECVFROM, [CTL_FD, at, RECORD_LEN, MSG_DONTWAIT, 0, 0]) };
        match usize::try_from(n) {
            Ok(n) => Some(n),
            Err(_) if n == -EAGAIN || n == -EINTR => None,
            Err(_) => Some(0),
        }
    }

    fn kill(&self, pid: i32, signal: i32) {
        // SAFETY: signalling our own child, which is not reaped yet.
        unsafe { syscall(SYS_KILL, [pid as usize, signal as usize, 0, 0, 0, 0]) };
    }

    fn reap_one(&self) -> Option<(i32, i32)> {
        let mut wstatus: i32 = 0;
        let at = &mut wstatus as *mut i32 as usize;
        // SAFETY: wait4 writes one int; no rusage.
        let pid = unsafe { syscall(SYS_WAIT4, [usize::MAX, at, WNOHANG, 0, 0, 0]) };
        (pid > 0).then_some((pid as i32, wstatus))
    }

    fn report(&self, record: Record) {
        let bytes = record.encode();
        let mut done = 0;
        while done < bytes.len() {
            let rest = &bytes[done..];
            // SAFETY: writing from a local buffer.
            let n = unsafe {
                syscall(
                    SYS_WRITE,
                    [REPORT_FD, rest.as_ptr() as usize, rest.len(), 0, 0, 0],
                )
            };
            if n == -EINTR {
                continue;
            }
            if n <= 0 {
                return;
            }
            done += n as usize;
        }
    }

    fn exit(&self, code: i32) -> ! {
        exit(code as usize)
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(BAD_HANDOVER)
}
