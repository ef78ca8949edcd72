//! Building the hclspec trees our schemas are sent as, and the cty types they imply.
//!
//! A schema is written once, as a list of [`Field`]s; both the spec sent to Nomad and the
//! type the msgpack is decoded with come from that list, so they cannot drift apart.

use std::collections::BTreeMap;

use crate::cty::Type;
use crate::proto::hclspec::{self, spec::Block};

/// One top-level attribute of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The attribute's name.
    pub name: &'static str,
    /// Its HCL type expression.
    pub type_expr: &'static str,
    /// Whether it must be set.
    pub required: bool,
    /// An HCL expression used when it is not set.
    pub default: Option<String>,
}

impl Field {
    /// An optional attribute without default.
    pub const fn optional(name: &'static str, type_expr: &'static str) -> Self {
        Self {
            name,
            type_expr,
            required: false,
            default: None,
        }
    }

    /// A required attribute.
    pub const fn required(name: &'static str, type_expr: &'static str) -> Self {
        Self {
            name,
            type_expr,
            required: true,
            default: None,
        }
    }

    /// An optional attribute with a default, given as an HCL expression.
    pub fn with_default(name: &'static str, type_expr: &'static str, default: String) -> Self {
        Self {
            name,
            type_expr,
            required: false,
            default: Some(default),
        }
    }
}

fn spec(block: Block) -> hclspec::Spec {
    hclspec::Spec { block: Some(block) }
}

/// The spec of an object with `fields` as attributes.
pub fn object_spec(fields: &[Field]) -> hclspec::Spec {
    let attributes = fields
        .iter()
        .map(|field| {
            let attr = spec(Block::Attr(hclspec::Attr {
                name: field.name.to_owned(),
                r#type: field.type_expr.to_owned(),
                required: field.required,
            }));
            let value = match &field.default {
                None => attr,
                Some(literal) => spec(Block::Default(Box::new(hclspec::Default {
                    primary: Some(Box::new(attr)),
                    default: Some(Box::new(spec(Block::Literal(hclspec::Literal {
                        value: literal.clone(),
                    })))),
                }))),
            };
            (field.name.to_owned(), value)
        })
        .collect();
    spec(Block::Object(hclspec::Object { attributes }))
}

/// The cty type Nomad encodes a value decoded against [`object_spec`]`(fields)` with.
pub fn object_type(fields: &[Field]) -> Result<Type, String> {
    let mut attributes = BTreeMap::new();
    for field in fields {
        let ty = Type::parse(field.type_expr)
            .map_err(|e| format!("schema attribute {}: {e}", field.name))?;
        attributes.insert(field.name.to_owned(), ty);
    }
    Ok(Type::Object(attributes))
}

/// An HCL string literal: quoted, with `\`, `"`, control characters and the template
/// introducers `${` and `%{` escaped.
pub fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An HCL list literal of strings.
pub fn string_list_literal<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| string_literal(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_hcl() {
        assert_eq!(string_literal("nobody"), "\"nobody\"");
        assert_eq!(string_literal("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(string_literal("${x} %{y} $z"), "\"$${x} %%{y} $z\"");
        assert_eq!(
            string_list_literal(&["/bin", "/usr"]),
            "[\"/bin\", \"/usr\"]"
        );
        assert_eq!(string_list_literal::<&str>(&[]), "[]");
    }

    #[test]
    fn spec_and_type_come_from_the_same_fields() {
        let fields = [
            Field::required("command", "string"),
            Field::with_default("args", "list(string)", "[]".into()),
        ];
        let spec = object_spec(&fields);
        let Some(Block::Object(object)) = spec.block else {
            panic!("not an object");
        };
        let Some(Block::Attr(command)) = object.attributes["command"].block.clone() else {
            panic!("command is not an attr");
        };
        assert!(command.required);
        assert_eq!(command.r#type, "string");
        let Some(Block::Default(default)) = object.attributes["args"].block.clone() else {
            panic!("args has no default");
        };
        let Some(Block::Literal(literal)) = default.default.and_then(|d| d.block) else {
            panic!("default is not a literal");
        };
        assert_eq!(literal.value, "[]");
        let Type::Object(attrs) = object_type(&fields).expect("type") else {
            panic!("not an object type");
        };
        assert_eq!(attrs["args"], Type::List(Box::new(Type::String)));
    }
}
