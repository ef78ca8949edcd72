//! The plugin's own settings: the `config { ... }` of the agent's `plugin "execdriver-nomad"`
//! block, its schema (sent by ConfigSchema) and its decoding (for SetConfig).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::cty::{self, DecodeError, Fields, Problem};
use crate::duration;
use crate::hclspec::{self, Field};
use crate::proto::hclspec::Spec;

/// Where task state lives unless the operator says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/execdriver-nomad";
/// The user a task runs as when its job names none.
pub const DEFAULT_USER: &str = "nobody";
/// The longest kill timeout a job may ask for, unless configured.
pub const DEFAULT_MAX_KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the node is fingerprinted again, unless configured.
pub const DEFAULT_FINGERPRINT_PERIOD: Duration = Duration::from_secs(15);
/// The shortest fingerprint period accepted: each check reads the cgroup tree.
pub const MIN_FINGERPRINT_PERIOD: Duration = Duration::from_secs(1);
/// The longest kill timeout accepted at all.
pub const MAX_MAX_KILL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The plugin's settings, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where task state (one dir per task) is kept.
    pub data_dir: PathBuf,
    /// The cgroup parent of task cgroups, relative to each hierarchy root; `None`: the
    /// engine's default (the plugin's own cgroup where it can host them, else the slice).
    pub cgroup_parent: Option<String>,
    /// The driver's own top-level cgroup slice, `/<slice_name>.slice`: supervisors live in
    /// it (outside the Nomad agent's cgroup), and tasks when the plugin's cgroup cannot
    /// host them.
    pub slice_name: String,
    /// Host dirs bind-mounted read-only into every task root.
    pub chroot_env: Vec<PathBuf>,
    /// The user of a task whose job sets none.
    pub default_user: String,
    /// The users a job may name; empty: any.
    pub allowed_users: Vec<String>,
    /// The longest kill timeout honoured.
    pub max_kill_timeout: Duration,
    /// How often the fingerprint is checked again.
    pub fingerprint_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            cgroup_parent: None,
            slice_name: "execdriver".to_owned(),
            chroot_env: execdriver_core::spec::DEFAULT_CHROOT_ENV
                .iter()
                .map(PathBuf::from)
                .collect(),
            default_user: DEFAULT_USER.to_owned(),
            allowed_users: Vec::new(),
            max_kill_timeout: DEFAULT_MAX_KILL_TIMEOUT,
            fingerprint_period: DEFAULT_FINGERPRINT_PERIOD,
        }
    }
}

/// The schema's attributes, with the defaults of [`Settings::default`].
pub fn fields() -> Vec<Field> {
    let d = Settings::default();
    let chroot: Vec<String> = d
        .chroot_env
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    vec![
        Field::with_default(
            "data_dir",
            "string",
            hclspec::string_literal(&d.data_dir.display().to_string()),
        ),
        Field::optional("cgroup_parent", "string"),
        Field::with_default(
            "slice_name",
            "string",
            hclspec::string_literal(&d.slice_name),
        ),
        Field::with_default(
            "chroot_env",
            "list(string)",
            hclspec::string_list_literal(&chroot),
        ),
        Field::with_default(
            "default_user",
            "string",
            hclspec::string_literal(&d.default_user),
        ),
        Field::with_default("allowed_users", "list(string)", "[]".to_owned()),
        Field::with_default(
            "max_kill_timeout",
            "string",
            hclspec::string_literal(&duration::format(d.max_kill_timeout)),
        ),
        Field::with_default(
            "fingerprint_period",
            "string",
            hclspec::string_literal(&duration::format(d.fingerprint_period)),
        ),
    ]
}

/// The spec ConfigSchema answers with.
pub fn schema() -> Spec {
    hclspec::object_spec(&fields())
}

