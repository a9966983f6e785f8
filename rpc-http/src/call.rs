//! One HTTP request as one call: route `/{Service}/{method}`, read the JSON arguments (a
//! POST body, or a GET's `message` query parameter), carry headers as metadata and
//! `Connect-Timeout-Ms` as the deadline, call through the in-process channel, and answer
//! with the JSON result, a stream of JSON values, or a Connect error.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use rpc_core::codec::Encoded;
use rpc_core::codegen::{CallKind, MethodEntry, MethodSpec};
use rpc_core::json::JsonCodec;
use rpc_core::route::ClientCall;
use rpc_core::{CallOptions, Channel, RpcError, Server, Streaming};

use crate::body::{full, streamed, HttpBody};
use crate::error::HttpError;

/// A request body this crate can read: any `http_body::Body` whose chunks and errors can
/// cross threads.
pub trait RequestBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// The header that sets a call's timeout, in milliseconds (the Connect protocol's).
const TIMEOUT_HEADER: &str = "connect-timeout-ms";

/// Headers that belong to one hop of the connection, not to the call.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

pub(crate) async fn handle<B: RequestBody>(
    server: &Server,
    channel: Channel,
    request: Request<B>,
) -> Response<HttpBody> {
    match route(server, channel, request).await {
        Ok(response) => response,
        Err(error) => error.response(),
    }
}

async fn route<B: RequestBody>(
    server: &Server,
    channel: Channel,
    request: Request<B>,
) -> Result<Response<HttpBody>, HttpError> {
    let path = request.uri().path().trim_start_matches('/');
    if path == "openapi.json" {
        if request.method() != Method::GET {
            return Err(method_not_allowed("GET"));
        }
        let document = crate::openapi::openapi(server).to_string();
        return Ok(json_response(Bytes::from(document)));
    }
    let (service, entry) = match resolve(server, path) {
        Ok(found) => found,
        Err(error) => return Err(judged(&channel, request.headers(), error).await),
    };
    let method = entry.method();
    let Some(codec) = entry.json().copied() else {
        let error = HttpError::new(
            "unimplemented",
            StatusCode::NOT_IMPLEMENTED,
            format!("`{service}.{method}` has no JSON form"),
        );
        return Err(judged(&channel, request.headers(), error).await);
    };
    let streams_result = match entry.kind() {
        CallKind::Unary => false,
        CallKind::ServerStreaming => true,
        _ => return stream_in(server, channel, service, entry, codec, request).await,
    };
    let (parts, body) = request.into_parts();
    let max_body = server.config().max_frame_size;
    let prepared = async {
        let arguments = if parts.method == Method::POST {
            check_content_type(&parts.headers)?;
            read_body(
                &parts.headers,
                body,
                max_body,
                server.config().frame_timeout,
            )
            .await?
        } else if parts.method == Method::GET && (entry.is_idempotent() || streams_result) {
            query_message(parts.uri.query().unwrap_or(""))?
        } else if entry.is_idempotent() || streams_result {
            return Err(method_not_allowed("GET, POST"));
        } else {
            return Err(method_not_allowed("POST"));
        };
        let options = call_options(&parts.headers)?;
        let args = codec
            .args(&arguments, entry.arg_names())
            .map_err(|error| HttpError::from(&error))?;
        Ok(ClientCall::new(spec(service, entry), options, args))
    };
    let call = match prepared.await {
        Ok(call) => call,
        Err(error) => return Err(judged(&channel, &parts.headers, error).await),
    };
    if streams_result {
        let events = accepts_events(&parts.headers);
        let stream = channel
            .call_streaming_encoded(call, None)
            .await
            .map_err(|error| HttpError::from(&error))?;
        return Ok(stream_response(stream, codec, events));
    }
    output_response(channel.call_encoded(call).await, codec)
}

/// A call with a request stream: an NDJSON body whose first line is the arguments object
/// and whose following lines are the stream's items, sent to the handler as they arrive.
async fn stream_in<B: RequestBody>(
    server: &Server,
    channel: Channel,
    service: &'static str,
    entry: &MethodEntry,
    codec: JsonCodec,
    request: Request<B>,
) -> Result<Response<HttpBody>, HttpError> {
    let (parts, body) = request.into_parts();
    let config = server.config();
    let mut lines = Box::pin(lines(body, config.max_frame_size, config.frame_timeout));
    let prepared = async {
        if parts.method != Method::POST {
            return Err(method_not_allowed("POST"));
        }
        let is_ndjson = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim().starts_with("application/x-ndjson"));
        if !is_ndjson {
            return Err(HttpError::new(
                "unsupported_media_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send `Content-Type: application/x-ndjson`: the arguments object on the first line, then one item a line",
            ));
        }
        let options = call_options(&parts.headers)?;
        let first = match lines.next().await {
            Some(Ok(line)) => line,
            Some(Err(error)) => return Err(error),
            None => Bytes::new(),
        };
        let args = codec
            .args(&first, entry.arg_names())
            .map_err(|error| HttpError::from(&error))?;
        Ok((options, args))
    };
    let (options, args) = match prepared.await {
        Ok(prepared) => prepared,
        Err(error) => return Err(judged(&channel, &parts.headers, error).await),
    };
    // An item that does not decode ends the request stream there (the handler sees its
    // end); the failure is logged.
    let items = lines.scan((), move |(), line| {
        let item = line.ok().and_then(|line| match codec.input_item(&line) {
            Ok(item) => Some(Encoded(item)),
            Err(error) => {
                tracing::info!(%error, "ended a request stream at an item that does not decode");
                None
            }
        });
        std::future::ready(item)
    });
    let input = Streaming::new(items);
    let call = ClientCall::new(spec(service, entry), options, args);
    if entry.kind() == CallKind::Bidirectional {
        let events = accepts_events(&parts.headers);
        let stream = channel
            .call_streaming_encoded(call, Some(input))
            .await
            .map_err(|error| HttpError::from(&error))?;
        return Ok(stream_response(stream, codec, events));
    }
    output_response(channel.call_with_input_encoded(call, input).await, codec)
}

