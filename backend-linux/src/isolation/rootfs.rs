//! The task root: planned and prepared on the host before the clone, executed in the child.
//!
//! The parent resolves every path, creates the (empty) mount points in the task dir and
//! turns the whole setup into a list of [`Step`]s holding ready-made C strings. The child
//! then only walks the list with raw system calls: no allocation, and a failure is reported
//! as a step index the parent can describe in words.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use execdriver_core::{SpecError, TaskSpec};

use super::IsolationError;
use super::sys::{
    self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, check_int,
};
use super::user::TaskUser;

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

/// The flags of a mask: nothing to write, run, or use as a device.
const MASK_ATTRS: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
/// The empty file and dir masks are bound from, in a tmpfs of their own that the child
/// mounts on the task's `tmp` dir and detaches again (the binds keep it alive, nothing else
/// reaches it) before the task's own /tmp goes there: never a host file, nothing on disk.
const MASK_FILE: &str = "file";
const MASK_DIR: &str = "dir";
const MASK_TMPFS_OPTIONS: &CStr = c"mode=755,size=4k,nr_inodes=8";

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
    /// Create an empty file (to bind a device node on, or to mask a file with).
    MakeFile {
        /// Path.
        path: CString,
        /// Mode, set whatever the umask.
        mode: libc::mode_t,
    },
    /// Bind the empty file or dir `src` over `dst`, read-only: a masked path.
    Mask {
        /// The empty file or dir (in the mask tmpfs).
        src: CString,
        /// What it covers, in the task root.
        dst: CString,
    },
    /// Detach the mount at `path` (the mask tmpfs, once its files are bound where needed).
    Unmount {
        /// Mount point.
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
    /// Attach the detached mount tree [`RootPlan::trees`]`[index]` (cloned in the
    /// supervisor's mount namespace, so it keeps the host's propagation) at `dst`, add the
    /// `MOUNT_ATTR_*` bits in `attrs`, and make it a slave when `slave`.
    AttachTree {
        /// Which of the plan's trees (its fd is [`super::init::FIRST_TREE_FD`] + index in
        /// the child).
        index: usize,
        /// Mount point.
        dst: CString,
        /// `MOUNT_ATTR_*` bits.
        attrs: u64,
        /// Whether the attrs and the propagation apply to the mounts below too.
        recursive: bool,
        /// Receive the host's mount events without sending any (`slave`, `rslave`), rather
        /// than both ways (`shared`, `rshared`).
        slave: bool,
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
    /// The user's home dir when it exists in the task's root, else `/`.
    pub home: PathBuf,
    /// Detached copies of the sources of the mounts that propagate (at most
    /// [`MAX_PROPAGATING_MOUNTS`]), for [`Step::AttachTree`].
    pub trees: Vec<std::os::fd::OwnedFd>,
}

/// Most mounts with slave or shared propagation a task may have: each is an fd the init
/// carries until its root is built.
pub(crate) const MAX_PROPAGATING_MOUNTS: usize = 16;

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

/// The first component of an absolute path, if the driver mounts it itself
/// ([`DRIVER_MOUNTS`](execdriver_core::spec::DRIVER_MOUNTS)): no chroot env dir may hide it.
fn reserved_name(path: &Path) -> Option<&'static str> {
    execdriver_core::spec::driver_mount_of(path)
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

/// Resolves the chroot env against the host, refusing entries that would cover a dir the
/// driver mounts itself; sorted, without duplicates. A missing entry of
/// [`DEFAULT_CHROOT_ENV`](execdriver_core::spec::DEFAULT_CHROOT_ENV) is skipped (not every
/// host has /lib32), any other missing entry is an error naming it: it was asked for.
fn resolve_chroot_env(dirs: &[PathBuf]) -> Result<Vec<HostEntry>, IsolationError> {
    let mut entries = Vec::new();
    for dir in dirs {
        check_reserved(dir)?;
        match resolve_entry(dir)? {
            Some(entry) => {
                check_reserved(entry.path())?;
                entries.push(entry);
            }
            None if execdriver_core::spec::DEFAULT_CHROOT_ENV
                .iter()
                .any(|d| Path::new(d) == dir) => {}
            None => {
                return Err(IsolationError::MissingChrootDir { path: dir.clone() });
            }
        }
    }
    Ok(sorted_unique(entries))
}

fn sorted_unique(mut entries: Vec<HostEntry>) -> Vec<HostEntry> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    entries.dedup_by(|a, b| a.path() == b.path());
    entries
}