/// Decodes SetConfig's `msgpack_config`. Empty bytes (an agent with no `config` block in
/// older versions) mean every default.
pub fn decode(msgpack: &[u8]) -> Result<Settings, DecodeError> {
    if msgpack.is_empty() {
        return Ok(Settings::default());
    }
    let ty =
        hclspec::object_type(&fields()).map_err(|e| DecodeError::at("", Problem::Invalid(e)))?;
    let value = cty::decode(msgpack, &ty)?;
    let f = Fields::of(&value)?;
    let mut s = Settings::default();
    if let Some(dir) = f.string("data_dir")? {
        s.data_dir = absolute_path("data_dir", &dir)?;
    }
    s.cgroup_parent = match f.string("cgroup_parent")? {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(cgroup_parent(&p)?),
        None => None,
    };
    if let Some(name) = f.string("slice_name")? {
        s.slice_name = slice_name(&name)?;
    }
    if let Some(dirs) = f.string_list("chroot_env")? {
        s.chroot_env = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| absolute_path(&format!("chroot_env[{i}]"), dir))
            .collect::<Result<_, _>>()?;
    }
    if let Some(user) = f.string("default_user")? {
        s.default_user = user_name("default_user", &user)?;
    }
    if let Some(users) = f.string_list("allowed_users")? {
        s.allowed_users = users
            .iter()
            .enumerate()
            .map(|(i, u)| user_name(&format!("allowed_users[{i}]"), u))
            .collect::<Result<_, _>>()?;
    }
    if !s.allowed_users.is_empty() && !s.allowed_users.contains(&s.default_user) {
        return Err(DecodeError::at(
            "default_user",
            Problem::Invalid(format!(
                "is {:?}, which is not in allowed_users {:?}",
                s.default_user, s.allowed_users
            )),
        ));
    }
    if let Some(text) = f.string("max_kill_timeout")? {
        let d = duration::parse(&text)
            .map_err(|e| DecodeError::at("max_kill_timeout", Problem::Invalid(e)))?;
        if d > MAX_MAX_KILL_TIMEOUT {
            return Err(DecodeError::at(
                "max_kill_timeout",
                Problem::Invalid(format!(
                    "is {text}, above the limit of {}",
                    duration::format(MAX_MAX_KILL_TIMEOUT)
                )),
            ));
        }
        s.max_kill_timeout = d;
    }
    if let Some(text) = f.string("fingerprint_period")? {
        let d = duration::parse(&text)
            .map_err(|e| DecodeError::at("fingerprint_period", Problem::Invalid(e)))?;
        if d < MIN_FINGERPRINT_PERIOD {
            return Err(DecodeError::at(
                "fingerprint_period",
                Problem::Invalid(format!(
                    "is {text}, below the minimum of {}",
                    duration::format(MIN_FINGERPRINT_PERIOD)
                )),
            ));
        }
        s.fingerprint_period = d;
    }
    Ok(s)
}

fn absolute_path(key: &str, text: &str) -> Result<PathBuf, DecodeError> {
    let path = Path::new(text);
    if execdriver_core::spec::is_plain_absolute(path) && path.parent().is_some() {
        Ok(path.to_owned())
    } else {
        Err(DecodeError::at(
            key,
            Problem::Invalid(format!(
                "is {text:?}; it must be an absolute path other than `/`, without `..`"
            )),
        ))
    }
}

fn cgroup_parent(text: &str) -> Result<String, DecodeError> {
    let path = Path::new(text);
    let plain = !text.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::RootDir));
    if plain {
        Ok(text.to_owned())
    } else {
        Err(DecodeError::at(
            "cgroup_parent",
            Problem::Invalid(format!(
                "is {text:?}; it must be a cgroup path such as `execdriver.slice` or \
                 `/nomad/execdriver`, without `.` or `..`"
            )),
        ))
    }
}

fn slice_name(text: &str) -> Result<String, DecodeError> {
    let ok = !text.is_empty()
        && text.len() <= 200
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !text.starts_with('.');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(DecodeError::at(
            "slice_name",
            Problem::Invalid(format!(
                "is {text:?}; it must be a plain name such as `execdriver` (the slice is \
                 /<name>.slice)"
            )),
        ))
    }
}

