//! go-plugin's handshake, plugin side: the magic cookie, the app protocol version, the unix
//! socket in a private dir, and the one line on stdout that tells the client where it is.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The env var Nomad sets to show the binary is started as its plugin.
pub const MAGIC_COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
/// Its value.
pub const MAGIC_COOKIE_VALUE: &str =
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
/// go-plugin's core protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The app protocol version of Nomad's plugins.
pub const APP_PROTOCOL_VERSION: u32 = 2;
/// The file name of the socket inside its private dir.
pub const SOCKET_NAME: &str = "plugin.sock";
/// The longest unix socket path the kernel takes (`sun_path` less the terminating nul).
const MAX_SOCKET_PATH: usize = 107;

/// Why the plugin cannot start as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Started by hand, or by something that is not Nomad.
    #[error(
        "this binary is a plugin, it is not meant to be run directly: it is the execdriver task \
         driver for Nomad; put it in the agent's plugin_dir and enable it with a \
         `plugin \"execdriver-nomad\"` block in the agent config"
    )]
    NoCookie,
    /// The client speaks no app protocol version we do.
    #[error(
        "the plugin client offers app protocol versions {offered:?}; this plugin speaks only \
         version {APP_PROTOCOL_VERSION}"
    )]
    Version {
        /// What the client offered.
        offered: String,
    },
    /// The socket dir or socket could not be made.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being made.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket path would not fit in a socket address.
    #[error(
        "socket path {0} is longer than {MAX_SOCKET_PATH} bytes; set PLUGIN_UNIX_SOCKET_DIR or \
         TMPDIR to a shorter dir"
    )]
    PathTooLong(PathBuf),
}

/// Checks the cookie and the offered protocol versions in an environment given as a lookup.
pub fn check_env(get: impl Fn(&str) -> Option<OsString>) -> Result<(), HandshakeError> {
    if get(MAGIC_COOKIE_KEY).as_deref() != Some(MAGIC_COOKIE_VALUE.as_ref()) {
        return Err(HandshakeError::NoCookie);
    }
    // A client that sends no list is an old one that only knows its one version.
    let Some(offered) = get("PLUGIN_PROTOCOL_VERSIONS") else {
        return Ok(());
    };
    let offered = offered.to_string_lossy().into_owned();
    let ours = APP_PROTOCOL_VERSION.to_string();
    if offered.split(',').any(|v| v.trim() == ours) {
        Ok(())
    } else {
        Err(HandshakeError::Version { offered })
    }
}

/// The dir in which the private socket dir is made: go-plugin's choice order.
pub fn socket_parent(get: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    ["PLUGIN_UNIX_SOCKET_DIR", "TMPDIR"]
        .iter()
        .find_map(|key| get(key).filter(|v| !v.is_empty()))
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// A private dir (mode 0700) holding the socket; removed with everything in it on drop.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    /// Makes a fresh dir `execdriver-nomad-<pid>-<n>` under `parent`.
    pub fn create(parent: &Path) -> Result<Self, HandshakeError> {
        let pid = std::process::id();
        let mut attempt = 0u32;
        loop {
            let dir = parent.join(format!("execdriver-nomad-{pid}-{attempt}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join(SOCKET_NAME);
                    if socket.as_os_str().len() > MAX_SOCKET_PATH {
                        let _ = std::fs::remove_dir(&dir);
                        return Err(HandshakeError::PathTooLong(socket));
                    }
                    return Ok(Self { dir });
                }
                // Left by an earlier process with the same pid: never reuse it, it may not
                // be ours.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(source) => {
                    return Err(HandshakeError::Io {
                        what: "creating the socket dir",
                        path: dir,
                        source,
                    });
                }
            }
        }
    }

    /// Where the socket is bound.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(SOCKET_NAME)
    }

    /// The dir.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.socket_path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The handshake line: `1|2|unix|<socket path>|grpc|`.
pub fn handshake_line(socket: &Path) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{}|grpc|\n",
        socket.display()
    )
}

/// Prints the handshake line and flushes. The client reads nothing else from stdout, so a
/// failure here is only an error for the caller to log: the client will time out.
pub fn announce(socket: &Path) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(handshake_line(socket).as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn the_cookie_must_be_there_and_right() {
        assert!(matches!(check_env(env(&[])), Err(HandshakeError::NoCookie)));
        assert!(matches!(
            check_env(env(&[(MAGIC_COOKIE_KEY, "wrong")])),
            Err(HandshakeError::NoCookie)
        ));
        assert!(check_env(env(&[(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)])).is_ok());
        let message = HandshakeError::NoCookie.to_string();
        assert!(
            message.contains("not meant to be run directly"),
            "{message}"
        );
    }

    #[test]
    fn version_2_must_be_offered() {
        let ok = [("1,2", true), ("2", true), (" 3 , 2", true), ("1,3", false)];
        for (offered, good) in ok {
            let result = check_env(env(&[
                (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
                ("PLUGIN_PROTOCOL_VERSIONS", offered),
            ]));
            assert_eq!(result.is_ok(), good, "{offered}");
        }
    }

    #[test]
    fn socket_parent_follows_go_plugin() {
        assert_eq!(socket_parent(env(&[])), PathBuf::from("/tmp"));
        assert_eq!(socket_parent(env(&[("TMPDIR", "/t")])), PathBuf::from("/t"));
        assert_eq!(
            socket_parent(env(&[("TMPDIR", "/t"), ("PLUGIN_UNIX_SOCKET_DIR", "/s")])),
            PathBuf::from("/s")
        );
    }

    #[test]
    fn the_line_is_go_plugins_format() {
        assert_eq!(
            handshake_line(Path::new("/tmp/x/plugin.sock")),
            "1|2|unix|/tmp/x/plugin.sock|grpc|\n"
        );
    }

    #[test]
    fn the_socket_dir_is_private_and_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = SocketDir::create(parent.path()).expect("create");
        let path = dir.path().to_owned();
        let mode = std::fs::metadata(&path).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        std::fs::write(dir.socket_path(), b"").expect("write");
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_too_long_socket_path_is_refused() {
        let parent = tempfile::tempdir().expect("tempdir");
        let deep = parent.path().join("d".repeat(100));
        std::fs::create_dir(&deep).expect("mkdir");
        assert!(matches!(
            SocketDir::create(&deep),
            Err(HandshakeError::PathTooLong(_))
        ));
        assert_eq!(std::fs::read_dir(&deep).expect("read").count(), 0);
    }
}
