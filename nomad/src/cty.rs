//! A decoder for go-cty's msgpack encoding, the form in which Nomad sends a config decoded
//! against a plugin's schema (`SetConfigRequest.msgpack_config`,
//! `TaskConfig.msgpack_driver_config`).
//!
//! The encoding depends on the type the value was encoded with, so decoding takes that type:
//! strings are msgpack strings; numbers are ints when integral, float64 otherwise, and a
//! decimal string when neither holds them exactly; bools are bools; lists and sets are arrays;
//! maps and objects are maps with string keys (an object has every attribute of its type,
//! an absent optional one as nil); null is nil; an unknown value is the extension of type 0.
//! Errors name the attribute path, so a user sees which key of the config is at fault.

use std::collections::BTreeMap;
use std::fmt;

use rmpv::Value as Raw;

/// Deepest nesting decoded; a config is a handful of levels deep.
const MAX_DEPTH: usize = 32;

/// A cty type, as far as a plugin schema uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `string`.
    String,
    /// `number`.
    Number,
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<Type>),
    /// `set(T)`.
    Set(Box<Type>),
    /// `map(T)`.
    Map(Box<Type>),
    /// An object with these attributes.
    Object(BTreeMap<String, Type>),
}

impl Type {
    /// Parses an HCL type expression as a schema's `Attr.type` holds it: `string`, `number`,
    /// `bool`, `list(T)`, `set(T)`, `map(T)`. `any` is refused: cty wraps such values in a
    /// type description this decoder does not read, and our schemas never declare it.
    pub fn parse(expr: &str) -> Result<Type, String> {
        let expr = expr.trim();
        let inner = |prefix: &str| {
            expr.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(')'))
                .map(Type::parse)
        };
        match expr {
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            _ => {
                if let Some(t) = inner("list(") {
                    Ok(Type::List(Box::new(t?)))
                } else if let Some(t) = inner("set(") {
                    Ok(Type::Set(Box::new(t?)))
                } else if let Some(t) = inner("map(") {
                    Ok(Type::Map(Box::new(t?)))
                } else {
                    Err(format!("unsupported type expression {expr:?}"))
                }
            }
        }
    }

    /// The type as a user would write it, for messages.
    pub fn describe(&self) -> String {
        match self {
            Type::String => "a string".into(),
            Type::Number => "a number".into(),
            Type::Bool => "a bool".into(),
            Type::List(t) => format!("a list of {}", plural(t)),
            Type::Set(t) => format!("a set of {}", plural(t)),
            Type::Map(t) => format!("a map of {}", plural(t)),
            Type::Object(_) => "an object".into(),
        }
    }
}

fn plural(t: &Type) -> String {
    match t {
        Type::String => "strings".into(),
        Type::Number => "numbers".into(),
        Type::Bool => "bools".into(),
        Type::Object(_) => "objects".into(),
        other => other.describe(),
    }
}

/// A number as cty encoded it.
#[derive(Debug, Clone, PartialEq)]
pub enum Number {
    /// An integer that fits in 64 bits (signed or not).
    Int(i128),
    /// A float64.
    Float(f64),
    /// A decimal too large or precise for either: cty sends it as text.
    Text(String),
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null: an absent optional attribute.
    Null,
    /// Not known yet (cty's unknown value).
    Unknown,
    /// A string.
    String(String),
    /// A number.
    Number(Number),
    /// A bool.
    Bool(bool),
    /// A list or set, in order.
    List(Vec<Value>),
    /// A map or object, by key.
    Map(BTreeMap<String, Value>),
}

/// What is wrong at a path of the decoded config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The bytes are not msgpack at all.
    #[error("is not valid msgpack: {0}")]
    Malformed(String),
    /// More bytes after the value.
    #[error("has {0} bytes after its end")]
    Trailing(usize),
    /// Nested deeper than the decoder allows (`MAX_DEPTH` levels).
    #[error("is nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    /// A key the schema does not have.
    #[error("is not a known key; the known keys are {known}")]
    UnknownKey {
        /// The schema's keys, listed for the user.
        known: String,
    },
    /// A value of the wrong type.
    #[error("must be {expected}, found {found}")]
    WrongType {
        /// What the schema says.
        expected: String,
        /// What the bytes hold.
        found: &'static str,
    },
    /// A value cty did not know yet.
    #[error("is not known yet (an unknown value); give it a literal value")]
    Unknown,
    /// A required attribute that is null or absent.
    #[error("is required")]
    Required,
    /// A value the schema's type allows but the setting does not.
    #[error("{0}")]
    Invalid(String),
}

