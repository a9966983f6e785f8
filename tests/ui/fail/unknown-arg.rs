// The attribute takes `crate = "path"` only.
#[rpc_core::service(timeout = 5)]
pub trait Service {
    async fn add(&self, a: i64) -> i64;
}

fn main() {}
