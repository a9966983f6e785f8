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
            matches!(&error, RpcError::Incompatible { service, method, .. } if &**service == "Inventory" && &**method == "count"),
            "{transport:?}: {error}"
        );
        assert_eq!(
            error.to_string(),
            "incompatible method `Inventory.count`: result: `u64` on the server, `u32` here"
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

/// The orders service as the server is built: its types evolve in the modules below.
mod orders_server {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Order {
        pub(crate) id: u64,
        pub(crate) lines: Vec<Line>,
        pub(crate) state: State,
        #[serde(default)]
        pub(crate) note: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Line {
        pub(crate) sku: String,
        pub(crate) quantity: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) enum State {
        Open,
        Shipped { tracking: String },
    }

    #[rpc_core::service]
    pub(crate) trait Orders {
        async fn place(&self, order: Order) -> u64;
        async fn get(&self, id: u64) -> Option<Order>;
        async fn ping(&self) -> String;
    }

    pub(crate) struct Impl;

    impl Orders for Impl {
        async fn place(&self, order: Order) -> u64 {
            order
                .lines
                .iter()
                .map(|line| u64::from(line.quantity))
                .sum()
        }

        async fn get(&self, id: u64) -> Option<Order> {
            Some(Order {
                id,
                lines: Vec::new(),
                state: State::Open,
                note: None,
            })
        }

        async fn ping(&self) -> String {
            "pong".to_owned()
        }
    }
}

/// A client built before `Order` gained its `note` (even `#[serde(default)]` does not make
/// the old encoding decode: the format is not self-describing).
mod orders_without_note {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Order {
        pub(crate) id: u64,
        pub(crate) lines: Vec<super::orders_server::Line>,
        pub(crate) state: super::orders_server::State,
    }

    #[rpc_core::service]
    pub(crate) trait Orders {
        async fn place(&self, order: Order) -> u64;
        async fn get(&self, id: u64) -> Option<Order>;
        async fn ping(&self) -> String;
    }
}

/// A client whose `State` has a variant the server's no longer has, and whose `Line`
/// counts in `u64`.
mod orders_retyped {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Order {
        pub(crate) id: u64,
        pub(crate) lines: Vec<Line>,
        pub(crate) state: State,
        #[serde(default)]
        pub(crate) note: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Line {
        pub(crate) sku: String,
        pub(crate) quantity: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) enum State {
        Open,
        Shipped { tracking: String },
        Cancelled,
    }

    #[rpc_core::service]
    pub(crate) trait Orders {
        async fn place(&self, order: Order) -> u64;
        async fn get(&self, id: u64) -> Option<Order>;
        async fn ping(&self) -> String;
    }
}

/// The same types reached by other paths and an alias: nothing a peer can see changed.
mod orders_respelled {
    pub(crate) type OrderId = u64;

    pub(crate) mod model {
        pub(crate) use super::super::orders_server::Order;
    }

    #[rpc_core::service]
    pub(crate) trait Orders {
        async fn place(&self, order: model::Order) -> OrderId;
        async fn get(&self, id: OrderId) -> Option<crate::compat::orders_server::Order>;
        async fn ping(&self) -> String;
    }
}

fn orders_server() -> Server {
    Server::new().add_service(orders_server::OrdersServer::new(orders_server::Impl))
}

fn incompatibility(error: &RpcError) -> String {
    match error {
        RpcError::Incompatible {
            service,
            method,
            reason,
        } => {
            format!("{service}.{method}: {reason}")
        }
        other => panic!("expected Incompatible, got {other}"),
    }
}

#[tokio::test]
async fn an_added_field_is_incompatible_and_named() {
    for transport in Transport::ALL {
        let server = TestServer::start(orders_server(), transport).await;
        let client = orders_without_note::OrdersClient::new(server.connect().await);
        let order = orders_without_note::Order {
            id: 1,
            lines: Vec::new(),
            state: orders_server::State::Open,
        };
        let error = client.place(order).await.unwrap_err();
        assert_eq!(
            incompatibility(&error),
            "Orders.place: argument `order`: struct `Order` has 4 fields on the server, 3 here",
            "{transport:?}"
        );
        let error = client.get(1).await.unwrap_err();
        assert_eq!(
            incompatibility(&error),
            "Orders.get: result: struct `Order` has 4 fields on the server, 3 here"
        );
        assert_eq!(
            client.ping().await.unwrap(),
            "pong",
            "the other methods still work"
        );
    }
}

#[tokio::test]
async fn a_retyped_nested_field_and_a_removed_variant_are_incompatible_and_named() {
    let server = TestServer::start(orders_server(), Transport::Tcp).await;
    let client = orders_retyped::OrdersClient::new(server.connect().await);
    let order = orders_retyped::Order {
        id: 1,
        lines: Vec::new(),
        state: orders_retyped::State::Open,
        note: None,
    };
    let error = client.place(order).await.unwrap_err();
    assert_eq!(
        incompatibility(&error),
        "Orders.place: argument `order`: struct `Order`, field `lines`: struct `Line`, field \
         `quantity`: `u32` on the server, `u64` here"
    );
    let error = client.get(7).await.unwrap_err();
    let text = incompatibility(&error);
    assert!(text.starts_with("Orders.get: result: "), "{text}");
    assert_eq!(client.ping().await.unwrap(), "pong");
}

#[tokio::test]
async fn a_removed_variant_is_incompatible_and_named() {
    mod fewer_states {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub(crate) enum State {
            Open,
        }

        #[rpc_core::service]
        pub(crate) trait Orders {
            async fn place(&self, order: super::orders_server::Order) -> u64;
            async fn state(&self, id: u64) -> State;
            async fn ping(&self) -> String;
        }
    }
    mod server_states {
        #[rpc_core::service]
        pub(crate) trait Orders {
            async fn state(&self, id: u64) -> super::orders_server::State;
        }

        pub(crate) struct Impl;

        impl Orders for Impl {
            async fn state(&self, _id: u64) -> super::orders_server::State {
                super::orders_server::State::Open
            }
        }
    }
    let server = Server::new().add_service(server_states::OrdersServer::new(server_states::Impl));
    let server = TestServer::start(server, Transport::Loopback).await;
    let client = fewer_states::OrdersClient::new(server.connect().await);
    let error = client.state(1).await.unwrap_err();
    assert_eq!(
        incompatibility(&error),
        "Orders.state: result: enum `State` has 2 variants on the server, 1 here"
    );
}

#[tokio::test]
async fn an_alias_or_another_path_to_the_same_type_stays_compatible() {
    for transport in Transport::ALL {
        let server = TestServer::start(orders_server(), transport).await;
        let client = orders_respelled::OrdersClient::new(server.connect().await);
        let order = orders_server::Order {
            id: 3,
            lines: vec![orders_server::Line {
                sku: "tea".to_owned(),
                quantity: 2,
            }],
            state: orders_server::State::Shipped {
                tracking: "T1".to_owned(),
            },
            note: Some("fragile".to_owned()),
        };
        assert_eq!(client.place(order).await.unwrap(), 2, "{transport:?}");
        assert_eq!(client.get(3).await.unwrap().map(|order| order.id), Some(3));
    }
}

/// Two traits called `Inventory` from different modules serve side by side once each has a
/// name of its own on the wire.
#[tokio::test]
async fn two_services_with_one_trait_name_serve_side_by_side_under_their_names() {
    mod storefront {
        #[rpc_core::service(name = "storefront.Inventory")]
        pub(crate) trait Inventory {
            async fn count(&self) -> u64;
        }

        pub(crate) struct Impl;

        impl Inventory for Impl {
            async fn count(&self) -> u64 {
                1
            }
        }
    }
    mod warehouse {
        #[rpc_core::service(name = "warehouse.Inventory")]
        pub(crate) trait Inventory {
            async fn count(&self) -> u64;
        }

        pub(crate) struct Impl;

        impl Inventory for Impl {
            async fn count(&self) -> u64 {
                2
            }
        }
    }
    let server = Server::new()
        .add_service(storefront::InventoryServer::new(storefront::Impl))
        .add_service(warehouse::InventoryServer::new(warehouse::Impl));
    let mut names: Vec<&str> = server.service_names().collect();
    names.sort_unstable();
    assert_eq!(names, ["storefront.Inventory", "warehouse.Inventory"]);
    let server = TestServer::start(server, Transport::Tcp).await;
    let channel = server.connect().await;
    assert_eq!(
        storefront::InventoryClient::new(channel.clone())
            .count()
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        warehouse::InventoryClient::new(channel.clone())
            .count()
            .await
            .unwrap(),
        2
    );
    // The trait's name alone is not served: the wire name is the name.
    let error = current::InventoryClient::new(channel)
        .name()
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::UnknownService { .. }), "{error}");
}

#[test]
fn two_services_of_one_name_are_refused_with_advice() {
    mod elsewhere {
        #[rpc_core::service]
        pub(crate) trait Inventory {
            async fn count(&self, item: String) -> u64;
        }

        pub(crate) struct Impl;

        impl Inventory for Impl {
            async fn count(&self, _item: String) -> u64 {
                0
            }
        }
    }
    let refused = std::panic::catch_unwind(|| {
        inventory_server().add_service(elsewhere::InventoryServer::new(elsewhere::Impl))
    });
    let panic = refused.expect_err("a second `Inventory` was added");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("#[service(name = "), "{message}");
}

