//! Where the cgroup hierarchies are mounted and which of them the driver uses.
//!
//! cgroups-rs finds v1 mounts too, but ignores the mount's root (the hierarchy path visible at
//! the mountpoint, which differs from `/` in containers and after bind mounts), hardcodes
//! `/sys/fs/cgroup` for v2, and panics on a node without cgroups; so mountinfo is read here.

use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupVersion, REQUIRED_CONTROLLERS};

/// One cgroup mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    /// The hierarchy path visible at the mountpoint (mountinfo field 4).
    pub root: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Superblock options: the v1 controllers of the hierarchy.
    pub super_opts: Vec<String>,
}

/// One mounted hierarchy serving some of the required controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hierarchy {
    /// The required controllers it serves (on v2, every one present).
    pub controllers: Vec<&'static str>,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The hierarchy path visible at the mountpoint.
    pub mount_root: String,
}

impl Hierarchy {
    /// The key of this hierarchy's line in /proc/<pid>/cgroup (a controller on v1, "" on v2).
    pub fn proc_key(&self, version: CgroupVersion) -> &'static str {
        match version {
            CgroupVersion::V2 => "",
            CgroupVersion::V1 => self.controllers.first().copied().unwrap_or(""),
        }
    }

    /// The directory of hierarchy path `rel` (absolute within the hierarchy).
    pub fn dir_of(&self, rel: &str) -> Result<PathBuf, CgroupError> {
        check_hierarchy_path(rel)?;
        let root = self.mount_root.trim_end_matches('/');
        let rest = if root.is_empty() {
            Some(rel)
        } else if rel == root {
            Some("")
        } else {
            rel.strip_prefix(root).filter(|r| r.starts_with('/'))
        };
        match rest {
            Some(rest) => Ok(self.mountpoint.join(rest.trim_start_matches('/'))),
            None => Err(CgroupError::NotVisible {
                rel: rel.to_owned(),
                mountpoint: self.mountpoint.clone(),
                mount_root: self.mount_root.clone(),
            }),
        }
    }
}

/// The hierarchies the driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// One entry per distinct mount (v2: exactly one).
    pub hierarchies: Vec<Hierarchy>,
    /// Required controllers that no hierarchy serves.
    pub missing: Vec<String>,
}

impl Layout {
    /// Reads /proc/self/mountinfo; `None` when no cgroup filesystem is mounted.
    pub fn detect() -> Result<Option<Self>, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = super::fs::read(path)?;
        let mounts = parse_mountinfo(&text);
        Ok(Self::from_mounts(&mounts, |dir| {
            std::fs::read_to_string(dir.join("cgroup.controllers")).ok()
        }))
    }

    /// Like [`Layout::detect`], but a node without every required controller is an error.
    pub fn detect_complete() -> Result<Self, CgroupError> {
        let layout = Self::detect()?.ok_or(CgroupError::NotMounted)?;
        if layout.missing.is_empty() {
            Ok(layout)
        } else {
            Err(CgroupError::MissingControllers(layout.missing.clone()))
        }
    }

    /// v1 when any required controller has a v1 hierarchy (hybrid nodes included), else v2.
    /// `controllers_of` reads a v2 mount's `cgroup.controllers`.
    pub fn from_mounts(
        mounts: &[Mount],
        controllers_of: impl Fn(&Path) -> Option<String>,
    ) -> Option<Self> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        let mut missing = Vec::new();
        for controller in REQUIRED_CONTROLLERS {
            let found = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == controller));
            match found {
                Some(m) => match hierarchies
                    .iter_mut()
                    .find(|h| h.mountpoint == m.mountpoint)
                {
                    Some(h) => h.controllers.push(controller),
                    None => hierarchies.push(Hierarchy {
                        controllers: vec![controller],
                        mountpoint: m.mountpoint.clone(),
                        mount_root: m.root.clone(),
                    }),
                },
                None => missing.push(controller.to_owned()),
            }
        }
        if !hierarchies.is_empty() {
            return Some(Self {
                version: CgroupVersion::V1,
                hierarchies,
                missing,
            });
        }
        let v2 = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .min_by_key(|m| m.mountpoint != Path::new("/sys/fs/cgroup"))?;
        let available = controllers_of(&v2.mountpoint).unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        let mut controllers = Vec::new();
        let mut missing = Vec::new();
        for controller in REQUIRED_CONTROLLERS {
            // cpu accounting (cpu.stat) and the freezer (cgroup.freeze) are core v2 features.
            let present =
                matches!(controller, "cpuacct" | "freezer") || available.contains(&controller);
            if present {
                controllers.push(controller);
            } else {
                missing.push(controller.to_owned());
            }
        }
        Some(Self {
            version: CgroupVersion::V2,
            hierarchies: vec![Hierarchy {
                controllers,
                mountpoint: v2.mountpoint.clone(),
                mount_root: v2.root.clone(),
            }],
            missing,
        })
    }

    /// Where the hierarchies are mounted: the v2 mount, or the common parent of the v1 mounts.
    pub fn mountpoint(&self) -> PathBuf {
        let mut points = self.hierarchies.iter().map(|h| h.mountpoint.as_path());
        let Some(first) = points.next() else {
            return PathBuf::from("/sys/fs/cgroup");
        };
        if self.version == CgroupVersion::V2 {
            return first.to_owned();
        }
        let mut common = first.parent().unwrap_or(first).to_owned();
        for p in points {
            while !p.starts_with(&common) {
                match common.parent() {
                    Some(up) => common = up.to_owned(),
                    None => break,
                }
            }
        }
        common
    }
}

