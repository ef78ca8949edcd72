//! [`Seccomp`]: which system call filter a task gets; [`SeccompProfile`]: a filter given in
//! the JSON of the OCI runtime spec's `linux.seccomp` (the format of Docker's and Podman's
//! profiles), checked field by field.
//!
//! Data only: which system calls exist on a machine, their numbers, and the BPF program
//! built from a profile are the platform's business. What is checked here is what needs no
//! machine: the shape, the action and comparison names, argument indexes, errno ranges.
//!
//! A part of the format this driver does not implement is refused with the field named,
//! never dropped: dropping a rule of a security profile changes what it allows. Refused are
//! `flags`, `listenerPath`/`listenerMetadata` and `SCMP_ACT_NOTIFY` (no notify agent),
//! Docker's `archMap` and non-empty `includes`/`excludes` (conditions on capabilities and
//! kernels), and two comparisons of one argument in one rule (runc ORs them, the OCI spec
//! ANDs them: a profile relying on either would silently mean the other somewhere).
//! `comment` is documentation and accepted.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The largest profile text accepted.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// The most rules one profile may have (a filter program has at most 4096 instructions).
pub const MAX_RULES: usize = 4096;
/// The highest errno a rule may return (the kernel's MAX_ERRNO).
pub const MAX_ERRNO: u16 = 4095;
/// What `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` return without `errnoRet`: EPERM, as in runc.
pub const DEFAULT_ERRNO: u16 = 1;
/// The highest argument index of a system call.
pub const MAX_ARG_INDEX: u8 = 5;

/// The `SCMP_ARCH_*` names of the format (libseccomp's list).
pub const KNOWN_ARCHITECTURES: [&str; 23] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// The system call filter of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Seccomp {
    /// The platform's default filter (on Linux: the namespace, mount, module, keyring, bpf,
    /// perf, ptrace, clock, reboot and swap families denied; see the README).
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
    /// This profile instead of the default.
    Profile(SeccompProfile),
}

impl Seccomp {
    /// True for [`Seccomp::Default`] (which a serialized spec leaves out).
    pub fn is_default(&self) -> bool {
        matches!(self, Seccomp::Default)
    }

    /// Checks a profile's fields (the other two need nothing).
    pub fn validate(&self) -> Result<(), SeccompProfileError> {
        match self {
            Seccomp::Profile(p) => p.validate(),
            Seccomp::Default | Seccomp::Unconfined => Ok(()),
        }
    }
}

/// A seccomp profile: a default action and rules, in the OCI format's terms.
///
/// When a call matches several rules, the most severe action wins (kill process, kill
/// thread, trap, errno, trace, log, allow, as the kernel ranks them); between two errno or
/// trace rules, the one listed first. A call no rule matches gets `default_action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProfile {
    /// What a call no rule matches gets (`defaultAction`, `defaultErrnoRet`).
    pub default_action: SeccompAction,
    /// The ABIs (`SCMP_ARCH_*`) the profile is written for; empty for the native one.
    pub architectures: Vec<String>,
    /// The rules (`syscalls`), in order.
    pub syscalls: Vec<SyscallRule>,
}

/// One rule: these system calls, when every comparison holds, get this action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRule {
    /// System call names (`names`).
    pub names: Vec<String>,
    /// The action (`action`, `errnoRet`).
    pub action: SeccompAction,
    /// Comparisons of the call's arguments (`args`), all of which must hold.
    pub args: Vec<ArgCondition>,
}

/// What the filter does with a call (`SCMP_ACT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeccompAction {
    /// `SCMP_ACT_KILL_PROCESS`: the whole process is killed (SIGSYS).
    KillProcess,
    /// `SCMP_ACT_KILL_THREAD` (also spelt `SCMP_ACT_KILL`): the calling thread is killed.
    KillThread,
    /// `SCMP_ACT_TRAP`: SIGSYS is sent to the caller.
    Trap,
    /// `SCMP_ACT_ERRNO`: the call fails with this errno without being made.
    Errno(u16),
    /// `SCMP_ACT_TRACE`: a ptrace tracer is told, with this number (ENOSYS without one).
    Trace(u16),
    /// `SCMP_ACT_LOG`: the call is made and logged.
    Log,
    /// `SCMP_ACT_ALLOW`: the call is made.
    Allow,
}

