//! The task root: planned and prepared on the host before the clone, executed in the child.
//!
//! The parent resolves every path, creates the (empty) mount points in the task dir and
//! turns the whole setup into a list of [`Step`]s holding ready-made C strings. The child
//! then only walks the list with raw system calls: no allocation, and a failure is reported
//! as a step index the parent can describe in words.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use execdriver_core::TaskSpec;

use super::IsolationError;
use super::sys::{
    self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, check_int,
};
use super::user::TaskUser;

/// Top-level names in the task root that the driver mounts itself; a chroot env dir may not
/// hide or replace them.
pub(crate) const RESERVED: [&str; 6] = ["alloc", "dev", "local", "proc", "secrets", "tmp"];

/// Host device nodes bind-mounted into the task's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Set by tests to exercise the remount path that kernels without mount_setattr (< 5.12) use.
pub(crate) static FORCE_REMOUNT: AtomicBool = AtomicBool::new(false);

/// What of `/proc` a task may read but never write: the host's sysctls, the magic SysRq
/// trigger, interrupt affinities, bus and filesystem settings (as container runtimes do).
pub(crate) const PROC_READ_ONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// What of `/proc` a task cannot see at all: kernel memory, every keyring, timer and
/// scheduler internals, ACPI and SCSI control (files are covered by `/dev/null`, dirs by an
/// empty read-only tmpfs).
pub(crate) const PROC_MASKED: [&str; 6] = [
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "acpi",
    "scsi",
];

/// Size of the secrets tmpfs, as in Nomad.
const SECRETS_SIZE: &str = "1m";

/// One action of the root setup, run by the child.
#[derive(Debug)]
pub(crate) enum Step {
    /// Make every mount private, so nothing done here propagates to the host.
    MakePrivate,
    /// Bind `src` on `dst`, then add the `MOUNT_ATTR_*` bits in `attrs`.
    Bind {
        /// Host path.
        src: CString,
        /// Mount point.
        dst: CString,
        /// Include the mounts below `src` (only with mount_setattr, which can make them
        /// all read-only).
        recursive: bool,
        /// `MOUNT_ATTR_*` bits.
        attrs: u64,
    },
    /// Mount a fresh filesystem.
    Mount {
        /// Filesystem type (also used as the source name).
        fstype: &'static CStr,
        /// Mount point.
        dst: CString,
        /// `MS_*` flags.
        flags: libc::c_ulong,
        /// Mount options.
        data: CString,
    },
    /// Create a directory (inside a tmpfs the child just mounted).
    MakeDir {
        /// Path.
        path: CString,
        /// Mode.
        mode: libc::mode_t,
    },
    /// Create an empty file to bind a device node on.
    MakeFile {
        /// Path.
        path: CString,
    },
    /// Create a symlink (inside a tmpfs the child just mounted).
    Symlink {
        /// What the link points to.
        target: CString,
        /// The link.
        path: CString,
    },
    /// Make a `/proc` entry read-only or hide it; an entry this kernel does not have is
    /// skipped.
    GuardProc {
        /// The entry, below the task's `/proc` mount.
        path: CString,
        /// What to do with it.
        guard: ProcGuard,
        /// The task's `/dev/null`, to cover a masked file with.
        dev_null: CString,
    },
    /// Set the UTS hostname.
    Hostname {
        /// The name, at most 64 bytes.
        name: Vec<u8>,
    },
    /// Make `root` the process's root (pivot_root, or chroot where pivot_root cannot work)
    /// and cd to it.
    EnterRoot {
        /// The task root (a mount point by then).
        root: CString,
        /// Whether chroot may stand in for a refused pivot_root: not for a task run as
        /// root, which could leave a chroot (the old root stays reachable under it).
        allow_chroot: bool,
    },
}

/// What [`Step::GuardProc`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcGuard {
    /// Bound onto itself read-only.
    ReadOnly,
    /// Covered (a file by `/dev/null`, a dir by an empty read-only tmpfs).
    Masked,
}

/// The steps to build a task root, and what the child needs to know to run them.
#[derive(Debug)]
pub(crate) struct RootPlan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Whether mount_setattr(2) is available (else bind flags are set by remounting).
    pub have_setattr: bool,
}

