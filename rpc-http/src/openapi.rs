//! The OpenAPI 3.1 document of a server's services, generated from their traits: a path
//! per method with its request body (an object of the arguments by name), its response
//! (the result, or a stream of items as NDJSON or Server-Sent Events), the Connect error
//! body, and the timeout header. Schemas come from each method's shape as serde sees it,
//! so no derive is asked of the service's types; doc comments become descriptions.

use rpc_core::codegen::{CallKind, MethodEntry};
use rpc_core::Server;
use serde_json::{json, Map, Value};

/// The OpenAPI 3.1 document describing every service `server` serves over HTTP/JSON (what
/// `GET /openapi.json` answers).
///
/// ```
/// let document = rpc_http::openapi(&rpc_core::Server::new());
/// assert_eq!(document["openapi"], "3.1.0");
/// // Every server answers the health service.
/// assert!(document["paths"]["/Health/check"]["post"].is_object());
/// ```
pub fn openapi(server: &Server) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".to_owned(),
        json!({
            "type": "object",
            "description": "A failed call: a Connect error code and a message for people.",
            "properties": {
                "code": { "type": "string" },
                "message": { "type": "string" },
            },
            "required": ["code", "message"],
        }),
    );
    for (service, shapes) in server.described_services() {
        for method in shapes.methods() {
            let Some(operation) = operation(service, method, &mut schemas) else {
                continue;
            };
            let mut item = Map::new();
            if method.is_idempotent() || method.kind() == CallKind::ServerStreaming {
                item.insert("get".to_owned(), get_operation(&operation));
            }
            item.insert("post".to_owned(), operation);
            paths.insert(
                format!("/{service}/{}", method.method()),
                Value::Object(item),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rpc services",
            "version": "1",
            "description": "Every method of every service, called as `POST /{Service}/{method}` with a JSON object of its arguments.",
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// The POST operation of one method (`None` is reserved for methods HTTP cannot carry).
fn operation(
    service: &str,
    method: &MethodEntry,
    schemas: &mut Map<String, Value>,
) -> Option<Value> {
    let streams = matches!(
        method.kind(),
        CallKind::ServerStreaming | CallKind::Bidirectional
    );
    let streams_in = matches!(
        method.kind(),
        CallKind::ClientStreaming | CallKind::Bidirectional
    );
    let described = method.schemas();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (index, name) in method.arg_names().iter().enumerate() {
        let schema = described
            .as_ref()
            .and_then(|described| described.args.get(index).cloned())
            .unwrap_or_else(|| json!({}));
        if !is_optional(&schema) {
            required.push(Value::String((*name).to_owned()));
        }
        properties.insert((*name).to_owned(), schema);
    }
    let (result, item, input_item) = match &described {
        Some(described) => {
            for (name, schema) in &described.components {
                schemas
                    .entry(name.clone())
                    .or_insert_with(|| schema.clone());
            }
            (
                described.result.clone(),
                described.output_item.clone(),
                described.input_item.clone(),
            )
        }
        None => (json!({}), json!({}), json!({})),
    };
    let success = if streams {
        json!({
            "description": "The stream's items, one JSON value per line (or an event each, with `Accept: text/event-stream`); an error ends it with an `{\"error\": ...}` line.",
            "content": {
                "application/x-ndjson": { "schema": item },
                "text/event-stream": { "schema": { "type": "string" } },
            },
        })
    } else {
        json!({
            "description": "The method's result.",
            "content": { "application/json": { "schema": result } },
        })
    };
    let mut operation = json!({
        "operationId": format!("{service}.{}", method.method()),
        "tags": [service],
        "parameters": [{
            "name": "Connect-Timeout-Ms",
            "in": "header",
            "required": false,
            "description": "The call's timeout in milliseconds; past it the call ends with `deadline_exceeded`.",
            "schema": { "type": "integer", "minimum": 0 },
        }],
        "requestBody": request_body(streams_in, &json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }), &input_item),
        "responses": {
            "200": success,
            "default": {
                "description": "The call failed.",
                "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/Error" } },
                },
            },
        },
    });
    if !method.doc().is_empty() {
        operation["description"] = Value::String(method.doc().to_owned());
    }
    Some(operation)
}

/// The request body: the arguments object, or for a method that takes a stream, NDJSON
/// whose first line is the arguments object and whose following lines are the items.
fn request_body(streams_in: bool, arguments: &Value, item: &Value) -> Value {
    if streams_in {
        json!({
            "required": true,
            "description": "The arguments object on the first line, then one stream item a line.",
            "content": {
                "application/x-ndjson": {
                    "schema": { "oneOf": [arguments, item] },
                },
            },
        })
    } else {
        json!({
            "required": false,
            "content": { "application/json": { "schema": arguments } },
        })
    }
}

/// The GET form of an operation: the same, with the arguments in the `message` query
/// parameter (and `encoding=json`), as Connect sends them.
fn get_operation(post: &Value) -> Value {
    let mut get = post.clone();
    if let Some(object) = get.as_object_mut() {
        object.remove("requestBody");
        if let Some(Value::String(id)) = object.get("operationId").cloned() {
            object.insert("operationId".to_owned(), Value::String(format!("{id}.get")));
        }
        if let Some(Value::Array(parameters)) = object.get_mut("parameters") {
            parameters.push(json!({
                "name": "message",
                "in": "query",
                "required": false,
                "description": "The JSON object of the arguments.",
                "schema": { "type": "string" },
            }));
            parameters.push(json!({
                "name": "encoding",
                "in": "query",
                "required": false,
                "schema": { "type": "string", "enum": ["json"] },
            }));
        }
    }
    get
}

fn is_optional(schema: &Value) -> bool {
    schema.get("x-optional").and_then(Value::as_bool) == Some(true)
}
