// A service is one concrete protocol; generic traits are refused.
#[rpc_core::service]
pub trait Service<T> {
    async fn add(&self, a: i64) -> i64;
}

fn main() {}
