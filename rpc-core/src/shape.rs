//! The shape of a method's arguments and result as serde sees them: the data model of each
//! type (field names and order, variant names, element types, recursively), not how the
//! types are spelled. Two sides agree on a method exactly when its shapes are equal, so an
//! alias (`type OrderId = u64`) or another path to the same type stays compatible, while an
//! added, removed, reordered or retyped field anywhere inside does not.
//!
//! A shape is traced once per method, by deserializing its types from a tracer
//! (`serde-reflection`), so no derive is asked of users. A type that cannot be traced (a
//! hand-written `Deserialize` that refuses the tracer's sample values, two different types
//! of one name in one method) falls back to the fingerprint of its spelling that the macro
//! computes.
//!
//! The fingerprint a client declares and a server compares is a hash of the shape. When
//! they differ, the server answers with its own shape, and the client names the first
//! difference ([`MethodShape::difference`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_reflection::{ContainerFormat, Format, Named, Registry, Samples, Tracer, TracerConfig};

use serde_reflection::{Error as TraceError, VariantFormat};

use crate::codec;

/// The most tracing passes spent on one method's types: each pass explores the next
/// variant of every enum it meets, so this bounds the variants one enum of a method's types
/// may have before the method's shape falls back to the spelling fingerprint.
const MAX_PASSES: usize = 4096;

/// The shapes and fingerprints of a service's methods, computed once (generated code keeps
/// them in a static) and shared by its clients and its server.
#[derive(Debug)]
pub struct ServiceShapes {
    methods: Vec<MethodEntry>,
    fingerprints: Vec<(u32, u32)>,
}

impl ServiceShapes {
    /// Every method, in the trait's order.
    pub fn methods(&self) -> &[MethodEntry] {
        &self.methods
    }

    /// The method with this wire id.
    pub fn method(&self, method_id: u32) -> Option<&MethodEntry> {
        self.entry(method_id)
    }

    /// The shapes of a service's methods.
    pub fn new(methods: impl IntoIterator<Item = MethodEntry>) -> ServiceShapes {
        let methods: Vec<MethodEntry> = methods.into_iter().collect();
        let fingerprints = methods
            .iter()
            .map(|method| (method.method_id, method.fingerprint))
            .collect();
        ServiceShapes {
            methods,
            fingerprints,
        }
    }

    /// `(method_id, fingerprint)` of every method: what a client declares and a server
    /// compares.
    pub fn fingerprints(&self) -> &[(u32, u32)] {
        &self.fingerprints
    }

    /// The shape of the method with this wire id, encoded as it travels, when its types
    /// could be traced.
    pub fn shape(&self, method_id: u32) -> Option<&[u8]> {
        self.entry(method_id)?.shape.as_deref()
    }

    /// Why this side's `method_id` and the peer's, whose shape is `theirs` (as the peer
    /// sent it), are incompatible, when both shapes are known.
    pub fn incompatibility(&self, method_id: u32, theirs: &[u8]) -> Option<String> {
        let entry = self.entry(method_id)?;
        let ours = MethodShape::from_bytes(entry.shape.as_deref()?)?;
        let theirs = MethodShape::from_bytes(theirs)?;
        ours.difference(&theirs, entry.args)
    }

    fn entry(&self, method_id: u32) -> Option<&MethodEntry> {
        self.methods
            .iter()
            .find(|method| method.method_id == method_id)
    }
}

/// What a method's arguments and result are, as serde sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodShape {
    /// The arguments, as the tuple that travels.
    pub(crate) args: Format,
    /// The result.
    pub(crate) result: Format,
    /// The request stream's item (`()` when there is none).
    pub(crate) input_item: Format,
    /// The response stream's item (`()` when there is none).
    pub(crate) output_item: Format,
    /// Every named struct and enum the two refer to, by name.
    pub(crate) containers: Registry,
}

