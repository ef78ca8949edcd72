//! The program the task's init becomes once the task runs (`reaper/main.rs`, built by
//! `build.rs`): a few KiB of code and a stack wait out the task for its whole life, instead
//! of a copy of the supervisor's address space. Embedded in the binary and handed to the
//! init as a sealed memfd, which it execs; where there is none (another architecture, a
//! kernel or sysctl that refuses executable memfds) the init waits in place.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::exec::StackMessage;

/// Set by tests to exercise the in-place wait.
pub(crate) static IN_PLACE: AtomicBool = AtomicBool::new(false);

#[cfg(execdriver_reaper)]
const IMAGE: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/execdriver-reaper")));
#[cfg(not(execdriver_reaper))]
const IMAGE: Option<&[u8]> = None;

/// Whether this build has the reaper (`build.rs` builds it on x86-64 Linux with glibc).
#[cfg(any(test, feature = "test-support"))]
pub(crate) const BUILT: bool = IMAGE.is_some();

/// The environment variable the init hands `TASK_PID:SIGNAL_FD` to the reaper in.
pub(crate) const HANDOVER: &[u8] = b"EXECDRIVER_INIT=";

/// The reaper in a sealed, close-on-exec memfd; `None` where there is none or it cannot be
/// made (the init then waits in place).
pub(crate) fn image() -> Option<OwnedFd> {
    let image = IMAGE?;
    if IN_PLACE.load(Ordering::Relaxed) {
        return None;
    }
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a constant name; the kernel returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(c"execdriver-init".as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 {
        // Kernels before 6.3 know no MFD_EXEC (and make every memfd executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"execdriver-init".as_ptr(), flags) };
    }
    if fd < 0 {
        return None;
    }
    // SAFETY: memfd_create just returned it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, image).ok()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own fd.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_ADD_SEALS, seals) } < 0 {
        return None;
    }
    Some(file.into())
}

/// `EXECDRIVER_INIT=TASK_PID:SIGNAL_FD` and its nul, without allocating (in the init).
pub(crate) fn handover(task: libc::pid_t, sfd: libc::c_int) -> StackMessage {
    let mut env = StackMessage::new();
    env.push(HANDOVER);
    // Both are non-negative: a pid the fork returned, an fd signalfd returned.
    env.push_number(task.unsigned_abs());
    env.push(b":");
    env.push_number(sfd.unsigned_abs());
    env.push(b"\0");
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handover_is_the_pid_and_the_fd() {
        assert_eq!(handover(2, 5).as_bytes(), b"EXECDRIVER_INIT=2:5\0");
        assert_eq!(
            handover(i32::MAX, i32::MAX).as_bytes(),
            b"EXECDRIVER_INIT=2147483647:2147483647\0"
        );
    }

    /// The kernel loads the reaper as it is: a static-pie (ET_DYN) with no interpreter and
    /// nothing to relocate (no code runs before its `_start` to apply relocations, so one
    /// static table of pointers would be left pointing nowhere).
    #[cfg(execdriver_reaper)]
    #[test]
    fn the_image_is_a_static_pie_with_nothing_to_relocate() {
        let elf = IMAGE.expect("built");
        let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&elf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        assert!(elf.starts_with(b"\x7fELF\x02\x01"), "a little-endian ELF64");
        assert_eq!(u16_at(16), 3, "ET_DYN");
        let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
        const PT_DYNAMIC: u32 = 2;
        const PT_INTERP: u32 = 3;
        // DT_RELA, DT_REL, DT_TEXTREL, DT_JMPREL, DT_RELR.
        const RELOCATING: [u64; 5] = [7, 17, 22, 23, 36];
        for i in 0..usize::from(phnum) {
            let ph = phoff + i * phentsize;
            let kind = u32::from_le_bytes([elf[ph], elf[ph + 1], elf[ph + 2], elf[ph + 3]]);
            assert_ne!(kind, PT_INTERP, "the reaper asks for an interpreter");
            if kind == PT_DYNAMIC {
                let (offset, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
                for entry in (offset..offset + size).step_by(16) {
                    let tag = u64_at(entry);
                    assert!(!RELOCATING.contains(&tag), "dynamic tag {tag}: relocations");
                }
            }
        }
        assert!(image().is_some(), "no memfd for the reaper");
    }
}
