//! Where the cgroup hierarchies are mounted and which of them the driver uses.
//!
//! Read from /proc/self/mountinfo, with each mount's root (the hierarchy path visible at the
//! mountpoint, which differs from `/` in containers and after bind mounts) kept, so that a
//! path from `/proc/<pid>/cgroup` maps to the right directory.

use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupVersion, OPTIONAL_V1_CONTROLLERS, REQUIRED_CONTROLLERS};

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
    /// The key of this hierarchy's line in `/proc/<pid>/cgroup` (a controller on v1, "" on v2).
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

/// One hierarchy's directory of a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ControllerDir {
    /// The hierarchy it lies in.
    pub hierarchy: Hierarchy,
    /// The cgroup's path within the hierarchy (as in `/proc/<pid>/cgroup`).
    pub rel: String,
    /// Where that is in the filesystem.
    pub dir: PathBuf,
}

impl ControllerDir {
    /// The hierarchy's root cgroup (refused when the mount shows only a subtree).
    pub fn root_of(hierarchy: Hierarchy) -> Result<Self, CgroupError> {
        Ok(Self {
            dir: hierarchy.dir_of("/")?,
            rel: "/".to_owned(),
            hierarchy,
        })
    }

    /// The cgroup `rel` of `hierarchy`.
    pub fn at(hierarchy: Hierarchy, rel: &str) -> Result<Self, CgroupError> {
        Ok(Self {
            dir: hierarchy.dir_of(rel)?,
            rel: rel.to_owned(),
            hierarchy,
        })
    }

    /// Its child cgroup `name` (one checked component).
    pub fn child(&self, name: &str) -> Result<Self, CgroupError> {
        Self::at(self.hierarchy.clone(), &join_rel(&self.rel, name))
    }
}

/// `relative` below the hierarchy path `base`.
pub(super) fn join_rel(base: &str, relative: &str) -> String {
    format!("{}/{relative}", base.trim_end_matches('/'))
}

/// Whether the hierarchy path `path` is `rel` or lies below it.
pub(super) fn is_within(path: &str, rel: &str) -> bool {
    let base = rel.trim_end_matches('/');
    path == rel || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
}

/// Every mounted cgroup hierarchy, each once, whatever its controllers: on v1 one per
/// distinct set of superblock options (so a bind-mounted hierarchy counts once), `name=`
/// hierarchies such as `name=systemd` and a hybrid node's unified mount included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AnyHierarchy {
    /// Its key in `/proc/<pid>/cgroup`: the controllers and names joined by `,` as the kernel
    /// lists them, or "" for the unified hierarchy.
    pub key: String,
    /// The mount (the first one listed).
    pub mountpoint: PathBuf,
    /// The hierarchy path at the mountpoint.
    pub mount_root: String,
}

impl AnyHierarchy {
    /// As a [`Hierarchy`] serving none of the required controllers, for path mapping.
    pub fn as_hierarchy(&self) -> Hierarchy {
        Hierarchy {
            controllers: Vec::new(),
            mountpoint: self.mountpoint.clone(),
            mount_root: self.mount_root.clone(),
        }
    }
}

/// The hierarchies of [`AnyHierarchy`] among `mounts`.
pub(super) fn all_hierarchies(mounts: &[Mount]) -> Vec<AnyHierarchy> {
    let mut out: Vec<AnyHierarchy> = Vec::new();
    for m in mounts {
        let key = if m.fstype == "cgroup2" {
            String::new()
        } else {
            // The superblock options name the hierarchy: its controllers and `name=`; the
            // rest (rw, xattr, clone_children, release_agent=...) are flags.
            let names: Vec<&str> = m
                .super_opts
                .iter()
                .map(String::as_str)
                .filter(|o| !is_mount_flag(o))
                .collect();
            if names.is_empty() {
                continue;
            }
            names.join(",")
        };
        if out.iter().any(|h| h.key == key) {
            continue;
        }
        out.push(AnyHierarchy {
            key,
            mountpoint: m.mountpoint.clone(),
            mount_root: m.root.clone(),
        });
    }
    out
}

/// cgroup v1 superblock options that are flags, not controllers or names.
fn is_mount_flag(option: &str) -> bool {
    matches!(
        option,
        "rw" | "ro" | "xattr" | "noprefix" | "clone_children" | "cpuset_v2_mode" | "all" | "none"
    ) || option.starts_with("release_agent=")
        || option.starts_with("favordynmods")
}

