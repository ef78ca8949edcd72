//! Where task cgroups go when no parent is configured: the caller's own cgroup where it can
//! host them, else the driver's own top-level slice (as Nomad 1.7+ does with `nomad.slice`),
//! with a reason for the fingerprint.
//!
//! The decision ([`decide_default_parent`]) is a pure function of what the caller's cgroup is
//! like ([`CallerCgroup`]); [`detect_default_parent`] reads that from the node.

use std::path::{Path, PathBuf};

use super::hierarchy::{Layout, proc_cgroup_path};
use super::v2::delegation::V2_DELEGATED;
use super::{CgroupError, CgroupParent, CgroupVersion, fs, validate_name};

/// The default name of the driver's top-level slice: `/execdriver.slice`.
pub const DEFAULT_SLICE_NAME: &str = "execdriver";

/// The directory name of the slice called `name`: `<name>.slice`. `name` must be one plain
/// cgroup name ([`validate_name`]) short enough to keep the suffix.
pub fn slice_dir_name(name: &str) -> Result<String, CgroupError> {
    validate_name(name)?;
    let dir = format!("{name}.slice");
    validate_name(&dir)?;
    Ok(dir)
}

/// What the caller's own v2 cgroup is like, as far as hosting task cgroups goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroupFacts {
    /// Its directory.
    pub path: PathBuf,
    /// Whether it is the hierarchy's root, which the no-internal-processes rule exempts.
    pub is_root: bool,
    /// How many processes it holds itself (the caller among them, normally).
    pub processes: usize,
    /// The controllers its `cgroup.subtree_control` hands to children.
    pub delegated: Vec<String>,
    /// The controllers its `cgroup.controllers` offers (that it could hand on).
    pub offered: Vec<String>,
}

impl OwnCgroupFacts {
    /// Reads them from the v2 cgroup at `dir`. The root is recognised by having no
    /// `cgroup.events` (the kernel gives that file to every cgroup but the root; inside a
    /// cgroup namespace `/` is not the root and the rule binds).
    pub fn read(dir: &Path) -> Result<Self, CgroupError> {
        let words = |file: &str| -> Result<Vec<String>, CgroupError> {
            Ok(fs::read(&dir.join(file))?
                .split_whitespace()
                .map(str::to_owned)
                .collect())
        };
        Ok(Self {
            path: dir.to_owned(),
            is_root: !dir.join("cgroup.events").exists(),
            processes: words("cgroup.procs")?.len(),
            delegated: words("cgroup.subtree_control")?,
            offered: words("cgroup.controllers")?,
        })
    }
}

/// The caller's cgroup, by version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerCgroup {
    /// cgroup v1: any cgroup may have children, whatever it holds.
    V1,
    /// cgroup v2, with what the caller's own cgroup is like.
    V2(OwnCgroupFacts),
}

/// The parent the driver uses by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultParent {
    /// The caller's own cgroup in each hierarchy ([`CgroupParent::own`]).
    OwnCgroup,
    /// The driver's own top-level slice ([`CgroupParent::slice`]).
    Slice {
        /// The slice's name, without `.slice`.
        name: String,
    },
}

/// A default parent and why, for the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentDecision {
    /// The parent.
    pub parent: DefaultParent,
    /// Why, in a sentence.
    pub reason: String,
}

impl ParentDecision {
    /// The parent itself: the caller's own cgroup, or the slice (created if missing).
    pub fn resolve(&self) -> Result<CgroupParent, CgroupError> {
        match &self.parent {
            DefaultParent::OwnCgroup => CgroupParent::own(),
            DefaultParent::Slice { name } => CgroupParent::slice(name),
        }
    }
}

/// Decides the default parent: on v1 the caller's own cgroup (v1 lets any cgroup have
/// children); on v2 the caller's own cgroup if it is the root, already delegates cpu, memory
/// and pids, or holds no process and offers them; otherwise the slice `slice_name`.
pub fn decide_default_parent(caller: &CallerCgroup, slice_name: &str) -> ParentDecision {
    let own = |reason: String| ParentDecision {
        parent: DefaultParent::OwnCgroup,
        reason,
    };
    let facts = match caller {
        CallerCgroup::V1 => {
            return own(
                "cgroup v1: task cgroups go under the caller's own cgroup in each hierarchy \
                 (v1 lets a cgroup with processes have children)"
                    .into(),
            );
        }
        CallerCgroup::V2(facts) => facts,
    };
    let path = facts.path.display();
    if facts.is_root {
        return own(format!(
            "cgroup v2: the caller is in the root cgroup {path}, which may hold processes and \
             delegate controllers"
        ));
    }
    let has = |list: &[String], c: &str| list.iter().any(|x| x == c);
    let undelegated: Vec<&str> = V2_DELEGATED
        .into_iter()
        .filter(|c| !has(&facts.delegated, c))
        .collect();
    if undelegated.is_empty() {
        return own(format!(
            "cgroup v2: the caller's cgroup {path} delegates cpu, memory and pids"
        ));
    }
    let slice = |why: String| ParentDecision {
        parent: DefaultParent::Slice {
            name: slice_name.to_owned(),
        },
        reason: format!("cgroup v2: {why}, so task cgroups go under /{slice_name}.slice"),
    };
    if facts.processes > 0 {
        return slice(format!(
            "the caller's cgroup {path} holds {} process{} and does not delegate {} (a v2 \
             cgroup with processes cannot)",
            facts.processes,
            if facts.processes == 1 { "" } else { "es" },
            undelegated.join(", ")
        ));
    }
    let unoffered: Vec<&str> = undelegated
        .iter()
        .copied()
        .filter(|c| !has(&facts.offered, c))
        .collect();
    if unoffered.is_empty() {
        own(format!(
            "cgroup v2: the caller's cgroup {path} holds no process and offers cpu, memory \
             and pids"
        ))
    } else {
        slice(format!(
            "the caller's cgroup {path} is not offered {}",
            unoffered.join(", ")
        ))
    }
}