/// A chroot env entry as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostEntry {
    Dir(PathBuf),
    File(PathBuf),
    Symlink(PathBuf, PathBuf),
}

impl HostEntry {
    fn path(&self) -> &Path {
        match self {
            HostEntry::Dir(p) | HostEntry::File(p) | HostEntry::Symlink(p, _) => p,
        }
    }
}

fn cstring(path: &Path) -> Result<CString, IsolationError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| IsolationError::Nul {
        what: format!("path {path:?}"),
    })
}

fn mount_point_error(path: &Path, why: impl Into<String>) -> IsolationError {
    IsolationError::MountPoint {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// The dir as a canonical path, checked to be a directory.
pub(crate) fn existing_dir(what: &'static str, path: &Path) -> Result<PathBuf, IsolationError> {
    let dir_error = |source: io::Error| IsolationError::Dir {
        what,
        path: path.to_owned(),
        source,
    };
    // The task dir is prepared (chmod, chown, mkdir) as root: a link there would aim that
    // at whatever it points to.
    if what == "task dir"
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(dir_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symlink; give the real directory",
        )));
    }
    let canonical = std::fs::canonicalize(path).map_err(dir_error)?;
    let meta = std::fs::metadata(&canonical).map_err(dir_error)?;
    if !meta.is_dir() {
        return Err(dir_error(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    Ok(canonical)
}

/// The first component of an absolute path, if it is one of [`RESERVED`].
fn reserved_name(path: &Path) -> Option<&'static str> {
    let first = path.components().find_map(|c| match c {
        Component::Normal(name) => Some(name),
        _ => None,
    })?;
    RESERVED.iter().copied().find(|r| first == *r)
}

fn check_reserved(path: &Path) -> Result<(), IsolationError> {
    if path.file_name().is_none() {
        return Err(IsolationError::ReservedChrootDir {
            path: path.to_owned(),
            name: "/",
        });
    }
    match reserved_name(path) {
        Some(name) => Err(IsolationError::ReservedChrootDir {
            path: path.to_owned(),
            name,
        }),
        None => Ok(()),
    }
}

/// One chroot env entry as found on the host, `None` when it does not exist. A symlink is
/// kept as a symlink; an entry whose parents go through a symlink is placed at its real
/// location.
fn resolve_entry(dir: &Path) -> Result<Option<HostEntry>, IsolationError> {
    let Some(name) = dir.file_name() else {
        return Ok(None);
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let parent = match std::fs::canonicalize(parent) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(mount_point_error(dir, format!("cannot resolve it: {e}"))),
    };
    let host = parent.join(name);
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(mount_point_error(&host, format!("cannot stat it: {e}"))),
    };
    Ok(Some(if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&host)
            .map_err(|e| mount_point_error(&host, format!("cannot read the link: {e}")))?;
        HostEntry::Symlink(host, target)
    } else if meta.is_dir() {
        HostEntry::Dir(host)
    } else {
        HostEntry::File(host)
    }))
}

/// Resolves the chroot env against the host (missing entries are skipped), refusing
/// entries that would cover a dir the driver mounts itself; sorted, without duplicates.
fn resolve_chroot_env(dirs: &[PathBuf]) -> Result<Vec<HostEntry>, IsolationError> {
    let mut entries = Vec::new();
    for dir in dirs {
        check_reserved(dir)?;
        if let Some(entry) = resolve_entry(dir)? {
            check_reserved(entry.path())?;
            entries.push(entry);
        }
    }
    Ok(sorted_unique(entries))
}

fn sorted_unique(mut entries: Vec<HostEntry>) -> Vec<HostEntry> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    entries.dedup_by(|a, b| a.path() == b.path());
    entries
}