/// The JSON response to a call's result (its postcard bytes, or its error).
fn output_response(
    result: Result<Bytes, RpcError>,
    codec: JsonCodec,
) -> Result<Response<HttpBody>, HttpError> {
    let result = result.map_err(|error| HttpError::from(&error))?;
    let body = codec
        .output(&result)
        .map_err(|error| HttpError::from(&error))?;
    Ok(json_response(Bytes::from(body)))
}

/// The non-empty lines of `body`, each at most `max` bytes and each completed within
/// `timeout` of its first byte (the binary protocol's frame timeout: a client may pause
/// between items as long as it likes, but not in the middle of one).
fn lines<B: RequestBody>(
    body: B,
    max: usize,
    timeout: Duration,
) -> impl Stream<Item = Result<Bytes, HttpError>> + Send {
    let frames = http_body_util::BodyStream::new(body);
    futures_util::stream::unfold(
        (Box::pin(frames), BytesMut::new(), false),
        move |(mut frames, mut pending, mut ended)| async move {
            loop {
                if let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                    let line = pending.split_to(end + 1).freeze().slice(..end);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some((Ok(line), (frames, pending, ended)));
                }
                if pending.len() > max {
                    return Some((Err(too_large(max)), (frames, BytesMut::new(), true)));
                }
                if ended {
                    if pending.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let line = std::mem::take(&mut pending).freeze();
                    return Some((Ok(line), (frames, pending, ended)));
                }
                let next = if pending.is_empty() {
                    frames.next().await
                } else {
                    match tokio::time::timeout(timeout, frames.next()).await {
                        Ok(next) => next,
                        Err(_elapsed) => {
                            let error = too_slow(timeout, "a line of the body");
                            return Some((Err(error), (frames, BytesMut::new(), true)));
                        }
                    }
                };
                match next {
                    Some(Ok(frame)) => {
                        if let Ok(mut data) = frame.into_data() {
                            while data.has_remaining() {
                                let chunk = data.chunk();
                                pending.extend_from_slice(chunk);
                                let len = chunk.len();
                                data.advance(len);
                            }
                        }
                    }
                    Some(Err(_)) | None => ended = true,
                }
            }
        },
    )
}