/// A decode error: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// The attribute path, `args[1]` or `limits.cpu`; empty for the whole value.
    pub path: String,
    /// What is wrong there.
    pub problem: Problem,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "the config {}", self.problem)
        } else {
            write!(f, "`{}` {}", self.path, self.problem)
        }
    }
}

impl DecodeError {
    /// An error at `path`.
    pub fn at(path: impl Into<String>, problem: Problem) -> Self {
        Self {
            path: path.into(),
            problem,
        }
    }
}

/// Decodes `bytes`, encoded by cty with type `ty`.
pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value, DecodeError> {
    let mut reader = bytes;
    let raw = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH + 1).map_err(|e| {
        let problem = if e.to_string().contains("depth") {
            Problem::TooDeep
        } else {
            Problem::Malformed(e.to_string())
        };
        DecodeError::at("", problem)
    })?;
    if !reader.is_empty() {
        return Err(DecodeError::at("", Problem::Trailing(reader.len())));
    }
    convert(&raw, ty, &mut String::new(), 0)
}

fn found(raw: &Raw) -> &'static str {
    match raw {
        Raw::Nil => "null",
        Raw::Boolean(_) => "a bool",
        Raw::Integer(_) | Raw::F32(_) | Raw::F64(_) => "a number",
        Raw::String(_) => "a string",
        Raw::Binary(_) => "binary data",
        Raw::Array(_) => "a list",
        Raw::Map(_) => "a map",
        Raw::Ext(..) => "an extension value",
    }
}

fn is_unknown(raw: &Raw) -> bool {
    // Type 0 is cty's unknown; newer cty also encodes refined unknowns with type 12.
    matches!(raw, Raw::Ext(0 | 12, _))
}

fn convert(raw: &Raw, ty: &Type, path: &mut String, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::at(path.clone(), Problem::TooDeep));
    }
    if raw.is_nil() {
        return Ok(Value::Null);
    }
    if is_unknown(raw) {
        return Ok(Value::Unknown);
    }
    let wrong = |path: &String| {
        DecodeError::at(
            path.clone(),
            Problem::WrongType {
                expected: ty.describe(),
                found: found(raw),
            },
        )
    };
    match ty {
        Type::String => match raw {
            Raw::String(s) => s
                .as_str()
                .map(|s| Value::String(s.to_owned()))
                .ok_or_else(|| {
                    DecodeError::at(path.clone(), Problem::Invalid("is not valid utf-8".into()))
                }),
            _ => Err(wrong(path)),
        },
        Type::Bool => match raw {
            Raw::Boolean(b) => Ok(Value::Bool(*b)),
            _ => Err(wrong(path)),
        },
        Type::Number => match raw {
            Raw::Integer(i) => i
                .as_i64()
                .map(i128::from)
                .or_else(|| i.as_u64().map(i128::from))
                .map(|n| Value::Number(Number::Int(n)))
                .ok_or_else(|| wrong(path)),
            Raw::F32(f) => Ok(Value::Number(Number::Float(f64::from(*f)))),
            Raw::F64(f) => Ok(Value::Number(Number::Float(*f))),
            Raw::String(s) => match s.as_str() {
                Some(text) if text.parse::<f64>().is_ok() => {
                    Ok(Value::Number(Number::Text(text.to_owned())))
                }
                _ => Err(wrong(path)),
            },
            _ => Err(wrong(path)),
        },
        Type::List(element) | Type::Set(element) => match raw {
            Raw::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    let value = convert(item, element, path, depth + 1);
                    path.truncate(len);
                    out.push(value?);
                }
                Ok(Value::List(out))
            }
            _ => Err(wrong(path)),
        },
        Type::Map(element) => match raw {
            Raw::Map(pairs) => {
                let mut out = BTreeMap::new();
                for (key, item) in pairs {
                    let key = map_key(key, path)?;
                    let len = path.len();
                    path.push_str(&format!("[{key:?}]"));
                    let value = convert(item, element, path, depth + 1);
                    path.truncate(len);
                    out.insert(key, value?);
                }
                Ok(Value::Map(out))
            }
            _ => Err(wrong(path)),
        },
        Type::Object(attributes) => match raw {
            Raw::Map(pairs) => {
                let mut out = BTreeMap::new();
                for (key, item) in pairs {
                    let key = map_key(key, path)?;
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key);
                    let Some(attr_ty) = attributes.get(&key) else {
                        let known = attributes
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(DecodeError::at(path.clone(), Problem::UnknownKey { known }));
                    };
                    let value = convert(item, attr_ty, path, depth + 1);
                    path.truncate(len);
                    out.insert(key, value?);
                }
                // cty sends every attribute; a hand-made encoder may leave absent ones out.
                for name in attributes.keys() {
                    out.entry(name.clone()).or_insert(Value::Null);
                }
                Ok(Value::Map(out))
            }
            _ => Err(wrong(path)),
        },
    }
}