/// A masked path as found on the host: where the task would reach it, and whether it is a
/// dir (covered by an empty dir) or anything else (covered by an empty file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mask {
    host: PathBuf,
    dir: bool,
}

fn mask_error(path: &Path, why: impl Into<String>) -> IsolationError {
    IsolationError::MaskedPath {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of bytes (greedy with
/// backtracking to the last star: linear in practice, never exponential).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&b) if b == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Errors of a lookup that mean there is nothing there for the task to read.
fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))
}

/// The host paths a mask pattern names: itself, or with a `*` in its last component, the
/// matching entries of its parent dir.
fn expand_mask(pattern: &Path) -> Result<Vec<PathBuf>, IsolationError> {
    let name = pattern.file_name().unwrap_or_default().as_bytes();
    if !name.contains(&b'*') {
        return Ok(vec![pattern.to_owned()]);
    }
    let parent = pattern.parent().unwrap_or(Path::new("/"));
    let dir = match std::fs::read_dir(parent) {
        Ok(dir) => dir,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(mask_error(pattern, format!("cannot list {parent:?}: {e}"))),
    };
    let mut found = Vec::new();
    for entry in dir {
        let entry =
            entry.map_err(|e| mask_error(pattern, format!("cannot list {parent:?}: {e}")))?;
        if glob_match(name, entry.file_name().as_bytes()) {
            found.push(parent.join(entry.file_name()));
        }
    }
    Ok(found)
}

