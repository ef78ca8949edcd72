//! Thin system call wrappers for the cloned child: no allocation, no locks, errors as errno.
//!
//! The child is a copy of a process that may have had other threads, so anything that could
//! take a lock held by a thread that no longer exists (malloc, stdio, glibc's setxid
//! broadcast, glibc's fork handlers) is off limits there. These wrappers go straight to the
//! kernel and report failures as a raw errno.

use std::ffi::CStr;
use std::os::fd::{OwnedFd, RawFd};

/// The errno of the last failed call.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `Ok(ret)` when `ret >= 0`, else the errno.
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// `Ok(ret)` when `ret >= 0`, else the errno (for `c_int` returning calls).
pub(crate) fn check_int(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// A fork-like clone: the child continues on a copy of the caller's stack and returns 0.
///
/// # Safety
/// The child must only call async-signal-safe code and leave with `_exit`.
pub(crate) unsafe fn clone_fork(namespaces: libc::c_int) -> Result<libc::pid_t, i32> {
    let flags = (namespaces | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a null stack makes clone behave like fork (the child gets a copy of the
    // address space); the remaining pointers are unused without the matching flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// clone3's flag for a child born in the cgroup v2 directory `clone_args.cgroup` (Linux 5.7);
/// libc declares it as a `c_int`, too narrow for its bit.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_fork`] with the child born in the cgroup v2 directory `cgroup`: no write to
/// `cgroup.procs` moves it there afterwards, so the kernel waits out no RCU grace period
/// for it (each such write pays one unless the node mounts cgroup2 with `favordynmods`).
/// Fails where the kernel has no clone3 or no CLONE_INTO_CGROUP; the caller then clones
/// without it and moves the child.
///
/// # Safety
/// As for [`clone_fork`].
pub(crate) unsafe fn clone_fork_into(
    namespaces: libc::c_int,
    cgroup: RawFd,
) -> Result<libc::pid_t, i32> {
    // SAFETY: clone_args is plain integers, all zero meaning "not used".
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = namespaces as u32 as u64 | CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup as u64;
    // SAFETY: without CLONE_VM and with no stack given, clone3 behaves like fork (the child
    // runs on a copy of the caller's stack); the kernel reads `args` only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// Sets `sig` back to SIG_DFL with the raw system call: glibc refuses to touch its two
/// internal real-time signals (32 and 33), but an ignored disposition inherited from the
/// supervisor's own parent would otherwise survive into the task's exec.
pub(crate) fn reset_signal_default(sig: libc::c_int) {
    // The kernel's struct sigaction: handler, flags, restorer, mask. All zero is SIG_DFL
    // with no flags and an empty mask whatever the exact layout of the architecture.
    let act = [0u64; 4];
    // SAFETY: rt_sigaction reads one kernel sigaction (all zero) and writes nothing back.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            act.as_ptr(),
            std::ptr::null_mut::<libc::c_void>(),
            8usize,
        )
    };
}

/// Whether `sig` has a handler (neither SIG_DFL nor SIG_IGN), asked with the raw system call.
pub(crate) fn has_handler(sig: libc::c_int) -> bool {
    // The kernel's struct sigaction, whose first word is the handler on every architecture.
    let mut old = [0u64; 4];
    // SAFETY: rt_sigaction with no new action only writes the old one into `old`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<libc::c_void>(),
            old.as_mut_ptr(),
            8usize,
        )
    };
    ret == 0 && old[0] != libc::SIG_DFL as u64 && old[0] != libc::SIG_IGN as u64
}

/// Blocks every signal in the calling thread; returns the previous mask.
pub(crate) fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on locals; pthread_sigmask only affects this thread.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Puts back a mask saved by [`block_all_signals`].
pub(crate) fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// Closes every fd from `first` up (close_range, or one by one where it is missing).
pub(crate) fn close_from(first: RawFd) {
    if first < 0 {
        return;
    }
    // SAFETY: close_range takes two fd numbers and flags.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, !0u32, 0u32) };
    if ret == 0 {
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as RawFd
    } else {
        65_536
    };
    for fd in first..max {
        // SAFETY: closing an fd number; EBADF for unused ones is harmless.
        unsafe { libc::close(fd) };
    }
}

/// Closes every fd from 3 up except `keep`.
pub(crate) fn close_all_but(keep: RawFd) {
    if keep > 3 {
        // SAFETY: as in close_from.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                (keep - 1) as libc::c_uint,
                0u32,
            )
        };
        if ret != 0 {
            for fd in 3..keep {
                // SAFETY: closing an fd number we do not need.
                unsafe { libc::close(fd) };
            }
        }
    }
    close_from(keep.max(2) + 1);
}

