//! From rules to one BPF program: system call names to numbers for an ABI, one seccompiler
//! filter per action, chained into a single program.
//!
//! seccompiler compiles a filter with one action for the calls its rules match and one for
//! the rest. A profile has several actions, so each gets a filter of its own whose "rest" is
//! allow, and the filters are chained: every `return allow` but the last filter's becomes a
//! jump to the next filter. The filters are ordered most severe first (kill process, kill
//! thread, trap, errno, trace, log: the kernel's own ranking), so the first that answers is
//! the most severe rule that matches. A default action other than allow is one more filter,
//! in its rank's place, that answers for every call no rule matches and lets the others on.
//!
//! seccompiler checks the ABI (`AUDIT_ARCH_*`) at the top of each filter and kills a call
//! from a foreign one. It cannot compare the call number as a range, which x32 needs (on
//! x86_64 an x32 call has the native ABI and bit 30 set in its number, and would get past
//! rules written for native numbers): three instructions before the chain kill those.

use std::collections::BTreeMap;
use std::str::FromStr;

use execdriver_core::seccomp::{ArgCondition, ArgOp, SeccompAction};
use seccompiler::{
    BpfProgram, SeccompAction as BpfAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch, sock_filter,
};

use super::SeccompError;

/// The kernel's limit on the instructions of one filter program (BPF_MAXINSNS).
pub(crate) const MAX_INSTRUCTIONS: usize = 4096;

/// The bit that marks an x32 system call number on x86_64 (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes (linux/bpf_common.h), as u16 like `sock_filter::code`.
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// An ABI filters are built for: its names and its system call table.
#[derive(Debug)]
pub(crate) struct Abi {
    /// `std::env::consts::ARCH` of the ABI.
    pub name: &'static str,
    /// Its `SCMP_ARCH_*` name in profiles.
    pub scmp: &'static str,
    target: TargetArch,
    number: fn(&str) -> Option<i64>,
    /// Whether x32 numbers must be killed (x86_64).
    x32: bool,
}

fn x86_64_number(name: &str) -> Option<i64> {
    syscalls::x86_64::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

fn aarch64_number(name: &str) -> Option<i64> {
    syscalls::aarch64::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

/// The ABIs this driver builds filters for.
pub(crate) const ABIS: [Abi; 2] = [
    Abi {
        name: "x86_64",
        scmp: "SCMP_ARCH_X86_64",
        target: TargetArch::x86_64,
        number: x86_64_number,
        x32: true,
    },
    Abi {
        name: "aarch64",
        scmp: "SCMP_ARCH_AARCH64",
        target: TargetArch::aarch64,
        number: aarch64_number,
        x32: false,
    },
];

/// The ABI of this build, if filters can be built for it.
pub(crate) fn native_abi() -> Result<&'static Abi, SeccompError> {
    ABIS.iter()
        .find(|a| a.name == std::env::consts::ARCH)
        .ok_or(SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

/// What a system call name is on an ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Its number there.
    Number(i64),
    /// It exists only on another ABI (x86_64's `mkdir`, on aarch64): a rule about it
    /// cannot match there, whatever its action.
    Elsewhere,
    /// No ABI has it.
    Unknown,
}

impl Abi {
    /// The number of `name` on this ABI.
    pub(crate) fn lookup(&self, name: &str) -> Lookup {
        if let Some(n) = (self.number)(name) {
            Lookup::Number(n)
        } else if ABIS.iter().any(|a| (a.number)(name).is_some()) {
            Lookup::Elsewhere
        } else {
            Lookup::Unknown
        }
    }
}

/// A rule with its names already numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NumberedRule {
    /// The system call numbers.
    pub numbers: Vec<i64>,
    /// What a matching call gets.
    pub action: SeccompAction,
    /// Comparisons, all of which must hold (any number of them per argument).
    pub args: Vec<ArgCondition>,
}

/// The kernel's precedence of an action: lower wins.
fn rank(action: SeccompAction) -> u8 {
    match action {
        SeccompAction::KillProcess => 0,
        SeccompAction::KillThread => 1,
        SeccompAction::Trap => 2,
        SeccompAction::Errno(_) => 3,
        SeccompAction::Trace(_) => 4,
        SeccompAction::Log => 5,
        _ => 6,
    }
}

fn bpf_action(action: SeccompAction) -> BpfAction {
    match action {
        SeccompAction::KillProcess => BpfAction::KillProcess,
        SeccompAction::KillThread => BpfAction::KillThread,
        SeccompAction::Trap => BpfAction::Trap,
        SeccompAction::Errno(n) => BpfAction::Errno(u32::from(n)),
        SeccompAction::Trace(n) => BpfAction::Trace(u32::from(n)),
        SeccompAction::Log => BpfAction::Log,
        _ => BpfAction::Allow,
    }
}

fn build_error(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Build(e.to_string())
}

fn condition(arg: &ArgCondition) -> Result<SeccompCondition, SeccompError> {
    let (op, value) = match arg.op {
        ArgOp::Ne => (SeccompCmpOp::Ne, arg.value),
        ArgOp::Lt => (SeccompCmpOp::Lt, arg.value),
        ArgOp::Le => (SeccompCmpOp::Le, arg.value),
        ArgOp::Eq => (SeccompCmpOp::Eq, arg.value),
        ArgOp::Ge => (SeccompCmpOp::Ge, arg.value),
        ArgOp::Gt => (SeccompCmpOp::Gt, arg.value),
        // The profile's value is the mask, valueTwo what the masked argument must be.
        ArgOp::MaskedEq => (SeccompCmpOp::MaskedEq(arg.value), arg.value_two),
        _ => return Err(build_error(format!("comparison {} is not implemented", arg.op.name()))),
    };
    // All 64 bits, as libseccomp compares.
    SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, op, value).map_err(build_error)
}

