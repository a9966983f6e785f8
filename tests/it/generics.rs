//! Generic service traits: the client and server carry the trait's type parameters, each
//! instantiation has its own shapes, and a client of one instantiation calling a server of
//! another is refused as incompatible, never decoded wrongly.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use rpc_core::{RpcError, Server, service};
use rpc_tests::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A key-value store over any key and value types.
#[service]
pub(crate) trait Store<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Stores `value` under `key`, returning the previous value.
    async fn put(&self, key: K, value: V) -> Option<V>;
    /// The value under `key`.
    #[idempotent]
    async fn get(&self, key: K) -> Option<V>;
}

/// A store in memory.
pub(crate) struct MapStore<K, V> {
    entries: Mutex<HashMap<K, V>>,
}

impl<K, V> Default for MapStore<K, V> {
    fn default() -> Self {
        MapStore {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V> Store<K, V> for MapStore<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    async fn put(&self, key: K, value: V) -> Option<V> {
        self.entries.lock().unwrap().insert(key, value)
    }

    async fn get(&self, key: K) -> Option<V> {
        self.entries.lock().unwrap().get(&key).cloned()
    }
}

#[tokio::test]
async fn a_generic_service_serves_and_calls_with_its_type_arguments() {
    let server = Server::new().add_service(StoreServer::new(MapStore::<String, u64>::default()));
    for transport in Transport::ALL {
        let server = TestServer::start(server.clone(), transport).await;
        let store: StoreClient<String, u64> = StoreClient::new(server.connect().await);
        let key = format!("{transport:?}");
        assert_eq!(store.put(key.clone(), 7).await.unwrap(), None);
        assert_eq!(store.put(key.clone(), 8).await.unwrap(), Some(7));
        assert_eq!(store.get(key).await.unwrap(), Some(8), "{transport:?}");
    }
}

#[tokio::test]
async fn another_instantiation_is_incompatible_not_decoded_wrongly() {
    let server = Server::new().add_service(StoreServer::new(MapStore::<u32, u32>::default()));
    let server = TestServer::start(server, Transport::Tcp).await;
    let store: StoreClient<String, u64> = StoreClient::new(server.connect().await);
    let error = store.put("a".to_owned(), 1).await.unwrap_err();
    let RpcError::Incompatible { method, reason, .. } = &error else {
        panic!("expected Incompatible, got {error}");
    };
    assert_eq!(&**method, "put");
    assert_eq!(
        &**reason,
        "argument `key`: `u32` on the server, `String` here"
    );
    // The right instantiation is served (a connection declares a service once, so it gets
    // a connection of its own).
    let right: StoreClient<u32, u32> = StoreClient::new(server.connect().await);
    assert_eq!(right.put(1, 2).await.unwrap(), None);
}

#[test]
fn two_instantiations_on_one_server_are_refused_with_a_reason() {
    let refused = std::panic::catch_unwind(|| {
        Server::new()
            .add_service(StoreServer::new(MapStore::<String, u64>::default()))
            .add_service(StoreServer::new(MapStore::<u32, u32>::default()))
    });
    assert!(
        refused.is_err(),
        "one name on the wire cannot serve two instantiations"
    );
}
