//! The v1 devices controller of a task that was given devices: everything denied, then the
//! nodes the driver puts in every task's /dev and the ones the task was given allowed.
//!
//! A task given no devices does not join the devices hierarchy: its devices cgroup is then the
//! supervisors' (which allows everything, as the root does), and what it can open is what its
//! /dev holds, since every other mount of its root is nodev.

use std::path::Path;

use execdriver_core::DeviceMapping;

use crate::cgroups::{CgroupError, fs};

/// What every task's /dev holds (null, zero, full, random, urandom, tty, ptmx and the
/// devpts ptys), as `devices.allow` rules.
const BASE_RULES: [&str; 8] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The `devices.allow` rules of a task given `devices`: the base ones, then one per device.
pub(super) fn rules(devices: &[DeviceMapping]) -> Result<Vec<String>, CgroupError> {
    let mut out: Vec<String> = BASE_RULES.iter().map(|r| (*r).to_owned()).collect();
    for d in devices {
        let (kind, major, minor) = d
            .host_device()
            .map_err(|e| CgroupError::InvalidResources(e.into()))?;
        out.push(format!("{kind} {major}:{minor} {}", d.permissions));
    }
    Ok(out)
}

/// Denies every device in the task's devices cgroup `dir`, then allows `rules`; checks that
/// `devices.list` shows no more than them (the kernel lists a rule's permissions in its own
/// order, so each is compared as a set).
pub(super) fn apply(dir: &Path, rules: &[String]) -> Result<(), CgroupError> {
    fs::write(&dir.join("devices.deny"), "a")?;
    for rule in rules {
        fs::write(&dir.join("devices.allow"), rule)?;
    }
    let list_path = dir.join("devices.list");
    let list = fs::read(&list_path)?;
    let key = |rule: &str| -> Option<(String, Vec<char>)> {
        let (head, perms) = rule.trim().rsplit_once(' ')?;
        let mut perms: Vec<char> = perms.chars().collect();
        perms.sort_unstable();
        Some((head.to_owned(), perms))
    };
    let wanted: Vec<_> = rules.iter().filter_map(|r| key(r)).collect();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let got = key(line);
        if !got.as_ref().is_some_and(|g| wanted.contains(g)) {
            return Err(CgroupError::LimitMismatch {
                path: list_path,
                wanted: rules.join("; "),
                actual: list.trim().to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_host_node() {
        let d = DeviceMapping::parse("/dev/null:/dev/mydev:r").unwrap();
        let r = rules(&[d]).unwrap();
        assert_eq!(r.last().map(String::as_str), Some("c 1:3 r"));
        assert_eq!(r.len(), BASE_RULES.len() + 1);
    }
}