fn stream_response(stream: Streaming<Bytes>, codec: JsonCodec, events: bool) -> Response<HttpBody> {
    let content_type = if events {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let mut response = Response::new(streamed(chunks(stream, codec, events)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The spec of `entry`'s method on `service`, for a call made here (no compatibility
/// declaration: the server and this door were built together).
/// The service and method a path names, or why it names none.
fn resolve(server: &Server, path: &str) -> Result<(&'static str, &'static MethodEntry), HttpError> {
    let Some((service, method)) = path.rsplit_once('/') else {
        return Err(HttpError::new(
            "not_found",
            StatusCode::NOT_FOUND,
            "calls are `POST /{Service}/{method}`",
        ));
    };
    let services = server.described_services();
    let Some(&(service, shapes)) = services.iter().find(|(name, _)| *name == service) else {
        return Err(HttpError::new(
            "unimplemented",
            StatusCode::NOT_IMPLEMENTED,
            format!("no service `{service}`"),
        ));
    };
    let entry = shapes
        .method(rpc_core::wire::wire_id(method))
        .filter(|entry| entry.method() == method)
        .ok_or_else(|| {
            HttpError::new(
                "unimplemented",
                StatusCode::NOT_IMPLEMENTED,
                format!("no method `{service}.{method}`"),
            )
        })?;
    Ok((service, entry))
}

/// `error` once the server's interceptors have let the caller through, or their refusal.
/// Every answer given before a call reaches the server (no such path, service or method; a
/// wrong HTTP method, content type or body) goes through here: a call to a service no
/// server has, carrying the request's headers, is judged by the interceptors as any call
/// is, so a caller they refuse gets the same refusal whatever the path and cannot tell
/// which paths exist (the same rule as the server's own, for calls over its protocol). The
/// happy path never pays for it.
async fn judged(channel: &Channel, headers: &HeaderMap, error: HttpError) -> HttpError {
    /// A method of a service named by no one (wire names are never empty).
    const NOWHERE: MethodSpec = MethodSpec::new("", "");
    let Ok(options) = call_options(headers) else {
        return error;
    };
    let call = ClientCall::new(NOWHERE, options, Bytes::new());
    match channel.call_encoded(call).await {
        Err(RpcError::UnknownService { .. }) | Ok(_) => error,
        Err(refusal) => HttpError::from(&refusal),
    }
}

fn spec(service: &'static str, entry: &MethodEntry) -> MethodSpec {
    let spec = MethodSpec::new(service, entry.method());
    if entry.is_idempotent() {
        spec.idempotent()
    } else {
        spec
    }
}

fn json_response(body: Bytes) -> Response<HttpBody> {
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn method_not_allowed(allowed: &'static str) -> HttpError {
    HttpError::new(
        "method_not_allowed",
        StatusCode::METHOD_NOT_ALLOWED,
        format!("use {allowed}"),
    )
}

fn check_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(HttpError::new(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the arguments as `Content-Type: application/json`",
        ))
    }
}

fn too_large(max: usize) -> HttpError {
    HttpError::new(
        "resource_exhausted",
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over the limit of {max} bytes"),
    )
}

fn too_slow(timeout: Duration, what: &str) -> HttpError {
    HttpError::new(
        "deadline_exceeded",
        StatusCode::REQUEST_TIMEOUT,
        format!("{what} did not arrive within {timeout:?}"),
    )
}

/// The whole body, refused as soon as it is known to be over `max` bytes (from its
/// `Content-Length`, before reading it, or while reading), or when it has not all arrived
/// within `timeout` (the binary protocol's frame timeout: a slow body holds nothing for
/// long).
async fn read_body<B: RequestBody>(
    headers: &HeaderMap,
    body: B,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_elapsed| too_slow(timeout, "the body"))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(error) => Err(HttpError::new(
            "invalid_argument",
            StatusCode::BAD_REQUEST,
            format!("the body could not be read: {error}"),
        )),
    }
}

/// The arguments of a GET, as Connect sends them: `?encoding=json&message=<JSON>`.
fn query_message(query: &str) -> Result<Bytes, HttpError> {
    let mut message = Bytes::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "encoding" if value != "json" => {
                return Err(HttpError::new(
                    "unsupported_media_type",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "only `encoding=json` is served",
                ))
            }
            "message" => message = Bytes::from(value.into_owned()),
            _ => {}
        }
    }
    Ok(message)
}

/// The call's options: its timeout from `Connect-Timeout-Ms`, and every other end-to-end
/// header as metadata.
fn call_options(headers: &HeaderMap) -> Result<CallOptions, HttpError> {
    let mut options = CallOptions::default();
    for (name, value) in headers {
        let name = name.as_str();
        if name == TIMEOUT_HEADER {
            let millis = value
                .to_str()
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    HttpError::new(
                        "invalid_argument",
                        StatusCode::BAD_REQUEST,
                        "Connect-Timeout-Ms must be a whole number of milliseconds",
                    )
                })?;
            options = options.with_timeout(Duration::from_millis(millis));
            continue;
        }
        if HOP_BY_HOP.contains(&name) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            options = options.with_metadata(name, value);
        }
    }
    Ok(options)
}

fn accepts_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"))
}

/// The response stream's items as NDJSON lines or Server-Sent Events; an error ends it
/// with an `{"error": ..}` line (an `error` event).
fn chunks(stream: Streaming<Bytes>, codec: JsonCodec, events: bool) -> impl Stream<Item = Bytes> {
    futures_util::stream::unfold(Some(stream), move |stream| async move {
        let mut stream = stream?;
        let item = stream.next().await?;
        let json = item.and_then(|encoded| codec.item(&encoded));
        Some(match json {
            Ok(json) => (frame(&json, events, false), Some(stream)),
            Err(error) => (error_frame(&error, events), None),
        })
    })
}

fn frame(json: &[u8], events: bool, error: bool) -> Bytes {
    let mut chunk = BytesMut::with_capacity(json.len() + 24);
    if events {
        if error {
            chunk.extend_from_slice(b"event: error\n");
        }
        chunk.extend_from_slice(b"data: ");
        chunk.extend_from_slice(json);
        chunk.extend_from_slice(b"\n\n");
    } else {
        chunk.extend_from_slice(json);
        chunk.extend_from_slice(b"\n");
    }
    chunk.freeze()
}

fn error_frame(error: &RpcError, events: bool) -> Bytes {
    let error = HttpError::from(error);
    if events {
        frame(&error.body(), true, true)
    } else {
        let line = serde_json::json!({ "error": { "code": error.code, "message": error.message } });
        frame(line.to_string().as_bytes(), false, true)
    }
}
