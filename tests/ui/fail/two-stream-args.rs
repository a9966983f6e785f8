// A call carries at most one request stream.
use rpc_core::Streaming;

#[rpc_core::service]
pub trait Service {
    async fn merge(&self, left: Streaming<u32>, right: Streaming<u32>) -> u32;
}

fn main() {}