impl SeccompAction {
    /// The format's name of the action.
    pub fn name(&self) -> &'static str {
        match self {
            SeccompAction::KillProcess => "SCMP_ACT_KILL_PROCESS",
            SeccompAction::KillThread => "SCMP_ACT_KILL_THREAD",
            SeccompAction::Trap => "SCMP_ACT_TRAP",
            SeccompAction::Errno(_) => "SCMP_ACT_ERRNO",
            SeccompAction::Trace(_) => "SCMP_ACT_TRACE",
            SeccompAction::Log => "SCMP_ACT_LOG",
            SeccompAction::Allow => "SCMP_ACT_ALLOW",
        }
    }

    /// The number an errno or trace action returns.
    pub fn ret(&self) -> Option<u16> {
        match self {
            SeccompAction::Errno(n) | SeccompAction::Trace(n) => Some(*n),
            _ => None,
        }
    }
}

/// A comparison of one argument of the call (`{index, value, valueTwo, op}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCondition {
    /// Which argument, 0 to 5.
    pub index: u8,
    /// How it is compared.
    pub op: ArgOp,
    /// The value compared with; for [`ArgOp::MaskedEq`], the mask.
    pub value: u64,
    /// For [`ArgOp::MaskedEq`], the value the masked argument must equal; otherwise 0.
    pub value_two: u64,
}

/// A comparison (`SCMP_CMP_*`), on the argument's full 64 bits as libseccomp does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArgOp {
    /// `SCMP_CMP_NE`: argument != value.
    Ne,
    /// `SCMP_CMP_LT`: argument < value.
    Lt,
    /// `SCMP_CMP_LE`: argument <= value.
    Le,
    /// `SCMP_CMP_EQ`: argument == value.
    Eq,
    /// `SCMP_CMP_GE`: argument >= value.
    Ge,
    /// `SCMP_CMP_GT`: argument > value.
    Gt,
    /// `SCMP_CMP_MASKED_EQ`: (argument & value) == valueTwo.
    MaskedEq,
}

impl ArgOp {
    /// The format's name of the comparison.
    pub fn name(&self) -> &'static str {
        match self {
            ArgOp::Ne => "SCMP_CMP_NE",
            ArgOp::Lt => "SCMP_CMP_LT",
            ArgOp::Le => "SCMP_CMP_LE",
            ArgOp::Eq => "SCMP_CMP_EQ",
            ArgOp::Ge => "SCMP_CMP_GE",
            ArgOp::Gt => "SCMP_CMP_GT",
            ArgOp::MaskedEq => "SCMP_CMP_MASKED_EQ",
        }
    }

    const ALL: [ArgOp; 7] = [
        ArgOp::Ne,
        ArgOp::Lt,
        ArgOp::Le,
        ArgOp::Eq,
        ArgOp::Ge,
        ArgOp::Gt,
        ArgOp::MaskedEq,
    ];
}

/// A profile that cannot be used, naming the field (`syscalls[2].args[0].op`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompProfileError {
    /// The text is not JSON.
    #[error("seccomp profile is not valid JSON: {0}")]
    Json(String),
    /// A field with a wrong or missing value, or an unknown field.
    #[error("seccomp profile: {field}: {why}")]
    Invalid {
        /// The field's path in the profile.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// A part of the format this driver does not implement.
    #[error("seccomp profile: {field} is not supported: {why}")]
    Unsupported {
        /// The field's path in the profile.
        field: String,
        /// Why, and what to do instead.
        why: String,
    },
}

