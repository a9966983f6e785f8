//! JSON Schemas from a service's own types, for `#[service(schema)]`: each argument,
//! result and stream item described by its `schemars::JsonSchema` implementation (with the
//! crate's `schema` feature), so the OpenAPI document carries what the types say of
//! themselves (their doc comments, formats and validation) instead of only what serde's
//! data model shows. Named types become `$ref`s into `#/components/schemas`.
//!
//! Without the `schema` feature the functions exist, so that generated code always names
//! them, but [`schema_of`] fails to compile, with a message that says which feature to
//! turn on.

use serde_json::Value;

use crate::shape::MethodSchemas;

/// Where schemas are made: a `schemars::SchemaGenerator` (with the `schema` feature).
#[cfg(feature = "schema")]
pub type SchemaMaker = schemars::SchemaGenerator;

/// Where schemas are made (the `schema` feature is off: nothing can make them).
#[cfg(not(feature = "schema"))]
#[derive(Debug)]
pub struct SchemaMaker(());

/// Makes the schema of one type.
pub type SchemaOf = fn(&mut SchemaMaker) -> Value;

/// The schema of `T`, from its `JsonSchema` implementation.
#[cfg(feature = "schema")]
pub fn schema_of<T: ?Sized + schemars::JsonSchema>(maker: &mut SchemaMaker) -> Value {
    maker.subschema_for::<T>().to_value()
}

/// The schema of `T`: needs the `schema` feature (this fails to compile without it).
#[cfg(not(feature = "schema"))]
pub fn schema_of<T: ?Sized>(_maker: &mut SchemaMaker) -> Value {
    let () = FeatureRequired::<T>::ERROR;
    Value::Null
}

/// A compile-time error for whoever asks for a schema without the `schema` feature.
#[cfg(not(feature = "schema"))]
struct FeatureRequired<T: ?Sized>(std::marker::PhantomData<T>);

#[cfg(not(feature = "schema"))]
impl<T: ?Sized> FeatureRequired<T> {
    const ERROR: () = panic!(
        "`#[service(schema)]` needs the `schema` feature of rpc-core: \
         add `features = [\"schema\"]` to its line in Cargo.toml"
    );
}

/// The schema of a byte block (`Vec<u8>`, `&[u8]`), which JSON carries as base64.
pub fn bytes_schema(_maker: &mut SchemaMaker) -> Value {
    serde_json::json!({ "type": "string", "contentEncoding": "base64" })
}

/// A method's schemas from its types' own: one per argument, the result, and the stream
/// items it takes and returns, if any.
pub fn own_schemas(
    args: &[SchemaOf],
    result: SchemaOf,
    input_item: Option<SchemaOf>,
    output_item: Option<SchemaOf>,
) -> MethodSchemas {
    let mut maker = maker();
    let args = args.iter().map(|schema| schema(&mut maker)).collect();
    let result = result(&mut maker);
    let mut item =
        |schema: Option<SchemaOf>| schema.map_or(Value::Null, |schema| schema(&mut maker));
    let input_item = item(input_item);
    let output_item = item(output_item);
    MethodSchemas {
        args,
        result,
        input_item,
        output_item,
        components: components(maker),
    }
}

#[cfg(feature = "schema")]
fn maker() -> SchemaMaker {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.into_generator()
}

#[cfg(feature = "schema")]
fn components(mut maker: SchemaMaker) -> serde_json::Map<String, Value> {
    maker.take_definitions(true)
}

#[cfg(not(feature = "schema"))]
fn maker() -> SchemaMaker {
    SchemaMaker(())
}

#[cfg(not(feature = "schema"))]
fn components(_maker: SchemaMaker) -> serde_json::Map<String, Value> {
    serde_json::Map::new()
}