/// Creates `rel` under `root` as a directory (and its parents), refusing to go through a
/// symlink: a link left in the task dir must not make us create or mount anything outside.
fn ensure_dir(root: &Path, rel: &Path) -> Result<PathBuf, IsolationError> {
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            continue;
        };
        cur.push(name);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(mount_point_error(&cur, "it is a symlink"));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(mount_point_error(&cur, "it exists and is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .or_else(|e| {
                        // Lost a race with another creator of the same dir: fine, if it is
                        // a directory and not a link to one.
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir())
                        {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    // Explicit mode: the supervisor's umask must not make a parent of a
                    // mount point (such as `run/` for /run/resolvconf) unsearchable.
                    .and_then(|()| set_dir_nofollow(&cur, 0o755, None))
                    .map_err(|e| mount_point_error(&cur, format!("cannot create it: {e}")))?;
            }
            Err(e) => return Err(mount_point_error(&cur, format!("cannot stat it: {e}"))),
        }
    }
    Ok(cur)
}

/// Sets the mode (and owner) of the directory `path` through an fd opened without
/// following a symlink: whatever was swapped in at `path` meanwhile, no file elsewhere on
/// the host changes.
fn set_dir_nofollow(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))?;
    }
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Creates an empty file at `rel` under `root` for a file bind mount.
fn ensure_file(root: &Path, rel: &Path) -> Result<PathBuf, IsolationError> {
    let parent = ensure_dir(root, rel.parent().unwrap_or(Path::new("")))?;
    let path = parent.join(rel.file_name().unwrap_or_default());
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(mount_point_error(
            &path,
            "it exists and is not a regular file",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => Ok(path),
                // Created meanwhile by a concurrent start in the same task dir.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_file(root, rel),
                Err(e) => Err(mount_point_error(&path, format!("cannot create it: {e}"))),
            }
        }
        Err(e) => Err(mount_point_error(&path, format!("cannot stat it: {e}"))),
    }
}

/// Creates the symlink `rel -> target` under `root`, or accepts the same link left by an
/// earlier run.
fn ensure_symlink(root: &Path, rel: &Path, target: &Path) -> Result<(), IsolationError> {
    let parent = ensure_dir(root, rel.parent().unwrap_or(Path::new("")))?;
    let path = parent.join(rel.file_name().unwrap_or_default());
    match std::fs::read_link(&path) {
        Ok(existing) if existing == target => Ok(()),
        Ok(existing) => Err(mount_point_error(
            &path,
            format!("it is a symlink to {existing:?}, not to {target:?} as on the host"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::os::unix::fs::symlink(target, &path) {
                Ok(()) => Ok(()),
                // Created meanwhile by a concurrent start: accept it if it is the same link.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match std::fs::read_link(&path) {
                        Ok(existing) if existing == target => Ok(()),
                        _ => Err(mount_point_error(
                            &path,
                            format!("it exists and is not a symlink to {target:?}"),
                        )),
                    }
                }
                Err(e) => Err(mount_point_error(
                    &path,
                    format!("cannot create the symlink: {e}"),
                )),
            }
        }
        Err(_) => Err(mount_point_error(
            &path,
            format!("it exists and is not a symlink to {target:?}"),
        )),
    }
}

/// Creates `local/` for the task user if it is missing.
fn ensure_local(root: &Path, user: &TaskUser) -> Result<PathBuf, IsolationError> {
    let path = root.join("local");
    let existed = std::fs::symlink_metadata(&path).is_ok();
    let path = ensure_dir(root, Path::new("local"))?;
    if !existed {
        set_dir_nofollow(&path, 0o755, Some((user.uid, user.gid))).map_err(|e| {
            mount_point_error(&path, format!("cannot give it to the task user: {e}"))
        })?;
    }
    Ok(path)
}

/// The hostname for a task: its name, cut to the kernel's 64 bytes at a char boundary.
pub(crate) fn hostname(task_name: &str) -> Vec<u8> {
    let mut end = task_name.len().min(64);
    while !task_name.is_char_boundary(end) {
        end -= 1;
    }
    task_name.as_bytes()[..end].to_vec()
}

