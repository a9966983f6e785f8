//! One method's entry in a service's description ([`MethodEntry`]): its names, kind,
//! documentation, JSON codec, shape, and JSON Schemas ([`MethodSchemas`]).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::MethodShape;
use crate::json::JsonCodec;
use crate::method_types::{CallKind, MethodTypes};

/// One method of a [`ServiceShapes`](super::ServiceShapes): its names, kind and documentation, its JSON codec,
/// and its shape.
#[derive(Debug)]
pub struct MethodEntry {
    method: &'static str,
    pub(super) method_id: u32,
    idempotent: bool,
    kind: CallKind,
    doc: &'static str,
    json: Option<JsonCodec>,
    pub(super) args: &'static [&'static str],
    /// The shape, encoded as it travels (a traced shape holds types that may not leave its
    /// thread; bytes may).
    pub(super) shape: Option<Vec<u8>>,
    pub(super) fingerprint: u32,
    /// Schemas from the types' own `JsonSchema` implementations (`#[service(schema)]`).
    json_schemas: Option<fn() -> MethodSchemas>,
}

impl MethodEntry {
    /// The method `name`, whose arguments `args` travel as the tuple `A`, whose result is
    /// `R`, and whose request and response streams carry `I` and `O` (`()` for none).
    /// `fallback` is its fingerprint when its types cannot be traced (the macro hashes
    /// their spelling).
    pub fn new<A, R, I, O>(name: &str, args: &'static [&'static str], fallback: u32) -> MethodEntry
    where
        A: DeserializeOwned,
        R: DeserializeOwned,
        I: DeserializeOwned,
        O: DeserializeOwned,
    {
        let shape = MethodShape::of::<A, R, I, O>();
        let fingerprint = shape
            .as_ref()
            .map_or(fallback, |shape| shape.fingerprint(name));
        MethodEntry {
            method: "",
            method_id: crate::wire::wire_id(name),
            idempotent: false,
            kind: CallKind::Unary,
            doc: "",
            json: None,
            args,
            shape: shape.as_ref().map(MethodShape::to_bytes),
            fingerprint,
            json_schemas: None,
        }
    }

    /// The entry of the method `method` whose types `M` names: `args` are its arguments'
    /// names, `fallback` its fingerprint should its types not trace, and `doc` its
    /// documentation.
    pub fn describe<M: MethodTypes>(
        method: &'static str,
        args: &'static [&'static str],
        fallback: u32,
        idempotent: bool,
        kind: CallKind,
        doc: &'static str,
    ) -> MethodEntry {
        MethodEntry {
            method,
            idempotent,
            kind,
            doc,
            json: Some(JsonCodec::of::<M>()),
            ..MethodEntry::new::<M::Args, M::Output, M::InputItem, M::OutputItem>(
                method, args, fallback,
            )
        }
    }

    /// The method's name.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The method's id on the wire.
    pub fn method_id(&self) -> u32 {
        self.method_id
    }

    /// Whether the method is marked `#[idempotent]`.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Whether the method takes or returns a stream.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The method's documentation (its doc comments).
    pub fn doc(&self) -> &'static str {
        self.doc
    }

    /// The names of the arguments the client passes, in order (the stream excluded).
    pub fn arg_names(&self) -> &'static [&'static str] {
        self.args
    }

    /// The method's JSON codec, for front doors.
    pub fn json(&self) -> Option<&JsonCodec> {
        self.json.as_ref()
    }

    /// The method's shape as serde sees it, when its types could be traced.
    pub fn shape(&self) -> Option<MethodShape> {
        MethodShape::from_bytes(self.shape.as_deref()?)
    }

    /// Gives the method JSON Schemas of its own (`#[service(schema)]` does, from the types'
    /// `schemars::JsonSchema` implementations), used instead of the ones derived from its
    /// shape.
    pub fn with_json_schemas(mut self, schemas: fn() -> MethodSchemas) -> MethodEntry {
        self.json_schemas = Some(schemas);
        self
    }

    /// The method's JSON Schemas: its own, or the ones derived from its shape, if either.
    pub fn schemas(&self) -> Option<MethodSchemas> {
        match self.json_schemas {
            Some(schemas) => Some(schemas()),
            None => self.shape().map(|shape| shape.schemas()),
        }
    }
}

/// The schemas of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSchemas {
    /// One schema per argument, in order.
    pub args: Vec<Value>,
    /// The result's schema.
    pub result: Value,
    /// The request stream item's schema (`null` when there is no stream).
    pub input_item: Value,
    /// The response stream item's schema (`null` when there is no stream).
    pub output_item: Value,
    /// Every named struct and enum the schemas refer to, by name.
    pub components: Map<String, Value>,
}
