//! The key-value service over both protocols at once: the binary protocol for Rust
//! clients, and HTTP/JSON for everyone else (curl, Python, a browser), with its OpenAPI
//! document.
//!
//! ```text
//! cargo run --example http                       # binary on 127.0.0.1:7100, HTTP on :8080
//!
//! curl -s -H 'Content-Type: application/json' -d '{"key": "greeting", "value": "hello"}' \
//!      http://127.0.0.1:8080/KvStore/put                           # null
//! curl -s -H 'Content-Type: application/json' -d '{"key": "greeting"}' \
//!      http://127.0.0.1:8080/KvStore/get                           # "hello"
//! curl -s 'http://127.0.0.1:8080/KvStore/get?encoding=json&message=%7B%22key%22%3A%22greeting%22%7D'
//! curl -s -H 'Content-Type: application/json' -d '{"prefix": ""}' \
//!      http://127.0.0.1:8080/KvStore/watch_keys                    # NDJSON, a key a line
//! curl -s http://127.0.0.1:8080/openapi.json
//! ```
//!
//! From Python, with the standard library:
//!
//! ```text
//! import json, urllib.request
//! request = urllib.request.Request("http://127.0.0.1:8080/KvStore/get",
//!     data=json.dumps({"key": "greeting"}).encode(),
//!     headers={"Content-Type": "application/json"})
//! print(json.load(urllib.request.urlopen(request)))             # hello
//! ```
//!
//! With `--once`, it makes a few calls over both protocols itself and exits (what CI runs).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Mutex;

use rpc_core::{service, Context, Server, Streaming};

/// A string-to-string store.
#[service]
pub trait KvStore {
    /// Stores `value` under `key`, returning the previous value.
    async fn put(&self, key: String, value: String) -> Option<String>;
    /// The value under `key`.
    #[idempotent]
    async fn get(&self, key: String) -> Option<String>;
    /// Every key that starts with `prefix`, streamed.
    async fn watch_keys(&self, prefix: String) -> Streaming<String>;
    /// Who the server thinks you are.
    async fn whoami(&self, cx: &Context) -> String;
}

#[derive(Default)]
struct MemoryStore {
    entries: Mutex<BTreeMap<String, String>>,
}

impl MemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KvStore for MemoryStore {
    async fn put(&self, key: String, value: String) -> Option<String> {
        self.entries().insert(key, value)
    }

    async fn get(&self, key: String) -> Option<String> {
        self.entries().get(&key).cloned()
    }

    async fn watch_keys(&self, prefix: String) -> Streaming<String> {
        let keys: Vec<String> = self
            .entries()
            .keys()
            .filter(|key| key.starts_with(&prefix))
            .cloned()
            .collect();
        Streaming::new(futures_util::stream::iter(keys))
    }

    async fn whoami(&self, cx: &Context) -> String {
        cx.peer().to_string()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let once = std::env::args().any(|arg| arg == "--once");
    let server = Server::new().add_service(KvStoreServer::new(MemoryStore::default()));
    let (binary_address, http_address) = if once {
        ("127.0.0.1:0", "127.0.0.1:0")
    } else {
        ("127.0.0.1:7100", "127.0.0.1:8080")
    };
    let binary = tokio::net::TcpListener::bind(binary_address).await?;
    let http = tokio::net::TcpListener::bind(http_address).await?;
    let (binary_address, http_address) = (binary.local_addr()?, http.local_addr()?);
    tokio::spawn(rpc_transport::serve(binary, server.clone()));
    let serving = tokio::spawn(rpc_http::serve(http, server));
    println!("binary protocol on {binary_address}, HTTP/JSON on http://{http_address}");
    println!("OpenAPI: http://{http_address}/openapi.json");
    if !once {
        serving.await??;
        return Ok(());
    }
    // A Rust client over the binary protocol writes; HTTP reads what it wrote.
    let kv = KvStoreClient::new(rpc_transport::tcp::connect(binary_address).await?);
    kv.put("greeting".to_owned(), "hello".to_owned()).await?;
    let answer = http_post(http_address, "/KvStore/get", r#"{"key": "greeting"}"#).await?;
    println!("POST /KvStore/get {{\"key\": \"greeting\"}} -> {answer}");
    assert_eq!(answer.trim(), r#""hello""#);
    Ok(())
}

/// A minimal HTTP/1.1 POST over a plain socket, to show there is nothing special about the
/// client.
async fn http_post(
    address: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> Result<String, Box<dyn Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok(body)
}
