// Methods are identified by name on the wire, so names must be unique.
#[rpc_core::service]
pub trait Service {
    async fn add(&self, a: i64) -> i64;
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
