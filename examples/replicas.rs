//! Three replicas of a service behind one balanced channel: calls flow while one replica
//! is killed and later restarted, and the example prints what each replica served.
//!
//! ```text
//! cargo run --example replicas
//! ```
//!
//! Each replica runs in a runtime of its own on its own thread, so killing it closes its
//! sockets the way a crashing process would. The client keeps a connection to each, sends
//! each call to the less busy of two, re-dials the dead replica with backoff, and retries
//! the idempotent `lookup` elsewhere when a replica dies under it; `record` is not
//! idempotent, so a `record` in flight on the dead replica fails instead of being replayed.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{service, RpcError, Server};
use rpc_transport::policy::BalanceConfig;
use tokio::sync::oneshot;

/// A directory of users, replicated.
#[service]
pub trait Directory {
    /// The name of user `id`, and which replica answered (safe to retry).
    #[idempotent]
    async fn lookup(&self, id: u64) -> (String, u32);
    /// Records a visit by user `id`; returns the replica that recorded it (not safe to
    /// retry: a replay would record the visit twice).
    async fn record(&self, id: u64) -> u32;
}

struct Replica {
    id: u32,
    lookups: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
}

impl Directory for Replica {
    async fn lookup(&self, id: u64) -> (String, u32) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        (format!("user-{id}"), self.id)
    }

    async fn record(&self, _id: u64) -> u32 {
        self.records.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.id
    }
}

/// What one replica served over all its lives.
#[derive(Default)]
struct Served {
    lookups: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
}

/// A replica running on its own thread until killed.
struct Running {
    kill: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts replica `id` on `address` (port 0: any), returning where it listens.
fn start(
    id: u32,
    address: SocketAddr,
    served: &Served,
) -> Result<(SocketAddr, Running), Box<dyn Error>> {
    let server = Server::new().add_service(DirectoryServer::new(Replica {
        id,
        lookups: served.lookups.clone(),
        records: served.records.clone(),
    }));
    let (kill, killed) = oneshot::channel::<()>();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => return drop(bound_tx.send(Err(error.to_string()))),
        };
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => listener,
                Err(error) => return drop(bound_tx.send(Err(error.to_string()))),
            };
            let _ = bound_tx.send(listener.local_addr().map_err(|error| error.to_string()));
            tokio::select! {
                _ = rpc_transport::serve(listener, server) => {}
                _ = killed => {}
            }
        });
        // The runtime is dropped here: every connection of this replica closes at once.
    });
    let address = bound_rx.recv()??;
    Ok((address, Running { kill, thread }))
}

impl Running {
    fn kill(self) {
        let _ = self.kill.send(());
        let _ = self.thread.join();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let served: Vec<Served> = (0..3).map(|_| Served::default()).collect();
    let mut replicas = Vec::new();
    let mut addresses = Vec::new();
    for (index, served) in served.iter().enumerate() {
        let (address, running) = start(index as u32 + 1, any, served)?;
        println!("replica {} listening on {address}", index + 1);
        addresses.push(address);
        replicas.push(Some(running));
    }

    let mut config = BalanceConfig::default();
    config.reconnect_backoff = Duration::from_millis(50);
    config.max_reconnect_backoff = Duration::from_millis(200);
    let channel = rpc_transport::tcp::balanced(addresses.iter().map(ToString::to_string), config);
    let client = DirectoryClient::new(channel);

    // Eight workers call for three seconds.
    let failed_records = Arc::new(AtomicUsize::new(0));
    let failed_lookups = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8_u64 {
        let client = client.with_timeout(Duration::from_secs(2));
        let failed_records = failed_records.clone();
        let failed_lookups = failed_lookups.clone();
        workers.push(tokio::spawn(async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            let mut id = worker;
            while tokio::time::Instant::now() < until {
                id += 8;
                if client.lookup(id).await.is_err() {
                    failed_lookups.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(error) = client.record(id).await {
                    // Only calls in flight on the killed replica fail, and say why.
                    assert!(matches!(
                        error,
                        RpcError::ConnectionClosed { .. } | RpcError::Unavailable { .. }
                    ));
                    failed_records.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("killing replica 2");
    if let Some(running) = replicas[1].take() {
        tokio::task::spawn_blocking(move || running.kill()).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("restarting replica 2 on {}", addresses[1]);
    let (_, running) = start(2, addresses[1], &served[1])?;
    replicas[1] = Some(running);

    for worker in workers {
        worker.await?;
    }
    println!();
    for (index, served) in served.iter().enumerate() {
        println!(
            "replica {}: {} lookups, {} records",
            index + 1,
            served.lookups.load(Ordering::Relaxed),
            served.records.load(Ordering::Relaxed)
        );
    }
    println!(
        "failed: {} lookups (retried elsewhere), {} records (in flight on the killed replica, not replayed)",
        failed_lookups.load(Ordering::Relaxed),
        failed_records.load(Ordering::Relaxed)
    );
    for running in replicas.into_iter().flatten() {
        tokio::task::spawn_blocking(move || running.kill()).await?;
    }
    Ok(())
}
