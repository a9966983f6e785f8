// The wire carries concrete types only.
#[rpc_core::service]
pub trait Service {
    async fn add<T>(&self, a: T) -> i64;
}

fn main() {}
