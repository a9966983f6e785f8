//! What a call allocates, counted by a global allocator: a `&[u8]` or `bytes::Bytes`
//! argument reaches its handler as a slice of the received frame, with no copy made on the
//! server.
//!
//! Its own test binary with one test, so that the counting allocator sees nothing but the
//! calls it measures.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rpc_core::{Server, service};

/// Allocations (and growths) of at least this many bytes are counted: the size of the
/// argument, give or take, and far above anything else a call allocates.
const LARGE: usize = 512 * 1024;

static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting large allocations.
struct CountLarge;

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountLarge = CountLarge;

/// The same work with the bytes borrowed and owned.
#[service]
trait Sink {
    /// Sums the bytes it is lent.
    async fn borrowed(&self, data: &[u8]) -> u64;
    /// Sums the bytes it is given.
    async fn owned(&self, data: Vec<u8>) -> u64;
    /// Sums the bytes it shares with the received frame.
    async fn shared(&self, data: bytes::Bytes) -> u64;
}

struct SinkImpl;

impl Sink for SinkImpl {
    async fn borrowed(&self, data: &[u8]) -> u64 {
        data.iter().map(|byte| u64::from(*byte)).sum()
    }

    async fn owned(&self, data: Vec<u8>) -> u64 {
        data.iter().map(|byte| u64::from(*byte)).sum()
    }

    async fn shared(&self, data: bytes::Bytes) -> u64 {
        data.iter().map(|byte| u64::from(*byte)).sum()
    }
}

/// Large allocations made while the server answers `request` (a whole frame, encoded
/// beforehand) on `stream`, and the sum it answered.
async fn large_allocations_answering(
    stream: &mut tokio::io::DuplexStream,
    request: &[u8],
) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut response = [0_u8; 256];
    let before = LARGE_ALLOCATIONS.load(Ordering::SeqCst);
    stream.write_all(request).await.unwrap();
    // A response frame for a `u64` is a few dozen bytes; it arrives in one read.
    let read = stream.read(&mut response).await.unwrap();
    let allocations = LARGE_ALLOCATIONS.load(Ordering::SeqCst) - before;
    let frames = rpc_tests::frames_in(&response[..read]);
    assert!(
        matches!(&frames[..], [rpc_core::wire::Frame::Response { status: rpc_core::wire::Status::Ok, payload, .. }]
            if rpc_core::codec::decode::<u64>(payload).unwrap() == 7 << 20),
        "{frames:?}"
    );
    allocations
}

/// The server alone is measured: the client's side is a pipe fed with request frames
/// encoded before the measurement starts (the pipe's buffer is far below `LARGE`).
#[test]
fn a_borrowed_byte_argument_is_not_copied_on_the_server() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let server = Server::new().add_service(SinkServer::new(SinkImpl));
        let (mut client_end, server_end) = tokio::io::duplex(64 * 1024);
        let (reader, writer) = tokio::io::split(server_end);
        let connection = rpc_transport::framed::server_connection(
            reader,
            writer,
            rpc_core::Peer::Loopback,
            &server,
        );
        let serving = server.clone();
        tokio::spawn(async move {
            serving
                .serve_connection(connection, rpc_core::Shutdown::new())
                .await;
        });
        client_end
            .write_all(&rpc_core::wire::PREFACE)
            .await
            .unwrap();
        let data = rpc_core::codegen::ByteBuf(vec![7_u8; 1 << 20]);
        let borrowed_call = rpc_tests::request_frame(1, "Sink", "borrowed", &(&data,));
        let owned_call = rpc_tests::request_frame(1, "Sink", "owned", &(&data,));
        let shared_call = rpc_tests::request_frame(1, "Sink", "shared", &(&data,));
        let mut preface = [0_u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut client_end, &mut preface)
            .await
            .unwrap();
        // Buffers grow on the first large frames; measure once they have.
        let mut borrowed = usize::MAX;
        let mut owned = usize::MAX;
        let mut shared = usize::MAX;
        for _ in 0..6 {
            borrowed =
                borrowed.min(large_allocations_answering(&mut client_end, &borrowed_call).await);
            owned = owned.min(large_allocations_answering(&mut client_end, &owned_call).await);
            shared = shared.min(large_allocations_answering(&mut client_end, &shared_call).await);
        }
        // An owned argument costs the server one copy of the bytes out of the frame; a
        // borrowed one is a slice of the frame, and costs nothing.
        assert_eq!(borrowed, 0, "the borrowed bytes were copied");
        assert_eq!(shared, 0, "the shared bytes were copied");
        assert_eq!(owned, 1, "the owned bytes were not counted");
    });
}
