//! JSON Schemas of a method's arguments, result and stream items, derived from its shape
//! (see `shape.rs`), so that a document describing a service (OpenAPI) needs nothing of the
//! service's types beyond serde. The schemas describe the JSON that `json.rs` reads and
//! writes: serde's externally tagged enums, `Vec<u8>` as a base64 string, `Option` as a
//! value or `null`. Named structs and enums are `$ref`s into `#/components/schemas`.

use serde_json::{json, Map, Value};
use serde_reflection::{ContainerFormat, Format, Named, VariantFormat};

use crate::shape::MethodShape;

pub use crate::shape::MethodSchemas;

impl MethodShape {
    /// The method's JSON Schemas.
    pub fn schemas(&self) -> MethodSchemas {
        let args = match &self.args {
            Format::Tuple(items) => items.iter().map(format_schema).collect(),
            Format::Unit => Vec::new(),
            other => vec![format_schema(other)],
        };
        let components = self
            .containers
            .iter()
            .map(|(name, container)| (name.clone(), container_schema(container)))
            .collect();
        MethodSchemas {
            args,
            result: format_schema(&self.result),
            input_item: format_schema(&self.input_item),
            output_item: format_schema(&self.output_item),
            components,
        }
    }
}

/// Whether a format accepts `null` (so an argument of it may be left out).
pub(crate) fn is_optional(schema: &Value) -> bool {
    schema.get("x-optional").and_then(Value::as_bool) == Some(true)
        || schema.get("type").and_then(Value::as_str) == Some("null")
}

fn format_schema(format: &Format) -> Value {
    match format {
        Format::Variable(_) => json!({}),
        Format::TypeName(name) => json!({ "$ref": format!("#/components/schemas/{name}") }),
        Format::Unit => json!({ "type": "null" }),
        Format::Bool => json!({ "type": "boolean" }),
        Format::I8 | Format::I16 | Format::I32 => json!({ "type": "integer", "format": "int32" }),
        Format::I64 => json!({ "type": "integer", "format": "int64" }),
        Format::U8 | Format::U16 | Format::U32 => {
            json!({ "type": "integer", "format": "int32", "minimum": 0 })
        }
        Format::U64 => json!({ "type": "integer", "format": "int64", "minimum": 0 }),
        Format::I128 | Format::U128 => json!({ "type": "integer" }),
        Format::F32 => json!({ "type": "number", "format": "float" }),
        Format::F64 => json!({ "type": "number", "format": "double" }),
        Format::Char => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
        Format::Str => json!({ "type": "string" }),
        Format::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Format::Option(inner) => json!({
            "anyOf": [format_schema(inner), { "type": "null" }],
            "x-optional": true,
        }),
        Format::Seq(inner) => json!({ "type": "array", "items": format_schema(inner) }),
        Format::Map { key: _, value } => json!({
            "type": "object",
            "additionalProperties": format_schema(value),
        }),
        Format::Tuple(items) => tuple_schema(items),
        Format::TupleArray { content, size } => json!({
            "type": "array",
            "items": format_schema(content),
            "minItems": size,
            "maxItems": size,
        }),
    }
}

fn tuple_schema(items: &[Format]) -> Value {
    let items: Vec<Value> = items.iter().map(format_schema).collect();
    json!({
        "type": "array",
        "prefixItems": items,
        "minItems": items.len(),
        "maxItems": items.len(),
    })
}

fn fields_schema(fields: &[Named<Format>]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in fields {
        let schema = format_schema(&field.value);
        if !is_optional(&schema) {
            required.push(Value::String(field.name.clone()));
        }
        properties.insert(field.name.clone(), schema);
    }
    json!({ "type": "object", "properties": properties, "required": required })
}

fn container_schema(container: &ContainerFormat) -> Value {
    match container {
        ContainerFormat::UnitStruct => json!({ "type": "null" }),
        ContainerFormat::NewTypeStruct(inner) => format_schema(inner),
        ContainerFormat::TupleStruct(items) => tuple_schema(items),
        ContainerFormat::Struct(fields) => fields_schema(fields),
        ContainerFormat::Enum(variants) => {
            // serde's external tagging: a unit variant is its name; any other is an object
            // with the name as its one key.
            let choices: Vec<Value> = variants
                .values()
                .map(|variant| {
                    let name = &variant.name;
                    let payload = match &variant.value {
                        VariantFormat::Unit | VariantFormat::Variable(_) => {
                            return json!({ "const": name });
                        }
                        VariantFormat::NewType(inner) => format_schema(inner),
                        VariantFormat::Tuple(items) => tuple_schema(items),
                        VariantFormat::Struct(fields) => fields_schema(fields),
                    };
                    json!({
                        "type": "object",
                        "properties": { name.clone(): payload },
                        "required": [name],
                        "additionalProperties": false,
                    })
                })
                .collect();
            json!({ "oneOf": choices })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Order {
        id: u64,
        note: Option<String>,
        state: State,
    }

    #[derive(Serialize, Deserialize)]
    enum State {
        Open,
        Shipped { tracking: String },
    }

    #[test]
    fn structs_and_enums_become_objects_refs_and_tagged_choices() {
        let shape = MethodShape::of::<(Order, Vec<u8>), Option<u32>, (), ()>().unwrap();
        let schemas = shape.schemas();
        assert_eq!(
            schemas.args[0],
            json!({ "$ref": "#/components/schemas/Order" })
        );
        assert_eq!(schemas.args[1]["type"], "array");
        assert!(is_optional(&schemas.result));
        let order = &schemas.components["Order"];
        assert_eq!(order["required"], json!(["id", "state"]));
        let state = &schemas.components["State"]["oneOf"];
        assert_eq!(state[0], json!({ "const": "Open" }));
        assert_eq!(state[1]["required"], json!(["Shipped"]));
    }
}
