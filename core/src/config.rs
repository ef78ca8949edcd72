//! The user-facing task config: `{"command": "...", "args": [...]}`.
//!
//! Decoding is deliberately weak, like the reference driver's: job files written by hand put
//! numbers and bools in `args`, or a single string where a list belongs, and we accept those
//! rather than make the user fight the type system. Unknown keys are refused by name, because
//! a typo such as `arg` silently ignored would run the command without its arguments.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a task config could not be decoded or is not runnable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The input was not JSON at all.
    #[error("task config is not valid json: {0}")]
    Json(String),
    /// The top level was not an object.
    #[error("task config must be a json object, found {found}")]
    NotAnObject {
        /// The json type found instead.
        found: &'static str,
    },
    /// A key the config does not know.
    #[error("unknown key `{key}` in task config; the known keys are `command` and `args`")]
    UnknownKey {
        /// The unknown key as written.
        key: String,
    },
    /// A value of a type that cannot be weakly turned into what the key needs.
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        /// The key (or `args[i]` element) at fault.
        key: String,
        /// What was expected there.
        expected: &'static str,
        /// The json type found instead.
        found: &'static str,
    },
    /// No command, or one made only of whitespace.
    #[error("missing command: set `command` to the program to run")]
    MissingCommand,
    /// Whitespace before or after the command: almost always a templating slip.
    #[error("command {command:?} has whitespace before or after it; remove it")]
    PaddedCommand {
        /// The command as given.
        command: String,
    },
    /// Whitespace inside the command: a command line written where a program belongs.
    #[error(
        "command {command:?} contains whitespace; put the program alone in `command` and its arguments in `{args_key}`"
    )]
    WhitespaceInCommand {
        /// The command as given.
        command: String,
        /// The name of the arguments key to point the user at.
        args_key: String,
    },
    /// A NUL byte, which no exec can carry.
    #[error("`{key}` contains a nul byte, which cannot be passed to a program")]
    NulByte {
        /// Where the NUL was found.
        key: String,
    },
}

/// What to run: a program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The program: a path, or a name looked up in the task root's PATH.
    pub command: String,
    /// Its arguments, without `argv[0]`.
    #[serde(default)]
    pub args: Vec<String>,
}

impl TaskConfig {
    /// A config from a command and its arguments, not yet validated.
    pub fn new(
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// Decodes a config from JSON text, weakly typed, then validates it.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Decodes a config from a JSON value, weakly typed, then validates it.
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = value else {
            return Err(ConfigError::NotAnObject {
                found: json_type(value),
            });
        };
        let mut config = TaskConfig::default();
        for (key, value) in map {
            // Keys match whatever their case, as the reference's decoder matched field names.
            match key.to_ascii_lowercase().as_str() {
                "command" => config.command = weak_string("command", value)?.unwrap_or_default(),
                "args" => config.args = weak_string_list("args", value)?,
                _ => return Err(ConfigError::UnknownKey { key: key.clone() }),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks that the command is runnable and that nothing carries a NUL byte.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_command(&self.command, "args")?;
        for (i, arg) in self.args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(ConfigError::NulByte {
                    key: format!("args[{i}]"),
                });
            }
        }
        Ok(())
    }
}

/// Refuses a blank command and one with whitespace in it, naming `args_key` as the fix.
pub fn validate_command(command: &str, args_key: &str) -> Result<(), ConfigError> {
    if command.trim().is_empty() {
        return Err(ConfigError::MissingCommand);
    }
    if command.trim() != command {
        return Err(ConfigError::PaddedCommand {
            command: command.to_owned(),
        });
    }
    if command.chars().any(char::is_whitespace) {
        return Err(ConfigError::WhitespaceInCommand {
            command: command.to_owned(),
            args_key: args_key.to_owned(),
        });
    }
    if command.contains('\0') {
        return Err(ConfigError::NulByte {
            key: "command".to_owned(),
        });
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A scalar as a string; `None` for null, which reads as "not set".
fn weak_string(key: &str, value: &Value) -> Result<Option<String>, ConfigError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Array(_) | Value::Object(_) => Err(ConfigError::WrongType {
            key: key.to_owned(),
            expected: "a string",
            found: json_type(value),
        }),
    }
}

