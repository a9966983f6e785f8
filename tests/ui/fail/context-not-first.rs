// The context comes first, right after `&self`.
use rpc_core::Context;

#[rpc_core::service]
pub trait Service {
    async fn add(&self, a: i64, cx: &Context) -> i64;
}

fn main() {}