/// Installs a seccomp filter built before the clone (the caller has set no_new_privs).
/// No allocation: the kernel copies the program it is pointed at.
pub(crate) fn install_seccomp_filter(program: &crate::seccomp::SockFprog) -> Result<(), i32> {
    // SAFETY: `program` is a sock_fprog pointing at live instructions of the length it says.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            program as *const crate::seccomp::SockFprog,
        )
    };
    check(ret).map(|_| ())
}

/// Writes all of `buf` to `fd`, retrying on EINTR; errors are dropped (the reader will
/// notice the missing bytes).
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        if n == 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// Reads until `buf` is full or end of file; returns how many bytes were read.
pub(crate) fn read_full(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the destination is the unfilled tail of buf.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// `struct mount_attr` for mount_setattr(2), which libc does not define.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) attribute: read-only.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// mount_setattr(2) attribute: ignore set-user-id bits.
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// mount_setattr(2) attribute: no device files.
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
/// mount_setattr(2) attribute: no exec.
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Adds `attrs` to the mount at `path` (and every mount below it when `recursive`).
pub(crate) fn mount_setattr(path: &CStr, attrs: u64, recursive: bool) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: path is a valid C string, attr a valid struct of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(|_| ())
}

/// A detached copy of the mount tree at `path` (open_tree(2) with OPEN_TREE_CLONE, Linux
/// 5.2+), made in the caller's mount namespace: a copy of a shared mount is a peer of it, so
/// attached elsewhere it still receives (and sends) mount events.
pub(crate) fn open_tree_clone(path: &CStr, recursive: bool) -> Result<OwnedFd, i32> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: path is a valid C string; the kernel returns a new fd or fails.
    let fd = check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    // SAFETY: open_tree just returned this fd, owned by nothing else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached tree `fd` at `dst` (move_mount(2)). No allocation.
pub(crate) fn move_mount_tree(fd: RawFd, dst: &CStr) -> Result<(), i32> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    // SAFETY: valid C strings; fd is a tree from open_tree.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret).map(|_| ())
}

/// Whether this kernel has mount_setattr(2) (Linux 5.12+), probed without touching a mount.
pub(crate) fn have_mount_setattr() -> bool {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: an invalid dirfd and empty path make the call fail before it does anything.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1 as libc::c_int,
            c"".as_ptr(),
            0u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    !(ret < 0 && errno() == libc::ENOSYS)
}

/// The `MS_*` flags a bind remount must repeat so it does not clear what the mount already
/// has (a remount replaces the per-mount flags, and clearing a locked one is refused).
pub(crate) fn kept_mount_flags(path: &CStr) -> Result<libc::c_ulong, i32> {
    // glibc's statvfs maps the kernel's statfs f_flags (always valid since Linux 2.6.36)
    // without reading /proc/mounts, so it does not allocate.
    // SAFETY: statvfs fills one struct for a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check_int(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    let f = st.f_flag as libc::c_ulong;
    let map: [(libc::c_ulong, libc::c_ulong); 7] = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(map
        .iter()
        .filter(|(st_flag, _)| f & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}
