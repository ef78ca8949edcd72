//! Whether this node can run tasks: root, cgroups and controllers, kernel.
//!
//! `driver.exec = "1"` only when every check holds; otherwise the fingerprint is unhealthy
//! and its reason lists every check that failed, so an operator fixes them all in one go.

use std::collections::BTreeMap;

use execdriver_core::Fingerprint;

use crate::cgroups::{self, CgroupProbe, CgroupVersion};

/// The node's fingerprint, from the running process's point of view.
pub fn fingerprint() -> Fingerprint {
    let euid = nix::unistd::geteuid().as_raw();
    let kernel = nix::sys::utsname::uname()
        .ok()
        .map(|u| u.release().to_string_lossy().into_owned());
    assess(euid, &cgroups::probe(), kernel.as_deref())
}

/// The pure part: what the observations mean.
pub fn assess(euid: u32, probe: &CgroupProbe, kernel: Option<&str>) -> Fingerprint {
    let mut attributes = BTreeMap::new();
    let mut problems = Vec::new();
    if euid != 0 {
        problems.push(format!("must run as root (euid is {euid})"));
    }
    match probe.version {
        Some(version) => {
            let v = match version {
                CgroupVersion::V1 => "v1",
                CgroupVersion::V2 => "v2",
            };
            attributes.insert("unique.cgroup.version".to_owned(), v.to_owned());
            attributes.insert(
                "unique.cgroup.mountpoint".to_owned(),
                probe.mountpoint.display().to_string(),
            );
            if !probe.missing.is_empty() {
                problems.push(format!(
                    "cgroup controllers missing: {}",
                    probe.missing.join(", ")
                ));
            }
        }
        None => problems.push(format!(
            "no cgroup filesystem is mounted at {}",
            probe.mountpoint.display()
        )),
    }
    match kernel {
        Some(release) => {
            attributes.insert("kernel.name".to_owned(), "linux".to_owned());
            attributes.insert("kernel.version".to_owned(), release.to_owned());
        }
        None => problems.push("cannot read the kernel release (uname failed)".to_owned()),
    }
    let healthy = problems.is_empty();
    if healthy {
        attributes.insert("driver.exec".to_owned(), "1".to_owned());
    }
    Fingerprint {
        healthy,
        attributes,
        reason: (!healthy).then(|| problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn probe(version: Option<CgroupVersion>, missing: &[&str]) -> CgroupProbe {
        CgroupProbe {
            version,
            mountpoint: PathBuf::from("/sys/fs/cgroup"),
            missing: missing.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn healthy_only_when_everything_holds() {
        let fp = assess(0, &probe(Some(CgroupVersion::V2), &[]), Some("6.1.0"));
        assert!(fp.healthy);
        assert_eq!(fp.reason, None);
        assert_eq!(
            fp.attributes.get("driver.exec").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            fp.attributes
                .get("unique.cgroup.version")
                .map(String::as_str),
            Some("v2")
        );
        assert_eq!(
            fp.attributes.get("kernel.version").map(String::as_str),
            Some("6.1.0")
        );
    }

    #[test]
    fn every_failed_check_is_named() {
        let fp = assess(1000, &probe(Some(CgroupVersion::V1), &["pids"]), None);
        assert!(!fp.healthy);
        assert!(!fp.attributes.contains_key("driver.exec"));
        let reason = fp.reason.unwrap_or_default();
        assert!(reason.contains("root"), "{reason}");
        assert!(reason.contains("pids"), "{reason}");
        assert!(reason.contains("kernel"), "{reason}");
        let fp = assess(0, &probe(None, &[]), Some("6.1.0"));
        assert!(!fp.healthy);
        assert!(fp.reason.unwrap_or_default().contains("no cgroup"));
    }
}
