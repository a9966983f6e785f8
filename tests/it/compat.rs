//! The compatibility check: a client declares each service's method fingerprints on a
//! connection before its first call; the server refuses calls to methods whose argument or
//! result types differ with `RpcError::Incompatible` naming the method, instead of running
//! them on bytes that mean something else. Adding a method stays compatible.

use rpc_core::{RpcError, Server};
use rpc_tests::*;

/// The service as the server is built now.
mod current {
    #[rpc_core::service]
    pub trait Inventory {
        /// How many of `item` are in stock.
        async fn count(&self, item: String) -> u64;
        /// The inventory's name.
        async fn name(&self) -> String;
        /// Added in this version.
        async fn total(&self) -> u64;
    }

    pub(super) struct Impl;

    impl Inventory for Impl {
        async fn count(&self, item: String) -> u64 {
            item.len() as u64
        }

        async fn name(&self) -> String {
            "main".to_owned()
        }

        async fn total(&self) -> u64 {
            42
        }
    }
}

/// An older client: `count` returned a `u32` then, and `total` did not exist.
mod older {
    #[rpc_core::service]
    pub trait Inventory {
        /// How many of `item` are in stock.
        async fn count(&self, item: String) -> u32;
        /// The inventory's name.
        async fn name(&self) -> String;
    }
}

/// A newer client: one method more than the server has.
mod newer {
    #[rpc_core::service]
    pub trait Inventory {
        /// How many of `item` are in stock.
        async fn count(&self, item: String) -> u64;
        /// The inventory's name.
        async fn name(&self) -> String;
        /// Added in this version.
        async fn total(&self) -> u64;
        /// Not on the server yet.
        async fn restock(&self, item: String, amount: u64) -> u64;
    }
}

fn inventory_server() -> Server {
    Server::new().add_service(current::InventoryServer::new(current::Impl))
}

#[tokio::test]
async fn a_changed_method_is_refused_as_incompatible_and_the_others_still_work() {
    for transport in Transport::ALL {
        let server = TestServer::start(inventory_server(), transport).await;
        let client = older::InventoryClient::new(server.connect().await);
        let error = client.count("apples".to_owned()).await.unwrap_err();
        assert!(
            matches!(&error, RpcError::Incompatible { service, method } if &**service == "Inventory" && &**method == "count"),
            "{transport:?}: {error}"
        );
        assert_eq!(client.name().await.unwrap(), "main", "{transport:?}");
    }
}

#[tokio::test]
async fn an_added_method_stays_compatible_both_ways() {
    for transport in Transport::ALL {
        let server = TestServer::start(inventory_server(), transport).await;
        let client = newer::InventoryClient::new(server.connect().await);
        assert_eq!(client.count("pears".to_owned()).await.unwrap(), 5);
        assert_eq!(client.total().await.unwrap(), 42);
        let error = client.restock("pears".to_owned(), 3).await.unwrap_err();
        assert!(
            matches!(error, RpcError::UnknownMethod { .. }),
            "{transport:?}: {error}"
        );
        // A client that lacks the server's newest method is served for the rest.
        let client = current::InventoryClient::new(server.connect().await);
        assert_eq!(client.count("figs".to_owned()).await.unwrap(), 4);
    }
}

#[tokio::test]
async fn the_same_definition_is_compatible_with_itself() {
    let server = TestServer::start(inventory_server(), Transport::Loopback).await;
    let client = current::InventoryClient::new(server.connect().await);
    assert_eq!(client.total().await.unwrap(), 42);
    assert_eq!(client.name().await.unwrap(), "main");
}