/// Prepares the mount points in the task dir and plans the root setup.
pub(crate) fn plan(spec: &TaskSpec, user: &TaskUser) -> Result<RootPlan, IsolationError> {
    let root = existing_dir("task dir", &spec.task_dir)?;
    let alloc = existing_dir("alloc dir", &spec.alloc_dir)?;
    let searchable = user
        .can_search(&root)
        .map_err(|source| IsolationError::Dir {
            what: "task dir",
            path: root.clone(),
            source,
        })?;
    if !searchable {
        return Err(IsolationError::NotSearchable {
            path: root,
            user: user.name.clone(),
            uid: user.uid,
        });
    }
    let have_setattr = !FORCE_REMOUNT.load(Ordering::Relaxed) && sys::have_mount_setattr();
    let entries = resolve_chroot_env(&spec.chroot_env)?;

    let croot = cstring(&root)?;
    let mut steps = vec![
        Step::MakePrivate,
        Step::Bind {
            src: croot.clone(),
            dst: croot.clone(),
            recursive: false,
            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        },
    ];

    // Sorted, so a dir comes before anything under it.
    let mut covered: Vec<PathBuf> = Vec::new();
    for entry in &entries {
        let host = entry.path();
        let rel = host.strip_prefix("/").unwrap_or(host);
        if covered.iter().any(|c| host.starts_with(c)) {
            // Inside a dir that is already bound: it is visible through that bind. Only a
            // non-recursive bind (no mount_setattr) misses mounts below it, so bind those
            // again; their mount point exists in the parent bind already.
            if have_setattr || !matches!(entry, HostEntry::Dir(_) | HostEntry::File(_)) {
                continue;
            }
            steps.push(Step::Bind {
                src: cstring(host)?,
                dst: cstring(&root.join(rel))?,
                recursive: false,
                attrs: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            });
            continue;
        }
        match entry {
            HostEntry::Symlink(_, target) => ensure_symlink(&root, rel, target)?,
            HostEntry::Dir(_) | HostEntry::File(_) => {
                let dst = if matches!(entry, HostEntry::Dir(_)) {
                    covered.push(host.to_path_buf());
                    ensure_dir(&root, rel)?
                } else {
                    ensure_file(&root, rel)?
                };
                steps.push(Step::Bind {
                    src: cstring(host)?,
                    dst: cstring(&dst)?,
                    recursive: have_setattr,
                    attrs: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                });
            }
        }
    }

    let proc_dir = ensure_dir(&root, Path::new("proc"))?;
    let dev = ensure_dir(&root, Path::new("dev"))?;
    let alloc_dst = ensure_dir(&root, Path::new("alloc"))?;
    let secrets = ensure_dir(&root, Path::new("secrets"))?;
    let tmp = ensure_dir(&root, Path::new("tmp"))?;
    ensure_local(&root, user)?;

    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    steps.push(Step::Mount {
        fstype: c"proc",
        dst: cstring(&proc_dir)?,
        flags: nosuid_nodev_noexec,
        data: CString::default(),
    });

    steps.push(Step::Mount {
        fstype: c"tmpfs",
        dst: cstring(&dev)?,
        flags: nosuid_nodev_noexec,
        data: c"mode=755,size=64k".to_owned(),
    });
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        let is_char_device = std::fs::symlink_metadata(&host)
            .map(|m| m.file_type().is_char_device())
            .unwrap_or(false);
        if !is_char_device {
            continue;
        }
        let dst = cstring(&dev.join(name))?;
        steps.push(Step::MakeFile { path: dst.clone() });
        // Device nodes are the one bind that must keep device access.
        steps.push(Step::Bind {
            src: cstring(&host)?,
            dst,
            recursive: false,
            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        });
    }
    let pts = dev.join("pts");
    steps.push(Step::MakeDir {
        path: cstring(&pts)?,
        mode: 0o755,
    });
    let tty_gid = nix::unistd::Group::from_name("tty")
        .ok()
        .flatten()
        .map(|g| format!(",gid={}", g.gid))
        .unwrap_or_default();
    steps.push(Step::Mount {
        fstype: c"devpts",
        dst: cstring(&pts)?,
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: CString::new(format!("newinstance,ptmxmode=0666,mode=0620{tty_gid}")).map_err(
            |_| IsolationError::Nul {
                what: "devpts options".into(),
            },
        )?,
    });
    let links: [(&CStr, &str); 5] = [
        (c"pts/ptmx", "ptmx"),
        (c"/proc/self/fd", "fd"),
        (c"/proc/self/fd/0", "stdin"),
        (c"/proc/self/fd/1", "stdout"),
        (c"/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        steps.push(Step::Symlink {
            target: target.to_owned(),
            path: cstring(&dev.join(name))?,
        });
    }
    let shm = dev.join("shm");
    steps.push(Step::MakeDir {
        path: cstring(&shm)?,
        mode: 0o1777,
    });
    steps.push(Step::Mount {
        fstype: c"tmpfs",
        dst: cstring(&shm)?,
        flags: nosuid_nodev_noexec,
        data: c"mode=1777".to_owned(),
    });

    steps.push(Step::Bind {
        src: cstring(&alloc)?,
        dst: cstring(&alloc_dst)?,
        recursive: false,
        attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    });
    steps.push(Step::Mount {
        fstype: c"tmpfs",
        dst: cstring(&secrets)?,
        flags: nosuid_nodev_noexec,
        data: CString::new(format!(
            "mode=0700,uid={},gid={},size={SECRETS_SIZE}",
            user.uid, user.gid
        ))
        .map_err(|_| IsolationError::Nul {
            what: "secrets options".into(),
        })?,
    });
    steps.push(Step::Mount {
        fstype: c"tmpfs",
        dst: cstring(&tmp)?,
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: c"mode=1777".to_owned(),
    });
    // Last of the mounts: the task's /dev/null exists by now to cover masked files with.
    let dev_null = cstring(&dev.join("null"))?;
    for (names, guard) in [
        (&PROC_READ_ONLY[..], ProcGuard::ReadOnly),
        (&PROC_MASKED[..], ProcGuard::Masked),
    ] {
        for name in names {
            steps.push(Step::GuardProc {
                path: cstring(&proc_dir.join(name))?,
                guard,
                dev_null: dev_null.clone(),
            });
        }
    }
    steps.push(Step::Hostname {
        name: hostname(&spec.task_name),
    });
    steps.push(Step::EnterRoot {
        root: croot,
        allow_chroot: user.uid != 0,
    });
    Ok(RootPlan {
        steps,
        have_setattr,
    })
}

