//! A small key-value service in two processes: one serves, another calls.
//!
//! Run the server, then call it from another terminal:
//!
//! ```text
//! cargo run --example kv -- serve 127.0.0.1:7100
//! cargo run --example kv -- call 127.0.0.1:7100 put greeting hello
//! cargo run --example kv -- call 127.0.0.1:7100 get greeting
//! cargo run --example kv -- call 127.0.0.1:7100 list
//! ```
//!
//! An address starting with `unix:` (`unix:/tmp/kv.sock`) uses a Unix socket instead. The
//! server stops gracefully on Ctrl-C, letting calls in flight finish.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Mutex;

use rpc_core::{service, Channel, Context, Server};

/// A string-to-string store.
#[service]
pub trait KvStore {
    /// Stores `value` under `key`, returning the previous value.
    async fn put(&self, key: String, value: String) -> Option<String>;
    /// The value under `key`.
    async fn get(&self, key: String) -> Option<String>;
    /// Removes `key`, returning its value.
    async fn delete(&self, key: String) -> Option<String>;
    /// Every key, in order.
    async fn list(&self) -> Vec<String>;
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

    async fn delete(&self, key: String) -> Option<String> {
        self.entries().remove(&key)
    }

    async fn list(&self) -> Vec<String> {
        self.entries().keys().cloned().collect()
    }

    async fn whoami(&self, cx: &Context) -> String {
        cx.peer().to_string()
    }
}

const USAGE: &str = "usage:
  kv serve ADDRESS
  kv call ADDRESS put KEY VALUE | get KEY | delete KEY | list | whoami
ADDRESS is HOST:PORT, or unix:PATH";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", address] => serve(address).await,
        ["call", address, command @ ..] => call(address, command).await,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

async fn serve(address: &str) -> Result<(), Box<dyn Error>> {
    let server = Server::new().add_service(KvStoreServer::new(MemoryStore::default()));
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down: finishing calls in flight");
    };
    if let Some(path) = address.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        eprintln!("serving KvStore on unix:{path}");
        rpc_transport::serve(listener, server)
            .with_graceful_shutdown(ctrl_c)
            .await?;
        let _ = std::fs::remove_file(path);
    } else {
        let listener = tokio::net::TcpListener::bind(address).await?;
        eprintln!("serving KvStore on {}", listener.local_addr()?);
        rpc_transport::serve(listener, server)
            .with_graceful_shutdown(ctrl_c)
            .await?;
    }
    Ok(())
}

async fn call(address: &str, command: &[&str]) -> Result<(), Box<dyn Error>> {
    let channel: Channel = match address.strip_prefix("unix:") {
        Some(path) => rpc_transport::unix::connect(path).await?,
        None => rpc_transport::tcp::connect(address).await?,
    };
    let kv = KvStoreClient::new(channel).with_timeout(std::time::Duration::from_secs(5));
    match command {
        ["put", key, value] => println!("{:?}", kv.put(key.to_string(), value.to_string()).await?),
        ["get", key] => println!("{:?}", kv.get(key.to_string()).await?),
        ["delete", key] => println!("{:?}", kv.delete(key.to_string()).await?),
        ["list"] => println!("{:?}", kv.list().await?),
        ["whoami"] => println!("{}", kv.whoami().await?),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    Ok(())
}
