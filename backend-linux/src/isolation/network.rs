//! The task's network namespace: the host's, a private one with loopback up, or an existing
//! one joined through its nsfs file. Checked and opened in the supervisor before the clone;
//! the child only makes system calls on what was prepared.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use execdriver_core::Network;

use super::IsolationError;
use super::sys::check_int;

/// `NSFS_MAGIC` from linux/magic.h: the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE` from linux/nsfs.h (`_IO(0xb7, 0x3)`, Linux 4.11): the namespace's
/// `CLONE_NEW*` type.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// How the task gets its network namespace, ready for the child.
#[derive(Debug)]
pub(crate) enum NetworkPlan {
    /// The supervisor's (the host's): nothing to do.
    Host,
    /// A new namespace from the clone; the init brings `lo` up in it.
    Private,
    /// The init joins the namespace behind `fd` (opened from `path`).
    Join {
        /// The namespace file, open.
        fd: OwnedFd,
        /// Where it was opened from, for messages.
        path: PathBuf,
    },
}

fn unusable(path: &Path, why: impl Into<String>) -> IsolationError {
    IsolationError::NetworkNamespace {
        path: path.to_owned(),
        why: why.into(),
    }
}

impl NetworkPlan {
    /// Checks `network` against this kernel and opens what the child will need.
    pub(crate) fn new(network: &Network) -> Result<Self, IsolationError> {
        match network {
            Network::Host => Ok(NetworkPlan::Host),
            Network::None => {
                // Without CONFIG_NET_NS the clone would fail with a bare EINVAL.
                if std::fs::symlink_metadata("/proc/self/ns/net").is_err() {
                    return Err(IsolationError::NoNetworkNamespaces);
                }
                Ok(NetworkPlan::Private)
            }
            Network::Path(path) => open_namespace(path),
            other => Err(IsolationError::UnsupportedNetwork {
                network: other.to_string(),
            }),
        }
    }

    /// The clone flag this plan needs.
    pub(crate) fn clone_flags(&self) -> libc::c_int {
        match self {
            NetworkPlan::Private => libc::CLONE_NEWNET,
            NetworkPlan::Host | NetworkPlan::Join { .. } => 0,
        }
    }

    /// What the child does, in words, for an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            NetworkPlan::Host => "while keeping the host's network namespace".to_owned(),
            NetworkPlan::Private => {
                "while bringing up the loopback interface of the task's network namespace"
                    .to_owned()
            }
            NetworkPlan::Join { path, .. } => format!("while joining network namespace {path:?}"),
        }
    }

    /// The namespace file the child must keep open until it has joined.
    pub(crate) fn join_fd(&self) -> Option<RawFd> {
        match self {
            NetworkPlan::Join { fd, .. } => Some(fd.as_raw_fd()),
            NetworkPlan::Host | NetworkPlan::Private => None,
        }
    }

    /// Enters the planned namespace, in the cloned child, where the namespace file of
    /// [`NetworkPlan::join_fd`] has been moved to `join_fd`. No allocation.
    pub(crate) fn enter(&self, join_fd: RawFd) -> Result<(), i32> {
        match self {
            NetworkPlan::Host => Ok(()),
            NetworkPlan::Private => loopback_up(),
            NetworkPlan::Join { .. } => {
                // SAFETY: setns on the namespace fd the child kept open.
                check_int(unsafe { libc::setns(join_fd, libc::CLONE_NEWNET) }).map(|_| ())
            }
        }
    }
}

/// Opens `path` and checks that it is a network namespace file.
fn open_namespace(path: &Path) -> Result<NetworkPlan, IsolationError> {
    if !execdriver_core::spec::is_plain_absolute(path) {
        return Err(unusable(path, "it must be an absolute path without `..`"));
    }
    // Namespace files are regular files to stat: checked before the open, which must not
    // block on a FIFO or wake a device.
    let meta = std::fs::metadata(path).map_err(|e| unusable(path, e.to_string()))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(unusable(path, format!("it is {what}, not a namespace file")));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| unusable(path, format!("cannot open it: {e}")))?;
    let fd = OwnedFd::from(file);
    // SAFETY: fstatfs fills one struct for an fd we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } < 0 {
        return Err(unusable(
            path,
            format!("cannot stat its filesystem: {}", io::Error::last_os_error()),
        ));
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 or u32 depending on the target
    if fs.f_type as i64 != NSFS_MAGIC {
        return Err(unusable(
            path,
            "it is not a namespace file (nsfs); give a file such as /var/run/netns/NAME or \
             /proc/PID/ns/net",
        ));
    }
    // SAFETY: an ioctl without argument on an nsfs fd we own.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind < 0 {
        return Err(unusable(
            path,
            format!(
                "cannot ask its namespace type: {}",
                io::Error::last_os_error()
            ),
        ));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(unusable(
            path,
            format!(
                "it is a {} namespace, not a network namespace",
                namespace_name(kind)
            ),
        ));
    }
    Ok(NetworkPlan::Join {
        fd,
        path: path.to_owned(),
    })
}

fn namespace_name(kind: libc::c_int) -> &'static str {
    match kind {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "different",
    }
}

/// Sets IFF_UP on `lo` of the current network namespace. No allocation.
fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket/ioctl/close on a local ifreq and an fd we own; the fd is closed on
    // every path.
    unsafe {
        let sock = check_int(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let result = check_int(libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req)).and_then(
            |_| {
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                check_int(libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req))
            },
        );
        libc::close(sock);
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_network_namespace_file_can_be_joined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("netns");
        std::fs::write(&file, "").expect("write");
        for (path, needle) in [
            (file.clone(), "not a namespace file"),
            (dir.path().to_owned(), "a directory"),
            (dir.path().join("missing"), "No such file"),
            (PathBuf::from("/proc/self/ns/pid"), "a pid namespace"),
            (PathBuf::from("relative"), "absolute"),
            (PathBuf::from("/dev/null"), "a device"),
        ] {
            let err = open_namespace(&path).expect_err(&path.to_string_lossy());
            let text = err.to_string();
            assert!(
                text.contains(needle) && text.contains(&*path.to_string_lossy()),
                "{path:?}: {text}"
            );
        }
        // Any process may open its own network namespace file.
        let plan = open_namespace(Path::new("/proc/self/ns/net")).expect("own netns");
        assert_eq!(plan.clone_flags(), 0);
        assert!(plan.describe().contains("/proc/self/ns/net"));
    }

    #[test]
    fn none_makes_a_namespace_at_the_clone_and_host_none() {
        let plan = NetworkPlan::new(&Network::None).expect("this kernel has netns");
        assert_eq!(plan.clone_flags(), libc::CLONE_NEWNET);
        assert!(plan.describe().contains("loopback"));
        let plan = NetworkPlan::new(&Network::Host).expect("host");
        assert_eq!(plan.clone_flags(), 0);
    }
}
