// A generic trait is a service: its client and server carry the type parameters, with the
// trait's bounds in the `where` clause or on the parameters.
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[rpc_core::service]
pub trait Store<K: Serialize + DeserializeOwned + Send + Sync + 'static, V>
where
    K: Eq + Hash,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    async fn put(&self, key: K, value: V) -> Option<V>;
    async fn keys(&self) -> rpc_core::Streaming<K>;
}

struct Nothing;

impl Store<String, u64> for Nothing {
    async fn put(&self, _key: String, _value: u64) -> Option<u64> {
        None
    }
    async fn keys(&self) -> rpc_core::Streaming<String> {
        rpc_core::Streaming::new(futures_util::stream::empty())
    }
}

fn main() {
    let _server = rpc_core::Server::new().add_service(StoreServer::new(Nothing));
    let _calls = |client: StoreClient<String, u64>| async move {
        let _ = client.put("a".to_owned(), 1).await;
        let _ = client.keys().await;
    };
}