impl MethodShape {
    /// The shape of a method taking the argument tuple `A` and returning `R`, with streams
    /// of `I` in and `O` out, or `None` when its types cannot be traced.
    pub fn of<A, R, I, O>() -> Option<MethodShape>
    where
        A: DeserializeOwned,
        R: DeserializeOwned,
        I: DeserializeOwned,
        O: DeserializeOwned,
    {
        let samples = Samples::new();
        // The tracer explores one more variant of an enum each time it meets it, but only
        // if the enum is not marked as being explored: marks are cleared between passes for
        // every enum learned of (the tracer names the unfinished ones when asked for its
        // registry, which ends it), and the passes start again, twice as many, until every
        // variant of every enum was seen.
        let mut enums: BTreeSet<String> = BTreeSet::new();
        let mut passes = 1;
        while passes <= MAX_PASSES {
            let mut tracer = Tracer::new(TracerConfig::default());
            let mut formats = None;
            for pass in 0..passes {
                if pass > 0 {
                    for name in &enums {
                        tracer.check_incomplete_enum(name);
                    }
                }
                let (args, _) = tracer.trace_type_once::<A>(&samples).ok()?;
                let (result, _) = tracer.trace_type_once::<R>(&samples).ok()?;
                let (input_item, _) = tracer.trace_type_once::<I>(&samples).ok()?;
                let (output_item, _) = tracer.trace_type_once::<O>(&samples).ok()?;
                formats = Some([args, result, input_item, output_item]);
            }
            let [args, result, input_item, output_item] = formats?;
            match tracer.registry() {
                Ok(containers) => {
                    return Some(MethodShape {
                        args,
                        result,
                        input_item,
                        output_item,
                        containers,
                    })
                }
                Err(TraceError::MissingVariants(unfinished)) => {
                    enums.extend(unfinished);
                    passes *= 2;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The method's fingerprint: a hash of its name and shape.
    pub fn fingerprint(&self, method: &str) -> u32 {
        let mut bytes = bytes::BytesMut::new();
        match codec::encode_into(&mut bytes, &(method, self)) {
            Ok(()) => crate::wire::fnv1a(&bytes),
            // A shape is plain data; should it ever fail to encode, no two sides agree.
            Err(_) => 0,
        }
    }

    /// The shape as bytes, for the peer (see [`MethodShape::from_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = bytes::BytesMut::new();
        match codec::encode_into(&mut bytes, self) {
            Ok(()) => bytes.to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// A shape the peer sent, if it is one.
    pub fn from_bytes(bytes: &[u8]) -> Option<MethodShape> {
        codec::decode(bytes).ok()
    }

    /// The first difference between this side's shape (`self`, "here") and the peer's
    /// (`theirs`, "on the server"), in words; `args` names the arguments.
    pub fn difference(&self, theirs: &MethodShape, args: &[&str]) -> Option<String> {
        let mut diff = Diff {
            ours: &self.containers,
            theirs: &theirs.containers,
            seen: BTreeSet::new(),
        };
        match (&self.args, &theirs.args) {
            (Format::Tuple(ours), Format::Tuple(their)) if ours.len() != their.len() => {
                return Some(format!(
                    "it takes {} argument{} on the server, {} here",
                    their.len(),
                    plural(their.len()),
                    ours.len()
                ));
            }
            (Format::Tuple(ours), Format::Tuple(their)) => {
                for (index, (ours, their)) in ours.iter().zip(their).enumerate() {
                    if let Some(difference) = diff.format(ours, their) {
                        let name = args.get(index).copied().unwrap_or("?");
                        return Some(format!("argument `{name}`: {difference}"));
                    }
                }
            }
            (ours, their) => {
                if let Some(difference) = diff.format(ours, their) {
                    return Some(format!("arguments: {difference}"));
                }
            }
        }
        let others = [
            ("result", &self.result, &theirs.result),
            ("request stream item", &self.input_item, &theirs.input_item),
            (
                "response stream item",
                &self.output_item,
                &theirs.output_item,
            ),
        ];
        others.into_iter().find_map(|(what, ours, theirs)| {
            diff.format(ours, theirs)
                .map(|difference| format!("{what}: {difference}"))
        })
    }
}

/// Compares two shapes' formats, following container names into their registries.
struct Diff<'a> {
    ours: &'a Registry,
    theirs: &'a Registry,
    /// Containers compared already (or being compared: types may be recursive).
    seen: BTreeSet<String>,
}

impl Diff<'_> {
    fn format(&mut self, ours: &Format, theirs: &Format) -> Option<String> {
        match (ours, theirs) {
            (Format::TypeName(ours), Format::TypeName(theirs)) if ours == theirs => {
                self.container(ours)
            }
            (Format::Option(ours), Format::Option(theirs))
            | (Format::Seq(ours), Format::Seq(theirs)) => self.format(ours, theirs),
            (
                Format::Map {
                    key: our_key,
                    value: our_value,
                },
                Format::Map {
                    key: their_key,
                    value: their_value,
                },
            ) => self
                .format(our_key, their_key)
                .or_else(|| self.format(our_value, their_value)),
            (Format::Tuple(ours), Format::Tuple(theirs)) if ours.len() == theirs.len() => ours
                .iter()
                .zip(theirs)
                .find_map(|(ours, theirs)| self.format(ours, theirs)),
            (
                Format::TupleArray {
                    content: ours,
                    size: our_size,
                },
                Format::TupleArray {
                    content: theirs,
                    size: their_size,
                },
            ) if our_size == their_size => self.format(ours, theirs),
            (ours, theirs) if ours == theirs => None,
            (ours, theirs) => Some(format!(
                "{} on the server, {} here",
                spell(theirs),
                spell(ours)
            )),
        }
    }

    fn container(&mut self, name: &str) -> Option<String> {
        if !self.seen.insert(name.to_owned()) {
            return None;
        }
        let (ours, theirs) = (self.ours.get(name)?, self.theirs.get(name)?);
        match (ours, theirs) {
            (ContainerFormat::Struct(ours), ContainerFormat::Struct(theirs)) => {
                self.fields(&format!("struct `{name}`"), ours, theirs)
            }
            (ContainerFormat::Enum(ours), ContainerFormat::Enum(theirs)) => {
                if ours.len() != theirs.len() {
                    return Some(format!(
                        "enum `{name}` has {} variant{} on the server, {} here",
                        theirs.len(),
                        plural(theirs.len()),
                        ours.len()
                    ));
                }
                for (ours, theirs) in ours.values().zip(theirs.values()) {
                    if ours.name != theirs.name {
                        return Some(format!(
                            "enum `{name}` has variant `{}` on the server where it has `{}` here",
                            theirs.name, ours.name
                        ));
                    }
                    let what = format!("enum `{name}`, variant `{}`", ours.name);
                    if let Some(difference) = self.variant(&what, &ours.value, &theirs.value) {
                        return Some(difference);
                    }
                }
                None
            }
            (ContainerFormat::NewTypeStruct(ours), ContainerFormat::NewTypeStruct(theirs)) => self
                .format(ours, theirs)
                .map(|difference| format!("struct `{name}`: {difference}")),
            (ContainerFormat::TupleStruct(ours), ContainerFormat::TupleStruct(theirs))
                if ours.len() == theirs.len() =>
            {
                ours.iter()
                    .zip(theirs)
                    .find_map(|(ours, theirs)| self.format(ours, theirs))
                    .map(|difference| format!("struct `{name}`: {difference}"))
            }
            (ours, theirs) if ours == theirs => None,
            (ours, theirs) => Some(format!(
                "`{name}` is {} on the server, {} here",
                container_kind(theirs),
                container_kind(ours)
            )),
        }
    }

    fn variant(
        &mut self,
        what: &str,
        ours: &VariantFormat,
        theirs: &VariantFormat,
    ) -> Option<String> {
        match (ours, theirs) {
            (VariantFormat::Struct(ours), VariantFormat::Struct(theirs)) => {
                self.fields(what, ours, theirs)
            }
            (VariantFormat::NewType(ours), VariantFormat::NewType(theirs)) => self
                .format(ours, theirs)
                .map(|difference| format!("{what}: {difference}")),
            (VariantFormat::Tuple(ours), VariantFormat::Tuple(theirs))
                if ours.len() == theirs.len() =>
            {
                ours.iter()
                    .zip(theirs)
                    .find_map(|(ours, theirs)| self.format(ours, theirs))
                    .map(|difference| format!("{what}: {difference}"))
            }
            (ours, theirs) if ours == theirs => None,
            _ => Some(format!("{what} carries other data on the server")),
        }
    }

    fn fields(
        &mut self,
        what: &str,
        ours: &[Named<Format>],
        theirs: &[Named<Format>],
    ) -> Option<String> {
        if ours.len() != theirs.len() {
            return Some(format!(
                "{what} has {} field{} on the server, {} here",
                theirs.len(),
                plural(theirs.len()),
                ours.len()
            ));
        }
        for (index, (ours, theirs)) in ours.iter().zip(theirs).enumerate() {
            if ours.name != theirs.name {
                return Some(format!(
                    "{what}: field {} is `{}` on the server, `{}` here",
                    index + 1,
                    theirs.name,
                    ours.name
                ));
            }
            if let Some(difference) = self.format(&ours.value, &theirs.value) {
                return Some(format!("{what}, field `{}`: {difference}", ours.name));
            }
        }
        None
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

fn container_kind(format: &ContainerFormat) -> &'static str {
    match format {
        ContainerFormat::UnitStruct => "a unit struct",
        ContainerFormat::NewTypeStruct(_) => "a newtype struct",
        ContainerFormat::TupleStruct(_) => "a tuple struct",
        ContainerFormat::Struct(_) => "a struct",
        ContainerFormat::Enum(_) => "an enum",
    }
}

/// A format as a reader would write its type.
fn spell(format: &Format) -> String {
    let mut text = String::new();
    write_format(&mut text, format);
    format!("`{text}`")
}

fn write_format(text: &mut String, format: &Format) {
    let simple = match format {
        Format::Variable(_) => "?",
        Format::TypeName(name) => name,
        Format::Unit => "()",
        Format::Bool => "bool",
        Format::I8 => "i8",
        Format::I16 => "i16",
        Format::I32 => "i32",
        Format::I64 => "i64",
        Format::I128 => "i128",
        Format::U8 => "u8",
        Format::U16 => "u16",
        Format::U32 => "u32",
        Format::U64 => "u64",
        Format::U128 => "u128",
        Format::F32 => "f32",
        Format::F64 => "f64",
        Format::Char => "char",
        Format::Str => "String",
        Format::Bytes => "bytes",
        Format::Option(inner) => {
            text.push_str("Option<");
            write_format(text, inner);
            text.push('>');
            return;
        }
        Format::Seq(inner) => {
            text.push_str("Vec<");
            write_format(text, inner);
            text.push('>');
            return;
        }
        Format::Map { key, value } => {
            text.push_str("Map<");
            write_format(text, key);
            text.push_str(", ");
            write_format(text, value);
            text.push('>');
            return;
        }
        Format::Tuple(items) => {
            text.push('(');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    text.push_str(", ");
                }
                write_format(text, item);
            }
            text.push(')');
            return;
        }
        Format::TupleArray { content, size } => {
            text.push('[');
            write_format(text, content);
            let _ = write!(text, "; {size}]");
            return;
        }
    };
    text.push_str(simple);
}

mod entry;
#[cfg(test)]
mod tests;

pub use entry::{MethodEntry, MethodSchemas};
