//! A job's `config { ... }` for `driver = "execdriver"`: its schema (TaskConfigSchema) and
//! its decoding from `TaskConfig.msgpack_driver_config`.

use crate::cty::{self, DecodeError, Fields, Problem};
use crate::hclspec::{self, Field};
use crate::proto::hclspec::Spec;

/// What a job asks to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTaskConfig {
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// `default`, `unconfined`, or a seccomp profile file (OCI JSON); `None`: the default.
    pub seccomp: Option<String>,
}

/// The schema's attributes: everything the engine's task config offers.
pub fn fields() -> Vec<Field> {
    vec![
        Field::required("command", "string"),
        Field::optional("args", "list(string)"),
        Field::optional("seccomp", "string"),
    ]
}

/// The spec TaskConfigSchema answers with.
pub fn schema() -> Spec {
    hclspec::object_spec(&fields())
}

/// Decodes a task's driver config; errors name the key at fault.
pub fn decode(msgpack: &[u8]) -> Result<JobTaskConfig, DecodeError> {
    if msgpack.is_empty() {
        return Err(DecodeError::at("command", Problem::Required));
    }
    let ty =
        hclspec::object_type(&fields()).map_err(|e| DecodeError::at("", Problem::Invalid(e)))?;
    let value = cty::decode(msgpack, &ty)?;
    let f = Fields::of(&value)?;
    Ok(JobTaskConfig {
        command: f.required_string("command")?,
        args: f.string_list("args")?.unwrap_or_default(),
        seccomp: f.string("seccomp")?.filter(|s| !s.is_empty()),
    })
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
    fn command_and_args_decode() {
        let bytes = encode(vec![
            ("args", R::Array(vec![R::from("-c"), R::from("echo hi")])),
            ("command", R::from("/bin/sh")),
        ]);
        assert_eq!(
            decode(&bytes),
            Ok(JobTaskConfig {
                command: "/bin/sh".into(),
                args: vec!["-c".into(), "echo hi".into()],
                seccomp: None,
            })
        );
        let bytes = encode(vec![("args", R::Nil), ("command", R::from("/bin/true"))]);
        assert_eq!(decode(&bytes).map(|c| c.args), Ok(vec![]));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "`command` is required"),
            (
                encode(vec![("args", R::Nil), ("command", R::Nil)]),
                "`command` is required",
            ),
            (
                encode(vec![("command", R::from("/bin/true")), ("argz", R::Nil)]),
                "`argz` is not a known key; the known keys are `args`, `command`, `seccomp`",
            ),
            (
                encode(vec![("command", R::Array(vec![]))]),
                "`command` must be a string, found a list",
            ),
            (
                encode(vec![
                    ("command", R::from("/bin/true")),
                    ("args", R::from(1)),
                ]),
                "`args` must be a list of strings, found a number",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(
                decode(&bytes).map_err(|e| e.to_string()),
                Err(message.to_owned())
            );
        }
    }
}