/// Resolves the masked paths against the host and the chroot env: each is followed to what
/// the task would reach there (a host symlink is followed as the task would follow it, and
/// what it leads to is masked only if the task can see that), and kept only if that lies in
/// a chroot env dir or is a chroot env file. Sorted; a mask inside a masked dir is dropped
/// (it is hidden already, and its mount point is gone).
fn resolve_masks(
    patterns: &[PathBuf],
    entries: &[HostEntry],
) -> Result<Vec<Mask>, IsolationError> {
    let mut masks = Vec::new();
    for pattern in patterns {
        execdriver_core::spec::validate_masked_path(pattern).map_err(|e| match e {
            SpecError::MaskedPath { why, .. } => mask_error(pattern, why),
            other => mask_error(pattern, other.to_string()),
        })?;
        if let Some(name) = reserved_name(pattern) {
            return Err(mask_error(
                pattern,
                format!(
                    "it is in the task's own /{name}, which the driver mounts itself; only \
                     paths in the chroot env can be masked"
                ),
            ));
        }
        for path in expand_mask(pattern)? {
            // The chroot env dirs are at their host paths in the task root, so the host's
            // resolution is the task's as long as the result is inside one of them.
            let real = match std::fs::canonicalize(&path) {
                Ok(real) => real,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(mask_error(&path, format!("cannot resolve it: {e}"))),
            };
            let visible = entries.iter().any(|e| match e {
                HostEntry::Dir(dir) => real.starts_with(dir),
                HostEntry::File(file) => real == *file,
                HostEntry::Symlink(..) => false,
            });
            if !visible {
                continue;
            }
            let meta = std::fs::metadata(&real)
                .map_err(|e| mask_error(&path, format!("cannot stat {real:?}: {e}")))?;
            masks.push(Mask {
                host: real,
                dir: meta.is_dir(),
            });
        }
    }
    masks.sort_by(|a, b| a.host.cmp(&b.host));
    masks.dedup_by(|a, b| a.host == b.host);
    let mut kept: Vec<Mask> = Vec::new();
    for mask in masks {
        if !kept.iter().any(|k| k.dir && mask.host.starts_with(&k.host)) {
            kept.push(mask);
        }
    }
    Ok(kept)
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
    ensure_alloc_shared(&alloc, user)?;

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
    // After every chroot env bind, so each mask lands on top of what it hides.
    let masks = resolve_masks(&spec.masked_paths, &entries)?;
    if !masks.is_empty() {
        let (file, dir) = (cstring(&tmp.join(MASK_FILE))?, cstring(&tmp.join(MASK_DIR))?);
        steps.push(Step::Mount {
            fstype: c"tmpfs",
            dst: cstring(&tmp)?,
            flags: nosuid_nodev_noexec,
            data: MASK_TMPFS_OPTIONS.to_owned(),
        });
        steps.push(Step::MakeFile {
            path: file.clone(),
            mode: 0o444,
        });
        steps.push(Step::MakeDir {
            path: dir.clone(),
            mode: 0o555,
        });
        for mask in &masks {
            let rel = mask.host.strip_prefix("/").unwrap_or(&mask.host);
            steps.push(Step::Mask {
                src: if mask.dir { dir.clone() } else { file.clone() },
                dst: cstring(&root.join(rel))?,
            });
        }
        steps.push(Step::Unmount {
            path: cstring(&tmp)?,
        });
    }
    // After the chroot env binds and the masks, so it lands on top of the host's file.
    if let Some(dns) = spec.dns.as_ref() {
        let (src, dst) = plan_resolv_conf(&root, &entries, dns)?;
        steps.push(Step::Bind {
            src: cstring(&src)?,
            dst: cstring(&dst)?,
            recursive: false,
            attrs: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        });
    }
    // After the masks: a mount the spec names explicitly is what the task sees there.
    let mounts = resolve_mounts(&root, &spec.mounts, &entries)?;
    let mut trees = Vec::new();
    for mount in &mounts {
        use execdriver_core::Propagation as P;
        let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if mount.spec.readonly {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        let (recursive, slave) = match mount.spec.propagation {
            P::Private | P::Rprivate => {
                steps.push(Step::Bind {
                    src: cstring(&mount.source)?,
                    dst: cstring(&mount.at)?,
                    recursive: have_setattr,
                    attrs,
                });
                continue;
            }
            P::Slave => (false, true),
            P::Rslave => (true, true),
            P::Shared => (false, false),
            P::Rshared => (true, false),
        };
        if !have_setattr {
            return Err(mount_error(
                mount.spec,
                "slave and shared propagation need Linux 5.12 or later (open_tree, move_mount \
                 and mount_setattr)",
            ));
        }
        if trees.len() == MAX_PROPAGATING_MOUNTS {
            return Err(mount_error(
                mount.spec,
                format!("at most {MAX_PROPAGATING_MOUNTS} mounts may have slave or shared propagation"),
            ));
        }
        let tree = sys::open_tree_clone(&cstring(&mount.source)?, recursive).map_err(|errno| {
            mount_error(
                mount.spec,
                format!(
                    "cannot copy the source's mount tree: {}",
                    io::Error::from_raw_os_error(errno)
                ),
            )
        })?;
        steps.push(Step::AttachTree {
            index: trees.len(),
            dst: cstring(&mount.at)?,
            attrs,
            recursive,
            slave,
        });
        trees.push(tree);
    }
    let home = user
        .entry
        .as_ref()
        .map(|e| e.home.clone())
        .filter(|home| visible_dir(&root, home, &entries, &mounts))
        .unwrap_or_else(|| PathBuf::from("/"));
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
        steps.push(Step::MakeFile {
            path: dst.clone(),
            mode: 0o644,
        });
        // Device nodes are the one bind that must keep device access.
        steps.push(Step::Bind {
            src: cstring(&host)?,
            dst,
            recursive: false,
            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        });
    }
    plan_given_devices(&spec.resources.devices, &dev, &mut steps)?;
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
        home,
        trees,
    })
}