fn show(c: &CStr) -> String {
    format!("{:?}", Path::new(std::ffi::OsStr::from_bytes(c.to_bytes())))
}

impl Step {
    /// What the step does, for an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Step::MakePrivate => "making the task's mount tree private".to_owned(),
            Step::Bind {
                src, dst, attrs, ..
            } => {
                let ro = if attrs & MOUNT_ATTR_RDONLY != 0 {
                    " read-only"
                } else {
                    ""
                };
                format!("bind-mounting {}{ro} at {}", show(src), show(dst))
            }
            Step::Mount { fstype, dst, .. } => {
                format!("mounting {} at {}", fstype.to_string_lossy(), show(dst))
            }
            Step::MakeDir { path, .. } => format!("creating directory {}", show(path)),
            Step::MakeFile { path } => format!("creating device mount point {}", show(path)),
            Step::Symlink { target, path } => {
                format!("creating symlink {} -> {}", show(path), show(target))
            }
            Step::Hostname { name } => {
                format!(
                    "setting the hostname to {:?}",
                    String::from_utf8_lossy(name)
                )
            }
            Step::GuardProc {
                path,
                guard: ProcGuard::ReadOnly,
                ..
            } => format!("making {} read-only", show(path)),
            Step::GuardProc {
                path,
                guard: ProcGuard::Masked,
                ..
            } => format!("masking {}", show(path)),
            Step::EnterRoot {
                root,
                allow_chroot: true,
            } => format!("switching the root to {}", show(root)),
            Step::EnterRoot {
                root,
                allow_chroot: false,
            } => format!(
                "switching the root to {} with pivot_root (a task run as root gets no chroot \
                 fallback when pivot_root is refused, since root can escape a chroot)",
                show(root)
            ),
        }
    }

    /// Runs the step in the child. No allocation.
    pub(crate) fn run(&self, have_setattr: bool) -> Result<(), i32> {
        match self {
            Step::MakePrivate => mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
            Step::Bind {
                src,
                dst,
                recursive,
                attrs,
            } => {
                let rec = if *recursive { libc::MS_REC } else { 0 };
                mount(Some(src), dst, None, libc::MS_BIND | rec, None)?;
                if have_setattr {
                    return sys::mount_setattr(dst, *attrs, *recursive);
                }
                let mut flags = libc::MS_REMOUNT | libc::MS_BIND | sys::kept_mount_flags(dst)?;
                for (attr, ms) in [
                    (MOUNT_ATTR_RDONLY, libc::MS_RDONLY),
                    (MOUNT_ATTR_NOSUID, libc::MS_NOSUID),
                    (MOUNT_ATTR_NODEV, libc::MS_NODEV),
                    (MOUNT_ATTR_NOEXEC, libc::MS_NOEXEC),
                ] {
                    if attrs & attr != 0 {
                        flags |= ms;
                    }
                }
                mount(None, dst, None, flags, None)
            }
            Step::Mount {
                fstype,
                dst,
                flags,
                data,
            } => mount(Some(fstype), dst, Some(fstype), *flags, Some(data)),
            Step::MakeDir { path, mode } => {
                // SAFETY: valid C string; mkdir then chmod (mkdir applies the umask).
                let ret = unsafe { libc::mkdir(path.as_ptr(), *mode) };
                if ret < 0 && sys::errno() != libc::EEXIST {
                    return Err(sys::errno());
                }
                // SAFETY: valid C string.
                check_int(unsafe { libc::chmod(path.as_ptr(), *mode) }).map(|_| ())
            }
            Step::MakeFile { path } => {
                // SAFETY: valid C string; the fd is closed right away.
                let fd = check_int(unsafe {
                    libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        0o644 as libc::c_uint,
                    )
                })?;
                // SAFETY: we own fd.
                unsafe { libc::close(fd) };
                Ok(())
            }
            Step::Symlink { target, path } => {
                // SAFETY: valid C strings.
                check_int(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }).map(|_| ())
            }
            Step::GuardProc {
                path,
                guard,
                dev_null,
            } => guard_proc(path, *guard, dev_null, have_setattr),
            Step::Hostname { name } => {
                // SAFETY: name is valid for name.len() bytes.
                check_int(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
                    .map(|_| ())
            }
            Step::EnterRoot { root, allow_chroot } => enter_root(root, *allow_chroot),
        }
    }
}

