//! A log service with streams, in one process: writers stream lines in (client streaming),
//! readers follow the log as it grows (server streaming), filtered on the server.
//!
//! Run: `cargo run --example logtail`

use std::error::Error;
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::{service, Server, Streaming};
use tokio::sync::broadcast;

/// A log that grows.
#[service]
pub trait LogTail {
    /// Appends every line the caller streams; returns how many were appended.
    async fn append(&self, lines: Streaming<String>) -> u64;
    /// Streams every line appended from now on that contains `filter`.
    async fn follow(&self, filter: String) -> Streaming<String>;
}

struct Log {
    lines: broadcast::Sender<String>,
}

impl LogTail for Log {
    async fn append(&self, mut lines: Streaming<String>) -> u64 {
        let mut appended = 0;
        while let Some(Ok(line)) = lines.next().await {
            // Nobody following is fine: the line is just not seen.
            let _ = self.lines.send(line);
            appended += 1;
        }
        appended
    }

    async fn follow(&self, filter: String) -> Streaming<String> {
        let receiver = self.lines.subscribe();
        let lines = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(line) => return Some((line, receiver)),
                    // A follower that fell behind skips what it missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Streaming::new(lines.filter(move |line| std::future::ready(line.contains(&filter))))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (lines, _) = broadcast::channel(1024);
    let server = Server::new().add_service(LogTailServer::new(Log { lines }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(rpc_transport::serve(listener, server));

    // A reader follows the errors only.
    let reader = LogTailClient::new(rpc_transport::tcp::connect(address).await?);
    let mut errors = reader.follow("ERROR".into()).await?;
    let following = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(line) = errors.next().await {
            let line = line?;
            println!("follower saw: {line}");
            seen.push(line);
            if seen.len() == 3 {
                break;
            }
        }
        Ok::<_, rpc_core::RpcError>(seen)
    });
    // Let the follower subscribe before lines flow.
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A writer streams lines in, one every few milliseconds.
    let writer = LogTailClient::new(rpc_transport::tcp::connect(address).await?);
    let lines = futures_util::stream::iter(1..=9).then(|n| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let level = if n % 3 == 0 { "ERROR" } else { "INFO" };
        format!("{level} request {n}")
    });
    let appended = writer.append(Streaming::new(lines)).await?;
    println!("writer appended {appended} lines");

    let seen = following.await??;
    println!(
        "the follower saw {} error lines; dropping its stream stops the server's producer",
        seen.len()
    );
    Ok(())
}