/// The name of the task's own resolv.conf in its task dir (outside /etc, which the task
/// sees read-only from the chroot env).
const RESOLV_CONF: &str = "resolv.conf";
const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";

/// Writes the task's resolv.conf into its task dir and says where it goes in the root: over
/// `/etc/resolv.conf` as the chroot env shows it, or over the file that one links to (a
/// resolvconf or systemd-resolved node) when that is in the chroot env too; `/etc` not in
/// the chroot env at all gets a mount point of its own in the task dir.
/// What the driver itself puts in the task's /dev: a given device may not take its place.
const DEV_OWN: [&str; 13] = [
    "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "fd", "shm", "stdin",
    "stdout", "stderr",
];

/// Binds each device the task was given at its path in the task's /dev (a tmpfs of ours,
/// mounted nodev: a bind of the host node is the only way a node there can be opened),
/// making the directories on the way.
fn plan_given_devices(
    devices: &[execdriver_core::DeviceMapping],
    dev: &Path,
    steps: &mut Vec<Step>,
) -> Result<(), IsolationError> {
    let mut made: Vec<PathBuf> = Vec::new();
    for d in devices {
        let refuse = |why: &str| IsolationError::Device {
            path: d.task_path.clone(),
            why: why.to_owned(),
        };
        let rel = d
            .task_path
            .strip_prefix("/dev")
            .map_err(|_| refuse("it is not under /dev"))?;
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy());
        if first.is_some_and(|f| DEV_OWN.contains(&f.as_ref())) {
            return Err(refuse("the driver puts its own node or directory there"));
        }
        d.host_device().map_err(|e| refuse(&e.to_string()))?;
        let mut dir = dev.to_owned();
        let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
        for component in parents {
            dir.push(component);
            if !made.contains(&dir) {
                steps.push(Step::MakeDir {
                    path: cstring(&dir)?,
                    mode: 0o755,
                });
                made.push(dir.clone());
            }
        }
        let dst = cstring(&dev.join(rel))?;
        steps.push(Step::MakeFile {
            path: dst.clone(),
            mode: 0o644,
        });
        steps.push(Step::Bind {
            src: cstring(&d.host_path)?,
            dst,
            recursive: false,
            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        });
    }
    Ok(())
}

fn plan_resolv_conf(
    root: &Path,
    entries: &[HostEntry],
    dns: &execdriver_core::DnsConfig,
) -> Result<(PathBuf, PathBuf), IsolationError> {
    plan_resolv_conf_over(Path::new(RESOLV_CONF_PATH), root, entries, dns)
}

/// [`plan_resolv_conf`] for the host file `host` (a test's own).
fn plan_resolv_conf_over(
    host: &Path,
    root: &Path,
    entries: &[HostEntry],
    dns: &execdriver_core::DnsConfig,
) -> Result<(PathBuf, PathBuf), IsolationError> {
    let covers = |path: &Path| {
        entries.iter().any(|e| match e {
            HostEntry::Dir(d) => path.starts_with(d),
            HostEntry::File(f) | HostEntry::Symlink(f, _) => path == f,
        })
    };
    let in_root = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let dst = if !covers(host) {
        ensure_file(root, host.strip_prefix("/").unwrap_or(host))?
    } else {
        let unusable = |why: String| IsolationError::MountPoint {
            path: host.to_owned(),
            why: format!("the task's dns settings cannot cover it: {why}"),
        };
        let meta = std::fs::symlink_metadata(host)
            .map_err(|e| unusable(format!("the chroot env has no file there ({e})")))?;
        if meta.is_file() {
            in_root(host)
        } else if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(host)
                .map_err(|e| unusable(format!("it is a symlink that does not resolve ({e})")))?;
            if !covers(&target) || !target.is_file() {
                return Err(unusable(format!(
                    "it links to {target:?}, which is not a file in the chroot env; add its dir to the chroot env"
                )));
            }
            in_root(&target)
        } else {
            return Err(unusable("it is not a regular file".to_owned()));
        }
    };
    let src = root.join(RESOLV_CONF);
    write_nofollow(&src, dns.resolv_conf().as_bytes())
        .map_err(|e| mount_point_error(&src, format!("cannot write the task's resolv.conf: {e}")))?;
    Ok((src, dst))
}