/// seccompiler's rule map for `rules`: per number, the alternatives, or none at all
/// (an empty list) when one of the rules matches whatever the arguments.
fn rule_map<'a>(
    rules: impl Iterator<Item = &'a NumberedRule>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for rule in rules {
        let alternative = if rule.args.is_empty() {
            None
        } else {
            let conditions = rule.args.iter().map(condition).collect::<Result<_, _>>()?;
            Some(SeccompRule::new(conditions).map_err(build_error)?)
        };
        for &number in &rule.numbers {
            let entry = map.entry(number).or_insert_with(|| Some(Vec::new()));
            match (&alternative, entry.as_mut()) {
                (None, _) => *entry = None,
                (Some(alt), Some(list)) => list.push(alt.clone()),
                (Some(_), None) => {}
            }
        }
    }
    Ok(map
        .into_iter()
        .map(|(n, alts)| (n, alts.unwrap_or_default()))
        .collect())
}

/// Builds the program for `abi`: `rules` as described in the module doc, `default` for
/// every call none of them matches.
pub(crate) fn compile(
    abi: &Abi,
    default: SeccompAction,
    rules: &[NumberedRule],
) -> Result<Vec<sock_filter>, SeccompError> {
    // (rank, the filter), in the order of first mention of each action.
    let mut filters: Vec<(u8, SeccompFilter)> = Vec::new();
    let mut actions: Vec<SeccompAction> = Vec::new();
    for rule in rules {
        if rule.action != SeccompAction::Allow && !actions.contains(&rule.action) {
            actions.push(rule.action);
        }
    }
    for action in actions {
        let map = rule_map(rules.iter().filter(|r| r.action == action))?;
        let filter = SeccompFilter::new(map, BpfAction::Allow, bpf_action(action), abi.target)
            .map_err(build_error)?;
        filters.push((rank(action), filter));
    }
    if default != SeccompAction::Allow {
        // Lets on what any rule matches (allow rules included), answers for the rest.
        let map = rule_map(rules.iter())?;
        let filter = SeccompFilter::new(map, bpf_action(default), BpfAction::Allow, abi.target)
            .map_err(build_error)?;
        filters.push((rank(default), filter));
    }
    if filters.is_empty() {
        // Nothing denied: still the ABI check (the match action is never taken).
        let filter = SeccompFilter::new(
            BTreeMap::new(),
            BpfAction::Allow,
            BpfAction::KillProcess,
            abi.target,
        )
        .map_err(build_error)?;
        filters.push((rank(SeccompAction::Allow), filter));
    }
    // Stable: equal ranks keep the order of first mention.
    filters.sort_by_key(|(rank, _)| *rank);

    let mut program = Vec::new();
    if abi.x32 {
        program.extend(x32_guard());
    }
    let last = filters.len() - 1;
    for (i, (_, filter)) in filters.into_iter().enumerate() {
        let mut part: BpfProgram = filter.try_into().map_err(|e| match e {
            seccompiler::BackendError::FilterTooLarge(instructions) => {
                SeccompError::TooLarge { instructions }
            }
            other => build_error(other),
        })?;
        if i != last {
            let len = part.len();
            for (at, insn) in part.iter_mut().enumerate() {
                if insn.code == BPF_RET_K && insn.k == libc::SECCOMP_RET_ALLOW {
                    // To the first instruction after this filter: the next filter.
                    let skip = u32::try_from(len - 1 - at).map_err(build_error)?;
                    *insn = instruction(BPF_JMP_JA, 0, 0, skip);
                }
            }
        }
        program.extend(part);
    }
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge {
            instructions: program.len(),
        });
    }
    Ok(program)
}

