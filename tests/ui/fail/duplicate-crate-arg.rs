// Each attribute argument is given once.
#[rpc_core::service(crate = "rpc_core", crate = "rpc_core")]
pub trait Service {
    async fn add(&self, a: i64) -> i64;
}

fn main() {}
