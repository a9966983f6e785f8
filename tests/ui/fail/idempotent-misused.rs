// `#[idempotent]` is a bare marker, given once, on a unary method.
use rpc_core::Streaming;

#[rpc_core::service]
pub trait Service {
    #[idempotent(always)]
    async fn get(&self, key: String) -> u32;
    #[idempotent]
    #[idempotent]
    async fn put(&self, key: String, value: u32);
    #[idempotent]
    async fn watch(&self, key: String) -> Streaming<u32>;
    #[idempotent]
    async fn load(&self, values: Streaming<u32>) -> u32;
}

fn main() {}