fn user_name(key: &str, name: &str) -> Result<String, DecodeError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name
            .chars()
            .any(|c| c == '\0' || c == ':' || c == '/' || c.is_whitespace());
    if ok {
        Ok(name.to_owned())
    } else {
        Err(DecodeError::at(
            key,
            Problem::Invalid(format!("is {name:?}, which is not a usable user name")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as R;

    fn encode(pairs: Vec<(&str, R)>) -> Vec<u8> {
        let map = R::Map(pairs.into_iter().map(|(k, v)| (R::from(k), v)).collect());
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &map).expect("encode");
        out
    }

    #[test]
    fn empty_config_is_every_default() {
        assert_eq!(decode(&[]), Ok(Settings::default()));
        assert_eq!(decode(&encode(vec![])), Ok(Settings::default()));
    }

    #[test]
    fn every_setting_decodes() {
        let bytes = encode(vec![
            (
                "allowed_users",
                R::Array(vec![R::from("nobody"), R::from("web")]),
            ),
            ("cgroup_parent", R::from("execdriver.slice")),
            (
                "chroot_env",
                R::Array(vec![R::from("/usr"), R::from("/etc")]),
            ),
            ("data_dir", R::from("/srv/execdriver")),
            ("default_user", R::from("web")),
            ("fingerprint_period", R::from("1m")),
            ("max_kill_timeout", R::from("2m")),
        ]);
        let s = decode(&bytes).expect("decode");
        assert_eq!(s.data_dir, PathBuf::from("/srv/execdriver"));
        assert_eq!(s.cgroup_parent.as_deref(), Some("execdriver.slice"));
        assert_eq!(
            s.chroot_env,
            vec![PathBuf::from("/usr"), PathBuf::from("/etc")]
        );
        assert_eq!(s.default_user, "web");
        assert_eq!(s.allowed_users, vec!["nobody".to_owned(), "web".to_owned()]);
        assert_eq!(s.max_kill_timeout, Duration::from_secs(120));
        assert_eq!(s.fingerprint_period, Duration::from_secs(60));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases: Vec<(Vec<(&str, R)>, &str)> = vec![
            (
                vec![("data_dri", R::from("/x"))],
                "`data_dri` is not a known key",
            ),
            (
                vec![("data_dir", R::from(7))],
                "`data_dir` must be a string, found a number",
            ),
            (vec![("data_dir", R::from("rel"))], "`data_dir` is \"rel\""),
            (vec![("data_dir", R::from("/"))], "`data_dir` is \"/\""),
            (
                vec![(
                    "chroot_env",
                    R::Array(vec![R::from("/usr"), R::from("x/..")]),
                )],
                "`chroot_env[1]`",
            ),
            (
                vec![("cgroup_parent", R::from("a/../b"))],
                "`cgroup_parent`",
            ),
            (vec![("default_user", R::from("a b"))], "`default_user`"),
            (
                vec![("allowed_users", R::Array(vec![R::from("web")]))],
                "`default_user` is \"nobody\", which is not in allowed_users",
            ),
            (
                vec![("max_kill_timeout", R::from("soon"))],
                "`max_kill_timeout`",
            ),
            (
                vec![("max_kill_timeout", R::from("48h"))],
                "above the limit",
            ),
            (
                vec![("fingerprint_period", R::from("10ms"))],
                "below the minimum",
            ),
        ];
        for (pairs, needle) in cases {
            let err = decode(&encode(pairs)).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }

    #[test]
    fn the_schema_defaults_are_the_settings_defaults() {
        let fields = fields();
        let data_dir = fields
            .iter()
            .find(|f| f.name == "data_dir")
            .expect("data_dir");
        assert_eq!(
            data_dir.default.as_deref(),
            Some("\"/var/lib/execdriver-nomad\"")
        );
        let chroot = fields
            .iter()
            .find(|f| f.name == "chroot_env")
            .expect("chroot_env");
        assert!(
            chroot
                .default
                .as_deref()
                .is_some_and(|d| d.starts_with("[\"/bin\""))
        );
        let timeout = fields
            .iter()
            .find(|f| f.name == "max_kill_timeout")
            .expect("timeout");
        assert_eq!(timeout.default.as_deref(), Some("\"30s\""));
    }
}
