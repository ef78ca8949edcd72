//! The filter every task gets unless its spec says otherwise: a denylist in the spirit of
//! Docker's and Podman's default profile (see the module doc of [`super`] for why a denylist).

use execdriver_core::seccomp::{ArgCondition, ArgOp, SeccompAction, SyscallRule};

/// EPERM, what a denied call gets: "not permitted", as a call without the capability gets
/// (which is what most programs already handle).
const DENIED: SeccompAction = SeccompAction::Errno(libc::EPERM as u16);

/// Denied outright. Names that do not exist on this machine's ABI (iopl, ioperm and the
/// obsolete module calls exist on x86_64 only) are skipped there.
pub const DENIED_SYSCALLS: &[&str] = &[
    // New namespaces (clone with CLONE_NEW* flags: see below), joining other ones.
    "unshare",
    "setns",
    // Mounts, old and new API.
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    // Kernel modules.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    // The kernel keyring (not namespaced: shared with the host).
    "add_key",
    "request_key",
    "keyctl",
    // BPF programs and perf events: large kernel attack surface, host-wide visibility.
    "bpf",
    "perf_event_open",
    // Tracing and reading other processes' memory.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    // The system clock (not namespaced).
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    // The machine itself.
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    // Frequent sources of kernel exploits, as Docker denies them.
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Opening files by handle goes around the mount namespace (the "shocker" escape).
    "open_by_handle_at",
    "name_to_handle_at",
    // Raw I/O ports.
    "iopl",
    "ioperm",
    // Kernel profiling internals.
    "lookup_dcookie",
];

/// The namespace flags of clone(2) (its first argument). CLONE_NEWTIME (0x80) is not
/// among them: in clone(2) that bit belongs to the exit signal, and only clone3 and
/// unshare can ask for a time namespace, both denied.
pub const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The personality(2) values a task may set (as in Docker): PER_LINUX, PER_LINUX32,
/// UNAME26, both, and 0xffffffff, which only asks for the current one. Anything else
/// (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) weakens the process's own protections.
pub const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The default rules. Built in code rather than parsed: the personality rule compares one
/// argument five times, which a profile file may not (see [`execdriver_core::seccomp`]).
pub(crate) fn rules() -> Vec<SyscallRule> {
    let rule = |names: &[&str], action, args: Vec<ArgCondition>| SyscallRule {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        action,
        args,
    };
    let arg0 = |op, value, value_two| ArgCondition {
        index: 0,
        op,
        value,
        value_two,
    };
    let mut rules = vec![rule(DENIED_SYSCALLS, DENIED, vec![])];
    // One rule per flag: a call matches when any of them is set.
    for flag in CLONE_NAMESPACE_FLAGS {
        rules.push(rule(
            &["clone"],
            DENIED,
            vec![arg0(ArgOp::MaskedEq, flag, flag)],
        ));
    }
    // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes glibc (2.34+)
    // and others fall back to clone(2), whose flags are checked above. As runc and Docker do.
    rules.push(rule(
        &["clone3"],
        SeccompAction::Errno(libc::ENOSYS as u16),
        vec![],
    ));
    rules.push(rule(
        &["personality"],
        DENIED,
        ALLOWED_PERSONALITIES
            .iter()
            .map(|p| arg0(ArgOp::Ne, *p, 0))
            .collect(),
    ));
    rules
}
