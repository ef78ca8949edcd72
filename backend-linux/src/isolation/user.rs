//! The task's user: looked up on the host before the clone (the task's /etc is the host's,
//! bind-mounted), so the child only has numbers to apply.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, User};

use super::IsolationError;

/// The uid, gid and supplementary groups the task runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    /// The user as the spec gives it (`NAME`, `UID`, `UID:GID`, `NAME:GROUP`).
    pub name: String,
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
    /// Every group the user is in (from /etc/group), the primary one included.
    pub groups: Vec<libc::gid_t>,
    /// The user's passwd entry (its name and home), when it has one.
    pub entry: Option<UserEntry>,
}

/// What a login takes from the passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The login name.
    pub name: String,
    /// The home dir, as the host's passwd gives it.
    pub home: std::path::PathBuf,
}

/// Looks the spec's user (`NAME`, `UID`, `UID:GID` or `NAME:GROUP`) up in the host's user
/// and group databases. A name must exist; a number needs no entry (its group is then the
/// same number, unless given). The supplementary groups are the entry's (from /etc/group)
/// when there is one, with the primary group first; a bare number without entry gets none.
pub(crate) fn lookup(text: &str) -> Result<TaskUser, IsolationError> {
    let lookup_error = |source| IsolationError::UserLookup {
        user: text.to_owned(),
        source,
    };
    let parts = execdriver_core::parse_user(text).map_err(|_| IsolationError::UnknownUser {
        user: text.to_owned(),
    })?;
    let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u32>().ok()).flatten();
    let (uid, entry) = match numeric(parts.user) {
        Some(uid) => (
            uid,
            User::from_uid(nix::unistd::Uid::from_raw(uid)).map_err(lookup_error)?,
        ),
        None => {
            let user = User::from_name(parts.user)
                .map_err(lookup_error)?
                .ok_or_else(|| IsolationError::UnknownUser {
                    user: text.to_owned(),
                })?;
            (user.uid.as_raw(), Some(user))
        }
    };
    let gid = match parts.group {
        Some(group) => match numeric(group) {
            Some(gid) => gid,
            None => Group::from_name(group)
                .map_err(lookup_error)?
                .ok_or_else(|| IsolationError::UnknownGroup {
                    user: text.to_owned(),
                    group: group.to_owned(),
                })?
                .gid
                .as_raw(),
        },
        None => entry.as_ref().map_or(uid, |u| u.gid.as_raw()),
    };
    let groups = match &entry {
        Some(user) => {
            let cname = CString::new(user.name.as_str()).map_err(|_| IsolationError::Nul {
                what: format!("user name {:?}", user.name),
            })?;
            let mut groups: Vec<libc::gid_t> =
                nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
                    .map_err(lookup_error)?
                    .into_iter()
                    .map(Gid::as_raw)
                    .collect();
            // getgrouplist adds the group it is given; the entry's own primary group stays a
            // supplementary one when another was asked for, as with docker.
            if gid != user.gid.as_raw() && !groups.contains(&user.gid.as_raw()) {
                groups.push(user.gid.as_raw());
            }
            groups
        }
        None => vec![gid],
    };
    Ok(TaskUser {
        name: text.to_owned(),
        uid,
        gid,
        groups,
        entry: entry.map(|u| UserEntry {
            name: u.name,
            home: u.dir,
        }),
    })
}

impl TaskUser {
    /// The ids as one argument, `UID:GID:G1,G2,...`, as the agent hands the user it looked
    /// up to the supervisor (which then never loads the host's NSS modules).
    pub(crate) fn ids_arg(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!("{}:{}:{}", self.uid, self.gid, groups.join(","))
    }

    /// The user `name` (the spec's text) with the ids of an [`TaskUser::ids_arg`] and the
    /// passwd entry, if it has one; `None` when `ids` is not of that form.
    pub(crate) fn from_ids_arg(name: &str, ids: &str, entry: Option<UserEntry>) -> Option<Self> {
        let mut parts = ids.splitn(3, ':');
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let id = |s: Option<&str>| s.filter(|s| digits(s))?.parse::<u32>().ok();
        let uid = id(parts.next())?;
        let gid = id(parts.next())?;
        let groups = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|g| id(Some(g)))
                .collect::<Option<Vec<_>>>()?,
        };
        Some(Self {
            name: name.to_owned(),
            uid,
            gid,
            groups,
            entry,
        })
    }

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
    fn ids_go_to_the_supervisor_and_back_whole() {
        let entry = Some(UserEntry {
            name: "nobody".into(),
            home: "/nonexistent".into(),
        });
        for groups in [vec![], vec![65534], vec![65534, 4, 27]] {
            let user = TaskUser {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                groups,
                entry: entry.clone(),
            };
            let back = TaskUser::from_ids_arg("nobody", &user.ids_arg(), entry.clone());
            assert_eq!(back.as_ref(), Some(&user));
        }
        for bad in [
            "",
            "1",
            "1:2",
            "x:2:",
            "1:2:3,,4",
            "1:2:-3",
            "+1:2:",
            "1:2:+3",
            "1:99999999999:",
        ] {
            assert_eq!(TaskUser::from_ids_arg("u", bad, None), None, "{bad:?}");
        }
    }

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
    fn numbers_need_no_entry_and_groups_can_be_named() {
        let ids = lookup("4242:4343").expect("numbers");
        assert_eq!((ids.uid, ids.gid, ids.groups.clone()), (4242, 4343, vec![4343]));
        assert_eq!(ids.entry, None);
        let bare = lookup("4242").expect("a bare uid");
        assert_eq!((bare.uid, bare.gid), (4242, 4242));
        let root = lookup("0").expect("uid 0");
        assert_eq!(root.entry.map(|e| e.name).as_deref(), Some("root"));
        let named = lookup("root:nogroup").or_else(|_| lookup("root:nobody")).expect("group name");
        assert_eq!(named.uid, 0);
        assert_ne!(named.gid, 0);
        assert!(named.groups.contains(&0), "{:?}", named.groups);
        let err = lookup("root:no-such-group-execdriver").expect_err("unknown group");
        assert!(err.to_string().contains("no-such-group-execdriver"), "{err}");
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
            entry: None,
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
