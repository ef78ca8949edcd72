//! Whether a v2 cgroup can hand cpu, memory and pids to task cgroups below it, and handing
//! them over (`cgroup.subtree_control`). A v2 cgroup other than the root cannot both hold
//! processes and delegate controllers (the no-internal-processes rule), which is what makes a
//! systemd service's own cgroup unusable as a parent.

use std::path::Path;

use crate::cgroups::{CgroupError, fs};

/// The v2 controllers that must be enabled in the parent's cgroup.subtree_control.
pub(in crate::cgroups) const V2_DELEGATED: [&str; 3] = ["cpu", "memory", "pids"];

/// [`check_v2_host`] on `root` and on each existing directory of the checked `relative` path
/// below it, stopping at the first one still to be made.
pub(in crate::cgroups) fn check_v2_path(root: &Path, relative: &str) -> Result<(), CgroupError> {
    check_v2_host(root)?;
    let mut cur = root.to_owned();
    for component in relative.split('/') {
        cur.push(component);
        if !std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
            break;
        }
        check_v2_host(&cur)?;
    }
    Ok(())
}

/// Whether the v2 cgroup at `dir` can hand cpu, memory and pids to children it gets.
///
/// It can when its `cgroup.subtree_control` lists them already; when it is the hierarchy's
/// real root (which is exempt from the no-internal-processes rule); or when it holds no
/// processes and its `cgroup.controllers` offers them, so that they can be enabled. The
/// root is recognised by having no `cgroup.events` (the kernel gives that file to every cgroup
/// but the root), not by a path of `/`: inside a cgroup namespace `/` is the namespace's root,
/// which the rule does bind.
pub(in crate::cgroups) fn check_v2_host(dir: &Path) -> Result<(), CgroupError> {
    let enabled = fs::read(&dir.join("cgroup.subtree_control"))?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = V2_DELEGATED
        .into_iter()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() || !dir.join("cgroup.events").exists() {
        return Ok(());
    }
    let cannot = |reason: String| CgroupError::CannotHostTasks {
        path: dir.to_owned(),
        reason,
    };
    let procs_path = dir.join("cgroup.procs");
    let procs = fs::read(&procs_path)?;
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if !pids.is_empty() {
        let shown = pids.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        let more = if pids.len() > 5 { ", ..." } else { "" };
        return Err(cannot(format!(
            "it holds processes ({shown}{more}) and does not delegate {} to children (a v2 \
             cgroup with processes cannot)",
            missing.join(", ")
        )));
    }
    let offered = fs::read(&dir.join("cgroup.controllers"))?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    let unavailable: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|c| !offered.contains(c))
        .collect();
    if unavailable.is_empty() {
        Ok(())
    } else {
        Err(cannot(format!(
            "its cgroup.controllers does not offer {}",
            unavailable.join(", ")
        )))
    }
}

/// Makes sure a v2 cgroup hands cpu, memory and pids to its children.
pub(in crate::cgroups) fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    enable(dir, &V2_DELEGATED)
}

/// Makes sure a v2 cgroup hands `controller` to its children (cpuset, only for a task that
/// asks for one: enabling it is not free, and the common start path does without).
pub(in crate::cgroups) fn enable_controller(
    dir: &Path,
    controller: &'static str,
) -> Result<(), CgroupError> {
    enable(dir, &[controller])
}

