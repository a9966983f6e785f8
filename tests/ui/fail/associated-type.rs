// A service trait holds methods only.
#[rpc_core::service]
pub trait Service {
    type Output;
    async fn add(&self, a: i64) -> i64;
}

fn main() {}
