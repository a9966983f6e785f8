// Every streaming shape compiles, with the context and plain arguments around the stream.
use rpc_core::{Context, Streaming};

#[rpc_core::service]
pub trait Feed {
    async fn ticks(&self, n: u64) -> Streaming<u64>;
    async fn sum(&self, nums: Streaming<i64>) -> i64;
    async fn echo(&self, cx: &Context, prefix: String, msgs: Streaming<String>, suffix: String) -> Streaming<String>;
}

fn main() {}
