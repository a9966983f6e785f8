//! A work queue whose workers never listen on a port: each worker dials the coordinator,
//! serves its `Worker` service over that same connection (`ChannelConfig::serve`), and the
//! coordinator pushes jobs to it through `Context::peer_channel`. A worker that goes away
//! is noticed (its pushes fail with `ConnectionClosed`) and its jobs go to the others.
//!
//! Run: `cargo run --example workqueue`

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rpc_core::{service, ChannelConfig, Context, RpcError, Server};

/// What each worker serves: the coordinator calls it.
#[service]
pub trait Worker {
    /// Does one job and says what came of it.
    async fn run(&self, job: String) -> String;
}

/// What the coordinator serves.
#[service]
pub trait Queue {
    /// Called by a worker, over the connection the coordinator will push its jobs on.
    /// Returns how many workers are registered now.
    async fn join(&self, cx: &Context, name: String) -> Result<usize, String>;
    /// Called by anyone: runs `job` on the next worker and returns its answer.
    async fn submit(&self, job: String) -> Result<String, String>;
}

/// The coordinator: its workers, taken in turn.
#[derive(Default)]
struct Coordinator {
    workers: Mutex<Vec<(String, WorkerClient)>>,
    next: AtomicUsize,
}

impl Coordinator {
    /// The next worker in turn, if any.
    fn next_worker(&self) -> Option<(String, WorkerClient)> {
        let workers = self.workers.lock().ok()?;
        if workers.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % workers.len();
        workers.get(turn).cloned()
    }

    fn forget(&self, name: &str) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.retain(|(worker, _)| worker != name);
        }
    }
}

impl Queue for Coordinator {
    async fn join(&self, cx: &Context, name: String) -> Result<usize, String> {
        let channel = cx
            .peer_channel()
            .ok_or("connect with ChannelConfig::serve to take jobs")?;
        let mut workers = self.workers.lock().map_err(|_| "the queue failed")?;
        workers.push((name, WorkerClient::new(channel)));
        Ok(workers.len())
    }

    async fn submit(&self, job: String) -> Result<String, String> {
        while let Some((name, worker)) = self.next_worker() {
            match worker.run(job.clone()).await {
                Ok(answer) => return Ok(answer),
                // The worker went away: forget it and give the job to the next one.
                Err(RpcError::ConnectionClosed { .. }) => {
                    println!("coordinator: {name} went away; its job goes to another worker");
                    self.forget(&name);
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        Err("no worker is registered".to_owned())
    }
}

/// A worker: answers with its name.
struct Hands {
    name: String,
}

impl Worker for Hands {
    async fn run(&self, job: String) -> String {
        format!("{job}: done by {}", self.name)
    }
}

/// Connects a worker to the coordinator at `address` and registers it; the returned client
/// keeps its connection (and so the worker) alive.
async fn start_worker(
    address: std::net::SocketAddr,
    name: &str,
) -> Result<QueueClient, Box<dyn Error>> {
    let hands = Server::new().add_service(WorkerServer::new(Hands {
        name: name.to_owned(),
    }));
    let config = ChannelConfig::default().serve(hands);
    let queue = QueueClient::new(rpc_transport::tcp::connect_with(address, config).await?);
    let registered = queue.join(name.to_owned()).await??;
    println!("{name}: joined (workers registered: {registered})");
    Ok(queue)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let coordinator = Arc::new(Coordinator::default());
    let server = Server::new().add_service(QueueServer::from_arc(coordinator));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(rpc_transport::serve(listener, server));

    let ada = start_worker(address, "ada").await?;
    let _grace = start_worker(address, "grace").await?;

    // A client that only submits: it serves nothing, and cannot join.
    let submitter = QueueClient::new(rpc_transport::tcp::connect(address).await?);
    println!(
        "submitter: join -> {:?}",
        submitter.join("submitter".to_owned()).await?
    );
    for job in ["parse", "check", "build", "test"] {
        println!("submitter: {}", submitter.submit(job.to_owned()).await??);
    }

    // Ada leaves: her connection closes, and the coordinator's next push to her fails.
    drop(ada);
    for job in ["package", "publish"] {
        println!("submitter: {}", submitter.submit(job.to_owned()).await??);
    }
    Ok(())
}
