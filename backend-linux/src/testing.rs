//! For tests only (this crate's and the workspace's): the one rule for a test that needs root
//! or a node feature. Outside CI it is skipped with the reason printed; with the env var `CI`
//! set (CI runs as root on a capable node) it fails loudly instead, so that a misconfigured
//! CI cannot pass by skipping. Not part of the driver's API.

/// Whether `test` can run as far as root goes: true as root; otherwise the skip (or, with
/// `CI` set, the panic) of [`require`], with `needs` saying what root is needed for.
pub fn require_root(test: &str, needs: &str) -> bool {
    let unmet = (!nix::unistd::geteuid().is_root()).then(|| format!("needs root ({needs})"));
    require(test, unmet)
}

/// Whether `test` can run: true when `unmet` is `None`; otherwise prints why `test` is
/// skipped and returns false, or panics with that reason when the env var `CI` is set.
pub fn require(test: &str, unmet: Option<String>) -> bool {
    match unmet {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: {reason}; CI is set, so this is a failure, not a skip")
        }
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_unmet_runs() {
        assert!(require("nothing_unmet_runs", None));
    }

    #[test]
    fn an_unmet_need_skips_outside_ci_and_fails_under_it() {
        let unmet = || Some("a test reason".to_owned());
        if std::env::var_os("CI").is_some() {
            let caught = std::panic::catch_unwind(|| require("t", unmet()));
            assert!(caught.is_err(), "an unmet need passed under CI");
        } else {
            assert!(!require("t", unmet()));
        }
    }
}

/// A cgroup parent this node lets tests create task cgroups under: the caller's own cgroup
/// where it can host them (v1; the v2 root), else a slice of the test's own (a v2 service
/// cgroup that holds processes), removed on drop once it is empty.
#[derive(Debug)]
pub struct TestParent {
    parent: crate::cgroups::CgroupParent,
    slice: Option<String>,
}

impl TestParent {
    /// The parent for the test `test`.
    pub fn new(test: &str) -> Result<Self, crate::cgroups::CgroupError> {
        let slice: String = format!("execdriver-test-{test}-{}", std::process::id())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(200)
            .collect();
        let decision = crate::cgroups::detect_default_parent(&slice)?;
        let parent = decision.resolve()?;
        let slice =
            matches!(decision.parent, crate::cgroups::DefaultParent::Slice { .. }).then_some(slice);
        Ok(Self { parent, slice })
    }

    /// The parent.
    pub fn parent(&self) -> &crate::cgroups::CgroupParent {
        &self.parent
    }

    /// Whether it is the caller's own cgroup (not a slice made for the test).
    pub fn is_own(&self) -> bool {
        self.slice.is_none()
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        if self.slice.is_some() {
            // Empty by now unless the test leaked a cgroup, which its own checks report.
            let _ = self.parent.remove();
        }
    }
}