/// Replaces the contents of the regular file `path` (created 0644 if missing), never
/// through a symlink: the task dir is the task's own.
fn write_nofollow(path: &Path, text: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "it is not a regular file"));
    }
    file.write_all(text)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// Creates the alloc dir's `data` (owned by the task user) and `tmp` (1777, as Nomad makes
/// it) when they are missing, so the task can write the dirs shared with its alloc's other
/// tasks; the alloc dir itself stays root's. What exists already (made by Nomad, or by an
/// earlier task) is left as it is.
fn ensure_alloc_shared(alloc: &Path, user: &TaskUser) -> Result<(), IsolationError> {
    for (name, mode, owner) in [
        ("data", 0o755, Some((user.uid, user.gid))),
        ("tmp", 0o1777, None),
    ] {
        let path = alloc.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            ensure_dir(alloc, Path::new(name))?;
            continue;
        }
        let path = ensure_dir(alloc, Path::new(name))?;
        set_dir_nofollow(&path, mode, owner)
            .map_err(|e| mount_point_error(&path, format!("cannot set it up for the task: {e}")))?;
    }
    Ok(())
}

/// A bind mount of the spec, resolved: the host source and the mount point in the task dir.
#[derive(Debug)]
struct ResolvedMount<'a> {
    spec: &'a execdriver_core::BindMount,
    /// The source, resolved on the host.
    source: PathBuf,
    /// The mount point, `<task dir>/<destination>`.
    at: PathBuf,
}

fn mount_error(mount: &execdriver_core::BindMount, why: impl Into<String>) -> IsolationError {
    IsolationError::Mount {
        host: mount.source.clone(),
        destination: mount.destination.clone(),
        why: why.into(),
    }
}