fn instruction(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Kills a call whose number has the x32 bit, except -1 (a tracer skipping the call, which
/// reaches the filter again as -1, as libseccomp lets it).
fn x32_guard() -> [sock_filter; 4] {
    [
        // seccomp_data.nr, at offset 0.
        instruction(BPF_LD_W_ABS, 0, 0, 0),
        instruction(BPF_JMP_JGE_K, 0, 2, X32_SYSCALL_BIT),
        instruction(BPF_JMP_JEQ_K, 1, 0, u32::MAX),
        instruction(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The audit arch values seccomp_data carries.
    pub(crate) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    pub(crate) const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
    pub(crate) const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

    /// A classic BPF interpreter for the instructions seccompiler and this module emit, so
    /// that a program's meaning can be checked without loading it.
    pub(crate) fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = &program[pc];
            pc += 1;
            let jump = |cond: bool| usize::from(if cond { insn.jt } else { insn.jf });
            match insn.code {
                BPF_LD_W_ABS => {
                    let at = insn.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                c if c == (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16 => acc &= insn.k,
                BPF_JMP_JA => pc += insn.k as usize,
                BPF_JMP_JEQ_K => pc += jump(acc == insn.k),
                c if c == (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16 => {
                    pc += jump(acc > insn.k)
                }
                BPF_JMP_JGE_K => pc += jump(acc >= insn.k),
                BPF_RET_K => return insn.k,
                other => panic!("instruction {other:#x} at {} not interpreted", pc - 1),
            }
        }
    }

    fn errno(n: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | n as u32
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    fn rule(numbers: &[i64], action: SeccompAction, args: Vec<ArgCondition>) -> NumberedRule {
        NumberedRule {
            numbers: numbers.to_vec(),
            action,
            args,
        }
    }

    fn eq(index: u8, value: u64) -> ArgCondition {
        ArgCondition {
            index,
            op: ArgOp::Eq,
            value,
            value_two: 0,
        }
    }

    #[test]
    fn names_resolve_per_abi() {
        let [x86, arm] = &ABIS;
        assert_eq!(x86.lookup("mkdir"), Lookup::Number(83));
        assert_eq!(arm.lookup("mkdir"), Lookup::Elsewhere);
        assert_eq!(arm.lookup("mkdirat"), Lookup::Number(34));
        assert_eq!(x86.lookup("mkdri"), Lookup::Unknown);
        assert!(native_abi().is_ok());
    }

    #[test]
    fn the_most_severe_matching_rule_wins_and_the_rest_get_the_default() {
        let [x86, _] = &ABIS;
        let rules = [
            rule(&[10], SeccompAction::Errno(28), vec![]),
            rule(&[10], SeccompAction::KillThread, vec![eq(0, 7)]),
            rule(&[11], SeccompAction::Allow, vec![]),
            rule(&[12], SeccompAction::Log, vec![]),
            rule(&[13], SeccompAction::Errno(5), vec![eq(1, 1)]),
            rule(&[13], SeccompAction::Errno(6), vec![]),
        ];
        let p = compile(x86, SeccompAction::Errno(38), &rules).expect("compile");
        let a = AUDIT_ARCH_X86_64;
        assert_eq!(run(&p, a, 10, [0; 6]), errno(28));
        assert_eq!(run(&p, a, 10, [7, 0, 0, 0, 0, 0]), libc::SECCOMP_RET_KILL_THREAD);
        assert_eq!(run(&p, a, 11, [0; 6]), ALLOW);
        assert_eq!(run(&p, a, 12, [0; 6]), libc::SECCOMP_RET_LOG);
        // Two errno rules both match: the first listed.
        assert_eq!(run(&p, a, 13, [0, 1, 0, 0, 0, 0]), errno(5));
        assert_eq!(run(&p, a, 13, [0; 6]), errno(6));
        assert_eq!(run(&p, a, 99, [0; 6]), errno(38));
        // Every filter but the last lets on by jumping, and the chain ends in a return.
        assert_eq!(p.last().map(|i| i.code), Some(BPF_RET_K));
        let allows = p
            .iter()
            .filter(|i| i.code == BPF_RET_K && i.k == ALLOW)
            .count();
        assert!(allows >= 1);
    }

    #[test]
    fn a_denylist_allows_the_rest() {
        let [x86, arm] = &ABIS;
        let rules = [rule(&[10, 20], SeccompAction::Errno(1), vec![])];
        for (abi, arch) in [(x86, AUDIT_ARCH_X86_64), (arm, AUDIT_ARCH_AARCH64)] {
            let p = compile(abi, SeccompAction::Allow, &rules).expect("compile");
            assert_eq!(run(&p, arch, 10, [0; 6]), errno(1));
            assert_eq!(run(&p, arch, 20, [0; 6]), errno(1));
            assert_eq!(run(&p, arch, 21, [0; 6]), ALLOW);
        }
        let p = compile(x86, SeccompAction::Allow, &[]).expect("no rules");
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 21, [0; 6]), ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_I386, 21, [0; 6]), KILL);
    }

    #[test]
    fn foreign_abis_and_x32_numbers_are_killed() {
        let [x86, arm] = &ABIS;
        let p = compile(x86, SeccompAction::Allow, &[rule(&[1], SeccompAction::Log, vec![])])
            .expect("compile");
        assert_eq!(run(&p, AUDIT_ARCH_I386, 20, [0; 6]), KILL);
        assert_eq!(run(&p, AUDIT_ARCH_AARCH64, 20, [0; 6]), KILL);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39, [0; 6]), KILL);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, u32::MAX, [0; 6]), ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 39, [0; 6]), ALLOW);
        let p = compile(arm, SeccompAction::Allow, &[]).expect("compile");
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 20, [0; 6]), KILL);
        assert_eq!(run(&p, AUDIT_ARCH_AARCH64, 20, [0; 6]), ALLOW);
    }

    #[test]
    fn comparisons_use_all_64_bits() {
        let [x86, _] = &ABIS;
        let cases = [
            (ArgOp::Ne, 5, 0, [(5, false), (6, true), (5 | 1 << 32, true)]),
            (ArgOp::Lt, 1 << 33, 0, [(1 << 32, true), (1 << 33, false), (0, true)]),
            (ArgOp::Le, 10, 0, [(10, true), (11, false), (1 << 40, false)]),
            (ArgOp::Eq, 1 << 35, 0, [(1 << 35, true), (0, false), (1, false)]),
            (ArgOp::Ge, 1 << 32, 0, [(1 << 32, true), (u64::MAX, true), (7, false)]),
            (ArgOp::Gt, 3, 0, [(4, true), (3, false), (1 << 63, true)]),
            (
                ArgOp::MaskedEq,
                0xff00_0000_00ff,
                0x0100_0000_0002,
                [(0x0100_0000_0002, true), (0x0100_dead_0002, true), (0x0100_0000_0003, false)],
            ),
        ];
        for (op, value, value_two, checks) in cases {
            let cond = ArgCondition {
                index: 2,
                op,
                value,
                value_two,
            };
            let p = compile(
                x86,
                SeccompAction::Allow,
                &[rule(&[7], SeccompAction::Errno(9), vec![cond])],
            )
            .expect("compile");
            for (arg, matches) in checks {
                let got = run(&p, AUDIT_ARCH_X86_64, 7, [0, 0, arg, 0, 0, 0]);
                let want = if matches { errno(9) } else { ALLOW };
                assert_eq!(got, want, "{op:?} {value:#x} {value_two:#x} on {arg:#x}");
            }
        }
    }

    #[test]
    fn a_program_over_the_kernel_limit_is_refused() {
        let [x86, _] = &ABIS;
        let rules: Vec<NumberedRule> = (0..1500)
            .map(|n| rule(&[n], SeccompAction::Errno(1), vec![eq(0, 1)]))
            .collect();
        match compile(x86, SeccompAction::Allow, &rules) {
            Err(SeccompError::TooLarge { instructions }) => assert!(instructions > 4096),
            other => panic!("{other:?}"),
        }
    }
}