impl SeccompProfileError {
    /// The path of the field at fault, if the text was JSON at all.
    pub fn field(&self) -> Option<&str> {
        match self {
            SeccompProfileError::Json(_) => None,
            SeccompProfileError::Invalid { field, .. }
            | SeccompProfileError::Unsupported { field, .. } => Some(field),
        }
    }
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> SeccompProfileError {
    SeccompProfileError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

fn unsupported(field: impl Into<String>, why: impl Into<String>) -> SeccompProfileError {
    SeccompProfileError::Unsupported {
        field: field.into(),
        why: why.into(),
    }
}

/// True for a plausible system call name: what the kernel's tables use.
fn is_syscall_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl SeccompProfile {
    /// Parses a profile from JSON text (at most [`MAX_PROFILE_BYTES`]) and checks it.
    pub fn from_json(text: &str) -> Result<Self, SeccompProfileError> {
        if text.len() > MAX_PROFILE_BYTES {
            return Err(invalid(
                "(the profile)",
                format!(
                    "{} bytes is above the limit of {MAX_PROFILE_BYTES} bytes",
                    text.len()
                ),
            ));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| SeccompProfileError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Reads a profile from parsed JSON and checks it.
    pub fn from_value(value: &Value) -> Result<Self, SeccompProfileError> {
        let top = object(value, "(the profile)")?;
        let mut default_name = None;
        let mut default_ret = None;
        let mut architectures = Vec::new();
        let mut syscalls = Vec::new();
        for (key, v) in top {
            match key.as_str() {
                "defaultAction" => default_name = Some(string(v, key)?),
                "defaultErrnoRet" => default_ret = optional(v).map(|v| ret(v, key)).transpose()?,
                "architectures" => {
                    for (i, arch) in array(v, key)?.iter().enumerate() {
                        architectures
                            .push(string(arch, &format!("architectures[{i}]"))?.to_owned());
                    }
                }
                "syscalls" => {
                    for (i, rule) in array(v, key)?.iter().enumerate() {
                        syscalls.push(parse_rule(rule, &format!("syscalls[{i}]"))?);
                    }
                }
                "flags" => {
                    if !array(v, key)?.is_empty() {
                        return Err(unsupported(
                            key,
                            "the filter is installed without flags; remove them",
                        ));
                    }
                }
                "listenerPath" | "listenerMetadata" => {
                    if optional(v).is_some_and(|v| v.as_str() != Some("")) {
                        return Err(unsupported(
                            key,
                            "there is no seccomp notify agent (SCMP_ACT_NOTIFY)",
                        ));
                    }
                }
                "archMap" => {
                    return Err(unsupported(
                        key,
                        "list the ABIs in \"architectures\" instead (only the native one is filtered)",
                    ));
                }
                _ => return Err(invalid(key, "unknown field")),
            }
        }
        let default_name =
            default_name.ok_or_else(|| invalid("defaultAction", "missing; it is required"))?;
        let default_action = action(
            default_name,
            default_ret,
            "defaultAction",
            "defaultErrnoRet",
        )?;
        let profile = SeccompProfile {
            default_action,
            architectures,
            syscalls,
        };
        profile.validate()?;
        Ok(profile)
    }

    /// Checks what a profile built in code could get wrong (a parsed one was checked).
    pub fn validate(&self) -> Result<(), SeccompProfileError> {
        if self.syscalls.len() > MAX_RULES {
            return Err(invalid(
                "syscalls",
                format!(
                    "{} rules is above the limit of {MAX_RULES}",
                    self.syscalls.len()
                ),
            ));
        }
        check_ret(&self.default_action, "defaultErrnoRet")?;
        for (i, arch) in self.architectures.iter().enumerate() {
            if !KNOWN_ARCHITECTURES.contains(&arch.as_str()) {
                return Err(invalid(
                    format!("architectures[{i}]"),
                    format!("{arch:?} is not an SCMP_ARCH_* name"),
                ));
            }
        }
        for (i, rule) in self.syscalls.iter().enumerate() {
            if rule.names.is_empty() {
                return Err(invalid(
                    format!("syscalls[{i}].names"),
                    "empty; name at least one system call",
                ));
            }
            for (j, name) in rule.names.iter().enumerate() {
                if !is_syscall_name(name) {
                    return Err(invalid(
                        format!("syscalls[{i}].names[{j}]"),
                        format!("{name:?} is not a system call name"),
                    ));
                }
            }
            check_ret(&rule.action, &format!("syscalls[{i}].errnoRet"))?;
            let mut seen = [false; MAX_ARG_INDEX as usize + 1];
            for (k, arg) in rule.args.iter().enumerate() {
                let field = format!("syscalls[{i}].args[{k}]");
                let Some(slot) = seen.get_mut(usize::from(arg.index)) else {
                    return Err(invalid(
                        format!("{field}.index"),
                        format!(
                            "{} is not an argument index (0 to {MAX_ARG_INDEX})",
                            arg.index
                        ),
                    ));
                };
                if std::mem::replace(slot, true) {
                    return Err(unsupported(
                        field,
                        format!(
                            "a second comparison of argument {} in one rule: runc ORs such \
                             comparisons and the OCI spec ANDs them; write one rule per \
                             alternative",
                            arg.index
                        ),
                    ));
                }
                if arg.op != ArgOp::MaskedEq && arg.value_two != 0 {
                    return Err(invalid(
                        format!("{field}.valueTwo"),
                        format!(
                            "only SCMP_CMP_MASKED_EQ uses valueTwo; {} compares with value",
                            arg.op.name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The profile as JSON in the OCI format (what [`SeccompProfile::from_value`] reads).
    pub fn to_value(&self) -> Value {
        let mut top = Map::new();
        top.insert("defaultAction".into(), self.default_action.name().into());
        if let Some(n) = self.default_action.ret() {
            top.insert("defaultErrnoRet".into(), n.into());
        }
        if !self.architectures.is_empty() {
            top.insert("architectures".into(), self.architectures.clone().into());
        }
        let rules: Vec<Value> = self
            .syscalls
            .iter()
            .map(|rule| {
                let mut r = Map::new();
                r.insert("names".into(), rule.names.clone().into());
                r.insert("action".into(), rule.action.name().into());
                if let Some(n) = rule.action.ret() {
                    r.insert("errnoRet".into(), n.into());
                }
                if !rule.args.is_empty() {
                    let args: Vec<Value> = rule
                        .args
                        .iter()
                        .map(|a| {
                            serde_json::json!({
                                "index": a.index,
                                "value": a.value,
                                "valueTwo": a.value_two,
                                "op": a.op.name(),
                            })
                        })
                        .collect();
                    r.insert("args".into(), args.into());
                }
                Value::Object(r)
            })
            .collect();
        top.insert("syscalls".into(), rules.into());
        Value::Object(top)
    }
}

impl Serialize for SeccompProfile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SeccompProfile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        SeccompProfile::from_value(&value).map_err(serde::de::Error::custom)
    }
}

fn check_ret(action: &SeccompAction, field: &str) -> Result<(), SeccompProfileError> {
    match action {
        SeccompAction::Errno(n) if *n > MAX_ERRNO => Err(invalid(
            field,
            format!("{n} is above the highest errno, {MAX_ERRNO}"),
        )),
        _ => Ok(()),
    }
}

/// `null` reads as a missing field, as Go's encoder writes an empty list.
fn optional(v: &Value) -> Option<&Value> {
    (!v.is_null()).then_some(v)
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, SeccompProfileError> {
    v.as_object()
        .ok_or_else(|| invalid(field, format!("expected an object, got {}", kind(v))))
}

fn array<'a>(v: &'a Value, field: &str) -> Result<&'a [Value], SeccompProfileError> {
    match v {
        Value::Null => Ok(&[]),
        Value::Array(items) => Ok(items),
        _ => Err(invalid(field, format!("expected a list, got {}", kind(v)))),
    }
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, SeccompProfileError> {
    v.as_str()
        .ok_or_else(|| invalid(field, format!("expected a string, got {}", kind(v))))
}

fn number(v: &Value, field: &str) -> Result<u64, SeccompProfileError> {
    v.as_u64().ok_or_else(|| {
        invalid(
            field,
            format!(
                "expected a whole number from 0 to 2^64-1, got {}",
                kind_or_number(v)
            ),
        )
    })
}

fn ret(v: &Value, field: &str) -> Result<u16, SeccompProfileError> {
    let n = number(v, field)?;
    u16::try_from(n).map_err(|_| invalid(field, format!("{n} is above 65535")))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn kind_or_number(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_owned(),
    }
}

fn action(
    name: &str,
    ret: Option<u16>,
    field: &str,
    ret_field: &str,
) -> Result<SeccompAction, SeccompProfileError> {
    let action = match name {
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(ret.unwrap_or(DEFAULT_ERRNO)),
        "SCMP_ACT_TRACE" => SeccompAction::Trace(ret.unwrap_or(DEFAULT_ERRNO)),
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_NOTIFY" => {
            return Err(unsupported(
                field,
                "SCMP_ACT_NOTIFY needs a seccomp notify agent, which there is not",
            ));
        }
        other => {
            return Err(invalid(
                field,
                format!(
                    "{other:?} is not an action (use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, \
                     SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL, SCMP_ACT_TRAP, \
                     SCMP_ACT_TRACE or SCMP_ACT_LOG)"
                ),
            ));
        }
    };
    if ret.is_some() && action.ret().is_none() {
        return Err(invalid(
            ret_field,
            format!("{name} returns no number; only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do"),
        ));
    }
    Ok(action)
}

fn parse_rule(v: &Value, field: &str) -> Result<SyscallRule, SeccompProfileError> {
    let mut names = None;
    let mut action_name = None;
    let mut errno_ret = None;
    let mut args = Vec::new();
    for (key, v) in object(v, field)? {
        let here = format!("{field}.{key}");
        match key.as_str() {
            "names" => {
                let mut list = Vec::new();
                for (j, name) in array(v, &here)?.iter().enumerate() {
                    list.push(string(name, &format!("{here}[{j}]"))?.to_owned());
                }
                names = Some(list);
            }
            "action" => action_name = Some(string(v, &here)?),
            "errnoRet" => errno_ret = optional(v).map(|v| ret(v, &here)).transpose()?,
            "args" => {
                for (k, arg) in array(v, &here)?.iter().enumerate() {
                    args.push(parse_arg(arg, &format!("{here}[{k}]"))?);
                }
            }
            "comment" => {}
            "includes" | "excludes" => {
                if optional(v).is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
                    return Err(unsupported(
                        here,
                        "conditions on capabilities, architectures or kernel versions; write \
                         the rules that apply to this node without them",
                    ));
                }
            }
            "name" => {
                return Err(unsupported(here, "use \"names\": [...] (the OCI format)"));
            }
            _ => return Err(invalid(here, "unknown field")),
        }
    }
    let names =
        names.ok_or_else(|| invalid(format!("{field}.names"), "missing; it is required"))?;
    let action_name =
        action_name.ok_or_else(|| invalid(format!("{field}.action"), "missing; it is required"))?;
    let action = action(
        action_name,
        errno_ret,
        &format!("{field}.action"),
        &format!("{field}.errnoRet"),
    )?;
    Ok(SyscallRule {
        names,
        action,
        args,
    })
}

fn parse_arg(v: &Value, field: &str) -> Result<ArgCondition, SeccompProfileError> {
    let mut index = None;
    let mut value = None;
    let mut value_two = 0;
    let mut op = None;
    for (key, v) in object(v, field)? {
        let here = format!("{field}.{key}");
        match key.as_str() {
            "index" => {
                let n = number(v, &here)?;
                index = Some(
                    u8::try_from(n)
                        .ok()
                        .filter(|i| *i <= MAX_ARG_INDEX)
                        .ok_or_else(|| {
                            invalid(
                                &here,
                                format!("{n} is not an argument index (0 to {MAX_ARG_INDEX})"),
                            )
                        })?,
                );
            }
            "value" => value = Some(number(v, &here)?),
            "valueTwo" => value_two = number(v, &here)?,
            "op" => {
                let name = string(v, &here)?;
                op = Some(
                    ArgOp::ALL
                        .into_iter()
                        .find(|o| o.name() == name)
                        .ok_or_else(|| {
                            invalid(
                                &here,
                                format!(
                                    "{name:?} is not a comparison (use SCMP_CMP_EQ, SCMP_CMP_NE, \
                                     SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, SCMP_CMP_GE or \
                                     SCMP_CMP_MASKED_EQ)"
                                ),
                            )
                        })?,
                );
            }
            _ => return Err(invalid(here, "unknown field")),
        }
    }
    let missing = |name: &str| invalid(format!("{field}.{name}"), "missing; it is required");
    Ok(ArgCondition {
        index: index.ok_or_else(|| missing("index"))?,
        op: op.ok_or_else(|| missing("op"))?,
        value: value.ok_or_else(|| missing("value"))?,
        value_two,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SeccompProfile, SeccompProfileError> {
        SeccompProfile::from_json(text)
    }

    #[test]
    fn an_oci_profile_parses() {
        let p = parse(
            r#"{
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64"],
                "flags": [],
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28,
                     "includes": {}, "excludes": {}},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                               "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["getpid"], "action": "SCMP_ACT_KILL"},
                    {"names": ["uname"], "action": "SCMP_ACT_TRACE"}
                ]
            }"#,
        )
        .expect("parse");
        assert_eq!(p.default_action, SeccompAction::Errno(38));
        assert_eq!(p.architectures, ["SCMP_ARCH_X86_64"]);
        assert_eq!(p.syscalls.len(), 5);
        assert_eq!(p.syscalls[0].names, ["read", "write"]);
        assert_eq!(p.syscalls[0].action, SeccompAction::Allow);
        assert_eq!(p.syscalls[1].action, SeccompAction::Errno(28));
        assert_eq!(
            p.syscalls[2].args,
            [ArgCondition {
                index: 0,
                op: ArgOp::MaskedEq,
                value: 0x7E02_0000,
                value_two: 0
            }]
        );
        assert_eq!(p.syscalls[3].action, SeccompAction::KillThread);
        assert_eq!(p.syscalls[4].action, SeccompAction::Trace(DEFAULT_ERRNO));
    }

    #[test]
    fn errno_defaults_to_eperm_and_nulls_read_as_missing() {
        let p = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": null,
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": null}]}"#,
        )
        .expect("parse");
        assert_eq!(p.syscalls[0].action, SeccompAction::Errno(1));
        assert!(p.architectures.is_empty());
        let p = parse(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).expect("parse");
        assert!(p.syscalls.is_empty());
    }

    #[test]
    fn every_refusal_names_the_field() {
        for (text, field, needle) in [
            (r#"[]"#, "(the profile)", "an object"),
            (r#"{}"#, "defaultAction", "missing"),
            (
                r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
                "defaultAction",
                "not an action",
            ),
            (r#"{"defaultAction": 1}"#, "defaultAction", "a string"),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "bogus": 1}"#,
                "bogus",
                "unknown field",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}"#,
                "defaultErrnoRet",
                "returns no number",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}"#,
                "defaultErrnoRet",
                "highest errno",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}"#,
                "defaultErrnoRet",
                "whole number",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}"#,
                "defaultErrnoRet",
                "above 65535",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}"#,
                "flags",
                "without flags",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}"#,
                "listenerPath",
                "notify",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "archMap": []}"#,
                "archMap",
                "architectures",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
                "architectures[0]",
                "SCMP_ARCH_",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}"#,
                "syscalls",
                "a list",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].names",
                "missing",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": []," action": 1}]}"#,
                "syscalls[0]. action",
                "unknown field",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].names",
                "empty",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "Mk Dir"], "action": "SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].names[1]",
                "not a system call name",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"]}]}"#,
                "syscalls[0].action",
                "missing",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_NOTIFY"}]}"#,
                "syscalls[0].action",
                "notify agent",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_LOG", "errnoRet": 1}]}"#,
                "syscalls[0].errnoRet",
                "returns no number",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "x", "action": "SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].name",
                "names",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
                "syscalls[0].includes",
                "capabilities",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0].index",
                "0 to 5",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_APPROX"}]}]}"#,
                "syscalls[0].args[0].op",
                "not a comparison",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0].value",
                "missing",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1.5, "op": "SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0].value",
                "1.5",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "valueTwo": 2, "op": "SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0].valueTwo",
                "only SCMP_CMP_MASKED_EQ",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_NE"}, {"index": 0, "value": 2, "op": "SCMP_CMP_NE"}]}]}"#,
                "syscalls[0].args[1]",
                "second comparison",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ", "mask": 3}]}]}"#,
                "syscalls[0].args[0].mask",
                "unknown field",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.field(), Some(field), "{text}: {err}");
            let message = err.to_string();
            assert!(message.contains(field), "{message} should name {field}");
            assert!(message.contains(needle), "{message} should say {needle}");
        }
        assert!(matches!(parse("{"), Err(SeccompProfileError::Json(_))));
        let huge = format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "comment": "{}"}}"#,
            "x".repeat(MAX_PROFILE_BYTES)
        );
        assert!(
            parse(&huge)
                .expect_err("too big")
                .to_string()
                .contains("limit")
        );
    }

    #[test]
    fn a_profile_round_trips_through_json() {
        let p = SeccompProfile {
            default_action: SeccompAction::Errno(38),
            architectures: vec!["SCMP_ARCH_AARCH64".into()],
            syscalls: vec![
                SyscallRule {
                    names: vec!["mkdir".into(), "mkdirat".into()],
                    action: SeccompAction::Errno(28),
                    args: vec![],
                },
                SyscallRule {
                    names: vec!["personality".into()],
                    action: SeccompAction::Allow,
                    args: vec![
                        ArgCondition {
                            index: 0,
                            op: ArgOp::Ne,
                            value: u64::MAX,
                            value_two: 0,
                        },
                        ArgCondition {
                            index: 1,
                            op: ArgOp::MaskedEq,
                            value: 0xff,
                            value_two: 8,
                        },
                    ],
                },
                SyscallRule {
                    names: vec!["getpid".into()],
                    action: SeccompAction::KillThread,
                    args: vec![],
                },
            ],
        };
        let text = serde_json::to_string(&p).expect("serialize");
        assert_eq!(
            serde_json::from_str::<SeccompProfile>(&text).ok(),
            Some(p.clone())
        );
        assert_eq!(SeccompProfile::from_json(&text), Ok(p.clone()));
        for s in [Seccomp::Default, Seccomp::Unconfined, Seccomp::Profile(p)] {
            let text = serde_json::to_string(&s).expect("serialize");
            assert_eq!(serde_json::from_str::<Seccomp>(&text).ok(), Some(s));
        }
        assert_eq!(
            serde_json::to_string(&Seccomp::Unconfined).expect("serialize"),
            r#""unconfined""#
        );
    }

    #[test]
    fn a_profile_built_in_code_is_checked_too() {
        let mut p = SeccompProfile {
            default_action: SeccompAction::Errno(5000),
            architectures: vec![],
            syscalls: vec![],
        };
        assert_eq!(
            p.validate().expect_err("errno").field(),
            Some("defaultErrnoRet")
        );
        p.default_action = SeccompAction::Allow;
        p.syscalls.push(SyscallRule {
            names: vec!["mkdir".into()],
            action: SeccompAction::Errno(1),
            args: vec![ArgCondition {
                index: 9,
                op: ArgOp::Eq,
                value: 0,
                value_two: 0,
            }],
        });
        assert_eq!(
            Seccomp::Profile(p).validate().expect_err("index").field(),
            Some("syscalls[0].args[0].index")
        );
    }
}
