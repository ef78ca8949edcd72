//! [`DeviceMapping`]: a host device node given to a task, docker's `HOST[:TASK][:PERMS]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a device mapping that cannot be used is refused with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The text of `--device` does not split into host path, task path and permissions.
    #[error(
        "device {text:?} is not usable: {why} (use HOST[:TASK][:PERMS], such as /dev/fuse:/dev/fuse:rwm)"
    )]
    Syntax {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host path is not a character or block device.
    #[error("device {path:?} on the host is not usable: {why}")]
    Host {
        /// The host path.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// The path in the task is not an absolute path under /dev.
    #[error(
        "device path {path:?} in the task must be a plain absolute path under /dev (such as /dev/mydev)"
    )]
    TaskPath {
        /// The path given.
        path: PathBuf,
    },
    /// Permissions other than a non-empty subset of `rwm`.
    #[error(
        "device permissions {perms:?} for {path:?} must be a non-empty subset of rwm (read, write, mknod)"
    )]
    Permissions {
        /// The host path.
        path: PathBuf,
        /// The permissions given.
        perms: String,
    },
    /// Two mappings to the same path in the task.
    #[error("device path {path:?} in the task is given twice")]
    Duplicate {
        /// The path in the task.
        path: PathBuf,
    },
}

/// A host device node made visible in the task's /dev and allowed by its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMapping {
    /// The device node on the host.
    pub host_path: PathBuf,
    /// Where the task sees it: an absolute path under /dev.
    pub task_path: PathBuf,
    /// What the task may do with it: a subset of `r` (read), `w` (write), `m` (mknod).
    pub permissions: String,
}

/// The permissions of a mapping that names none: docker's default.
pub const DEFAULT_DEVICE_PERMISSIONS: &str = "rwm";

impl DeviceMapping {
    /// Parses docker's `--device` syntax: `HOST`, `HOST:TASK`, `HOST:PERMS` or
    /// `HOST:TASK:PERMS`; the task path defaults to the host path, the permissions to `rwm`.
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        let bad = |why| DeviceError::Syntax {
            text: text.to_owned(),
            why,
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (host, task, perms) = match parts.as_slice() {
            [host] => (*host, *host, DEFAULT_DEVICE_PERMISSIONS),
            [host, second] if is_permissions(second) => (*host, *host, *second),
            [host, task] => (*host, *task, DEFAULT_DEVICE_PERMISSIONS),
            [host, task, perms] => (*host, *task, *perms),
            _ => return Err(bad("too many `:`")),
        };
        if host.is_empty() || task.is_empty() {
            return Err(bad("an empty path"));
        }
        Ok(Self {
            host_path: PathBuf::from(host),
            task_path: PathBuf::from(task),
            permissions: perms.to_owned(),
        })
    }

    /// Checks the fields that need no look at the host: the task path and the permissions.
    pub fn validate_syntax(&self) -> Result<(), DeviceError> {
        // On the text: `components()` would hide a `.` or an empty component.
        let plain = self.task_path.to_str().is_some_and(|t| {
            t.strip_prefix('/')
                .is_some_and(|rest| rest.split('/').all(|c| !matches!(c, "" | "." | "..")))
        });
        let under_dev = self
            .task_path
            .strip_prefix("/dev")
            .is_ok_and(|rest| !rest.as_os_str().is_empty());
        let nul = self.task_path.as_os_str().as_encoded_bytes().contains(&0);
        if !plain || !under_dev || nul {
            return Err(DeviceError::TaskPath {
                path: self.task_path.clone(),
            });
        }
        if !is_permissions(&self.permissions) {
            return Err(DeviceError::Permissions {
                path: self.host_path.clone(),
                perms: self.permissions.clone(),
            });
        }
        Ok(())
    }

    /// The host node's type and number: `('c' or 'b', major, minor)`; an error when the host
    /// path is not a character or block device.
    pub fn host_device(&self) -> Result<(char, u64, u64), DeviceError> {
        host_device(&self.host_path)
    }
}

/// Whether `text` is a non-empty subset of `rwm`, each letter at most once.
fn is_permissions(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 3
        && text.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && text
            .chars()
            .enumerate()
            .all(|(i, c)| !text[..i].contains(c))
}

/// The type and number of the device node at `path` (symlinks followed, as docker does).
pub fn host_device(path: &Path) -> Result<(char, u64, u64), DeviceError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let refuse = |why: String| DeviceError::Host {
        path: path.to_owned(),
        why,
    };
    if !path.is_absolute() {
        return Err(refuse("give an absolute path".into()));
    }
    let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(refuse("not a character or block device".into()));
    };
    let rdev = meta.rdev();
    Ok((kind, dev_major(rdev), dev_minor(rdev)))
}

/// The major number of a Linux `dev_t` (glibc's encoding).
fn dev_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

/// The minor number of a Linux `dev_t` (glibc's encoding).
fn dev_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_syntax() {
        let d = DeviceMapping::parse("/dev/fuse").unwrap();
        assert_eq!(
            (
                d.host_path.to_str(),
                d.task_path.to_str(),
                d.permissions.as_str()
            ),
            (Some("/dev/fuse"), Some("/dev/fuse"), "rwm")
        );
        let d = DeviceMapping::parse("/dev/null:/dev/mydev").unwrap();
        assert_eq!(
            (d.task_path.to_str(), d.permissions.as_str()),
            (Some("/dev/mydev"), "rwm")
        );
        let d = DeviceMapping::parse("/dev/null:r").unwrap();
        assert_eq!(
            (d.task_path.to_str(), d.permissions.as_str()),
            (Some("/dev/null"), "r")
        );
        let d = DeviceMapping::parse("/dev/null:/dev/x:rw").unwrap();
        assert_eq!(
            (d.task_path.to_str(), d.permissions.as_str()),
            (Some("/dev/x"), "rw")
        );
        for bad in ["", ":/dev/x", "/dev/null::r", "a:b:c:d"] {
            assert!(DeviceMapping::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn syntax_checks() {
        let ok = DeviceMapping::parse("/dev/null:/dev/a/b:rw").unwrap();
        ok.validate_syntax().unwrap();
        for task in [
            "/dev",
            "/dev/",
            "/tmp/x",
            "dev/x",
            "/dev/../etc/x",
            "/dev/./x",
            "/dev/x/",
            "/dev//x",
        ] {
            let d = DeviceMapping {
                task_path: task.into(),
                ..ok.clone()
            };
            assert!(
                matches!(d.validate_syntax(), Err(DeviceError::TaskPath { .. })),
                "{task}"
            );
        }
        for perms in ["", "x", "rr", "rwmr", "R"] {
            let d = DeviceMapping {
                permissions: perms.into(),
                ..ok.clone()
            };
            assert!(
                matches!(d.validate_syntax(), Err(DeviceError::Permissions { .. })),
                "{perms}"
            );
        }
    }

    #[test]
    fn host_nodes() {
        assert_eq!(host_device(Path::new("/dev/null")).unwrap(), ('c', 1, 3));
        assert!(matches!(
            host_device(Path::new("/etc/hostname")),
            Err(DeviceError::Host { .. })
        ));
        assert!(matches!(
            host_device(Path::new("/nonexistent")),
            Err(DeviceError::Host { .. })
        ));
        assert!(matches!(
            host_device(Path::new("dev/null")),
            Err(DeviceError::Host { .. })
        ));
    }
}
