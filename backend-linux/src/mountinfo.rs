//! The one parser of `/proc/<pid>/mountinfo` (proc(5)), for the cgroup discovery and the
//! CLI's check for mounts left inside a directory it is about to delete.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mount: the fields of a mountinfo line the driver uses, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path within the filesystem visible at the mountpoint (field 4).
    pub root: String,
    /// Where it is mounted (field 5).
    pub mountpoint: PathBuf,
    /// The filesystem type (first field after the ` - ` separator).
    pub fstype: String,
    /// The superblock options (third field after the separator), split at commas.
    pub super_opts: Vec<String>,
}

/// Every well-formed line of mountinfo `text`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_opts = right.next().unwrap_or("");
    Some(MountEntry {
        root: String::from_utf8_lossy(&unescape(left.get(3)?)).into_owned(),
        mountpoint: PathBuf::from(OsString::from_vec(unescape(left.get(4)?))),
        fstype: fstype.to_owned(),
        super_opts: super_opts.split(',').map(str::to_owned).collect(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space); anything else is kept as is.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn fields_are_unescaped_and_malformed_lines_skipped() {
        let text = "\
40 25 0:27 /lxc/c1 /mnt/my\\040cg rw - cgroup cgroup rw,memory
garbage without a separator
41 25 0:28 / /tmp/a\\134b\\777 rw - tmpfs tmpfs rw
42 25 0:29 / /end\\ rw - tmpfs tmpfs rw
";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].mountpoint, Path::new("/mnt/my cg"));
        assert_eq!(mounts[0].root, "/lxc/c1");
        assert_eq!(mounts[0].fstype, "cgroup");
        assert_eq!(mounts[0].super_opts, vec!["rw", "memory"]);
        // \134 is a backslash; \777 is no byte and stays as written.
        assert_eq!(mounts[1].mountpoint, Path::new("/tmp/a\\b\\777"));
        assert_eq!(mounts[2].mountpoint, Path::new("/end\\"));
    }
}