/// [`decide_default_parent`] for this process on this node.
pub fn detect_default_parent(slice_name: &str) -> Result<ParentDecision, CgroupError> {
    slice_dir_name(slice_name)?;
    let layout = Layout::detect_complete()?;
    let caller = match layout.version {
        CgroupVersion::V1 => CallerCgroup::V1,
        CgroupVersion::V2 => {
            let hierarchy = layout
                .hierarchies
                .into_iter()
                .next()
                .ok_or(CgroupError::NotMounted)?;
            let text = fs::read(Path::new("/proc/self/cgroup"))?;
            let rel = proc_cgroup_path(&text, "").ok_or_else(|| CgroupError::NoOwnCgroup {
                controller: String::new(),
            })?;
            CallerCgroup::V2(OwnCgroupFacts::read(&hierarchy.dir_of(rel)?)?)
        }
    };
    Ok(decide_default_parent(&caller, slice_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(is_root: bool, processes: usize, delegated: &str, offered: &str) -> CallerCgroup {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect();
        CallerCgroup::V2(OwnCgroupFacts {
            path: PathBuf::from("/sys/fs/cgroup/system.slice/agent.service"),
            is_root,
            processes,
            delegated: words(delegated),
            offered: words(offered),
        })
    }

    fn slice() -> DefaultParent {
        DefaultParent::Slice {
            name: "execdriver".into(),
        }
    }

    #[test]
    fn v1_always_uses_its_own_cgroup() {
        let d = decide_default_parent(&CallerCgroup::V1, DEFAULT_SLICE_NAME);
        assert_eq!(d.parent, DefaultParent::OwnCgroup);
        assert!(d.reason.contains("v1"), "{}", d.reason);
    }

    #[test]
    fn v2_decisions() {
        let all = "cpuset cpu io memory pids";
        let cases = [
            // The root may hold processes and delegate.
            (
                facts(true, 40, "", all),
                DefaultParent::OwnCgroup,
                "root cgroup",
            ),
            (
                facts(false, 0, "cpu memory pids", all),
                DefaultParent::OwnCgroup,
                "delegates",
            ),
            (
                facts(false, 0, "", all),
                DefaultParent::OwnCgroup,
                "holds no process",
            ),
            // A systemd service: it holds the agent.
            (
                facts(false, 1, "", all),
                slice(),
                "holds 1 process and does not delegate cpu, memory, pids",
            ),
            (
                facts(false, 3, "memory", all),
                slice(),
                "holds 3 processes and does not delegate cpu, pids",
            ),
            (
                facts(false, 0, "", "cpu io"),
                slice(),
                "not offered memory, pids",
            ),
        ];
        for (caller, want, needle) in cases {
            let d = decide_default_parent(&caller, DEFAULT_SLICE_NAME);
            assert_eq!(d.parent, want, "{caller:?}: {}", d.reason);
            assert!(d.reason.contains(needle), "{needle:?} not in {}", d.reason);
            if want != DefaultParent::OwnCgroup {
                assert!(d.reason.contains("/execdriver.slice"), "{}", d.reason);
                assert!(d.reason.contains("agent.service"), "{}", d.reason);
            }
        }
        let d = decide_default_parent(&facts(false, 1, "", all), "mydriver");
        assert_eq!(
            d.parent,
            DefaultParent::Slice {
                name: "mydriver".into()
            }
        );
        assert!(d.reason.contains("/mydriver.slice"), "{}", d.reason);
    }

    #[test]
    fn facts_from_a_fixture_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("cgroup.procs"), "812\n813\n").unwrap();
        std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(d.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let f = OwnCgroupFacts::read(d).unwrap();
        assert!(!f.is_root);
        assert_eq!(f.processes, 2);
        assert!(f.delegated.is_empty());
        assert_eq!(f.offered, ["cpu", "io", "memory", "pids"]);
        let decision = decide_default_parent(&CallerCgroup::V2(f), DEFAULT_SLICE_NAME);
        assert_eq!(decision.parent, slice());
        std::fs::remove_file(d.join("cgroup.events")).unwrap();
        assert!(OwnCgroupFacts::read(d).unwrap().is_root);
        let err = OwnCgroupFacts::read(&d.join("gone")).unwrap_err();
        assert!(matches!(err, CgroupError::Read { .. }), "{err}");
    }

    #[test]
    fn slice_names() {
        assert_eq!(slice_dir_name("execdriver").unwrap(), "execdriver.slice");
        assert_eq!(slice_dir_name("a-b_c").unwrap(), "a-b_c.slice");
        for bad in ["", "a/b", "..", ".x", "sp ace", &"a".repeat(250)] {
            assert!(slice_dir_name(bad).is_err(), "{bad:?}");
        }
        assert!(detect_default_parent("a/b").is_err());
    }

    #[test]
    fn this_node_has_a_decision() {
        let probe = super::super::probe();
        if probe.version.is_none() || !probe.missing.is_empty() {
            assert!(detect_default_parent(DEFAULT_SLICE_NAME).is_err());
            return;
        }
        let d = detect_default_parent(DEFAULT_SLICE_NAME).unwrap();
        println!("default parent here: {d:?}");
        if probe.version == Some(CgroupVersion::V1) {
            assert_eq!(d.parent, DefaultParent::OwnCgroup);
        }
    }
}