/// [`Step::GuardProc`], in the child. No allocation.
fn guard_proc(
    path: &CStr,
    guard: ProcGuard,
    dev_null: &CStr,
    have_setattr: bool,
) -> Result<(), i32> {
    // SAFETY: valid C string, a zeroed stat buffer the kernel fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::lstat(path.as_ptr(), &mut st) } < 0 {
        return match sys::errno() {
            // Not on this kernel (no sysrq, no ACPI, ...): nothing to guard.
            libc::ENOENT => Ok(()),
            e => Err(e),
        };
    }
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match guard {
        ProcGuard::Masked if is_dir => mount(
            Some(c"tmpfs"),
            path,
            Some(c"tmpfs"),
            ro,
            Some(c"size=0,mode=555"),
        ),
        ProcGuard::Masked => mount(Some(dev_null), path, None, libc::MS_BIND, None),
        ProcGuard::ReadOnly => {
            mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)?;
            if have_setattr {
                return sys::mount_setattr(
                    path,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                    true,
                );
            }
            mount(None, path, None, libc::MS_REMOUNT | libc::MS_BIND | ro, None)
        }
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

fn mount(
    src: Option<&CStr>,
    dst: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    // SAFETY: every pointer is a valid C string or null.
    check_int(unsafe {
        libc::mount(
            opt_ptr(src),
            dst.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    })
    .map(|_| ())
}

/// pivot_root into `root` with the old root stacked on it and then detached (no directory
/// for it needed), or chroot when pivot_root is refused (a root on initramfs) and
/// `allow_chroot` says a chroot is enough; else the EINVAL of pivot_root is the error.
fn enter_root(root: &CStr, allow_chroot: bool) -> Result<(), i32> {
    // SAFETY: open/fchdir/pivot_root/umount2/chroot/chdir with valid C strings and fds we
    // own; both fds are closed on every path.
    unsafe {
        let old = check_int(libc::open(
            c"/".as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        ))?;
        let new = match check_int(libc::open(
            root.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )) {
            Ok(fd) => fd,
            Err(e) => {
                libc::close(old);
                return Err(e);
            }
        };
        let result = (|| {
            check_int(libc::fchdir(new))?;
            let pivoted = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
            if pivoted == 0 {
                // The old root now sits on top of the new one: step onto it and detach it.
                check_int(libc::fchdir(old))?;
                check_int(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            } else if sys::errno() == libc::EINVAL && allow_chroot {
                check_int(libc::chroot(c".".as_ptr()))?;
            } else {
                return Err(sys::errno());
            }
            check_int(libc::chdir(c"/".as_ptr())).map(|_| ())
        })();
        libc::close(old);
        libc::close(new);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_chroot_fallback_says_why() {
        let step = Step::EnterRoot {
            root: c"/tasks/web".to_owned(),
            allow_chroot: false,
        };
        assert!(step.describe().contains("no chroot fallback"));
        let step = Step::EnterRoot {
            root: c"/tasks/web".to_owned(),
            allow_chroot: true,
        };
        assert_eq!(step.describe(), "switching the root to \"/tasks/web\"");
    }

    #[test]
    fn hostname_is_cut_at_64_bytes_on_a_char_boundary() {
        assert_eq!(hostname("web"), b"web".to_vec());
        assert_eq!(hostname(&"a".repeat(100)).len(), 64);
        let name = format!("{}é", "a".repeat(63));
        assert_eq!(hostname(&name), "a".repeat(63).into_bytes());
    }

    #[test]
    fn reserved_names_are_refused() {
        for dir in [
            "/proc", "/dev/shm", "/tmp", "/alloc", "/secrets", "/local/x", "/",
        ] {
            let err = resolve_chroot_env(&[PathBuf::from(dir)]).expect_err(dir);
            assert!(
                matches!(err, IsolationError::ReservedChrootDir { .. }),
                "{dir}: {err}"
            );
        }
    }

    #[test]
    fn chroot_env_keeps_symlinks_and_skips_missing_dirs() {
        let host = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(host.path()).expect("canonical");
        std::fs::create_dir(base.join("usr")).expect("mkdir");
        std::fs::create_dir(base.join("usr/bin")).expect("mkdir");
        std::fs::create_dir(base.join("usr/bin/sub")).expect("mkdir");
        std::os::unix::fs::symlink("usr/bin", base.join("bin")).expect("symlink");
        std::fs::write(base.join("file"), "x").expect("write");
        let resolve = |p: &str| resolve_entry(&base.join(p)).expect("resolve");
        assert_eq!(resolve("usr"), Some(HostEntry::Dir(base.join("usr"))));
        assert_eq!(
            resolve("bin"),
            Some(HostEntry::Symlink(
                base.join("bin"),
                PathBuf::from("usr/bin")
            ))
        );
        assert_eq!(resolve("file"), Some(HostEntry::File(base.join("file"))));
        assert_eq!(resolve("missing"), None);
        assert_eq!(resolve("missing/deeper"), None);
        // Through the symlink: placed at its real location.
        assert_eq!(
            resolve("bin/sub"),
            Some(HostEntry::Dir(base.join("usr/bin/sub")))
        );
        let entries = sorted_unique(vec![
            HostEntry::Dir(base.join("usr")),
            HostEntry::File(base.join("file")),
            HostEntry::Dir(base.join("usr")),
        ]);
        assert_eq!(
            entries,
            vec![
                HostEntry::File(base.join("file")),
                HostEntry::Dir(base.join("usr"))
            ]
        );
    }

    #[test]
    fn mount_points_never_go_through_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("run")).expect("symlink");
        let err = ensure_dir(&root, Path::new("run/resolvconf")).expect_err("symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!outside.join("resolvconf").exists());
        // An existing same symlink is accepted, a different one refused.
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("symlink");
        ensure_symlink(&root, Path::new("bin"), Path::new("usr/bin")).expect("same link");
        assert!(ensure_symlink(&root, Path::new("bin"), Path::new("usr/sbin")).is_err());
        ensure_dir(&root, Path::new("a/b/c")).expect("nested dirs");
        assert!(root.join("a/b/c").is_dir());
        ensure_file(&root, Path::new("a/f")).expect("file");
        ensure_file(&root, Path::new("a/f")).expect("file again");
        assert!(ensure_file(&root, Path::new("a/b")).is_err());
    }
}
