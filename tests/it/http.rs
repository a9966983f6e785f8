//! The HTTP/JSON front door: the same server called with JSON over HTTP/1.1 and HTTP/2 by a
//! real HTTP client, every Connect error mapping, deadlines, metadata, streams, limits, and
//! the OpenAPI document.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rpc_core::{CallInfo, RpcError, Server, ServerConfig};
use rpc_tests::*;
use serde_json::{Value, json};

/// A server of the test services over HTTP on a free port, shut down when dropped.
struct HttpServer {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl HttpServer {
    async fn start(server: Server) -> HttpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(
            rpc_http::serve(listener, server).with_graceful_shutdown(async {
                let _ = stopped.await;
            }),
        );
        HttpServer {
            address,
            stop: Some(stop),
            done: Some(done),
        }
    }

    async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().unwrap().await.unwrap()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.abort();
        }
    }
}

/// A response: status, content type, body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `request` over a new HTTP/1.1 connection (or HTTP/2 with `http2`).
async fn send(address: SocketAddr, request: Request<Full<Bytes>>, http2: bool) -> Answer {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let io = TokioIo::new(stream);
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

fn post(address: SocketAddr, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

async fn call(address: SocketAddr, path: &str, body: &str) -> Answer {
    send(address, post(address, path, body), false).await
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{answer:?}");
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.json()["code"], code, "{answer:?}");
}

#[tokio::test]
async fn a_call_takes_json_arguments_by_name_and_answers_json_over_both_http_versions() {
    let http = HttpServer::start(test_server().0).await;
    for http2 in [false, true] {
        let answer = send(
            http.address,
            post(http.address, "/Calculator/add", r#"{"b": 3, "a": 2}"#),
            http2,
        )
        .await;
        assert_eq!(
            (answer.status, answer.json()),
            (StatusCode::OK, json!(5)),
            "http2: {http2}"
        );
        assert_eq!(answer.content_type, "application/json");
    }
    let answer = call(http.address, "/Calculator/div", r#"{"a": 1, "b": 0}"#).await;
    assert_eq!(
        answer.json(),
        json!({ "Err": "DivideByZero" }),
        "an application error is a value"
    );
    let answer = call(http.address, "/Calculator/div", r#"{"a": 9, "b": 3}"#).await;
    assert_eq!(answer.json(), json!({ "Ok": 3 }));
    // The handler sees the HTTP client's address.
    let answer = call(http.address, "/Calculator/whoami", "").await;
    assert!(
        answer
            .json()
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.1:"),
        "{answer:?}"
    );
    http.shutdown().await.unwrap();
}

#[tokio::test]
async fn bytes_travel_as_base64() {
    let http = HttpServer::start(test_server().0).await;
    let answer = call(http.address, "/Probe/echo", r#"{"data": "aGVsbG8="}"#).await;
    assert_eq!(answer.json(), json!("aGVsbG8="));
    let answer = call(http.address, "/Probe/fill", r#"{"len": 3}"#).await;
    assert_eq!(answer.json(), json!("BwcH"), "three bytes of 7");
}

#[tokio::test]
async fn mistakes_are_connect_errors_with_their_statuses() {
    let (server, _) = test_server_with({
        let mut config = ServerConfig::default();
        config.max_frame_size = 1024;
        config
    });
    let http = HttpServer::start(server).await;
    let address = http.address;
    let answer = call(address, "/Calculator/add", r#"{"a": "two", "b": 3}"#).await;
    assert_error(&answer, 400, "invalid_argument");
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("argument `a`: invalid type: string \"two\""),
        "{message}"
    );
    assert_error(
        &call(address, "/Calculator/add", r#"{"a": 1}"#).await,
        400,
        "invalid_argument",
    );
    assert_error(
        &call(address, "/Calculator/add", "[1, 2]").await,
        400,
        "invalid_argument",
    );
    assert_error(
        &call(address, "/Calculator/mul", "{}").await,
        501,
        "unimplemented",
    );
    assert_error(
        &call(address, "/Nope/add", "{}").await,
        501,
        "unimplemented",
    );
    // A panic's text stays in the server's log.
    let answer = call(address, "/Probe/panic", r#"{"message": "secret"}"#).await;
    assert_error(&answer, 500, "internal");
    assert!(!String::from_utf8_lossy(&answer.body).contains("secret"));
    // The wrong content type, the wrong method, a body over the frame limit.
    let text = Request::post(format!("http://{address}/Calculator/add"))
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_error(
        &send(address, text, false).await,
        415,
        "unsupported_media_type",
    );
    let get = Request::get(format!("http://{address}/Calculator/add"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_error(&send(address, get, false).await, 405, "method_not_allowed");
    let big = format!(r#"{{"data": "{}"}}"#, "A".repeat(4096));
    assert_error(
        &call(address, "/Probe/echo", &big).await,
        413,
        "resource_exhausted",
    );
    // The connection served the mistakes and still serves calls.
    assert_eq!(
        call(address, "/Calculator/add", r#"{"a": 1, "b": 1}"#)
            .await
            .json(),
        json!(2)
    );
}

#[tokio::test]
async fn the_timeout_header_sets_the_deadline_the_handler_sees_and_ends_the_call() {
    let (server, stats) = test_server();
    let http = HttpServer::start(server).await;
    let request = |path: &str, body: &str, millis: &str| {
        Request::post(format!("http://{}{path}", http.address))
            .header("content-type", "application/json")
            .header("connect-timeout-ms", millis)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let answer = send(
        http.address,
        request("/Probe/deadline_millis", "", "5000"),
        false,
    )
    .await;
    let left = answer.json().as_u64().unwrap();
    assert!(left > 4000 && left <= 5000, "{left}");
    let answer = send(http.address, request("/Probe/hang", "", "50"), false).await;
    assert_error(&answer, 504, "deadline_exceeded");
    eventually("the handler was dropped", || {
        stats.hang_dropped.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn headers_are_metadata_and_reach_interceptors() {
    let server = test_server().0.with_interceptor(|call: &CallInfo<'_>| {
        match call.context().metadata("authorization") {
            Some("Bearer let-me-in") => Ok(()),
            _ => Err(RpcError::Unauthenticated {
                message: "a token is required".into(),
            }),
        }
    });
    let http = HttpServer::start(server).await;
    assert_error(
        &call(http.address, "/Calculator/add", r#"{"a": 1, "b": 2}"#).await,
        401,
        "unauthenticated",
    );
    let request = Request::post(format!("http://{}/Probe/metadata", http.address))
        .header("content-type", "application/json")
        .header("authorization", "Bearer let-me-in")
        .header("x-tenant", "acme")
        .body(Full::new(Bytes::from_static(br#"{"key": "x-tenant"}"#)))
        .unwrap();
    assert_eq!(
        send(http.address, request, false).await.json(),
        json!("acme")
    );
    // A caller the interceptor refuses cannot tell which paths exist; one it lets through
    // learns that these do not.
    for (path, known) in [
        ("/Nope/add", (501, "unimplemented")),
        ("/Calculator/nope", (501, "unimplemented")),
        ("/nothing", (404, "not_found")),
    ] {
        assert_error(
            &call(http.address, path, "{}").await,
            401,
            "unauthenticated",
        );
        let request = Request::post(format!("http://{}{path}", http.address))
            .header("content-type", "application/json")
            .header("authorization", "Bearer let-me-in")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        assert_error(&send(http.address, request, false).await, known.0, known.1);
    }
    // Nor from how a known path answers a malformed request: whatever would be refused
    // before the call reaches the server (content type, HTTP method, body) is refused for
    // a caller the interceptor refuses as an unknown path is.
    let malformed = |path: &str, authorized: bool| {
        let request = Request::put(format!("http://{}{path}", http.address))
            .header("content-type", "text/plain");
        let request = if authorized {
            request.header("authorization", "Bearer let-me-in")
        } else {
            request
        };
        request.body(Full::new(Bytes::from_static(b"{"))).unwrap()
    };
    for path in ["/Calculator/add", "/Nope/add"] {
        assert_error(
            &send(http.address, malformed(path, false), false).await,
            401,
            "unauthenticated",
        );
    }
    let known = send(http.address, malformed("/Calculator/add", true), false).await;
    assert_eq!(known.status, 405, "let through, it learns what is wrong");
    let mut wrong_type = post(http.address, "/Calculator/add", "{");
    wrong_type
        .headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    assert_error(
        &send(http.address, wrong_type, false).await,
        401,
        "unauthenticated",
    );
}

#[tokio::test]
async fn idempotent_methods_answer_get_with_the_arguments_in_the_query() {
    let server = Server::new();
    let http = HttpServer::start(server).await;
    let message = "%7B%22service%22%3A%22%22%7D"; // {"service":""}
    let get = Request::get(format!(
        "http://{}/Health/check?encoding=json&message={message}",
        http.address
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let answer = send(http.address, get, false).await;
    assert_eq!(
        (answer.status, answer.json()),
        (StatusCode::OK, json!("Serving"))
    );
}

mod feed {
    use futures_util::StreamExt;
    use rpc_core::Streaming;

    #[rpc_core::service]
    pub(crate) trait Feed {
        /// Counts to `n`; its producer panics at `fail_at`, if given.
        async fn count(&self, n: u32, fail_at: Option<u32>) -> Streaming<u32>;
    }

    pub(crate) struct Impl;

    impl Feed for Impl {
        async fn count(&self, n: u32, fail_at: Option<u32>) -> Streaming<u32> {
            Streaming::new(futures_util::stream::iter(0..n).map(move |item| {
                assert!(Some(item) != fail_at, "the producer failed");
                item
            }))
        }
    }
}

#[tokio::test]
async fn a_stream_is_ndjson_or_server_sent_events() {
    let server = Server::new().add_service(feed::FeedServer::new(feed::Impl));
    let http = HttpServer::start(server).await;
    let answer = call(http.address, "/Feed/count", r#"{"n": 3}"#).await;
    assert_eq!(answer.content_type, "application/x-ndjson");
    assert_eq!(&answer.body[..], b"0\n1\n2\n");
    let events = Request::post(format!("http://{}/Feed/count", http.address))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from_static(br#"{"n": 2}"#)))
        .unwrap();
    let answer = send(http.address, events, true).await;
    assert_eq!(answer.content_type, "text/event-stream");
    assert_eq!(&answer.body[..], b"data: 0\n\ndata: 1\n\n");
    let get = Request::get(format!(
        "http://{}/Feed/count?message=%7B%22n%22%3A1%7D",
        http.address
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    assert_eq!(&send(http.address, get, false).await.body[..], b"0\n");
    // A failure mid-stream ends it with an error line, never like a clean end.
    let answer = call(http.address, "/Feed/count", r#"{"n": 3, "fail_at": 1}"#).await;
    let lines: Vec<&[u8]> = answer.body.split(|byte| *byte == b'\n').collect();
    assert_eq!(lines[0], b"0");
    let error: Value = serde_json::from_slice(lines[1]).unwrap();
    assert_eq!(error["error"]["code"], "internal", "{error}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_method() {
    let server = Server::new().add_service(feed::FeedServer::new(feed::Impl));
    let (server, _) = (
        test_server()
            .0
            .add_service(feed::FeedServer::new(feed::Impl)),
        server,
    );
    let http = HttpServer::start(server).await;
    let get = Request::get(format!("http://{}/openapi.json", http.address))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let document = send(http.address, get, false).await.json();
    assert_eq!(document["openapi"], "3.1.0");
    // It reads as an OpenAPI 3.1 document: an independent typed model of the
    // specification (oas3) takes it whole, every operation with its body and responses.
    let spec = oas3::from_json(document.to_string())
        .unwrap_or_else(|error| panic!("not an OpenAPI 3.1 document: {error}"));
    let paths = spec.paths.as_ref().expect("paths");
    assert!(paths.len() > 10, "{} paths", paths.len());
    for (path, item) in paths {
        let post = item
            .post
            .as_ref()
            .unwrap_or_else(|| panic!("{path} has no POST"));
        assert!(post.request_body.is_some(), "{path}: no request body");
        assert!(post.responses.is_some(), "{path}: no responses");
    }
    let add = &document["paths"]["/Calculator/add"]["post"];
    assert_eq!(add["description"], "Adds two numbers.");
    let arguments = &add["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(arguments["required"], json!(["a", "b"]));
    assert_eq!(arguments["properties"]["a"]["type"], "integer");
    let div = &document["paths"]["/Calculator/div"]["post"]["responses"]["200"];
    assert_eq!(
        div["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Result"
    );
    let count = &document["paths"]["/Feed/count"];
    assert!(count["get"].is_object(), "a streaming method answers GET");
    assert_eq!(
        count["post"]["responses"]["200"]["content"]["application/x-ndjson"]["schema"]["type"],
        "integer"
    );
    let optional = &count["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        optional["required"],
        json!(["n"]),
        "an Option argument may be left out"
    );
    assert!(
        document["paths"]["/Calculator/add"]["get"].is_null(),
        "not idempotent"
    );
}

/// The same service nested in an axum application under a prefix, behind tower-http's CORS
/// layer, which answers a browser's preflight.
#[tokio::test]
async fn the_service_nests_in_axum_under_a_prefix_behind_cors() {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([http::header::CONTENT_TYPE]);
    let app = axum::Router::new()
        .nest_service("/rpc", rpc_http::HttpService::new(test_server().0))
        .layer(cors);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let answer = call(address, "/rpc/Calculator/add", r#"{"a": 40, "b": 2}"#).await;
    assert_eq!((answer.status, answer.json()), (StatusCode::OK, json!(42)));
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{address}/rpc/Calculator/add"))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(preflight).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "*",
        "{:?}",
        response.headers()
    );
    serving.abort();
}

/// A client that disconnects cancels its call: the handler's future is dropped.
#[tokio::test]
async fn a_client_that_disconnects_cancels_its_call() {
    use tokio::io::AsyncWriteExt;
    let (server, stats) = test_server();
    let http = HttpServer::start(server).await;
    let mut stream = tokio::net::TcpStream::connect(http.address).await.unwrap();
    let request = format!(
        "POST /Probe/hang HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
        http.address
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    eventually("the handler started", || {
        stats.hang_started.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    drop(stream);
    eventually("the handler was dropped", || {
        stats.hang_dropped.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
}

mod tally {
    use futures_util::StreamExt;
    use rpc_core::Streaming;

    #[rpc_core::service]
    pub(crate) trait Tally {
        /// Adds up what is streamed in, starting from `start`.
        async fn sum(&self, start: i64, numbers: Streaming<i64>) -> i64;
        /// Echoes each word in upper case, prefixed.
        async fn shout(&self, prefix: String, words: Streaming<String>) -> Streaming<String>;
    }

    pub(crate) struct Impl;

    impl Tally for Impl {
        async fn sum(&self, start: i64, mut numbers: Streaming<i64>) -> i64 {
            let mut total = start;
            while let Some(Ok(number)) = numbers.next().await {
                total += number;
            }
            total
        }

        async fn shout(&self, prefix: String, words: Streaming<String>) -> Streaming<String> {
            Streaming::new(words.filter_map(move |word| {
                let prefix = prefix.clone();
                async move {
                    word.ok()
                        .map(|word| format!("{prefix}{}", word.to_uppercase()))
                }
            }))
        }
    }
}

fn ndjson(address: SocketAddr, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/x-ndjson")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// A request stream is an NDJSON body: the arguments object, then one item a line.
#[tokio::test]
async fn request_streams_are_ndjson_bodies_both_ways() {
    let server = Server::new().add_service(tally::TallyServer::new(tally::Impl));
    let http = HttpServer::start(server).await;
    for http2 in [false, true] {
        let answer = send(
            http.address,
            ndjson(http.address, "/Tally/sum", "{\"start\": 10}\n1\n2\n\n3\n"),
            http2,
        )
        .await;
        assert_eq!(
            (answer.status, answer.json()),
            (StatusCode::OK, json!(16)),
            "http2: {http2}"
        );
    }
    let answer = send(
        http.address,
        ndjson(
            http.address,
            "/Tally/shout",
            "{\"prefix\": \"> \"}\n\"hi\"\n\"there\"",
        ),
        true,
    )
    .await;
    assert_eq!(answer.content_type, "application/x-ndjson");
    assert_eq!(&answer.body[..], b"\"> HI\"\n\"> THERE\"\n");
    // A request stream must say so.
    assert_error(
        &call(http.address, "/Tally/sum", r#"{"start": 1}"#).await,
        415,
        "unsupported_media_type",
    );
    // A bad arguments line is a 400 naming the argument.
    let answer = send(
        http.address,
        ndjson(http.address, "/Tally/sum", "{\"start\": \"x\"}\n1\n"),
        false,
    )
    .await;
    assert_error(&answer, 400, "invalid_argument");
}

/// A body that stops arriving holds nothing for long: past the server's frame timeout the
/// request is answered 408 `deadline_exceeded`, and the connection's slot is free again.
#[tokio::test]
async fn a_slow_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = rpc_core::ServerConfig::default();
    config.frame_timeout = std::time::Duration::from_millis(300);
    let http = HttpServer::start(test_server_with(config).0).await;
    let mut stream = tokio::net::TcpStream::connect(http.address).await.unwrap();
    stream
        .write_all(
            b"POST /Calculator/add HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"a\": 1,",
        )
        .await
        .unwrap();
    let mut answer = vec![0_u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(3), stream.read(&mut answer))
        .await
        .expect("answered once the body was late")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("deadline_exceeded"), "{answer}");
}

/// With `OnePort`, one port serves both protocols, told apart by their first bytes: a
/// binary client and an HTTP client both reach the same server; a client that sends
/// nothing holds up neither.
#[tokio::test]
async fn one_port_serves_the_binary_protocol_and_http_side_by_side() {
    let server = test_server().0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let one_port = rpc_http::OnePort::new(listener, server.clone());
    tokio::spawn(rpc_transport::serve(one_port, server));
    // A silent client first: sniffing it must not stall the others.
    let _silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let binary = CalculatorClient::new(rpc_transport::tcp::connect(address).await.unwrap());
    assert_eq!(binary.add(2, 3).await.unwrap(), 5);
    let answer = call(address, "/Calculator/add", r#"{"a": 4, "b": 5}"#).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!(9));
    let answer = send(
        address,
        post(address, "/Calculator/add", r#"{"a": 1, "b": 1}"#),
        true,
    )
    .await;
    assert_eq!(answer.json(), json!(2), "over HTTP/2 too");
    assert_eq!(binary.add(1, 1).await.unwrap(), 2);
}

/// With `#[service(schema)]`, the OpenAPI document describes the types by their own
/// `JsonSchema` implementations: doc comments become descriptions, and named types are
/// components.
#[tokio::test]
async fn a_service_with_schema_is_described_by_its_types_own_json_schemas() {
    /// An order for one item.
    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Order {
        /// The item's name.
        item: String,
        /// How many.
        quantity: u32,
    }

    /// A shop.
    #[rpc_core::service(schema)]
    trait Shop {
        /// Places an order; returns its number.
        async fn place(&self, order: Order, note: Vec<u8>) -> u64;
    }

    struct ShopImpl;

    impl Shop for ShopImpl {
        async fn place(&self, order: Order, note: Vec<u8>) -> u64 {
            u64::from(order.quantity) + note.len() as u64
        }
    }

    let server = Server::new().add_service(ShopServer::new(ShopImpl));
    let document = rpc_http::openapi(&server);
    let order = &document["components"]["schemas"]["Order"];
    assert_eq!(
        order["description"],
        json!("An order for one item."),
        "{document:#}"
    );
    assert_eq!(
        order["properties"]["item"]["description"],
        json!("The item's name.")
    );
    let request = &document["paths"]["/Shop/place"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        request["properties"]["order"]["$ref"],
        json!("#/components/schemas/Order"),
        "{request:#}"
    );
    assert_eq!(
        request["properties"]["note"]["contentEncoding"],
        json!("base64")
    );
    // And the calls work as ever.
    let http = HttpServer::start(server).await;
    let answer = call(
        http.address,
        "/Shop/place",
        r#"{"order": {"item": "tea", "quantity": 2}, "note": "aGk="}"#,
    )
    .await;
    assert_eq!(answer.json(), json!(4));
}

/// A client that connects and sends nothing, or trickles the first bytes of a request,
/// holds its connection only for the server's preface timeout, on HTTP as on the binary
/// port.
#[tokio::test]
async fn a_silent_or_trickling_http_client_is_closed_after_the_preface_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = rpc_core::ServerConfig::default();
    config.preface_timeout = std::time::Duration::from_millis(300);
    let http = HttpServer::start(test_server_with(config).0).await;
    for opening in [&b""[..], b"P", b"PRI * HTTP/2"] {
        let mut stream = tokio::net::TcpStream::connect(http.address).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            stream.read_to_end(&mut rest),
        )
        .await;
        assert!(closed.is_ok(), "held after sending {opening:?}");
    }
}

/// On one port, HTTP connections are limited to `max_connections` at once as binary ones
/// are: past it, a new HTTP connection is closed.
#[tokio::test]
async fn one_port_limits_http_connections_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = rpc_core::ServerConfig::default();
    config.max_connections = 1;
    let server = test_server_with(config).0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(rpc_transport::serve(
        rpc_http::OnePort::new(listener, server.clone()),
        server,
    ));
    let request =
        b"POST /Calculator/add HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                    Content-Length: 16\r\n\r\n{\"a\": 1, \"b\": 2}";
    // The first stays open (keep-alive) once answered.
    let mut first = tokio::net::TcpStream::connect(address).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut answer = vec![0_u8; 512];
    let read = first.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    // The second is closed without an answer.
    let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
    second.write_all(request).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        second.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "{closed:?} {rest:?}"
    );
}
