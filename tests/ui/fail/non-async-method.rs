// Service methods are remote calls: they must be `async fn`.
#[rpc_core::service]
pub trait Service {
    fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