/// Checks a path inside a hierarchy: absolute, no empty, `.` or `..` components, no NUL.
pub(super) fn check_hierarchy_path(rel: &str) -> Result<(), CgroupError> {
    let bad = |reason: &'static str| CgroupError::InvalidParent {
        path: rel.to_owned(),
        reason,
    };
    let Some(inner) = rel.strip_prefix('/') else {
        return Err(bad("a hierarchy path must start with /"));
    };
    if rel.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if inner.is_empty() {
        return Ok(());
    }
    for component in inner.split('/') {
        match component {
            "" => return Err(bad("has an empty component")),
            "." | ".." => return Err(bad("has a . or .. component")),
            _ => {}
        }
    }
    Ok(())
}

/// The cgroup mounts listed in mountinfo text (other lines are skipped).
pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    crate::mountinfo::parse(text)
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| Mount {
            root: m.root,
            mountpoint: m.mountpoint,
            fstype: m.fstype,
            super_opts: m.super_opts,
        })
        .collect()
}

/// The path of hierarchy `key` (a v1 controller, or "" for v2) in /proc/<pid>/cgroup text.
pub(super) fn proc_cgroup_path<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let keys = parts.next()?;
        let path = parts.next()?;
        let matches = if key.is_empty() {
            keys.is_empty()
        } else {
            keys.split(',').any(|k| k == key)
        };
        matches.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
30 25 0:28 / /sys/fs/cgroup/pids rw shared:14 - cgroup cgroup rw,pids
31 25 0:29 / /sys/fs/cgroup/freezer rw shared:15 - cgroup cgroup rw,freezer
32 25 0:30 / /sys/fs/cgroup/cpuset rw shared:16 - cgroup cgroup rw,cpuset
";

    #[test]
    fn hybrid_is_v1_with_comounted_cpu() {
        let layout = Layout::from_mounts(&parse_mountinfo(HYBRID), |_| None).unwrap();
        assert_eq!(layout.version, CgroupVersion::V1);
        assert!(layout.missing.is_empty());
        assert_eq!(layout.hierarchies.len(), 4);
        let cpu = &layout
            .hierarchies
            .iter()
            .find(|h| h.controllers.contains(&"cpu"))
            .unwrap();
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.mountpoint, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(
            layout
                .hierarchies
                .iter()
                .all(|h| !h.mountpoint.ends_with("cpuset") && !h.mountpoint.ends_with("systemd"))
        );
        assert_eq!(layout.mountpoint(), Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn v1_reports_missing_controllers() {
        let text = "29 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let layout = Layout::from_mounts(&parse_mountinfo(text), |_| None).unwrap();
        assert_eq!(layout.missing, vec!["cpu", "cpuacct", "pids", "freezer"]);
    }

    #[test]
    fn unified_reads_controllers() {
        let text = "26 25 0:24 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = Layout::from_mounts(&parse_mountinfo(text), |_| {
            Some("cpuset cpu io memory\n".into())
        })
        .unwrap();
        assert_eq!(layout.version, CgroupVersion::V2);
        assert_eq!(layout.missing, vec!["pids"]);
        assert_eq!(layout.mountpoint(), Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn no_cgroup_mounts_is_none() {
        let text = "25 30 0:23 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n";
        assert!(Layout::from_mounts(&parse_mountinfo(text), |_| None).is_none());
    }

    #[test]
    fn mountinfo_unescapes_and_keeps_root() {
        let text = "40 25 0:27 /lxc/c1 /mnt/my\\040cg rw - cgroup cgroup rw,memory\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts[0].mountpoint, Path::new("/mnt/my cg"));
        assert_eq!(mounts[0].root, "/lxc/c1");
    }

    #[test]
    fn dir_of_respects_mount_root() {
        let h = Hierarchy {
            controllers: vec!["memory"],
            mountpoint: PathBuf::from("/sys/fs/cgroup/memory"),
            mount_root: "/lxc/c1".into(),
        };
        assert_eq!(
            h.dir_of("/lxc/c1").unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            h.dir_of("/lxc/c1/a/b").unwrap(),
            Path::new("/sys/fs/cgroup/memory/a/b")
        );
        assert!(h.dir_of("/lxc/c10").is_err());
        assert!(h.dir_of("/other").is_err());
        let root = Hierarchy {
            mount_root: "/".into(),
            ..h
        };
        assert_eq!(
            root.dir_of("/").unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            root.dir_of("/a").unwrap(),
            Path::new("/sys/fs/cgroup/memory/a")
        );
        assert!(root.dir_of("/a/../b").is_err());
        assert!(root.dir_of("a").is_err());
        assert!(root.dir_of("/a//b").is_err());
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/v2path\n";
        assert_eq!(proc_cgroup_path(text, "memory"), Some("/process_api/abc"));
        assert_eq!(proc_cgroup_path(text, "cpuacct"), Some("/x"));
        assert_eq!(proc_cgroup_path(text, ""), Some("/v2path"));
        assert_eq!(proc_cgroup_path(text, "pids"), None);
    }
}
