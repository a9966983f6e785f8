//! JSON for front doors that speak it (the HTTP/JSON front door in `rpc-http`): a method's
//! arguments from a JSON object keyed by argument names, and its result and stream items
//! to JSON, each through the method's own types, so JSON reaches a service exactly as the
//! binary protocol does (the same postcard bytes, the same handlers, hooks and limits).
//!
//! `Vec<u8>` travels as a base64 string; an application `Result` as serde writes it
//! (`{"Ok": ..}` or `{"Err": ..}`).

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::codec;
use crate::error::RpcError;
use crate::method_types::MethodTypes;

/// Turns one method's JSON into its postcard bytes and back.
#[derive(Debug, Clone, Copy)]
pub struct JsonCodec {
    args: fn(&[u8], &[&str]) -> Result<Bytes, RpcError>,
    output: fn(&[u8]) -> Result<Vec<u8>, RpcError>,
    item: fn(&[u8]) -> Result<Vec<u8>, RpcError>,
    input_item: fn(&[u8]) -> Result<Bytes, RpcError>,
}

impl JsonCodec {
    /// The codec of the method whose types `M` names.
    pub fn of<M: MethodTypes>() -> JsonCodec {
        JsonCodec {
            args: args_to_postcard::<M::Args>,
            output: postcard_to_json::<M::Output>,
            item: postcard_to_json::<M::OutputItem>,
            input_item: json_to_postcard::<M::InputItem>,
        }
    }

    /// The encoded argument tuple from a JSON object keyed by the argument `names` (an
    /// empty body is `{}`; an argument left out is `null`, which an `Option` takes).
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` naming the argument, the path inside it and the problem.
    pub fn args(&self, body: &[u8], names: &[&str]) -> Result<Bytes, RpcError> {
        (self.args)(body, names)
    }

    /// The method's result as JSON, from its encoding.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the bytes are not the result.
    pub fn output(&self, encoded: &[u8]) -> Result<Vec<u8>, RpcError> {
        (self.output)(encoded)
    }

    /// One item of the method's request stream, encoded, from its JSON.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` naming the problem when the JSON is not an item.
    pub fn input_item(&self, json: &[u8]) -> Result<Bytes, RpcError> {
        (self.input_item)(json)
    }

    /// One item of the method's response stream as JSON, from its encoding.
    ///
    /// # Errors
    ///
    /// `RpcError::Codec` when the bytes are not an item.
    pub fn item(&self, encoded: &[u8]) -> Result<Vec<u8>, RpcError> {
        (self.item)(encoded)
    }
}

fn args_to_postcard<A: Serialize + DeserializeOwned>(
    body: &[u8],
    names: &[&str],
) -> Result<Bytes, RpcError> {
    let args: A = args_from_json(body, names)?;
    let mut encoded = BytesMut::new();
    codec::encode_into(&mut encoded, &args)?;
    Ok(encoded.freeze())
}

fn json_to_postcard<T: Serialize + DeserializeOwned>(json: &[u8]) -> Result<Bytes, RpcError> {
    let value: T = serde_json::from_slice(json)
        .map_err(|error| RpcError::codec(format!("a stream item does not decode: {error}")))?;
    let mut encoded = BytesMut::new();
    codec::encode_into(&mut encoded, &value)?;
    Ok(encoded.freeze())
}

fn postcard_to_json<T: Serialize + DeserializeOwned>(encoded: &[u8]) -> Result<Vec<u8>, RpcError> {
    let value: T = codec::decode(encoded)?;
    serde_json::to_vec(&value).map_err(|error| RpcError::codec(error.to_string()))
}

/// The argument tuple `A` from a JSON object keyed by argument names.
fn args_from_json<A: DeserializeOwned>(body: &[u8], names: &[&str]) -> Result<A, RpcError> {
    let mut object: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(body).map_err(|error| {
            RpcError::codec(format!(
                "the body must be a JSON object of the arguments: {error}"
            ))
        })?
    };
    if let Some(unknown) = object.keys().find(|key| !names.contains(&key.as_str())) {
        return Err(RpcError::codec(format!(
            "unknown argument `{unknown}`; the method takes {}",
            listed(names)
        )));
    }
    let values: Vec<Value> = names
        .iter()
        .map(|name| object.remove(*name).unwrap_or(Value::Null))
        .collect();
    // A method without arguments takes `()`, which JSON writes as `null`.
    let tuple = if names.is_empty() {
        Value::Null
    } else {
        Value::Array(values)
    };
    serde_path_to_error::deserialize(tuple).map_err(|error| {
        let mut segments = error.path().iter();
        let argument = match segments.next() {
            Some(serde_path_to_error::Segment::Seq { index }) => names.get(*index).copied(),
            _ => None,
        };
        let inner: Vec<String> = segments.map(ToString::to_string).collect();
        let inner = inner.join(".");
        let problem = error.into_inner();
        let message = match (argument, inner.is_empty()) {
            (Some(argument), true) => format!("argument `{argument}`: {problem}"),
            (Some(argument), false) => format!("argument `{argument}`, at `{inner}`: {problem}"),
            (None, _) => format!("the arguments do not decode: {problem}"),
        };
        RpcError::codec(message)
    })
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        return "no arguments".to_owned();
    }
    let names: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::codec::ByteBuf;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[test]
    fn arguments_are_read_by_name_in_any_order() {
        let body = br#"{"b": 3, "a": 2}"#;
        let args: (i64, i64) = args_from_json(body, &["a", "b"]).unwrap();
        assert_eq!(args, (2, 3));
        let none: () = args_from_json(b"", &[]).unwrap();
        assert_eq!(none, ());
        let optional: (Option<u8>,) = args_from_json(b"{}", &["maybe"]).unwrap();
        assert_eq!(optional, (None,));
    }

    #[test]
    fn a_bad_argument_is_named_with_its_path_and_problem() {
        let body = br#"{"line": {"sku": "tea", "quantity": "two"}}"#;
        let error = args_from_json::<(Line,)>(body, &["line"]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("argument `line`, at `quantity`: invalid type: string \"two\""),
            "{text}"
        );
        let error = args_from_json::<(Line,)>(b"{}", &["line"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("argument `line`: invalid type: null"),
            "{error}"
        );
        let error = args_from_json::<(i64,)>(br#"{"x": 1, "y": 2}"#, &["x"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown argument `y`; the method takes `x`"),
            "{error}"
        );
        let error = args_from_json::<(i64,)>(b"[1]", &["x"]).unwrap_err();
        assert!(
            error.to_string().contains("must be a JSON object"),
            "{error}"
        );
    }

    #[test]
    fn bytes_travel_as_base64_and_results_as_serde_writes_them() {
        let args: (ByteBuf,) = args_from_json(br#"{"data": "aGk="}"#, &["data"]).unwrap();
        assert_eq!(args.0 .0, b"hi");
        let mut encoded = BytesMut::new();
        codec::encode_into(&mut encoded, &ByteBuf(b"hi".to_vec())).unwrap();
        assert_eq!(postcard_to_json::<ByteBuf>(&encoded).unwrap(), br#""aGk=""#);
        let mut encoded = BytesMut::new();
        codec::encode_into(&mut encoded, &Err::<u64, String>("no".to_owned())).unwrap();
        assert_eq!(
            postcard_to_json::<Result<u64, String>>(&encoded).unwrap(),
            br#"{"Err":"no"}"#
        );
    }
}
