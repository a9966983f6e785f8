// Calls run concurrently: `&mut self` would need exclusive access.
#[rpc_core::service]
pub trait Service {
    async fn add(&mut self, a: i64) -> i64;
}

fn main() {}
