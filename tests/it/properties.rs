//! Properties over generated inputs: the arguments and results of macro-generated services
//! round-trip whatever their values, and whole conversations survive any chunking of the
//! reads and writes beneath them.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use proptest::prelude::*;
use rpc_core::{ChannelConfig, Peer, Server, Shutdown, service};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A record with a bit of everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<i32>,
    blob: Vec<u8>,
}

fn any_record() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        ".{0,40}",
        proptest::collection::vec(".{0,8}", 0..5),
        any::<Option<i32>>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(id, name, tags, score, blob)| Record {
            id,
            name,
            tags,
            score,
            blob,
        })
}

/// Echoes what it is sent, in several shapes.
#[service]
trait Mirror {
    /// Returns the record.
    async fn record(&self, record: Record) -> Record;
    /// Returns its arguments swapped.
    async fn swap(&self, text: String, number: i64) -> (i64, String);
    /// Returns the bytes (they travel as one block).
    async fn bytes(&self, data: Vec<u8>) -> Vec<u8>;
}

struct MirrorImpl;

impl Mirror for MirrorImpl {
    async fn record(&self, record: Record) -> Record {
        record
    }

    async fn swap(&self, text: String, number: i64) -> (i64, String) {
        (number, text)
    }

    async fn bytes(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// One end of an in-memory pipe that reads and writes at most a few bytes at a time, as
/// the sizes say (cycling through them), and is sometimes not ready.
struct Chunked {
    inner: DuplexStream,
    sizes: Vec<usize>,
    next: usize,
}

impl Chunked {
    fn next_size(&mut self) -> Option<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        // A size of 0 stands for "not ready this time".
        (size > 0).then_some(size)
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(size) = self.next_size() else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let mut limited = vec![0_u8; size.min(out.remaining())];
        let mut chunk = ReadBuf::new(&mut limited);
        match Pin::new(&mut self.inner).poll_read(cx, &mut chunk) {
            Poll::Ready(Ok(())) => {
                out.put_slice(chunk.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Chunked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(size) = self.next_size() else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let len = size.min(bytes.len());
        Pin::new(&mut self.inner).poll_write(cx, &bytes[..len])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client over a chunked pipe to a server serving `Mirror`.
fn chunked_client(client_sizes: Vec<usize>, server_sizes: Vec<usize>) -> MirrorClient {
    let (client_end, server_end) = tokio::io::duplex(4096);
    let server = Server::new().add_service(MirrorServer::new(MirrorImpl));
    let (reader, writer) = tokio::io::split(Chunked {
        inner: server_end,
        sizes: server_sizes,
        next: 0,
    });
    let connection =
        rpc_transport::framed::server_connection(reader, writer, Peer::Loopback, &server);
    tokio::spawn(async move { server.serve_connection(connection, Shutdown::new()).await });
    let (reader, writer) = tokio::io::split(Chunked {
        inner: client_end,
        sizes: client_sizes,
        next: 0,
    });
    MirrorClient::new(rpc_transport::framed::channel(
        reader,
        writer,
        Peer::Loopback,
        ChannelConfig::default(),
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Generated arguments and results round-trip through generated clients and servers,
    /// concurrently, over a pipe that splits every read and write as the sizes say.
    #[test]
    fn calls_survive_any_chunking_of_reads_and_writes(
        records in proptest::collection::vec(any_record(), 1..6),
        text in ".{0,30}",
        number in any::<i64>(),
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        client_sizes in proptest::collection::vec(0_usize..300, 1..12),
        server_sizes in proptest::collection::vec(0_usize..300, 1..12),
    ) {
        // At least one size must move bytes, or nothing ever would.
        prop_assume!(client_sizes.iter().any(|size| *size > 0));
        prop_assume!(server_sizes.iter().any(|size| *size > 0));
        runtime().block_on(async {
            let client = chunked_client(client_sizes, server_sizes);
            let echoes: Vec<_> = records
                .iter()
                .cloned()
                .map(|record| tokio::spawn(client.record(record)))
                .collect();
            let swapped = tokio::spawn(client.swap(text.clone(), number));
            let bytes = tokio::spawn(client.bytes(data.clone()));
            for (echo, record) in echoes.into_iter().zip(&records) {
                prop_assert_eq!(&echo.await.unwrap().unwrap(), record);
            }
            prop_assert_eq!(swapped.await.unwrap().unwrap(), (number, text.clone()));
            prop_assert_eq!(bytes.await.unwrap().unwrap(), data.clone());
            Ok(())
        })?;
    }
}