/// An implementation shared with other code serves through its `Arc`.
#[tokio::test]
async fn a_server_takes_an_implementation_behind_an_arc() {
    let shared = std::sync::Arc::new(current::Impl);
    let server = Server::new().add_service(current::InventoryServer::new(std::sync::Arc::clone(
        &shared,
    )));
    let server = TestServer::start(server, Transport::Loopback).await;
    let client = current::InventoryClient::new(server.connect().await);
    assert_eq!(client.total().await.unwrap(), 42);
    assert_eq!(
        std::sync::Arc::strong_count(&shared),
        2,
        "the server holds the same one"
    );
}

/// A payload that does not decode says which method's arguments, once.
#[tokio::test]
async fn arguments_that_do_not_decode_name_their_method_once() {
    use rpc_core::codegen::MethodSpec;
    let server = TestServer::start(orders_server(), Transport::Loopback).await;
    let channel = server.connect().await;
    let place = MethodSpec::new("Orders", "place");
    let error = channel
        .call::<_, u64>(
            &place,
            &rpc_core::CallOptions::default(),
            &("not an order",),
        )
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("codec error: the arguments of `Orders.place` did not decode: "),
        "{text}"
    );
    assert_eq!(text.matches("codec error").count(), 1, "{text}");
}

/// Interceptors judge a call before the server says whether its service or method exists
/// or whether its types match: a caller they refuse learns nothing about the API.
#[tokio::test]
async fn a_refused_caller_cannot_tell_unknown_or_incompatible_methods_from_known_ones() {
    use rpc_core::codegen::MethodSpec;
    use rpc_core::{CallInfo, CallOptions};
    let server = inventory_server().with_interceptor(|call: &CallInfo<'_>| {
        match call.context().metadata("authorization") {
            Some("Bearer ok") => Ok(()),
            _ => Err(RpcError::Unauthenticated {
                message: "a bearer token is required".into(),
            }),
        }
    });
    for transport in Transport::ALL {
        let server = TestServer::start(server.clone(), transport).await;
        for token in [None, Some("Bearer ok")] {
            let channel = server.connect().await;
            let mut options = CallOptions::default();
            let mut older = older::InventoryClient::new(channel.clone());
            let mut newer = newer::InventoryClient::new(channel.clone());
            if let Some(token) = token {
                options = options.with_metadata("authorization", token);
                older = older.with_metadata("authorization", token);
                newer = newer.with_metadata("authorization", token);
            }
            let incompatible = older.count("apples".to_owned()).await.unwrap_err();
            let unknown_method = newer.restock("pears".to_owned(), 3).await.unwrap_err();
            let unknown_service = channel
                .call::<_, u64>(
                    &MethodSpec::new("Warehouse", "count"),
                    &options,
                    &("figs".to_owned(),),
                )
                .await
                .unwrap_err();
            let errors = [incompatible, unknown_method, unknown_service];
            if token.is_none() {
                for error in &errors {
                    assert!(
                        matches!(error, RpcError::Unauthenticated { .. }),
                        "{transport:?}: {error}"
                    );
                }
            } else {
                assert!(
                    matches!(errors[0], RpcError::Incompatible { .. }),
                    "{transport:?}: {}",
                    errors[0]
                );
                assert!(
                    matches!(errors[1], RpcError::UnknownMethod { .. }),
                    "{transport:?}: {}",
                    errors[1]
                );
                assert!(
                    matches!(errors[2], RpcError::UnknownService { .. }),
                    "{transport:?}: {}",
                    errors[2]
                );
            }
        }
    }
}
