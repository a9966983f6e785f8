//! Borrowed arguments: a method may take `&str`, `&[u8]` and `&T`; callers pass references
//! and keep their values, and handlers receive `&str` and `&[u8]` as slices of the received
//! frame.

use rpc_core::{RpcError, Server, service};
use rpc_tests::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) owner: String,
    pub(crate) tags: Vec<String>,
}

/// A blob store that borrows what it is given (`&Vec<u8>` on purpose: any `&T` works).
#[allow(clippy::ptr_arg)]
#[service]
pub(crate) trait Blobs {
    /// Stores `data` under `key`; returns how many bytes it took.
    async fn put(&self, key: &str, data: &[u8]) -> u64;
    /// Describes a blob: mixed owned and borrowed arguments, and a borrowed struct.
    async fn describe(&self, key: &str, meta: &Meta, limit: u32, tags: &[String]) -> String;
    /// An owned `Vec<u8>` beside a borrowed one.
    async fn join(&self, first: Vec<u8>, second: &Vec<u8>) -> Vec<u8>;
}

struct Impl;

#[allow(clippy::ptr_arg)]
impl Blobs for Impl {
    async fn put(&self, key: &str, data: &[u8]) -> u64 {
        (key.len() + data.len()) as u64
    }

    async fn describe(&self, key: &str, meta: &Meta, limit: u32, tags: &[String]) -> String {
        format!("{key} by {} ({limit}) {:?} {tags:?}", meta.owner, meta.tags)
    }

    async fn join(&self, first: Vec<u8>, second: &Vec<u8>) -> Vec<u8> {
        [first, second.clone()].concat()
    }
}

#[tokio::test]
async fn borrowed_arguments_travel_and_the_caller_keeps_its_values() {
    let server = Server::new().add_service(BlobsServer::new(Impl));
    for transport in Transport::ALL {
        let server = TestServer::start(server.clone(), transport).await;
        let blobs = BlobsClient::new(server.connect().await);
        let key = String::from("photo");
        let data = vec![1_u8, 2, 3];
        assert_eq!(blobs.put(&key, &data).await.unwrap(), 8, "{transport:?}");
        assert_eq!(blobs.put("literal", b"xy").await.unwrap(), 9);
        let meta = Meta {
            owner: "ann".to_owned(),
            tags: vec!["a".to_owned()],
        };
        let tags = vec!["x".to_owned(), "y".to_owned()];
        let described = blobs.describe(&key, &meta, 5, &tags).await.unwrap();
        assert_eq!(described, r#"photo by ann (5) ["a"] ["x", "y"]"#);
        assert_eq!(blobs.join(vec![1], &data).await.unwrap(), [1, 1, 2, 3]);
        // Still ours.
        assert_eq!(
            (key.as_str(), data.len(), meta.owner.as_str()),
            ("photo", 3, "ann")
        );
    }
}

#[tokio::test]
async fn borrowed_arguments_that_do_not_decode_fail_their_call_only() {
    use rpc_core::codegen::MethodSpec;
    let server = Server::new().add_service(BlobsServer::new(Impl));
    let server = TestServer::start(server, Transport::Loopback).await;
    let channel = server.connect().await;
    let put = MethodSpec::new("Blobs", "put");
    let error = channel
        .call::<_, u64>(&put, &rpc_core::CallOptions::default(), &(7_u32,))
        .await
        .unwrap_err();
    let RpcError::Codec { message } = &error else {
        panic!("expected a codec error, got {error}");
    };
    assert!(
        message.starts_with("the arguments of `Blobs.put` did not decode"),
        "{message}"
    );
    assert_eq!(BlobsClient::new(channel).put("k", b"v").await.unwrap(), 2);
}

/// `bytes::Bytes` arguments and results travel as one block each (the handler's is a slice
/// of the received frame), beside other arguments, over every transport.
mod shared_bytes {
    use bytes::Bytes;
    use rpc_core::{Server, service};
    use rpc_tests::*;

    #[service]
    pub(crate) trait Blocks {
        /// `data` with `tag` in front.
        async fn tag(&self, tag: String, data: Bytes) -> Bytes;
        /// The length of a block lent by reference (named through the re-export).
        async fn measure(&self, data: &rpc_core::Bytes) -> usize;
    }

    struct Tagger;

    impl Blocks for Tagger {
        async fn tag(&self, tag: String, data: Bytes) -> Bytes {
            let mut tagged = tag.into_bytes();
            tagged.extend_from_slice(&data);
            Bytes::from(tagged)
        }

        async fn measure(&self, data: &rpc_core::Bytes) -> usize {
            data.len()
        }
    }

    #[tokio::test]
    async fn bytes_arguments_and_results_round_trip_over_every_transport() {
        let server = Server::new().add_service(BlocksServer::new(Tagger));
        let block = Bytes::from(vec![42_u8; 300_000]);
        for transport in Transport::ALL {
            let server = TestServer::start(server.clone(), transport).await;
            let blocks = BlocksClient::new(server.connect().await);
            let tagged = blocks.tag("t:".to_owned(), block.clone()).await.unwrap();
            assert_eq!(&tagged[..2], b"t:", "{transport:?}");
            assert_eq!(&tagged[2..], &block[..], "{transport:?}");
            assert_eq!(
                blocks.measure(&block).await.unwrap(),
                300_000,
                "{transport:?}"
            );
            let empty = blocks.tag(String::new(), Bytes::new()).await.unwrap();
            assert!(empty.is_empty(), "{transport:?}");
        }
    }
}