fn map_key(key: &Raw, path: &str) -> Result<String, DecodeError> {
    match key {
        Raw::String(s) => s.as_str().map(str::to_owned).ok_or_else(|| {
            DecodeError::at(path, Problem::Invalid("has a key that is not utf-8".into()))
        }),
        other => Err(DecodeError::at(
            path,
            Problem::Invalid(format!("has a key that is {}, not a string", found(other))),
        )),
    }
}

/// The attributes of a decoded object, read by name with the path kept for errors.
#[derive(Debug)]
pub struct Fields<'a> {
    fields: &'a BTreeMap<String, Value>,
}

impl<'a> Fields<'a> {
    /// The fields of a decoded object value.
    pub fn of(value: &'a Value) -> Result<Self, DecodeError> {
        match value {
            Value::Map(fields) => Ok(Self { fields }),
            Value::Null => Err(DecodeError::at(
                "",
                Problem::Invalid("is null; an object was expected".into()),
            )),
            Value::Unknown => Err(DecodeError::at("", Problem::Unknown)),
            _ => Err(DecodeError::at(
                "",
                Problem::Invalid("is not an object".into()),
            )),
        }
    }

    fn get(&self, key: &str) -> Result<Option<&'a Value>, DecodeError> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Unknown) => Err(DecodeError::at(key, Problem::Unknown)),
            Some(value) => Ok(Some(value)),
        }
    }

    /// An optional string attribute.
    pub fn string(&self, key: &str) -> Result<Option<String>, DecodeError> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(mismatch(key, "a string")),
        }
    }

    /// A required string attribute.
    pub fn required_string(&self, key: &str) -> Result<String, DecodeError> {
        self.string(key)?
            .ok_or_else(|| DecodeError::at(key, Problem::Required))
    }

    /// An optional bool attribute.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, DecodeError> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(mismatch(key, "a bool")),
        }
    }

    /// An optional list of strings; a null element is an error naming it.
    pub fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, DecodeError> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Unknown => Err(DecodeError::at(format!("{key}[{i}]"), Problem::Unknown)),
                    _ => Err(mismatch(&format!("{key}[{i}]"), "a string")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(mismatch(key, "a list of strings")),
        }
    }
}