/// Resolves the spec's bind mounts, parents first, and prepares their mount points. A mount
/// point in the task dir is created; one inside a chroot env dir or inside another mount's
/// source must exist there already, of the source's kind (nothing is created in a host dir),
/// and may not go through a symlink (the kernel would follow it outside the task root).
fn resolve_mounts<'a>(
    root: &Path,
    mounts: &'a [execdriver_core::BindMount],
    entries: &[HostEntry],
) -> Result<Vec<ResolvedMount<'a>>, IsolationError> {
    let mut ordered: Vec<&execdriver_core::BindMount> = mounts.iter().collect();
    ordered.sort_by_key(|m| m.destination.components().count());
    let mut resolved: Vec<ResolvedMount<'a>> = Vec::new();
    for mount in ordered {
        mount
            .validate()
            .map_err(|e| mount_error(mount, e.to_string()))?;
        // A mount made inside a shared one would be made on the host too, and outlive the task.
        if let Some(shared) = resolved.iter().find(|m| {
            matches!(
                m.spec.propagation,
                execdriver_core::Propagation::Shared | execdriver_core::Propagation::Rshared
            ) && mount.destination.starts_with(&m.spec.destination)
        }) {
            return Err(mount_error(
                mount,
                format!(
                    "it is inside {:?}, a shared mount: it would be mounted on the host too; \
                     use slave propagation there or another destination",
                    shared.spec.destination
                ),
            ));
        }
        let source = std::fs::canonicalize(&mount.source)
            .map_err(|e| mount_error(mount, format!("the source cannot be used: {e}")))?;
        let source_is_dir = std::fs::metadata(&source)
            .map_err(|e| mount_error(mount, format!("the source cannot be used: {e}")))?
            .is_dir();
        let dst = &mount.destination;
        let rel = dst.strip_prefix("/").unwrap_or(dst);
        // Where the mount point is at plan time: in an earlier mount's source, in a chroot
        // env entry (at its host path), or in the task dir.
        let host_point = resolved
            .iter()
            .rev()
            .find_map(|m| {
                let rest = dst.strip_prefix(&m.spec.destination).ok()?;
                Some(m.source.join(rest))
            })
            .or_else(|| {
                entries
                    .iter()
                    .any(|e| dst.starts_with(e.path()))
                    .then(|| dst.clone())
            });
        let at = match host_point {
            Some(point) => {
                let kind = if source_is_dir { "directory" } else { "file" };
                let real = std::fs::canonicalize(&point).map_err(|e| {
                    mount_error(
                        mount,
                        format!(
                            "the destination must exist already, as a {kind}, since {point:?} is                              in a host dir of the task root which is never written to: {e}"
                        ),
                    )
                })?;
                if real != point {
                    return Err(mount_error(
                        mount,
                        format!(
                            "the destination goes through a symlink ({point:?} is {real:?} on                              the host); give the path it leads to"
                        ),
                    ));
                }
                let is_dir = std::fs::metadata(&real).is_ok_and(|m| m.is_dir());
                if is_dir != source_is_dir {
                    return Err(mount_error(
                        mount,
                        format!("the destination {point:?} exists and is not a {kind}"),
                    ));
                }
                root.join(rel)
            }
            None if source_is_dir => ensure_dir(root, rel)?,
            None => ensure_file(root, rel)?,
        };
        resolved.push(ResolvedMount {
            spec: mount,
            source,
            at,
        });
    }
    Ok(resolved)
}

/// Whether the absolute `dir` is a dir in the task's root, as the plan builds it.
fn visible_dir(
    root: &Path,
    dir: &Path,
    entries: &[HostEntry],
    mounts: &[ResolvedMount<'_>],
) -> bool {
    if !execdriver_core::spec::is_plain_absolute(dir) || reserved_name(dir).is_some() {
        return false;
    }
    if let Some(inside) = mounts.iter().rev().find_map(|m| {
        let rest = dir.strip_prefix(&m.spec.destination).ok()?;
        Some(m.source.join(rest))
    }) {
        return inside.is_dir();
    }
    if entries.iter().any(|e| dir.starts_with(e.path())) {
        return std::fs::canonicalize(dir).is_ok_and(|real| {
            real.is_dir()
                && entries.iter().any(|e| match e {
                    HostEntry::Dir(d) => real.starts_with(d),
                    _ => false,
                })
        });
    }
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    std::fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.is_dir())
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
            Step::MakeFile { path, .. } => format!("creating file {}", show(path)),
            Step::Mask { dst, .. } => format!("masking {} (binding an empty one over it)", show(dst)),
            Step::Unmount { path } => format!("unmounting {}", show(path)),
            Step::Symlink { target, path } => {
                format!("creating symlink {} -> {}", show(path), show(target))
            }
            Step::AttachTree { dst, slave, .. } => format!(
                "mounting a copy of the mount source at {} ({})",
                show(dst),
                if *slave { "slave" } else { "shared" }
            ),
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
            } => bind(src, dst, *recursive, *attrs, have_setattr),
            Step::Mask { src, dst } => bind(src, dst, false, MASK_ATTRS, have_setattr),
            Step::Unmount { path } => {
                // SAFETY: valid C string.
                check_int(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(|_| ())
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
            Step::MakeFile { path, mode } => {
                // SAFETY: valid C string; the fd is closed right away.
                let fd = check_int(unsafe {
                    libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        *mode as libc::c_uint,
                    )
                })?;
                // SAFETY: fchmod then close an fd we own (open applied the umask).
                let result = check_int(unsafe { libc::fchmod(fd, *mode) }).map(|_| ());
                unsafe { libc::close(fd) };
                result
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
            Step::AttachTree {
                index,
                dst,
                attrs,
                recursive,
                slave,
            } => {
                sys::move_mount_tree(super::init::FIRST_TREE_FD + *index as i32, dst)?;
                sys::mount_setattr(dst, *attrs, *recursive)?;
                if !*slave {
                    return Ok(());
                }
                let rec = if *recursive { libc::MS_REC } else { 0 };
                mount(None, dst, None, libc::MS_SLAVE | rec, None)
            }
            Step::Hostname { name } => {
                // SAFETY: name is valid for name.len() bytes.
                check_int(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
                    .map(|_| ())
            }
            Step::EnterRoot { root, allow_chroot } => enter_root(root, *allow_chroot),
        }
    }
}

