//! The task's user: looked up on the host before the clone (the task's /etc is the host's,
//! bind-mounted), so the child only has numbers to apply.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, User};

use super::IsolationError;

/// The uid, gid and supplementary groups the task runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskUser {
    /// The user name, as given in the spec.
    pub name: String,
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
    /// Every group the user is in (from /etc/group), the primary one included.
    pub groups: Vec<libc::gid_t>,
}

/// Looks `name` up in the host's user and group databases.
pub(crate) fn lookup(name: &str) -> Result<TaskUser, IsolationError> {
    let user = User::from_name(name)
        .map_err(|source| IsolationError::UserLookup {
            user: name.to_owned(),
            source,
        })?
        .ok_or_else(|| IsolationError::UnknownUser {
            user: name.to_owned(),
        })?;
    let cname = CString::new(name).map_err(|_| IsolationError::Nul {
        what: format!("user name {name:?}"),
    })?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(|source| {
        IsolationError::UserLookup {
            user: name.to_owned(),
            source,
        }
    })?;
    Ok(TaskUser {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    })
}

impl TaskUser {
    /// Whether the user may search (cd through) `dir`, by its mode bits alone.
    pub(crate) fn can_search(&self, dir: &Path) -> std::io::Result<bool> {
        if self.uid == 0 {
            return Ok(true);
        }
        let meta = std::fs::metadata(dir)?;
        let mode = meta.mode();
        let bit = if meta.uid() == self.uid {
            0o100
        } else if self.groups.contains(&meta.gid()) || meta.gid() == self.gid {
            0o010
        } else {
            0o001
        };
        Ok(mode & bit != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_exist() {
        let root = lookup("root").expect("root");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        let nobody = lookup("nobody").expect("nobody");
        assert_ne!(nobody.uid, 0);
        assert!(nobody.groups.contains(&nobody.gid));
    }

    #[test]
    fn unknown_user_is_named_in_the_error() {
        let err = lookup("no-such-user-execdriver").expect_err("unknown");
        assert!(err.to_string().contains("no-such-user-execdriver"), "{err}");
    }

    #[test]
    fn search_permission_follows_the_mode_bits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nobody = TaskUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let owner_is_nobody = std::fs::metadata(dir.path()).expect("stat").uid() == 65534;
        assert_eq!(
            nobody.can_search(dir.path()).expect("stat"),
            owner_is_nobody
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        assert!(nobody.can_search(dir.path()).expect("stat"));
    }
}