fn mismatch(key: &str, expected: &str) -> DecodeError {
    DecodeError::at(
        key,
        Problem::Invalid(format!(
            "must be {expected} (the schema and the decoder disagree)"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as R;

    fn encode(value: &R) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).expect("encode");
        out
    }

    fn s(text: &str) -> R {
        R::from(text)
    }

    fn object(attrs: &[(&str, Type)]) -> Type {
        Type::Object(
            attrs
                .iter()
                .map(|(k, t)| ((*k).to_owned(), t.clone()))
                .collect(),
        )
    }

    fn list_of_strings() -> Type {
        Type::List(Box::new(Type::String))
    }

    #[test]
    fn type_expressions_parse() {
        assert_eq!(Type::parse("string"), Ok(Type::String));
        assert_eq!(Type::parse("list(string)"), Ok(list_of_strings()));
        assert_eq!(
            Type::parse("map(list(number))"),
            Ok(Type::Map(Box::new(Type::List(Box::new(Type::Number)))))
        );
        assert_eq!(
            Type::parse("set(bool)"),
            Ok(Type::Set(Box::new(Type::Bool)))
        );
        assert!(Type::parse("any").is_err());
        assert!(Type::parse("list(string").is_err());
    }

    #[test]
    fn an_object_decodes_with_absent_attributes_as_null() {
        let ty = object(&[("args", list_of_strings()), ("command", Type::String)]);
        let bytes = encode(&R::Map(vec![(s("command"), s("/bin/sh"))]));
        let value = decode(&bytes, &ty).expect("decode");
        let fields = Fields::of(&value).expect("object");
        assert_eq!(fields.required_string("command").as_deref(), Ok("/bin/sh"));
        assert_eq!(fields.string_list("args"), Ok(None));
    }

    #[test]
    fn every_scalar_kind_decodes() {
        let ty = object(&[
            ("b", Type::Bool),
            ("f", Type::Number),
            ("i", Type::Number),
            ("m", Type::Map(Box::new(Type::String))),
            ("n", Type::String),
            ("t", Type::Number),
            ("u", Type::Number),
        ]);
        let bytes = encode(&R::Map(vec![
            (s("b"), R::Boolean(true)),
            (s("f"), R::F64(1.5)),
            (s("i"), R::from(-3)),
            (s("m"), R::Map(vec![(s("k"), s("v"))])),
            (s("n"), R::Nil),
            (s("t"), s("123456789012345678901234567890")),
            (s("u"), R::from(u64::MAX)),
        ]));
        let Value::Map(fields) = decode(&bytes, &ty).expect("decode") else {
            panic!("not a map");
        };
        assert_eq!(fields["b"], Value::Bool(true));
        assert_eq!(fields["f"], Value::Number(Number::Float(1.5)));
        assert_eq!(fields["i"], Value::Number(Number::Int(-3)));
        assert_eq!(fields["n"], Value::Null);
        assert_eq!(
            fields["t"],
            Value::Number(Number::Text("123456789012345678901234567890".into()))
        );
        assert_eq!(
            fields["u"],
            Value::Number(Number::Int(i128::from(u64::MAX)))
        );
        let Value::Map(m) = &fields["m"] else {
            panic!("m is not a map");
        };
        assert_eq!(m["k"], Value::String("v".into()));
    }

    #[test]
    fn unknown_values_are_recognised_and_refused_on_read() {
        let ty = object(&[("command", Type::String)]);
        let bytes = encode(&R::Map(vec![(s("command"), R::Ext(0, vec![0]))]));
        let value = decode(&bytes, &ty).expect("decode");
        let err = Fields::of(&value)
            .expect("object")
            .string("command")
            .expect_err("unknown");
        assert_eq!(err.problem, Problem::Unknown);
        assert!(
            err.to_string().starts_with("`command` is not known yet"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let ty = object(&[("args", list_of_strings()), ("command", Type::String)]);
        let cases = [
            (
                R::Map(vec![(s("comand"), s("x"))]),
                "`comand` is not a known key; the known keys are `args`, `command`",
            ),
            (
                R::Map(vec![(s("command"), R::from(5))]),
                "`command` must be a string, found a number",
            ),
            (
                R::Map(vec![(s("args"), R::Array(vec![s("a"), R::Boolean(true)]))]),
                "`args[1]` must be a string, found a bool",
            ),
            (
                R::Map(vec![(s("args"), s("a"))]),
                "`args` must be a list of strings, found a string",
            ),
            (R::from(3), "the config must be an object, found a number"),
        ];
        for (raw, message) in cases {
            let err = decode(&encode(&raw), &ty).expect_err(message);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn nested_object_paths_use_dots() {
        let ty = object(&[("limits", object(&[("cpu", Type::Number)]))]);
        let bytes = encode(&R::Map(vec![(
            s("limits"),
            R::Map(vec![(s("cpu"), s("lots"))]),
        )]));
        let err = decode(&bytes, &ty).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "`limits.cpu` must be a number, found a string"
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_and_depth_are_errors() {
        let ty = object(&[("command", Type::String)]);
        // A map of one entry that ends there, and a string cut short.
        for bytes in [&[0x81][..], &[0x81, 0xa7, b'c', b'o']] {
            let cut = decode(bytes, &ty);
            assert!(
                matches!(
                    cut,
                    Err(DecodeError {
                        problem: Problem::Malformed(_),
                        ..
                    })
                ),
                "{cut:?}"
            );
        }
        assert!(matches!(
            decode(&[], &ty).map_err(|e| e.problem),
            Err(Problem::Malformed(_))
        ));
        let mut bytes = encode(&R::Map(vec![]));
        bytes.push(0xc0);
        assert_eq!(
            decode(&bytes, &ty).map_err(|e| e.problem),
            Err(Problem::Trailing(1))
        );
        let mut deep = R::Nil;
        for _ in 0..100 {
            deep = R::Array(vec![deep]);
        }
        let mut ty = Type::String;
        for _ in 0..100 {
            ty = Type::List(Box::new(ty));
        }
        assert!(decode(&encode(&deep), &ty).is_err());
    }

    #[test]
    fn a_required_null_is_named() {
        let ty = object(&[("command", Type::String)]);
        let bytes = encode(&R::Map(vec![(s("command"), R::Nil)]));
        let value = decode(&bytes, &ty).expect("decode");
        let err = Fields::of(&value)
            .expect("object")
            .required_string("command")
            .expect_err("required");
        assert_eq!(err.to_string(), "`command` is required");
    }
}