/// The line of hierarchy `key` (as [`AnyHierarchy::key`]) in `/proc/<pid>/cgroup` text: the
/// same controllers and names in any order.
pub(super) fn proc_cgroup_path_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut wanted: Vec<&str> = key.split(',').filter(|k| !k.is_empty()).collect();
    wanted.sort_unstable();
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let mut keys: Vec<&str> = parts.next()?.split(',').filter(|k| !k.is_empty()).collect();
        keys.sort_unstable();
        let path = parts.next()?;
        (keys == wanted).then_some(path)
    })
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
    /// v1 only: the mounted hierarchies of [`OPTIONAL_V1_CONTROLLERS`] that serve no
    /// required controller, each with that one controller.
    pub optional: Vec<Hierarchy>,
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
            let optional = OPTIONAL_V1_CONTROLLERS
                .iter()
                .filter_map(|controller| {
                    let m = mounts.iter().find(|m| {
                        m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == controller)
                    })?;
                    // Co-mounted with a required controller: the task cgroup is there already.
                    (!hierarchies.iter().any(|h| h.mountpoint == m.mountpoint)).then(|| {
                        Hierarchy {
                            controllers: vec![*controller],
                            mountpoint: m.mountpoint.clone(),
                            mount_root: m.root.clone(),
                        }
                    })
                })
                .collect();
            return Some(Self {
                version: CgroupVersion::V1,
                hierarchies,
                missing,
                optional,
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
            optional: Vec::new(),
        })
    }

    /// The optional v1 hierarchy of `controller` (one of [`OPTIONAL_V1_CONTROLLERS`]).
    pub fn optional(&self, controller: &str) -> Option<&Hierarchy> {
        self.optional
            .iter()
            .find(|h| h.controllers.contains(&controller))
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

/// The path of hierarchy `key` (a v1 controller, or "" for v2) in `/proc/<pid>/cgroup` text.
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
    fn cpuset_is_an_optional_hierarchy_on_v1_and_none_on_v2() {
        let layout = Layout::from_mounts(&parse_mountinfo(HYBRID), |_| None).unwrap();
        let cpuset = layout.optional("cpuset").unwrap();
        assert_eq!(cpuset.mountpoint, Path::new("/sys/fs/cgroup/cpuset"));
        assert_eq!(cpuset.controllers, vec!["cpuset"]);
        assert!(layout.optional("devices").is_none());
        let v2 = "26 25 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let layout = Layout::from_mounts(&parse_mountinfo(v2), |_| {
            Some("cpuset cpu memory pids\n".into())
        })
        .unwrap();
        assert!(layout.optional.is_empty());
    }

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
    fn every_hierarchy_once_with_its_proc_key() {
        let text = format!(
            "{HYBRID}\
33 25 0:26 / /mnt/again rw - cgroup cgroup rw,cpu,cpuacct
34 25 0:31 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices,release_agent=/x,clone_children
"
        );
        let all = all_hierarchies(&parse_mountinfo(&text));
        let keys: Vec<&str> = all.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "",
                "name=systemd",
                "cpu,cpuacct",
                "memory",
                "pids",
                "freezer",
                "cpuset",
                "devices"
            ]
        );
        assert_eq!(all[2].mountpoint, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        let proc = "12:devices:/d\n4:cpuacct,cpu:/c\n1:name=systemd:/s\n0::/u\n";
        assert_eq!(proc_cgroup_path_of(proc, "cpu,cpuacct"), Some("/c"));
        assert_eq!(proc_cgroup_path_of(proc, "name=systemd"), Some("/s"));
        assert_eq!(proc_cgroup_path_of(proc, ""), Some("/u"));
        assert_eq!(proc_cgroup_path_of(proc, "cpu"), None);
        assert_eq!(proc_cgroup_path_of(proc, "pids"), None);
    }

    #[test]
    fn within_is_by_component() {
        assert!(is_within("/a/b", "/a/b"));
        assert!(is_within("/a/b/c", "/a/b"));
        assert!(!is_within("/a/bc", "/a/b"));
        assert!(is_within("/x", "/"));
        assert_eq!(join_rel("/", "x"), "/x");
        assert_eq!(join_rel("/a/b", "x"), "/a/b/x");
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
