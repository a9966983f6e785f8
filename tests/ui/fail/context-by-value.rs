// The context is lent to the handler, not given away.
use rpc_core::Context;

#[rpc_core::service]
pub trait Service {
    async fn add(&self, cx: Context, a: i64) -> i64;
}

fn main() {}