/// Binds `src` on `dst` and adds the `MOUNT_ATTR_*` bits in `attrs`, in the child. No
/// allocation.
fn bind(
    src: &CStr,
    dst: &CStr,
    recursive: bool,
    attrs: u64,
    have_setattr: bool,
) -> Result<(), i32> {
    let rec = if recursive { libc::MS_REC } else { 0 };
    mount(Some(src), dst, None, libc::MS_BIND | rec, None)?;
    if have_setattr {
        return sys::mount_setattr(dst, attrs, recursive);
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
    fn globs_match_any_run_of_characters_in_linear_time() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("ssh_host_*_key", "ssh_host_ed25519_key"));
        assert!(m("ssh_host_*_key", "ssh_host__key"));
        assert!(!m("ssh_host_*_key", "ssh_host_ed25519_key.pub"));
        assert!(!m("ssh_host_*_key", "ssh_host_rsa_key2"));
        assert!(m("*", ".hidden"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("shadow", "shadow") && !m("shadow", "shadow-"));
        // Many stars against a long near-miss: quadratic at worst, not exponential.
        let pattern = "*a".repeat(40);
        assert!(!m(&pattern, &"a".repeat(39)));
    }

    #[test]
    fn masks_follow_host_links_only_to_what_the_task_can_see() {
        // Not under /tmp, which is the task's own and cannot hold a mask.
        let host = tempfile::Builder::new()
            .prefix("execdriver-masks-")
            .tempdir_in("/var/tmp")
            .expect("tempdir in /var/tmp");
        let base = std::fs::canonicalize(host.path()).expect("canonical");
        let etc = base.join("etc");
        let outside = base.join("outside");
        for d in [&etc, &etc.join("ssh"), &etc.join("sudoers.d"), &outside] {
            std::fs::create_dir(d).expect("mkdir");
        }
        for f in [
            "shadow",
            "passwd",
            "ssh/ssh_host_ed25519_key",
            "ssh/ssh_host_ed25519_key.pub",
            "ssh/ssh_host_rsa_key",
            "sudoers.d/admins",
        ] {
            std::fs::write(etc.join(f), "x").expect("write");
        }
        std::fs::write(outside.join("secret"), "x").expect("write");
        // One link to a file the task sees (masked where it leads), one out of the chroot
        // env (left alone: the task sees a dangling link), one dangling.
        std::os::unix::fs::symlink("shadow", etc.join("shadow-link")).expect("symlink");
        std::os::unix::fs::symlink(outside.join("secret"), etc.join("out")).expect("symlink");
        std::os::unix::fs::symlink("/no/such/file", etc.join("dangling")).expect("symlink");
        let entries = vec![HostEntry::Dir(etc.clone())];
        let patterns: Vec<PathBuf> = [
            "shadow-link",
            "out",
            "dangling",
            "missing",
            "ssh/ssh_host_*_key",
            "sudoers.d",
            "sudoers.d/admins",
            "shadow",
        ]
        .iter()
        .map(|p| etc.join(p))
        .chain([outside.join("secret")])
        .collect();
        let masks = resolve_masks(&patterns, &entries).expect("resolve");
        let want = vec![
            Mask {
                host: etc.join("shadow"),
                dir: false,
            },
            Mask {
                host: etc.join("ssh/ssh_host_ed25519_key"),
                dir: false,
            },
            Mask {
                host: etc.join("ssh/ssh_host_rsa_key"),
                dir: false,
            },
            Mask {
                host: etc.join("sudoers.d"),
                dir: true,
            },
        ];
        assert_eq!(masks, want);
        // A chroot env file is masked when named; nothing is visible through a symlink entry.
        let file = vec![HostEntry::File(etc.join("passwd"))];
        assert_eq!(
            resolve_masks(&[etc.join("passwd")], &file).expect("file"),
            vec![Mask {
                host: etc.join("passwd"),
                dir: false
            }]
        );
        for (bad, needle) in [
            ("/proc/kcore", "/proc"),
            ("/tmp/x", "/tmp"),
            ("etc/shadow", "absolute"),
            ("/", "whole root"),
        ] {
            let err = resolve_masks(&[PathBuf::from(bad)], &entries).expect_err(bad);
            let text = err.to_string();
            assert!(text.contains(needle) && text.contains(bad), "{bad}: {text}");
        }
    }

    #[test]
    fn the_tasks_resolv_conf_covers_the_chroot_envs_or_the_file_it_links_to() {
        let tmp = tempfile::tempdir().unwrap();
        let (host, root) = (tmp.path().join("host"), tmp.path().join("root"));
        for dir in ["etc", "run/resolved", "other"] {
            std::fs::create_dir_all(host.join(dir)).unwrap();
        }
        std::fs::create_dir(&root).unwrap();
        let dns = execdriver_core::DnsConfig {
            servers: vec!["10.0.0.2".into()],
            ..Default::default()
        };
        let etc = HostEntry::Dir(host.join("etc"));
        let resolv = host.join("etc/resolv.conf");
        let rel = |p: &Path| root.join(p.strip_prefix("/").unwrap());

        // A plain file in the chroot env's /etc: covered where it is.
        std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
        let (src, dst) =
            plan_resolv_conf_over(&resolv, &root, std::slice::from_ref(&etc), &dns).unwrap();
        assert_eq!((src.clone(), dst), (root.join("resolv.conf"), rel(&resolv)));
        assert_eq!(std::fs::read_to_string(&src).unwrap(), dns.resolv_conf());

        // A link to a file in the chroot env: the file it links to is covered.
        std::fs::remove_file(&resolv).unwrap();
        let stub = host.join("run/resolved/stub.conf");
        std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
        std::os::unix::fs::symlink(&stub, &resolv).unwrap();
        let run = HostEntry::Dir(host.join("run/resolved"));
        let (_, dst) =
            plan_resolv_conf_over(&resolv, &root, &[etc.clone(), run], &dns).unwrap();
        assert_eq!(dst, rel(&stub));
        // ... and refused, naming the fix, when the task root would not have it.
        let err = plan_resolv_conf_over(&resolv, &root, std::slice::from_ref(&etc), &dns)
            .expect_err("target outside the chroot env");
        assert!(err.to_string().contains("add its dir to the chroot env"), "{err}");

        // /etc not in the chroot env: a mount point of its own in the task dir.
        let (_, dst) = plan_resolv_conf_over(&resolv, &root, &[], &dns).unwrap();
        assert_eq!(dst, rel(&resolv));
        assert!(dst.is_file());

        // A planted link in the task dir is not written through.
        std::fs::remove_file(root.join("resolv.conf")).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("resolv.conf")).unwrap();
        plan_resolv_conf_over(&resolv, &root, &[], &dns).expect_err("planted link");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
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
