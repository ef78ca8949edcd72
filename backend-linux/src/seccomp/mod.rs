//! The task's seccomp filter: the BPF program built from [`Seccomp`], in the supervisor
//! before the clone, installed by the task process right before its execve.
//!
//! The default is a denylist: every call is allowed except the families that reach past the
//! task's namespaces or into the kernel's most exposed parts (new namespaces and joining
//! others, mounts, kernel modules, the keyring, bpf, perf, ptrace and cross-process memory,
//! the clocks, reboot/kexec, swap, acct, quotas, userfaultfd, io_uring, open-by-handle, raw
//! I/O ports, and personality values that weaken the process); those fail with EPERM
//! (clone3 with ENOSYS, so that libc falls back to clone, whose flags a filter can see).
//! A denylist rather than Docker's allowlist because a task here is an ordinary program of
//! the node, built against whatever kernel and libc the node has: an allowlist must know
//! every call such programs make, and a call it does not know (a new one, or an old one it
//! forgot) breaks a working program with EPERM, whereas the denied families are the ones
//! with a history of escapes, and what else a task could do is bounded already by its user,
//! its capabilities and its namespaces. Calls of any other ABI (32-bit x86, x32) kill the
//! task: the rules are written for the native numbers only.
//!
//! A failure to deny (a rule that does not work) is what matters here, so the tests
//! install the programs in real processes as well as reading them through an interpreter.

mod default_profile;
mod filter;

use execdriver_core::seccomp::{Seccomp, SeccompProfile, SeccompProfileError};
use seccompiler::sock_filter;

#[cfg(any(test, feature = "test-support"))]
pub use default_profile::{ALLOWED_PERSONALITIES, CLONE_NAMESPACE_FLAGS, DENIED_SYSCALLS};
use filter::{Abi, Lookup, NumberedRule};

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is wrong or uses what is not supported (the field is named).
    #[error(transparent)]
    Profile(#[from] SeccompProfileError),
    /// This build's architecture has no filter support.
    #[error("seccomp filters are built for x86_64 and aarch64 only, not {0}")]
    UnsupportedArch(&'static str),
    /// The program would exceed the kernel's limit.
    #[error(
        "the seccomp filter would have {instructions} instructions, above the kernel's limit of 4096: use fewer rules or fewer comparisons"
    )]
    TooLarge {
        /// How many it would have.
        instructions: usize,
    },
    /// The BPF compiler refused the rules.
    #[error("building the seccomp filter failed: {0}")]
    Build(String),
}

/// A BPF program ready for seccomp(SECCOMP_SET_MODE_FILTER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProgram {
    instructions: Vec<sock_filter>,
}

#[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))]
impl SeccompProgram {
    /// The number of instructions.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Never true: a program has at least the ABI check.
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// The instructions (`struct sock_filter`).
    pub fn instructions(&self) -> &[sock_filter] {
        &self.instructions
    }

    /// A `struct sock_fprog` for the kernel, valid while `self` is: no allocation, so the
    /// cloned task can take it.
    pub(crate) fn fprog(&self) -> SockFprog {
        SockFprog {
            // At most MAX_INSTRUCTIONS, checked when built.
            len: self.instructions.len() as libc::c_ushort,
            filter: self.instructions.as_ptr(),
        }
    }
}

/// The kernel's `struct sock_fprog`, pointing at a [`SeccompProgram`]'s instructions.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// The program for `seccomp`, or `None` for [`Seccomp::Unconfined`].
pub fn program(seccomp: &Seccomp) -> Result<Option<SeccompProgram>, SeccompError> {
    let abi = filter::native_abi()?;
    program_for(abi, seccomp)
}

fn program_for(abi: &Abi, seccomp: &Seccomp) -> Result<Option<SeccompProgram>, SeccompError> {
    let instructions = match seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Profile(profile) => profile_program(abi, profile)?,
        // The default and any filter kind added later: the default is never less.
        _ => {
            let rules = numbered(abi, &default_profile::rules(), "default profile")?;
            filter::compile(
                abi,
                execdriver_core::seccomp::SeccompAction::Allow,
                &rules,
            )?
        }
    };
    Ok(Some(SeccompProgram { instructions }))
}

/// Checks that `seccomp` can be built on this node, without keeping the program.
pub fn check(seccomp: &Seccomp) -> Result<(), SeccompError> {
    match seccomp {
        // Fixed, and built for both ABIs by this module's tests: only the node's ABI can
        // refuse it, and compiling it again here (the starter checks every spec) cost some
        // 0.4 M instructions per start.
        Seccomp::Default => filter::native_abi().map(|_| ()),
        _ => program(seccomp).map(|_| ()),
    }
}

fn profile_program(abi: &Abi, profile: &SeccompProfile) -> Result<Vec<sock_filter>, SeccompError> {
    profile.validate()?;
    for (i, arch) in profile.architectures.iter().enumerate() {
        if arch != abi.scmp {
            return Err(SeccompProfileError::Unsupported {
                field: format!("architectures[{i}]"),
                why: format!(
                    "{arch} on this {} node: only the native ABI ({}) is filtered and \
                     calls from any other are killed; list only {}, or none",
                    abi.name, abi.scmp, abi.scmp
                ),
            }
            .into());
        }
    }
    let rules = numbered(abi, &profile.syscalls, "syscalls")?;
    filter::compile(abi, profile.default_action, &rules)
}

/// The rules with numbers for `abi`: a name only another ABI has is left out (a rule
/// about it cannot match here), a name no ABI has is an error naming it.
fn numbered(
    abi: &Abi,
    rules: &[execdriver_core::seccomp::SyscallRule],
    field: &str,
) -> Result<Vec<NumberedRule>, SeccompError> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let mut numbers = Vec::with_capacity(rule.names.len());
        for (j, name) in rule.names.iter().enumerate() {
            match abi.lookup(name) {
                Lookup::Number(n) => numbers.push(n),
                Lookup::Elsewhere => {}
                Lookup::Unknown => {
                    return Err(SeccompProfileError::Invalid {
                        field: format!("{field}[{i}].names[{j}]"),
                        why: format!(
                            "{name:?} is not a system call (of {})",
                            filter::ABIS.map(|a| a.name).join(" or ")
                        ),
                    }
                    .into());
                }
            }
        }
        if !numbers.is_empty() {
            out.push(NumberedRule {
                numbers,
                action: rule.action,
                args: rule.args.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
