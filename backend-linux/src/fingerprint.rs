//! Whether this node can run tasks: root, cgroups and controllers, kernel.
//!
//! `driver.exec = "1"` only when every check holds; otherwise the fingerprint is unhealthy
//! and its reason lists every check that failed, so an operator fixes them all in one go.

use std::collections::BTreeMap;

use execdriver_core::Fingerprint;

use crate::cgroups::{self, CgroupParent, CgroupProbe, CgroupVersion, DefaultParent};

/// The node's fingerprint, from the running process's point of view, for tasks created under
/// `cgroup_parent` (as in `LinuxConfig::cgroup_parent`: `None` is the default, the caller's
/// own cgroup or the slice `slice_name`). Says which parent is used and why. Nothing is
/// created or changed on the node.
pub(crate) fn fingerprint(cgroup_parent: Option<&str>, slice_name: &str) -> Fingerprint {
    let euid = nix::unistd::geteuid().as_raw();
    let kernel = nix::sys::utsname::uname()
        .ok()
        .map(|u| u.release().to_string_lossy().into_owned());
    let probe = cgroups::probe();
    let mut placement = None;
    // Without a usable hierarchy the probe's own problem says it all.
    let parent = if probe.version.is_some() && probe.missing.is_empty() {
        match cgroup_parent {
            Some(relative) => {
                placement = Some((relative.to_owned(), "configured".to_owned()));
                CgroupParent::check_would_host(Some(relative)).map_err(|e| e.to_string())
            }
            None => match cgroups::detect_default_parent(slice_name) {
                Ok(decision) => {
                    let check = match &decision.parent {
                        DefaultParent::OwnCgroup => CgroupParent::check_would_host(None),
                        DefaultParent::Slice { name } => cgroups::slice_dir_name(name)
                            .and_then(|dir| CgroupParent::check_would_host(Some(&dir))),
                    };
                    let at = match &decision.parent {
                        DefaultParent::OwnCgroup => "the caller's own cgroup".to_owned(),
                        DefaultParent::Slice { name } => format!("/{name}.slice"),
                    };
                    placement = Some((at, decision.reason));
                    check.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            },
        }
    } else {
        Ok(())
    };
    let floor = crate::process::check_kernel_floor();
    let mut fp = assess(
        euid,
        &probe,
        kernel.as_deref(),
        floor.as_ref().map(|_| ()).map_err(String::as_str),
        parent.as_ref().map(|_| ()).map_err(String::as_str),
    );
    if let Some((at, why)) = placement {
        fp.attributes
            .insert("driver.execdriver.cgroup_parent".to_owned(), at);
        fp.attributes
            .insert("driver.execdriver.cgroup_parent_reason".to_owned(), why);
    }
    fp.attributes.insert(
        "driver.execdriver.supervisors_cgroup".to_owned(),
        format!("/{slice_name}.slice/{}", cgroups::SUPERVISORS_CGROUP),
    );
    fp
}

/// The pure part: what the observations mean. `floor` is the outcome of the kernel's
/// feature probe (pidfd_open, waitid P_PIDFD); `parent` the outcome of the check that task
/// cgroups can be created under the configured cgroup parent.
pub(crate) fn assess(
    euid: u32,
    probe: &CgroupProbe,
    kernel: Option<&str>,
    floor: Result<(), &str>,
    parent: Result<(), &str>,
) -> Fingerprint {
    let mut attributes = BTreeMap::new();
    let mut problems = Vec::new();
    if euid != 0 {
        problems.push(format!("must run as root (euid is {euid})"));
    }
    if let Err(e) = floor {
        problems.push(format!("kernel too old: {e}"));
    }
    if let Err(e) = parent {
        problems.push(format!("cgroup parent unusable: {e}"));
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
        let fp = assess(
            0,
            &probe(Some(CgroupVersion::V2), &[]),
            Some("6.1.0"),
            Ok(()),
            Ok(()),
        );
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
        let fp = assess(
            1000,
            &probe(Some(CgroupVersion::V1), &["pids"]),
            None,
            Err("the kernel has no pidfd_open (Linux 5.3 or later is needed)"),
            Ok(()),
        );
        assert!(!fp.healthy);
        assert!(!fp.attributes.contains_key("driver.exec"));
        let reason = fp.reason.unwrap_or_default();
        assert!(reason.contains("pidfd_open"), "{reason}");
        assert!(reason.contains("root"), "{reason}");
        assert!(reason.contains("pids"), "{reason}");
        assert!(reason.contains("kernel"), "{reason}");
        let fp = assess(0, &probe(None, &[]), Some("6.1.0"), Ok(()), Ok(()));
        assert!(!fp.healthy);
        assert!(fp.reason.unwrap_or_default().contains("no cgroup"));
    }

    #[test]
    fn an_unusable_parent_is_unhealthy_and_named() {
        let fp = assess(
            0,
            &probe(Some(CgroupVersion::V2), &[]),
            Some("6.1.0"),
            Ok(()),
            Err("cgroup /sys/fs/cgroup/x cannot hold task cgroups: it holds processes"),
        );
        assert!(!fp.healthy);
        assert!(!fp.attributes.contains_key("driver.exec"));
        let reason = fp.reason.unwrap_or_default();
        assert!(reason.contains("cgroup parent"), "{reason}");
        assert!(reason.contains("/sys/fs/cgroup/x"), "{reason}");
    }

    /// On this (v1 or root-of-v2) node the real fingerprint, with the default parent and with a
    /// configured one that does not exist, is healthy, and checking creates nothing.
    #[test]
    fn real_node_is_healthy_and_untouched() {
        if !crate::testing::require_root("real_node_is_healthy_and_untouched", "reads as root") {
            return;
        }
        assert_eq!(crate::process::check_kernel_floor(), Ok(()));
        let fp = fingerprint(None, cgroups::DEFAULT_SLICE_NAME);
        assert!(fp.healthy, "{:?}", fp.reason);
        assert_eq!(
            fp.attributes.get("driver.exec").map(String::as_str),
            Some("1")
        );
        let name = format!("execdriver-fp-{}", std::process::id());
        let fp = fingerprint(Some(&format!("{name}/inner")), cgroups::DEFAULT_SLICE_NAME);
        assert!(fp.healthy, "{:?}", fp.reason);
        // The hierarchies sit at the mountpoint (v2) or one level below it (v1).
        let base = cgroups::probe().mountpoint;
        let mut candidates = vec![base.join(&name)];
        for entry in std::fs::read_dir(&base).unwrap().flatten() {
            candidates.push(entry.path().join(&name));
        }
        let leftovers: Vec<_> = candidates.into_iter().filter(|p| p.exists()).collect();
        assert!(leftovers.is_empty(), "fingerprint created {leftovers:?}");
        let fp = fingerprint(Some("../escape"), cgroups::DEFAULT_SLICE_NAME);
        assert!(!fp.healthy);
        assert!(fp.reason.unwrap_or_default().contains("cgroup parent"));
    }
}
