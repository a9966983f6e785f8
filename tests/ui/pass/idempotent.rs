// `#[idempotent]` marks a method safe to retry; it is read and removed by `#[service]`.
#[rpc_core::service]
pub trait Store {
    /// Reads a value.
    #[idempotent]
    async fn get(&self, key: String) -> Option<u32>;
    /// Writes a value (not idempotent: an increment).
    async fn increment(&self, key: String) -> u32;
}

struct Impl;

impl Store for Impl {
    async fn get(&self, _key: String) -> Option<u32> {
        None
    }

    async fn increment(&self, _key: String) -> u32 {
        1
    }
}

fn main() {
    let _ = StoreServer::new(Impl);
    fn client(channel: rpc_core::Channel) -> StoreClient {
        StoreClient::new(channel)
    }
    let _ = client;
}
