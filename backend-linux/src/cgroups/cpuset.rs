//! A task's cpuset: the value written to `cpuset.cpus` (the kernel's canonical list, so that
//! the read-back matches), and the check against the cpus the parent allows, made before
//! anything of the task exists.

use std::path::Path;

use execdriver_core::{CpuList, Resources};

use super::{CgroupError, fs};

/// The task's cpuset as the kernel writes it back, `None` for the parent's.
pub(super) fn canonical(resources: &Resources) -> Option<String> {
    let cpus = resources.cpuset_cpus.as_deref()?;
    // Validated before; an unparsable list is written as given and refused by the kernel.
    Some(CpuList::parse(cpus).map_or_else(|_| cpus.to_owned(), |l| l.to_string()))
}

/// Refuses `cpus` unless every one of them is in the list that `allowed_file` holds
/// (`cpuset.cpus` of a v1 parent, `cpuset.cpus.effective` of a v2 one).
pub(super) fn check_allowed(cpus: &str, allowed_file: &Path) -> Result<(), CgroupError> {
    let wanted = CpuList::parse(cpus)
        .map_err(|e| CgroupError::InvalidResources(e.into()))?;
    let text = fs::read(allowed_file)?;
    let allowed = CpuList::parse(&text).map_err(|e| CgroupError::Parse {
        path: allowed_file.to_owned(),
        detail: e.to_string(),
    })?;
    match wanted.outside(&allowed) {
        None => Ok(()),
        Some(outside) => Err(CgroupError::CpusNotAllowed {
            cpus: wanted.to_string(),
            outside: outside.to_string(),
            allowed: allowed.to_string(),
            path: allowed_file.to_owned(),
        }),
    }
}

/// Copies `cpuset.cpus` and `cpuset.mems` from `parent` into `child` where the child's are
/// empty (a v1 cpuset starts empty unless its parent has clone_children set, and a process
/// cannot join an empty one). A directory without them (any other hierarchy) is left alone.
pub(super) fn inherit(parent: &Path, child: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let target = child.join(file);
        if !target.exists() || !fs::read(&target)?.trim().is_empty() {
            continue;
        }
        let value = fs::read(&parent.join(file))?;
        fs::write_verified(&target, value.trim())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_allowed() {
        let r = Resources {
            cpuset_cpus: Some("2,0,1".into()),
            ..Resources::default()
        };
        assert_eq!(canonical(&r).as_deref(), Some("0-2"));
        assert_eq!(canonical(&Resources::default()), None);
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cpuset.cpus.effective");
        std::fs::write(&file, "0-1\n").unwrap();
        check_allowed("0,1", &file).unwrap();
        let err = check_allowed("1-3", &file).unwrap_err().to_string();
        assert!(err.contains("2-3") && err.contains("0-1"), "{err}");
    }
}