fn weak_string_list(key: &str, value: &Value) -> Result<Vec<String>, ConfigError> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                // A null inside a list is almost certainly a templating mistake; an empty
                // argument would hide it.
                Value::Null => Err(ConfigError::WrongType {
                    key: format!("{key}[{i}]"),
                    expected: "a string",
                    found: "null",
                }),
                _ => weak_string(&format!("{key}[{i}]"), item).map(Option::unwrap_or_default),
            })
            .collect(),
        Value::Object(_) => Err(ConfigError::WrongType {
            key: key.to_owned(),
            expected: "a list of strings",
            found: json_type(value),
        }),
        scalar => Ok(weak_string(key, scalar)?.into_iter().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_plain_config() {
        let c = TaskConfig::from_value(&json!({"command": "/bin/echo", "args": ["a", "b"]}));
        assert_eq!(c, Ok(TaskConfig::new("/bin/echo", ["a", "b"])));
    }

    #[test]
    fn weak_typing_turns_scalars_into_strings() {
        let c = TaskConfig::from_value(&json!({"command": "sleep", "args": 10}));
        assert_eq!(c, Ok(TaskConfig::new("sleep", ["10"])));
        let c = TaskConfig::from_value(&json!({"command": "x", "args": [1, 2.5, true, "s"]}));
        assert_eq!(c, Ok(TaskConfig::new("x", ["1", "2.5", "true", "s"])));
        let c = TaskConfig::from_value(&json!({"command": "x", "args": "one two"}));
        assert_eq!(c, Ok(TaskConfig::new("x", ["one two"])));
        let c = TaskConfig::from_value(&json!({"command": "x", "args": null}));
        assert_eq!(c, Ok(TaskConfig::new("x", Vec::<String>::new())));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = TaskConfig::from_value(&json!({"command": "x", "arg": ["a"]})).unwrap_err();
        assert_eq!(e, ConfigError::UnknownKey { key: "arg".into() });
        assert!(e.to_string().contains("`arg`"));
    }

    #[test]
    fn wrong_types_are_refused() {
        assert!(matches!(
            TaskConfig::from_value(&json!({"command": ["x"]})),
            Err(ConfigError::WrongType { .. })
        ));
        let e = TaskConfig::from_value(&json!({"command": "x", "args": [[1]]})).unwrap_err();
        assert!(e.to_string().contains("args[0]"), "{e}");
        assert!(matches!(
            TaskConfig::from_value(&json!({"command": "x", "args": {"a": 1}})),
            Err(ConfigError::WrongType { .. })
        ));
        assert!(matches!(
            TaskConfig::from_value(&json!(["x"])),
            Err(ConfigError::NotAnObject { found: "a list" })
        ));
        assert!(matches!(
            TaskConfig::from_json_str("{"),
            Err(ConfigError::Json(_))
        ));
    }

    #[test]
    fn command_validation() {
        assert_eq!(
            validate_command("", "args"),
            Err(ConfigError::MissingCommand)
        );
        assert_eq!(
            validate_command(" \t", "args"),
            Err(ConfigError::MissingCommand)
        );
        let e = validate_command("/bin/echo hi", "args").unwrap_err();
        assert!(e.to_string().contains("`args`"), "{e}");
        assert!(matches!(
            validate_command(" /bin/echo", "args"),
            Err(ConfigError::PaddedCommand { .. })
        ));
        assert_eq!(
            TaskConfig::from_value(&json!({"Command": "x", "ARGS": "a"})),
            Ok(TaskConfig::new("x", ["a"]))
        );
        assert!(validate_command("a\0b", "args").is_err());
        assert!(validate_command("/bin/echo", "args").is_ok());
        assert_eq!(
            TaskConfig::from_value(&json!({})),
            Err(ConfigError::MissingCommand)
        );
        assert!(TaskConfig::new("x", ["a\0"]).validate().is_err());
    }
}