fn enable(dir: &Path, controllers: &[&'static str]) -> Result<(), CgroupError> {
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&subtree)?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let wanted: Vec<&str> = controllers
        .iter()
        .copied()
        .filter(|c| !enabled.contains(c))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let offered_path = dir.join("cgroup.controllers");
    let offered = fs::read(&offered_path)?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    if let Some(c) = wanted.iter().find(|c| !offered.contains(c)) {
        return Err(CgroupError::ControllerUnavailable {
            controller: (*c).to_owned(),
            path: offered_path,
        });
    }
    let value = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(&subtree, &value).map_err(|e| match e {
        CgroupError::Write { path, source, .. } => CgroupError::Delegate {
            path,
            controllers: value.clone(),
            source,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v2 cgroup directory: `events` false makes it look like the hierarchy root.
    fn fake_v2(subtree: &str, procs: &str, offered: &str, events: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |f: &str, v: &str| std::fs::write(dir.path().join(f), v).unwrap();
        write("cgroup.subtree_control", subtree);
        write("cgroup.procs", procs);
        write("cgroup.controllers", offered);
        if events {
            write("cgroup.events", "populated 1\nfrozen 0\n");
        }
        dir
    }

    #[test]
    fn v2_host_that_already_delegates_is_fine() {
        let d = fake_v2(
            "cpuset cpu memory pids\n",
            "42\n",
            "cpuset cpu memory pids\n",
            true,
        );
        check_v2_host(d.path()).unwrap();
    }

    #[test]
    fn v2_root_is_exempt_from_the_process_rule() {
        let d = fake_v2("\n", "1\n2\n", "cpu memory pids\n", false);
        check_v2_host(d.path()).unwrap();
    }

    #[test]
    fn v2_empty_cgroup_offering_the_controllers_is_fine() {
        let d = fake_v2("cpu\n", "", "cpu io memory pids\n", true);
        check_v2_host(d.path()).unwrap();
    }

    #[test]
    fn v2_cgroup_with_processes_is_refused_with_advice() {
        let d = fake_v2("memory\n", "123\n456\n", "cpu memory pids\n", true);
        let e = check_v2_host(d.path()).unwrap_err();
        assert!(matches!(e, CgroupError::CannotHostTasks { .. }), "{e:?}");
        let msg = e.to_string();
        for part in [
            "holds processes (123, 456)",
            "cpu, pids",
            "--cgroup-parent",
            "delegate",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
        assert!(msg.contains(&d.path().display().to_string()), "{msg}");
        assert!(!msg.contains("memory,"), "{msg}");
        let many: String = (1..=8).map(|p| format!("{p}\n")).collect();
        let d = fake_v2("", &many, "cpu memory pids", true);
        let msg = check_v2_host(d.path()).unwrap_err().to_string();
        assert!(msg.contains("(1, 2, 3, 4, 5, ...)"), "{msg}");
    }

    #[test]
    fn v2_empty_cgroup_without_the_controllers_is_refused() {
        let d = fake_v2("", "", "cpu io\n", true);
        let msg = check_v2_host(d.path()).unwrap_err().to_string();
        assert!(msg.contains("does not offer memory, pids"), "{msg}");
    }

    #[test]
    fn v2_unreadable_cgroup_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone");
        let e = check_v2_host(&gone).unwrap_err();
        assert!(matches!(e, CgroupError::Read { ref path, .. } if path.starts_with(&gone)));
    }

    #[test]
    fn v2_configured_parent_checks_each_existing_directory() {
        let root = fake_v2("", "1\n", "cpu memory pids", false);
        let write = |dir: &Path, procs: &str| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
            std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids").unwrap();
            std::fs::write(dir.join("cgroup.events"), "populated 0\n").unwrap();
        };
        // Nothing below the root yet: `at` would make it all.
        check_v2_path(root.path(), "a/b").unwrap();
        write(&root.path().join("a"), "");
        check_v2_path(root.path(), "a/b").unwrap();
        // An existing parent with processes fails whether it is the parent or on the way.
        write(&root.path().join("a/b"), "77\n");
        let msg = check_v2_path(root.path(), "a/b").unwrap_err().to_string();
        assert!(
            msg.contains("a/b cannot hold") && msg.contains("77"),
            "{msg}"
        );
        write(&root.path().join("a"), "88\n");
        let msg = check_v2_path(root.path(), "a/c").unwrap_err().to_string();
        assert!(msg.contains("88"), "{msg}");
    }

    #[test]
    fn enable_writes_only_the_missing_controllers() {
        let d = fake_v2("cpu\n", "", "cpuset cpu io memory pids\n", true);
        enable_controllers(d.path()).unwrap();
        let written = std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(written, "+memory +pids");
        // All there already: nothing is written.
        let d = fake_v2("cpu memory pids\n", "", "cpu memory pids\n", true);
        enable_controllers(d.path()).unwrap();
        let kept = std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(kept, "cpu memory pids\n");
        let d = fake_v2("", "", "cpu memory\n", true);
        let err = enable_controllers(d.path()).unwrap_err();
        assert!(
            matches!(err, CgroupError::ControllerUnavailable { ref controller, .. } if controller == "pids"),
            "{err}"
        );
    }
}
